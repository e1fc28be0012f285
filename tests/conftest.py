"""Shared pytest setup: the backend, and the CPU kernels in use, in the header.

The suite runs on every Keras backend (``KERAS_BACKEND=tensorflow``, ``jax``
or ``torch``). Tests of TensorFlow's own features carry the marker
``tensorflow`` and are skipped on other backends, and the modules listed in
:data:`TENSORFLOW_ONLY` are not collected there at all; nor are the
library's TensorFlow-only modules (:data:`TENSORFLOW_ONLY_LIBRARY`), whose
docstring examples (``--doctest-modules``) run on TensorFlow only. Tests
marked ``once`` run subprocesses that do not depend on the backend of the
pass (they choose their own backend, or check the command line): they run
on TensorFlow only, where CI runs the whole suite.

Fixture ``exact_plans``: sparse plans made while it is active (layers built
in the test) use :data:`channelconv.plan.EXACT`, calls and copies free, so
they follow the frozen structure exactly and small test layers run several
blocks, input gathers with repeated channels and output placement, which
the calibrated model would merge into one block at these sizes
(``plan.using_cost_model``; no module global is changed).
"""

import fnmatch
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

#: Library modules that import TensorFlow (their docstring examples run on
#: TensorFlow only), as globs relative to the repository root; each matches
#: a file (tests/test_imports.py::test_tensorflow_only_library_paths_exist).
TENSORFLOW_ONLY_LIBRARY = [
    "channelconv/apps/reference.py",  # the answer's tf.nn.conv2d code
    "channelconv/apps/reproduce.py",  # replays the answer
    "channelconv/_backend/tensorflow/*",  # the backend facade's TensorFlow side
]


class _TensorFlowOnlyLibrary:
    """Leaves :data:`TENSORFLOW_ONLY_LIBRARY` out of the collection.

    ``collect_ignore`` and ``pytest_ignore_collect`` in this file apply only
    under ``tests/`` (a conftest's hooks are scoped to its directory), and
    the package may not ship a conftest of its own: a plugin registered here
    is global, so its hook sees the package's paths too. It is registered
    whenever this conftest is loaded, i.e. when ``tests`` is collected
    (``pytest``, whose ``testpaths`` hold it, or ``pytest tests channelconv``).
    """

    def pytest_ignore_collect(self, collection_path, config):
        try:
            path = collection_path.relative_to(config.rootpath).as_posix()
        except ValueError:  # outside the repository
            return None
        if any(fnmatch.fnmatch(path, pattern) for pattern in TENSORFLOW_ONLY_LIBRARY):
            return True
        return None  # not False: that would overrule the other ignore rules


def pytest_configure(config):
    if BACKEND != "tensorflow":
        config.pluginmanager.register(
            _TensorFlowOnlyLibrary(), "channelconv-tensorflow-only-library"
        )


@pytest.fixture
def exact_plans():
    with plan.using_cost_model(plan.EXACT):
        yield


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
