"""Shared pytest setup: the backend, and the CPU kernels in use, in the header.

The suite runs on every Keras backend (``KERAS_BACKEND=tensorflow``, ``jax``
or ``torch``). Tests of TensorFlow's own features carry the marker
``tensorflow`` and are skipped on other backends, and the modules listed in
:data:`TENSORFLOW_ONLY` are not collected there at all. Tests marked
``once`` run subprocesses that do not depend on the backend of the pass
(they choose their own backend, or check the command line): they run on
TensorFlow only, where CI runs the whole suite.

Fixture ``exact_plans``: sparse plans made while it is active follow the
frozen structure exactly (the cost model's per-call and per-copy costs are
zero), so that small test layers run several blocks, input gathers with
repeated channels and output placement, which the calibrated model would
merge into one block at these sizes.
"""

import importlib.util
import os

import keras
import pytest

from channelconv import plan
from harness import BACKEND, onednn_enabled

#: Test modules about TensorFlow's own features (the transcribed answer,
#: ``tf.distribute``, SavedModel export, TensorFlow's CPU kernels):
#: collected on the TensorFlow backend only.
TENSORFLOW_ONLY = [
    "test_reference.py",
    "test_distribute.py",
    "test_export.py",
    "test_routing.py",
]
collect_ignore = [] if BACKEND == "tensorflow" else list(TENSORFLOW_ONLY)
if importlib.util.find_spec("jax") is None:  # a script of test_distribute's, run with JAX
    collect_ignore.append("jax_distribution_worker.py")


@pytest.fixture
def exact_plans(monkeypatch):
    monkeypatch.setattr(plan, "CALL_COST", 0)
    monkeypatch.setattr(plan, "COPY_COST", 0)


def pytest_collection_modifyitems(config, items):
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow only (Keras backend: {BACKEND})")
    once = pytest.mark.skip(reason="independent of the backend: runs in the TensorFlow pass")
    for item in items:
        if item.get_closest_marker("tensorflow"):
            item.add_marker(skip)
        elif item.get_closest_marker("once"):
            item.add_marker(once)


def pytest_report_header(config):
    versions = f"Keras {keras.__version__}, {BACKEND} backend"
    if BACKEND != "tensorflow":
        module = __import__(BACKEND)
        return f"{versions} {module.__version__}"
    import tensorflow as tf

    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    return (
        f"{versions}, TensorFlow {tf.__version__}; oneDNN CPU kernels "
        f"{'on' if onednn_enabled() else 'off'} (TF_ENABLE_ONEDNN_OPTS={setting})"
    )
