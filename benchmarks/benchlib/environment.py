"""What a benchmark run ran on: versions, CPU, cores, oneDNN, load."""

import datetime
import os
import platform

import keras
import numpy as np
import tensorflow as tf


#: How TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` (case-insensitive); any
#: other value, or none, leaves TensorFlow's default for the CPU.
_ONEDNN_VALUES = {"0": False, "false": False, "1": True, "true": True}


def environment(**extra):
    """TF/Keras versions, oneDNN, CPU model, core count and date of this run."""
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
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        **onednn_setting(),
        **extra,
    }


def onednn_setting():
    """Whether TensorFlow runs its oneDNN CPU kernels in this process.

    oneDNN changes the dense baselines (``Conv2D``, ``DepthwiseConv2D``), so
    every run records it. ``TF_ENABLE_ONEDNN_OPTS`` decides when TensorFlow
    starts (``0`` or ``false`` off, ``1`` or ``true`` on; unset or another
    value, TensorFlow's default for the CPU: on Linux, on for CPUs with
    AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX, off on others). What TensorFlow actually
    does is asked from its private ``_pywrap_util_port.IsMklEnabled()``; if
    that cannot be imported or called, the variable alone decides, and
    ``onednn_source`` says so (``onednn`` is then ``None`` when it is unset).

    Returns:
        ``{"onednn": True, False or None, "onednn_env": the variable's
        value or None, "onednn_source": what "onednn" was read from}``.
    """
    env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    try:
        enabled = _tensorflow_onednn()
        source = "TensorFlow: _pywrap_util_port.IsMklEnabled()"
    except (ImportError, AttributeError) as error:
        enabled = _ONEDNN_VALUES.get((env or "").strip().lower())
        source = (
            "TF_ENABLE_ONEDNN_OPTS only: TensorFlow's private "
            f"_pywrap_util_port.IsMklEnabled() is not available ({error})"
        )
    return {"onednn": enabled, "onednn_env": env, "onednn_source": source}


def _tensorflow_onednn():
    """``IsMklEnabled()`` of TensorFlow (private API: may be missing)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_text(env):
    """One line on oneDNN for the headers (old JSON files do not record it)."""
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
