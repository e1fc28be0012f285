"""Which Keras backend runs, and the features that need TensorFlow.

channelconv's layers, conversions and pruning are written with
``keras.ops`` and run on every Keras 3 backend (TensorFlow, JAX, PyTorch).
A few things are TensorFlow's own and stay so: the transcribed StackOverflow
answer (:mod:`channelconv.reference`, written with ``tf.nn.conv2d``) and
the ``channelconv reproduce`` command built on it. They call
:func:`require_tensorflow`, which says so clearly on another backend
instead of failing somewhere inside TensorFlow or importing it.
"""

import keras


def name():
    """The name of the Keras backend in use: ``"tensorflow"``, ``"jax"``, ...

    Example:

    >>> name() in ("tensorflow", "jax", "torch", "numpy", "openvino")
    True
    """
    return keras.backend.backend()


def is_tensorflow():
    """Whether Keras runs on TensorFlow (the default backend)."""
    return name() == "tensorflow"


class BackendError(ImportError):
    """A TensorFlow-only feature of channelconv was used on another backend.

    A subclass of ``ImportError``: what is missing is the backend the feature
    is written for.
    """


def require_tensorflow(feature):
    """Raises :class:`BackendError` unless Keras runs on TensorFlow.

    Args:
        feature: what needs TensorFlow, for the message.

    Example:

    >>> require_tensorflow("a feature") if is_tensorflow() else None
    """
    if not is_tensorflow():
        raise BackendError(
            f"{feature} runs on the TensorFlow backend only; Keras runs on "
            f"{name()!r} (KERAS_BACKEND). Set KERAS_BACKEND=tensorflow to use it. "
            "The channelconv layers, conversions and pruning run on every backend."
        )
