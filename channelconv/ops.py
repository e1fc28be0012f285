"""Kernel assembly and the two convolution implementations, as pure functions.

The layer keeps its kernels in two compact variables (trainable and frozen);
:func:`assembly_index` and :func:`assemble_kernel` turn them into the full
kernel of shape ``kernel_size + (in_channels, filters)``, and
:func:`convolve` applies it with either reduction and either implementation.
"""

import functools

import numpy as np
import tensorflow as tf
from keras import ops

from channelconv import routing

REDUCTIONS = ("sum", "concat")
IMPLEMENTATIONS = ("fused", "per_channel")


def assembly_index(frozen_mask):
    """Where each kernel of the full kernel comes from.

    The kernels are numbered ``c * filters + f`` (the order of a kernel of
    shape ``(..., in_channels, filters)`` reshaped to ``(..., -1)``).

    Args:
        frozen_mask: boolean array of shape ``(in_channels, filters)``.

    Returns:
        ``(trainable_positions, frozen_positions, index)``: the kernel numbers
        held by the trainable and the frozen variable, in storage order, and
        the int32 ``index`` with
        ``full = take(concat([trainable, frozen], -1), index, axis=-1)``;
        ``index`` is ``None`` when that is the identity.

    Example:

    >>> t, f, index = assembly_index(np.array([[False, True], [False, False]]))
    >>> t.tolist(), f.tolist(), index.tolist()
    ([0, 2, 3], [1], [0, 3, 1, 2])
    """
    flat = np.asarray(frozen_mask, dtype=bool).reshape(-1)
    trainable_positions = np.flatnonzero(~flat)
    frozen_positions = np.flatnonzero(flat)
    order = np.concatenate([trainable_positions, frozen_positions])
    index = np.argsort(order).astype(np.int32)
    if np.array_equal(index, np.arange(flat.size)):
        index = None
    return trainable_positions, frozen_positions, index


def assemble_kernel(trainable, frozen, index, kernel_shape):
    """Builds the full kernel from the compact trainable and frozen kernels.

    Args:
        trainable: tensor of shape ``kernel_size + (n_trainable,)``.
        frozen: tensor of shape ``kernel_size + (n_frozen,)``.
        index: the ``index`` of :func:`assembly_index`.
        kernel_shape: ``kernel_size + (in_channels, filters)``.

    Returns:
        The full kernel, of shape ``kernel_shape``. When ``index`` is
        ``None`` it is a concatenation; otherwise one permutation (a gather)
        whose gradient is the inverse permutation, i.e. one gather of the
        incoming gradient per input, exact (no summation). Kernels of at
        least :data:`ROW_LAYOUT_MIN_SIZE` elements are permuted one row per
        kernel (transpose, gather, transpose), smaller ones element-wise:
        see ``docs/performance.md`` for the measurements behind this.

    Example:

    >>> t, f, index = assembly_index(np.array([[False, True]]))
    >>> k = assemble_kernel(tf.ones((1, 1, 1)), tf.zeros((1, 1, 1)), index,
    ...                     (1, 1, 1, 2))
    >>> k.numpy().reshape(-1).tolist()
    [1.0, 0.0]
    """
    if index is not None:
        return _permuted_kernel(trainable, frozen, index, kernel_shape)
    if frozen.shape[-1] == 0:
        stacked = trainable
    else:
        stacked = tf.concat([trainable, tf.cast(frozen, trainable.dtype)], axis=-1)
    return tf.reshape(stacked, kernel_shape)


#: Kernels with at least this many elements (``prod(kernel_shape)``) are
#: assembled with a gather of whole kernels (rows of ``prod(kernel_size)``
#: values, between two transposes) instead of a gather of single values.
#: TensorFlow's CPU gather costs a few ns per gathered slice: on 2 CPU cores
#: (TF 2.21) the element-wise gather is cheaper below ~36k elements (a
#: 3x3x64x64 kernel), the row gather about 2.5x cheaper at 3x3x256x64.
ROW_LAYOUT_MIN_SIZE = 32768


