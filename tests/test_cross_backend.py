"""Saved on one Keras backend, loaded on another: the same layer.

For every other backend that is installed, a subprocess saves the models of
``tests/cross_backend_worker.py`` (every rank, reduction and
implementation, channels_first, causal padding, a pruned kernel set) to
``.keras`` files with that backend's outputs; this process loads them on its
own backend. The weights must arrive bit-identical (frozen kernels, pruned
mask included) and the outputs equal the saving backend's within float
tolerance: the backends run different convolution kernels (XLA's,
oneDNN's or TensorFlow's own, PyTorch's), which sum in different orders.
Run on each backend, the suite covers every (saver, loader) pair.

With ``CHANNELCONV_SAVED_MODELS`` set to a directory (``.ci/run`` sets it
for its passes), the models saved on a backend are kept there, in a
folder per backend, and reused by the later passes: each pass saves its own
backend's models there in-process, and a subprocess runs only for a backend
no earlier pass has saved on (two in all, instead of two per pass).
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import cross_backend_worker as worker
from harness import BACKEND

BACKENDS = ["tensorflow", "jax", "torch"]
SAVERS = [b for b in BACKENDS if b != BACKEND]
# The outputs are O(1) sums of ~30-100 float32 products; measured at most
# 9.5e-7 (2**-20) apart between backends, 20 of the 30 (saver, loader, case)
# triples bit-identical (2-core x86, TensorFlow with oneDNN on).
ATOL = 1e-5


SHARED = os.environ.get("CHANNELCONV_SAVED_MODELS")


def _saved_on(backend):
    """A directory of :data:`SHARED` that holds models saved on ``backend``, or None."""
    if not SHARED:
        return None
    out = pathlib.Path(SHARED) / backend
    done = out / "backend.txt"
    return out if done.exists() and done.read_text() == backend else None


@pytest.fixture(scope="module", autouse=True)
def share_this_backends_models():
    """Saves this backend's models for later passes (with :data:`SHARED` only)."""
    if SHARED and _saved_on(BACKEND) is None:
        worker.main([worker.__file__, str(pathlib.Path(SHARED) / BACKEND)])


@pytest.fixture(scope="module", params=SAVERS)
def saved(request, tmp_path_factory):
    """The directory of models saved on backend ``request.param``."""
    saver = request.param
    if importlib.util.find_spec(saver) is None:
        pytest.skip(f"{saver} is not installed (pip install channelconv[{saver}])")
    shared = _saved_on(saver)
    if shared is not None:
        return shared
    if SHARED:
        out = pathlib.Path(SHARED) / saver
    else:
        out = tmp_path_factory.mktemp(f"saved_on_{saver}")
    env = dict(os.environ, KERAS_BACKEND=saver, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, worker.__file__, str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "backend.txt").read_text() == saver
    return out


@pytest.mark.parametrize("case", list(worker.CASES))
def test_model_saved_on_another_backend_loads_identically(saved, case):
    model = keras.saving.load_model(saved / f"{case}.keras")
    rank, options = worker.CASES[case]
    expected_model, x = worker.build(rank, options)  # the same seeds: the saved weights
    data = np.load(saved / f"{case}.npz")
    np.testing.assert_array_equal(data["x"], x)
    layer = model.get_layer("conv")
    assert type(layer) is worker.LAYERS[rank]
    saved_weights = {w.name: keras.ops.convert_to_numpy(w) for w in layer.weights}
    built_weights = {
        w.name: keras.ops.convert_to_numpy(w) for w in expected_model.get_layer("conv").weights
    }
    assert sorted(saved_weights) == sorted(built_weights)
    for name, value in built_weights.items():
        np.testing.assert_array_equal(saved_weights[name], value, err_msg=name)
    np.testing.assert_array_equal(layer.frozen_mask, expected_model.get_layer("conv").frozen_mask)
    y = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(y, data["y"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(y, keras.ops.convert_to_numpy(expected_model(x)), rtol=0, atol=ATOL)
    if layer.prunable:
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        assert not kernel[..., 1, 0].any() and not kernel[..., 2, 2].any()
