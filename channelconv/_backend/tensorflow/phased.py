"""A depthwise convolution with unequal strides, as one with equal strides.

TensorFlow's own CPU kernel ``DepthwiseConv2dNative`` (oneDNN off) refuses
unequal row and column strides. Let ``S`` be the least common multiple of
the strides and ``P = S / s`` the number of phases along an axis of stride
``s``. Output position ``m * P + q`` along that axis is output ``m`` of a
stride-``S`` convolution with the kernel shifted by ``q * s`` taps. The
``P`` shifted kernels (for 2-D, the product of both axes' phases) are
stacked in the multiplier axis, so that one depthwise convolution with
strides ``(S, S)`` computes every phase, and a reshape and transpose
interleave the phases into the output. "same" padding is made explicit
first, with TensorFlow's rule for the original strides. For strides ``(2,
1)`` and a 3x3 kernel, the shifted kernel is 3x4: a third more multiply-adds
than the native kernel, on no copy of the input. The rewrite is exact (the
same products, plus products with zero taps).
"""

import math

import tensorflow as tf
from keras import ops


def depthwise_conv(inputs, kernel, strides, padding):
    """A 2-D depthwise convolution with any strides, run at stride ``lcm(strides)``.

    Args:
        inputs: channels-last tensor ``(batch, rows, columns, channels)``.
        kernel: ``kernel_size + (channels, multiplier)``.
        strides: tuple of two ints.
        padding: ``"valid"`` or ``"same"``.

    Returns:
        ``(batch, out_rows, out_columns, channels * multiplier)``.

    Example:

    >>> import numpy as np
    >>> x = np.arange(2 * 5 * 4 * 2, dtype="float32").reshape(2, 5, 4, 2)
    >>> k = np.random.default_rng(0).normal(size=(3, 2, 2, 3)).astype("float32")
    >>> y = depthwise_conv(x, k, (2, 1), "same")
    >>> tuple(y.shape)
    (2, 3, 4, 6)
    >>> # output (i, j), channel c * 3 + f is sum_ab x[2i + a - 1, j + b, c] k[a, b, c, f]
    >>> xp = np.pad(x, ((0, 0), (1, 1), (0, 1), (0, 0)))
    >>> direct = sum(xp[:, a:a + 5:2, b:b + 4, :, None] * k[a, b]
    ...              for a in range(3) for b in range(2)).reshape(2, 3, 4, 6)
    >>> bool(np.allclose(y, direct, atol=1e-4))
    True
    """
    kernel_size = tuple(kernel.shape[:-2])
    channels, multiplier = kernel.shape[-2:]
    spatial = ops.shape(inputs)[1:-1]
    step = math.lcm(*strides)
    phases = tuple(step // s for s in strides)
    # The extent of a kernel shifted by up to (phases - 1) * stride taps.
    extents = tuple(k + (p - 1) * s for k, p, s in zip(kernel_size, phases, strides))
    pads, out_sizes = [], []
    for size, k, s, p, e in zip(spatial, kernel_size, strides, phases, extents):
        before, after = padding_of(size, k, s, padding)
        out_size = (size + before + after - k) // s + 1
        length = (out_size + p - 1) // p  # outputs per phase
        # Room for the last phase's shifted kernel: (length - 1) * step + e.
        pads.append((before, _maximum(after, (length - 1) * step + e - size - before)))
        out_sizes.append(out_size)

    shifted = []
    for shift in _phase_shifts(phases, strides):
        widths = [(t, e - k - t) for t, e, k in zip(shift, extents, kernel_size)]
        shifted.append(ops.pad(kernel, widths + [(0, 0), (0, 0)]))
    n_phases = len(shifted)
    stacked = ops.reshape(
        ops.stack(shifted, axis=-2), extents + (channels, n_phases * multiplier)
    )
    outputs = _padded_depthwise_conv(inputs, stacked, step, pads)
    # (batch, L_r, L_c, C, P_r, P_c, F) -> (batch, L_r, P_r, L_c, P_c, C, F)
    lengths = ops.shape(outputs)[1:-1]
    outputs = ops.reshape(outputs, (-1, *lengths, channels, *phases, multiplier))
    outputs = ops.transpose(outputs, (0, 1, 4, 2, 5, 3, 6))
    outputs = ops.reshape(
        outputs,
        (-1, lengths[0] * phases[0], lengths[1] * phases[1], channels * multiplier),
    )
    return outputs[:, : out_sizes[0], : out_sizes[1], :]


def padding_of(size, kernel_size, stride, padding):
    """``(before, after)`` of TensorFlow's padding along one axis.

    ``size`` is an int or a scalar tensor (then so are the results).

    Example:

    >>> padding_of(5, 3, 2, "same"), padding_of(5, 3, 2, "valid")
    ((1, 1), (0, 0))
    """
    if padding == "valid":
        return 0, 0
    out_size = (size + stride - 1) // stride
    total = _maximum((out_size - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def _padded_depthwise_conv(inputs, kernel, stride, pads):
    """A depthwise conv with equal strides after zero ``pads`` of the input.

    With static pads, TensorFlow's explicit padding (no padded copy of the
    input, forward or backward); with pads known only at run time, a pad.
    """
    if all(isinstance(v, int) for pad in pads for v in pad):
        return tf.nn.depthwise_conv2d(
            inputs, kernel, (1, stride, stride, 1), [(0, 0), *pads, (0, 0)]
        )
    inputs = ops.pad(inputs, [(0, 0), *pads, (0, 0)])
    return ops.depthwise_conv(inputs, kernel, stride, "valid", "channels_last")


def _phase_shifts(phases, strides):
    """The kernel shift (in taps, per axis) of every output phase, row-major."""
    shifts = [()]
    for p, s in zip(phases, strides):
        shifts = [shift + (q * s,) for shift in shifts for q in range(p)]
    return shifts


def _maximum(a, b):
    """``max`` of two sizes, a Python int when both are (static shapes)."""
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return ops.maximum(a, b)
