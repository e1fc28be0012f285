"""channelconv on the Keras backends other than TensorFlow, from a fresh process.

For each of ``KERAS_BACKEND=jax`` and ``torch`` (skipped where the backend's
package is not installed), whatever backend this run uses: importing
channelconv and its command-line modules does not import TensorFlow, and
the TensorFlow-only :mod:`channelconv.apps.reference` refuses to import with a
:class:`channelconv._backend.BackendError` that names the backend.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent(
    """
    import sys
    import channelconv, channelconv.apps.cli, channelconv.convert, channelconv.apps.demo
    import channelconv.pruning
    from channelconv._backend import BackendError
    imported = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
    print("TENSORFLOW_MODULES", imported[:3])  # the first few, if any
    try:
        import channelconv.apps.reference
    except BackendError as error:
        print("REFUSED", error)
    """
)


@pytest.mark.once
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_importing_channelconv_does_not_import_tensorflow(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TENSORFLOW_MODULES []\n" in result.stdout, result.stdout.splitlines()[0]
    refused = [line for line in result.stdout.splitlines() if line.startswith("REFUSED ")]
    assert refused, result.stdout
    assert "runs on the TensorFlow backend only" in refused[0]
    assert f"Keras runs on '{backend}' (KERAS_BACKEND)" in refused[0]
