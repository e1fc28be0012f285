"""The facade's implementation for JAX, PyTorch and any other backend: ``keras.ops``.

These backends' convolutions take every option channelconv passes (unequal
strides, empty batches, grouped 3-D convolutions), their automatic
differentiation of ``keras.ops.take`` is exact, and Keras saves their
variables itself: nothing here works around anything. The TensorFlow
implementation (:mod:`channelconv._backend.tensorflow`) reuses
:func:`gather` and :func:`conv`.
"""

import os

from keras import ops


def conv(inputs, kernel, strides, padding, dilation_rate):
    """``keras.ops.conv`` on channels-last inputs (see ``_backend.conv``)."""
    return ops.conv(inputs, kernel, strides, padding, "channels_last", dilation_rate)


def depthwise_conv(inputs, kernel, strides, padding, dilation_rate, unequal_strides="auto"):
    """``keras.ops.depthwise_conv`` on channels-last inputs, any rank.

    Keras's depthwise op takes 1-D and 2-D inputs. A 3-D depthwise
    convolution is a grouped convolution with one group per input channel:
    ``keras.ops.conv`` with the kernel reshaped to ``kernel_size + (1,
    channels * multiplier)`` (output ``c * multiplier + f``, the same order),
    which is what Keras's ``Conv3D(groups=channels)`` runs. Unequal strides
    run natively; ``unequal_strides="rewrite"`` (TensorFlow's rewrite) is
    refused (see ``_backend.depthwise_conv``).
    """
    if unequal_strides == "rewrite" and len(set(strides)) > 1:
        raise ValueError(
            "`unequal_strides='rewrite'` is TensorFlow's rewrite of unequal "
            "depthwise strides; this backend takes them natively. Received: "
            f"unequal_strides='rewrite' with strides={tuple(strides)}."
        )
    if len(strides) == 3:
        grouped = ops.reshape(kernel, tuple(kernel.shape[:3]) + (1, -1))
        return ops.conv(inputs, grouped, strides, padding, "channels_last", dilation_rate)
    return ops.depthwise_conv(inputs, kernel, strides, padding, "channels_last", dilation_rate)


def bias_add(outputs, bias, data_format):
    """``outputs + bias`` along the channel axis (see ``_backend.bias_add``)."""
    if data_format == "channels_first":
        bias = ops.reshape(bias, (-1,) + (1,) * (len(outputs.shape) - 2))
    return ops.add(outputs, bias)


def take_last_axis(values, forward, inverses):
    """``gather(values, *forward)``; automatic differentiation gives the gradient.

    ``keras.ops.take``'s gradient (a scatter-add) is exact and sums over
    repeated entries, so ``inverses`` is not needed here (see
    ``_backend.take_last_axis``).
    """
    del inverses
    return gather(values, *forward)


def gather(parts, index, pad):
    """``concat(parts, -1)[..., index]``; with ``pad``, a zero entry is appended first.

    Args:
        parts: tensors with the same leading shape.
        index: 1-D ints into the concatenation; with ``pad``, the
            concatenation's length stands for the zero entry.
        pad: whether to append the zero entry.

    Returns:
        The taken values, shaped ``parts[0].shape[:-1] + (len(index),)``.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> x = np.array([[1.0, 2.0]], "float32")
    >>> ops.convert_to_numpy(gather([x, x], np.array([3, 4, 0]), True)).tolist()
    [[2.0, 0.0, 1.0]]
    """
    if pad:
        shape = ops.shape(parts[0])
        parts = list(parts) + [ops.zeros((*shape[:-1], 1), dtype=parts[0].dtype)]
    values = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
    return ops.take(values, index, axis=-1)


def track_checkpoint(layer, kernel_size, n_frozen):
    """Nothing: Keras saves these backends' variables itself (see ``_backend``)."""
    del layer, kernel_size, n_frozen


def native_unequal_strides(dtype="float32"):
    """``True``: these backends' depthwise convolutions take unequal strides."""
    del dtype
    return True


def onednn_setting(probe=None):
    """TensorFlow's oneDNN setting does not apply here: ``"onednn"`` is ``None``.

    ``probe`` is not called: asking TensorFlow would import it.
    """
    del probe
    return {
        "onednn": None,
        "onednn_env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "onednn_source": "not asked: TensorFlow's oneDNN setting applies to the "
        "TensorFlow backend only",
    }
