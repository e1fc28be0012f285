"""The two convolution implementations and the bias, as pure functions.

:func:`convolve` applies a full kernel (``kernel_size + (in_channels,
filters)``, assembled by :mod:`channelconv._assembly`) with either reduction
and either implementation; :func:`add_bias` adds the bias.
"""

import functools

from keras import ops

from channelconv import _backend
from channelconv import _routing as routing


def convolve(
    inputs,
    kernel,
    reduction="sum",
    implementation="fused",
    *,
    strides=1,
    padding="valid",
    dilation_rate=1,
    data_format="channels_last",
):
    """Convolves ``inputs`` with a full kernel, per input channel.

    Runs on every backend and CPU, with oneDNN on or off, for every option:
    the convolutions go through :mod:`channelconv._routing`, which runs them
    channels-last through the backend facade (:mod:`channelconv._backend`),
    where what a backend's kernels refuse is rewritten into what they accept.

    Args:
        inputs: tensor of rank ``len(kernel_size) + 2``.
        kernel: tensor of shape ``kernel_size + (in_channels, filters)``.
        reduction: ``"sum"``: output channel ``f`` is the sum over input
            channels ``c`` of channel ``c`` convolved with kernel ``(c, f)``,
            i.e. ``keras.ops.conv``. ``"concat"``: output channel
            ``c * filters + f`` is channel ``c`` convolved with kernel
            ``(c, f)``, i.e. ``keras.ops.depthwise_conv``.
        implementation: ``"fused"``: one convolution on the whole kernel.
            ``"per_channel"``: one convolution per input channel on its bank of
            ``filters`` kernels, then the reduction (the StackOverflow
            answer's computation).
        strides, dilation_rate: int or tuple of ``len(kernel_size)`` ints, as
            for ``Conv2D`` (keyword-only, like ``padding`` and
            ``data_format``).
        padding, data_format: as for ``Conv2D``; ``padding`` may also be
            ``"causal"`` for a 1-D convolution, as for ``Conv1D``.

    Returns:
        The output tensor (no bias, no activation).

    Example:

    >>> from keras import ops
    >>> x = ops.ones((1, 4, 4, 3))
    >>> k = ops.ones((3, 3, 3, 2))
    >>> tuple(convolve(x, k, "sum").shape)
    (1, 2, 2, 2)
    >>> tuple(convolve(x, k, "concat", "per_channel").shape)
    (1, 2, 2, 6)
    >>> tuple(convolve(ops.ones((1, 3, 5, 4)), k, "concat", strides=(2, 1),
    ...                data_format="channels_first").shape)
    (1, 6, 2, 2)
    >>> tuple(convolve(ops.ones((1, 6, 3)), ops.ones((3, 3, 2)), "sum", padding="causal").shape)
    (1, 6, 2)
    """
    inputs, conv_args = channels_last(
        inputs, tuple(kernel.shape[:-2]), strides, padding, dilation_rate, data_format
    )
    if implementation == "fused" and reduction == "sum":
        outputs = routing.conv(inputs, kernel, **conv_args)
    elif implementation == "fused":
        outputs = routing.depthwise_conv(inputs, kernel, **conv_args)
    else:
        banks = [
            routing.conv(inputs[..., c : c + 1], kernel[..., c : c + 1, :], **conv_args)
            for c in range(kernel.shape[-2])
        ]
        if reduction == "sum":
            outputs = functools.reduce(ops.add, banks)
        else:
            outputs = ops.concatenate(banks, axis=-1)
    return routing.from_channels_last(outputs, data_format)


def channels_last(inputs, kernel_size, strides, padding, dilation_rate, data_format):
    """The inputs and arguments of the channels-last convolutions of a layer.

    ``inputs`` in channels-last layout (:func:`routing.to_channels_last`),
    with Keras's ``"causal"`` padding (1-D: zeros before the first step
    only) done, and the arguments of :func:`routing.conv` as tuples.

    Example:

    >>> from keras import ops
    >>> x, args = channels_last(ops.ones((1, 3, 6)), (3,), 1, "causal", 2,
    ...                         "channels_first")
    >>> tuple(x.shape), args
    ((1, 10, 3), {'strides': (1,), 'padding': 'valid', 'dilation_rate': (2,)})
    """
    rank = len(kernel_size)
    conv_args = dict(
        strides=_tuple(strides, rank),
        padding=padding,
        dilation_rate=_tuple(dilation_rate, rank),
    )
    inputs = routing.to_channels_last(inputs, data_format)
    if padding == "causal":
        before = conv_args["dilation_rate"][0] * (kernel_size[0] - 1)
        inputs = ops.pad(inputs, [(0, 0), (before, 0), (0, 0)])
        conv_args["padding"] = "valid"
    return inputs, conv_args


def _tuple(value, rank):
    return (value,) * rank if isinstance(value, int) else tuple(value)


def add_bias(outputs, bias, data_format="channels_last"):
    """Adds a per-channel ``bias`` to the output of a convolution.

    The bias goes along the channel axis of ``data_format``, whatever the
    sizes of the other axes (:func:`channelconv._backend.bias_add`).

    Args:
        outputs: tensor of rank >= 3 in ``data_format``.
        bias: vector with one entry per output channel; cast to
            ``outputs.dtype``.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        ``outputs`` plus ``bias`` broadcast along the channel axis.

    Example:

    >>> from keras import ops
    >>> y = add_bias(ops.zeros((1, 2, 1, 2)), ops.convert_to_tensor([1.0, 2.0]),
    ...              "channels_first")
    >>> ops.convert_to_numpy(y)[0, :, 0, :].tolist()
    [[1.0, 1.0], [2.0, 2.0]]
    """
    return _backend.bias_add(outputs, ops.cast(bias, outputs.dtype), data_format)
