"""How channelconv runs a convolution: channels-last, through the backend facade.

Every convolution of channelconv goes through :func:`conv` and
:func:`depthwise_conv` on channels-last data. What is the same on every
backend is done here:

- ``channels_first`` inputs are transposed to channels-last once, around the
  whole computation (one transpose in, one out, whatever the
  implementation; :func:`to_channels_last`, :func:`from_channels_last`), on
  every backend and machine, so that the same graph runs with TensorFlow's
  oneDNN on and off, eagerly, in ``tf.function`` and under XLA (TensorFlow's
  own CPU kernels take only channels-last convolutions);
- strides > 1 together with dilation > 1 are refused, as by Keras's layers.

What differs per backend (TensorFlow's CPU kernels refuse unequal depthwise
strides without oneDNN, mishandle empty batches, and run grouped 3-D
convolutions only under XLA) is the facade's, :mod:`channelconv._backend`;
``docs/platforms.md`` describes it. Every rewrite is exact and is checked
against NumPy and Keras in ``tests/test_numerics.py``,
``tests/test_gradients.py`` and ``tests/test_routing.py`` with oneDNN on and
off.

How a depthwise convolution with unequal strides runs is an argument of
:func:`depthwise_conv` (``unequal_strides``); where the convolution is made
further down (by a layer), :func:`unequal_strides_setting` sets it for a
block of code.
"""

import contextlib
import contextvars

from keras import ops

from channelconv import _backend

_UNEQUAL_STRIDES = contextvars.ContextVar("channelconv_unequal_strides", default="auto")


def to_channels_last(inputs, data_format):
    """``inputs`` in channels-last layout (transposed if ``channels_first``).

    Every convolution here runs channels-last, on every backend: TensorFlow's
    CPU kernels without oneDNN take nothing else, and one layout keeps one
    code path. :func:`from_channels_last` undoes it on the output.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((1, 3, 5, 7), "float32")
    >>> tuple(to_channels_last(x, "channels_first").shape)
    (1, 5, 7, 3)
    >>> to_channels_last(x, "channels_last") is x
    True
    """
    if data_format != "channels_first":
        return inputs
    rank = len(inputs.shape) - 2
    return ops.transpose(inputs, (0, *range(2, rank + 2), 1))


def from_channels_last(outputs, data_format):
    """``outputs`` (channels-last) back in ``data_format``.

    Example:

    >>> import numpy as np
    >>> y = np.zeros((1, 5, 7, 3), "float32")
    >>> tuple(from_channels_last(y, "channels_first").shape)
    (1, 3, 5, 7)
    """
    if data_format != "channels_first":
        return outputs
    rank = len(outputs.shape) - 2
    return ops.transpose(outputs, (0, rank + 1, *range(1, rank + 1)))


def conv(inputs, kernel, strides, padding, dilation_rate):
    """``keras.ops.conv`` on channels-last inputs, through the backend facade.

    Args:
        inputs: ``(batch, *spatial, channels)``.
        kernel: ``kernel_size + (channels, filters)``.
        strides, dilation_rate: tuples of ints, one per spatial axis
            (strides > 1 are incompatible with dilation > 1, as for Keras's
            layers).
        padding: ``"valid"`` or ``"same"``.

    Returns:
        ``(batch, *out_spatial, filters)``.

    Raises:
        ValueError: strides > 1 with dilation > 1.

    Example:

    >>> import numpy as np
    >>> tuple(conv(np.ones((1, 5, 5, 2), "float32"), np.ones((3, 3, 2, 4), "float32"),
    ...            (2, 1), "valid", (1, 1)).shape)
    (1, 2, 3, 4)
    """
    _check_strides_and_dilation(strides, dilation_rate)
    return _backend.conv(inputs, kernel, strides, padding, dilation_rate)


def depthwise_conv(inputs, kernel, strides, padding, dilation_rate, *, unequal_strides=None):
    """A depthwise convolution of channels-last inputs, any rank and strides.

    ``keras.ops.depthwise_conv`` where the backend's kernels take the
    arguments, an exact rewrite where they do not (3-D inputs, and unequal
    strides on TensorFlow's own CPU kernels; :func:`channelconv._backend.depthwise_conv`).

    Args:
        inputs: channels-last tensor ``(batch, *spatial, channels)``.
        kernel: ``kernel_size + (channels, multiplier)``.
        strides: tuple of ints, one per spatial axis.
        padding: ``"valid"`` or ``"same"``.
        dilation_rate: tuple of ints (strides > 1 are incompatible with
            dilation > 1, as for Keras's layers).
        unequal_strides: how unequal strides run: ``"auto"`` (the backend's
            kernel where it takes them, else the rewrite), ``"native"`` or
            ``"rewrite"`` (TensorFlow only); default ``None``, the
            :func:`unequal_strides_setting` in force (``"auto"``).

    Returns:
        ``(batch, *out_spatial, channels * multiplier)``.

    Raises:
        ValueError: strides > 1 with dilation > 1, or an unknown
            ``unequal_strides``.

    Example:

    >>> import numpy as np
    >>> x = np.random.default_rng(1).normal(size=(1, 4, 7, 2)).astype("float32")
    >>> k = np.ones((1, 3, 2, 2), "float32")  # every multiplier sums 3 columns
    >>> y = ops.convert_to_numpy(depthwise_conv(x, k, (1, 2), "valid", (1, 1)))
    >>> y.shape
    (1, 4, 3, 4)
    >>> direct = sum(x[:, :, b:b + 5:2] for b in range(3))  # (1, 4, 3, 2)
    >>> bool(np.allclose(y, np.repeat(direct, 2, axis=-1), atol=1e-5))
    True
    """
    _check_strides_and_dilation(strides, dilation_rate)
    if unequal_strides is None:
        unequal_strides = _UNEQUAL_STRIDES.get()
    return _backend.depthwise_conv(
        inputs, kernel, strides, padding, dilation_rate, unequal_strides)


@contextlib.contextmanager
def unequal_strides_setting(choice):
    """Within the block, depthwise convolutions with unequal strides run ``choice``.

    For code that makes the convolution further down (a layer's call, traced
    in the block): the default of :func:`depthwise_conv`'s
    ``unequal_strides``, for this thread or task only, restored on exit.

    Args:
        choice: ``"auto"``, ``"native"`` or ``"rewrite"``.

    Raises:
        ValueError: ``choice`` is none of these.

    Example:

    >>> import numpy as np
    >>> x, k = np.ones((1, 4, 4, 1), "float32"), np.ones((1, 1, 1, 1), "float32")
    >>> with unequal_strides_setting("auto"):  # "rewrite" forces TensorFlow's rewrite
    ...     tuple(depthwise_conv(x, k, (2, 1), "valid", (1, 1)).shape)
    (1, 2, 4, 1)
    """
    if choice not in _backend.UNEQUAL_STRIDES:
        raise ValueError(
            f"`choice` must be one of {_backend.UNEQUAL_STRIDES}. Received: choice={choice!r}."
        )
    token = _UNEQUAL_STRIDES.set(choice)
    try:
        yield
    finally:
        _UNEQUAL_STRIDES.reset(token)


def _check_strides_and_dilation(strides, dilation_rate):
    """Refuses strides > 1 with dilation > 1, as Keras's conv layers do."""
    if max(strides) > 1 and max(dilation_rate) > 1:
        raise ValueError(
            "`strides > 1` is not supported together with `dilation_rate > 1`. "
            f"Received: strides={tuple(strides)} and "
            f"dilation_rate={tuple(dilation_rate)}."
        )
