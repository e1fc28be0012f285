"""What a benchmark run ran on: backend and versions, CPU, cores, oneDNN, load.

Every run names its Keras backend (``backend``) and that backend's
versions and CPU-kernel settings: TensorFlow's version and oneDNN setting
(:func:`onednn_setting`); JAX's and jaxlib's versions, its devices and
``XLA_FLAGS``; PyTorch's version, whether its own oneDNN (``mkldnn``) is
available and enabled, and its thread count. Runs recorded before the
backend was are TensorFlow runs.
"""

import datetime
import os
import platform

import keras
import numpy as np


def environment(**extra):
    """Backend and versions, CPU kernels, CPU model, core count and date of this run."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    backend = keras.backend.backend()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
        "backend": backend,
        **_BACKEND_RECORDS[backend](),
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        **extra,
    }


def _tensorflow_record():
    import tensorflow as tf

    return {"tensorflow": tf.__version__, **onednn_setting()}


def _jax_record():
    import jax
    import jaxlib

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS"),
    }


def _torch_record():
    import torch

    return {
        "torch": torch.__version__,
        "torch_mkldnn": torch.backends.mkldnn.is_available(),
        "torch_mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "torch_threads": torch.get_num_threads(),
    }


_BACKEND_RECORDS = {"tensorflow": _tensorflow_record, "jax": _jax_record, "torch": _torch_record}


def backend_of(env):
    """The backend of a recorded environment (TensorFlow before it was recorded)."""
    return env.get("backend", "tensorflow")


def versions_text(env):
    """``"TensorFlow 2.21.0, Keras 3.15.1"``, or the JAX / PyTorch versions, for headers."""
    backend = backend_of(env)
    if backend == "jax":
        versions = f"JAX {env['jax']} (jaxlib {env['jaxlib']})"
    elif backend == "torch":
        versions = f"PyTorch {env['torch']}"
    else:
        versions = f"TensorFlow {env['tensorflow']}"
    return f"{versions}, Keras {env['keras']}"


def backend_label(env):
    """The backend and its version in a few characters, for plot titles."""
    backend = backend_of(env)
    name = {"tensorflow": "TF", "jax": "JAX", "torch": "PyTorch"}[backend]
    return f"{name} {env[backend]}"


def backend_title(env):
    """``""`` for TensorFlow runs, else ``" (JAX)"`` or ``" (PyTorch)"``: for report titles."""
    return {"tensorflow": "", "jax": " (JAX)", "torch": " (PyTorch)"}[backend_of(env)]


def backend_suffix(env=None):
    """``""`` for TensorFlow, else ``"_jax"`` / ``"_torch"``: file names carry the backend.

    ``env``: a recorded environment; this process's backend if ``None``.
    """
    backend = keras.backend.backend() if env is None else backend_of(env)
    return "" if backend == "tensorflow" else f"_{backend}"


def setting_name(env):
    """``"onednn-on"`` / ``"onednn-off"`` for TensorFlow runs, else the backend's name.

    What the files of scripts run once per TensorFlow oneDNN setting end
    with (``bench_sparse_onednn-off.md``, ``bench_sparse_jax.md``).
    """
    backend = backend_of(env)
    if backend != "tensorflow":
        return backend
    return f"onednn-{'on' if env['onednn'] else 'off'}"


def onednn_setting(probe=None):
    """Whether TensorFlow runs its oneDNN CPU kernels in this process.

    oneDNN changes the dense baselines (``Conv2D``, ``DepthwiseConv2D``), so
    every run records it. The answer is channelconv's one probe,
    :func:`channelconv._backend.onednn_setting` (shared with the tests):
    TensorFlow's private ``_pywrap_util_port.IsMklEnabled()``, or, if that
    cannot be imported or called, ``TF_ENABLE_ONEDNN_OPTS`` alone, and
    ``onednn_source`` says which (``onednn`` is then ``None`` when it is unset).

    Args:
        probe: in place of TensorFlow's private function (tests).

    Returns:
        ``{"onednn": True, False or None, "onednn_env": the variable's
        value or None, "onednn_source": what "onednn" was read from}``.
    """
    from channelconv import _backend

    return _backend.onednn_setting(probe)


def onednn_text(env):
    """One line on oneDNN for the headers (old JSON files do not record it).

    On JAX, which compiles with XLA, TensorFlow's setting does not apply;
    on PyTorch, its own oneDNN (``torch.backends.mkldnn``).
    """
    backend = backend_of(env)
    if backend == "jax":
        flags = env["xla_flags"]
        return ("oneDNN: TensorFlow's setting does not apply (XLA's CPU compiler; "
                f"XLA_FLAGS{' unset' if flags is None else f'={flags}'})")
    if backend == "torch":
        state = "enabled" if env["torch_mkldnn_enabled"] else "disabled"
        available = "available" if env["torch_mkldnn"] else "not available"
        return (f"oneDNN: PyTorch's own (torch.backends.mkldnn) {available}, {state}; "
                f"{env['torch_threads']} threads")
    if "onednn" not in env:
        return "oneDNN: not recorded"
    state = {True: "on", False: "off", None: "unknown"}[env["onednn"]]
    variable = env["onednn_env"]
    variable = " unset" if variable is None else f"={variable}"
    return (f"oneDNN: {state} (TF_ENABLE_ONEDNN_OPTS{variable}; "
            f"read from {env['onednn_source']})")


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
