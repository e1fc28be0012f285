"""Whether TensorFlow runs its oneDNN CPU kernels in this process."""

import os

#: How TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` (case-insensitive); any
#: other value, or none, leaves TensorFlow's default for the CPU.
_ENV_VALUES = {"0": False, "false": False, "1": True, "true": True}
_SOURCE = "TensorFlow: _pywrap_util_port.IsMklEnabled()"


def onednn_setting(probe=None):
    """Whether TensorFlow runs its oneDNN CPU kernels, and how that is known.

    ``TF_ENABLE_ONEDNN_OPTS`` decides when TensorFlow starts (``0`` or
    ``false`` off, ``1`` or ``true`` on; unset or another value,
    TensorFlow's default for the CPU: on Linux, on for CPUs with
    AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX, off on others). What
    TensorFlow actually does is asked from its private
    ``_pywrap_util_port.IsMklEnabled()``; if that cannot be imported or
    called, the variable alone decides, and ``onednn_source`` says so
    (``onednn`` is then ``None`` when the variable is unset or unknown).

    Args:
        probe: a function of no arguments returning whether oneDNN is on;
            default: :func:`tensorflow_onednn`. An ``ImportError`` or
            ``AttributeError`` from it means TensorFlow cannot say.

    Returns:
        ``{"onednn": True, False or None, "onednn_env": the variable's value
        or None, "onednn_source": what "onednn" was read from}``.

    Example:

    >>> setting = onednn_setting()
    >>> setting["onednn"] in (True, False), setting["onednn_source"]
    (True, 'TensorFlow: _pywrap_util_port.IsMklEnabled()')
    """
    env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    try:
        enabled = (probe or tensorflow_onednn)()
        source = _SOURCE
    except (ImportError, AttributeError) as error:
        enabled = _ENV_VALUES.get((env or "").strip().lower())
        source = (
            "TF_ENABLE_ONEDNN_OPTS only: TensorFlow's private "
            f"_pywrap_util_port.IsMklEnabled() is not available ({error})"
        )
    return {"onednn": enabled, "onednn_env": env, "onednn_source": source}


def tensorflow_onednn():
    """``IsMklEnabled()`` of TensorFlow (a private API: may be missing).

    Raises:
        ImportError, AttributeError: the private API moved.

    Example:

    >>> tensorflow_onednn() in (True, False)
    True
    """
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())