def _permuted_kernel(trainable, frozen, index, kernel_shape):
    """``assemble_kernel`` for a non-identity ``index``, with its gradient.

    Autodiff of ``tf.gather`` would scatter-add the incoming gradient
    (transposes and an ``UnsortedSegmentSum`` for a gather along the last
    axis, then the slices of the concatenation); ``index`` is a permutation,
    so the gradient is a plain gather at the inverse positions instead.
    """
    trainable = tf.convert_to_tensor(trainable)
    frozen = tf.convert_to_tensor(frozen)
    inverse = np.empty_like(index)
    inverse[index] = np.arange(index.size, dtype=index.dtype)
    n_trainable = trainable.shape[-1]
    trainable_positions, frozen_positions = inverse[:n_trainable], inverse[n_trainable:]
    by_rows = int(np.prod(kernel_shape)) >= ROW_LAYOUT_MIN_SIZE

    @tf.custom_gradient
    def permute(t, f):
        stacked = tf.concat([t, tf.cast(f, t.dtype)], axis=-1)
        full = tf.reshape(_take_kernels(stacked, index, by_rows), kernel_shape)

        def grad(upstream):
            flat = tf.reshape(upstream, stacked.shape)
            d_frozen = _take_kernels(flat, frozen_positions, by_rows)
            return (
                _take_kernels(flat, trainable_positions, by_rows),
                tf.cast(d_frozen, f.dtype),
            )

        return full, grad

    return permute(trainable, frozen)


def _take_kernels(kernels, positions, by_rows):
    """``kernels[..., positions]`` for ``kernels`` of shape ``kernel_size + (n,)``."""
    if not by_rows:
        return tf.gather(kernels, positions, axis=-1)
    spatial = tuple(kernels.shape[:-1])
    rows = tf.transpose(tf.reshape(kernels, (-1, kernels.shape[-1])))
    taken = tf.gather(rows, positions, axis=0)
    return tf.reshape(tf.transpose(taken), spatial + (len(positions),))


def split_kernel(kernel, trainable_positions, frozen_positions):
    """The inverse of :func:`assemble_kernel`: full kernel to compact parts.

    Example:

    >>> t, f, _ = assembly_index(np.array([[False, True]]))
    >>> parts = split_kernel(np.array([[[[1.0, 2.0]]]]), t, f)
    >>> [p.tolist() for p in parts]
    [[[[1.0]]], [[[2.0]]]]
    """
    kernel = np.asarray(kernel)
    flat = kernel.reshape(kernel.shape[:-2] + (-1,))
    return flat[..., trainable_positions], flat[..., frozen_positions]


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

    Runs on every CPU, with oneDNN on or off, for every option: the
    convolutions go through :mod:`channelconv.routing`, which rewrites what
    a backend kernel refuses (``channels_first`` on TensorFlow's CPU kernels,
    unequal depthwise strides without oneDNN) into what it accepts.

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
        padding, data_format: as for ``Conv2D``.

    Returns:
        The output tensor (no bias, no activation).

    Example:

    >>> x = tf.ones((1, 4, 4, 3))
    >>> k = tf.ones((3, 3, 3, 2))
    >>> convolve(x, k, "sum").shape
    TensorShape([1, 2, 2, 2])
    >>> convolve(x, k, "concat", "per_channel").shape
    TensorShape([1, 2, 2, 6])
    >>> convolve(tf.ones((1, 3, 5, 4)), k, "concat", strides=(2, 1),
    ...          data_format="channels_first").shape
    TensorShape([1, 6, 2, 2])
    """
    rank = len(kernel.shape) - 2
    conv_args = dict(
        strides=_tuple(strides, rank),
        padding=padding,
        dilation_rate=_tuple(dilation_rate, rank),
    )
    inputs = routing.to_channels_last(inputs, data_format)
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


def _tuple(value, rank):
    return (value,) * rank if isinstance(value, int) else tuple(value)


def add_bias(outputs, bias, data_format="channels_last"):
    """Adds a per-channel ``bias`` to the output of a convolution.

    ``tf.nn.bias_add`` with the data format stated explicitly.
    ``keras.ops.add`` is not used: on the TensorFlow backend it guesses the
    channel axis of a bias-shaped operand from the sizes alone and, with
    ``channels_first``, adds the bias along the last spatial axis whenever
    that axis has as many entries as there are channels (Keras 3.15).

    Args:
        outputs: tensor of rank >= 3 in ``data_format``.
        bias: vector with one entry per output channel; cast to
            ``outputs.dtype``.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        ``outputs`` plus ``bias`` broadcast along the channel axis.

    Example:

    >>> y = add_bias(tf.zeros((1, 2, 1, 2)), tf.constant([1.0, 2.0]),
    ...              "channels_first")
    >>> y.numpy()[0, :, 0, :].tolist()
    [[1.0, 1.0], [2.0, 2.0]]
    """
    tf_format = "N...C" if data_format == "channels_last" else "NC..."
    bias = ops.cast(bias, outputs.dtype)
    return tf.nn.bias_add(outputs, bias, data_format=tf_format)
