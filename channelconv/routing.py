"""How a convolution is run on the backend at hand: the one place that knows.

TensorFlow's CPU kernels accept less than the convolution they compute, and
how much less depends on the machine: without oneDNN (the default on most
CPUs, or ``TF_ENABLE_ONEDNN_OPTS=0``) ``Conv2D`` takes only NHWC inputs and
``DepthwiseConv2dNative`` only equal row and column strides; with oneDNN
both work. Keras's own ``Conv2D`` and ``DepthwiseConv2D`` fail on such a
CPU. Here every convolution of channelconv goes through :func:`conv` and
:func:`depthwise_conv` on channels-last data, which rewrite what a
kernel may refuse into what every kernel accepts, computing the same
function:

- ``channels_first`` inputs are transposed to channels-last once, around the
  whole computation (one transpose in, one out, whatever the
  implementation; :func:`to_channels_last`, :func:`from_channels_last`), on
  every machine, so that the same graph runs with oneDNN on and off,
  eagerly, in ``tf.function`` and under XLA.
- A depthwise convolution with unequal strides runs as one depthwise
  convolution with equal strides ``S = lcm(strides)``: along each axis whose
  stride ``s`` is smaller than ``S``, the ``S / s`` output phases become
  ``S / s`` shifted copies of the kernel in the multiplier axis, and the
  outputs are interleaved back (see :func:`depthwise_conv`).

Every rewrite is exact (the same products, plus products with zero taps,
summed up to float rounding) and is checked against NumPy and Keras in
``tests/test_numerics.py``, ``tests/test_gradients.py`` and
``tests/test_routing.py`` with oneDNN on and off. The strides rewrite is
TensorFlow's alone: other backends take unequal strides natively.
"""

import functools
import math

import keras
from keras import ops

from channelconv import _backend


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
    """``keras.ops.conv`` on channels-last inputs.

    Strides > 1 are incompatible with dilation > 1, as for Keras's layers.

    Example:

    >>> import numpy as np
    >>> tuple(conv(np.ones((1, 5, 5, 2), "float32"), np.ones((3, 3, 2, 4), "float32"),
    ...            (2, 1), "valid", (1, 1)).shape)
    (1, 2, 3, 4)
    """
    _check_strides_and_dilation(strides, dilation_rate)
    outputs = ops.conv(inputs, kernel, strides, padding, "channels_last", dilation_rate)
    return _empty_batch_shaped(
        outputs, inputs, kernel, strides, padding, dilation_rate, kernel.shape[-1])


def depthwise_conv(inputs, kernel, strides, padding, dilation_rate):
    """``keras.ops.depthwise_conv`` on channels-last inputs, any rank and strides.

    Keras's depthwise op takes 1-D and 2-D inputs. A 3-D depthwise
    convolution is a grouped convolution with one group per input channel
    (``keras.ops.conv`` with the kernel reshaped to ``kernel_size + (1,
    channels * multiplier)``, output ``c * multiplier + f``, the same order),
    which is what Keras's ``Conv3D(groups=channels)`` runs, and what runs
    here on other backends. TensorFlow's CPU kernels refuse grouped 3-D
    convolutions and XLA runs them slowly, so on TensorFlow it is a sum over
    the depth taps of 2-D depthwise convolutions (:func:`_depth_tap_sum`).

    In 2-D, with equal strides, or on a backend other than TensorFlow, this is
    ``keras.ops.depthwise_conv``. With unequal strides on TensorFlow (which
    ``DepthwiseConv2dNative`` refuses without oneDNN), let ``S`` be the
    least common multiple of the strides and ``P = S / s`` the number of
    phases along an axis of stride ``s``. Output position ``m * P + q``
    along that axis is output ``m`` of a stride-``S`` convolution with the
    kernel shifted by ``q * s`` taps. The ``P`` shifted kernels (for 2-D,
    the product of both axes' phases) are stacked in the multiplier axis, so
    that one depthwise convolution with strides ``(S, S)`` computes every
    phase, and a reshape and transpose interleave the phases into the
    output. "same" padding is made explicit first, with TensorFlow's rule
    for the original strides. For strides ``(2, 1)`` and a 3x3 kernel, the
    shifted kernel is 3x4: a third more multiply-adds than the native
    kernel, on no copy of the input.

    Args:
        inputs: channels-last tensor ``(batch, *spatial, channels)``.
        kernel: ``kernel_size + (channels, multiplier)``.
        strides: tuple of ints, one per spatial axis.
        padding: ``"valid"`` or ``"same"``.
        dilation_rate: tuple of ints (strides > 1 are incompatible with
            dilation > 1, as for Keras's layers).

    Returns:
        ``(batch, *out_spatial, channels * multiplier)``.

    Example:

    >>> import numpy as np
    >>> x = np.arange(2 * 5 * 4 * 2, dtype="float32").reshape(2, 5, 4, 2)
    >>> k = np.random.default_rng(0).normal(size=(3, 2, 2, 3)).astype("float32")
    >>> y = depthwise_conv(x, k, (2, 1), "same", (1, 1))
    >>> tuple(y.shape)
    (2, 3, 4, 6)
    >>> # output (i, j), channel c * 3 + f is sum_ab x[2i + a - 1, j + b, c] k[a, b, c, f]
    >>> xp = np.pad(x, ((0, 0), (1, 1), (0, 1), (0, 0)))
    >>> direct = sum(xp[:, a:a + 5:2, b:b + 4, :, None] * k[a, b]
    ...              for a in range(3) for b in range(2)).reshape(2, 3, 4, 6)
    >>> bool(np.allclose(y, direct, atol=1e-4))
    True
    """
    _check_strides_and_dilation(strides, dilation_rate)
    if len(strides) == 2 and _backend.is_tensorflow() and inputs.shape[0] in (None, 0):
        kernel = _zero_gradient_for_no_examples(kernel, ops.shape(inputs)[0])
    if len(strides) == 3:
        if _backend.is_tensorflow():
            return _depth_tap_sum(inputs, kernel, tuple(strides), padding, tuple(dilation_rate))
        grouped = ops.reshape(kernel, tuple(kernel.shape[:3]) + (1, -1))
        return ops.conv(inputs, grouped, strides, padding, "channels_last", dilation_rate)
    if (
        len(set(strides)) == 1
        or not _backend.is_tensorflow()
        or _native_unequal_strides(keras.backend.standardize_dtype(inputs.dtype))
    ):
        outputs = ops.depthwise_conv(
            inputs, kernel, strides, padding, "channels_last", dilation_rate
        )
        return _empty_batch_shaped(
            outputs, inputs, kernel, strides, padding, dilation_rate,
            kernel.shape[-2] * kernel.shape[-1])
    return _phased_depthwise_conv(inputs, kernel, tuple(strides), padding)


def _empty_batch_shaped(outputs, inputs, kernel, strides, padding, dilation_rate, channels):
    """``outputs`` of a TensorFlow convolution, in the right shape for an empty batch.

    With oneDNN, TensorFlow's CPU convolutions (``Conv2D``,
    ``DepthwiseConv2dNative``, fused with a bias or not) return an input
    with no examples unchanged, in the input's shape (TensorFlow 2.21),
    where the output's is due; the next op fails or passes the wrong shape
    on. An empty batch is a normal one under ``tf.distribute`` (a replica's
    share of the last, short batch). Where the batch may be empty (its size
    is 0 or unknown), the output is reshaped to the convolution's output
    shape, computed from the input's and the kernel's, with the batch left
    to the reshape: the same tensor for any other batch (no copy; measured
    within noise of none, 0.97 to 1.03, in training and inference with
    oneDNN on and off), the right empty one for none.
    TensorFlow's own kernels (oneDNN off, and the phased rewrite of unequal
    depthwise strides, which runs only on them) and the other backends
    compute empty batches right. Not fixed here: in a traced graph whose
    spatial sizes are known, Grappler removes this reshape as an identity
    (``docs/guarantees.md``, "What is not covered").
    """
    if not _backend.is_tensorflow() or inputs.shape[0] not in (None, 0):
        return outputs
    sizes = inputs.shape[1:-1]
    if None in sizes:
        sizes = ops.shape(inputs)[1:-1]
    spatial = [
        _output_size(size, k, s, padding, d)
        for size, k, s, d in zip(sizes, kernel.shape[:-2], strides, dilation_rate)
    ]
    return ops.reshape(outputs, (-1, *spatial, channels))


def _zero_gradient_for_no_examples(kernel, batch):
    """``kernel``, whose gradient is exactly zero when ``batch`` is 0 (TensorFlow).

    TensorFlow's own ``DepthwiseConv2dNativeBackpropFilter`` (oneDNN off)
    returns uninitialised memory for a batch with no examples (NaN and
    garbage, TensorFlow 2.21): under ``tf.distribute`` a replica with an
    empty share of the last batch would add it to the others' gradients. The
    gradient is selected (not multiplied, which keeps a NaN) to zero then.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def identity(kernel):
        def grad(upstream):
            return tf.where(batch > 0, upstream, tf.zeros_like(upstream))

        return tf.identity(kernel), grad

    return identity(kernel)


def _output_size(size, kernel_size, stride, padding, dilation):
    """The output length along one axis (``size`` an int or a scalar tensor)."""
    if padding == "same":
        return (size + stride - 1) // stride
    return (size - dilation * (kernel_size - 1) + stride - 1) // stride


def _depth_tap_sum(inputs, kernel, strides, padding, dilation_rate):
    """A 3-D depthwise convolution as 2-D ones: one per tap along the depth.

    Output frame ``i`` is the sum over depth taps ``a`` of input frame ``i *
    stride + a * dilation`` (after the depth padding) convolved, depthwise in
    2-D, with ``kernel[a]``. All output frames of one tap are one 2-D
    depthwise convolution, on the strided slice of the input's frames
    folded into the batch. On TensorFlow's CPU this runs the native
    depthwise kernel, where the grouped ``Conv3D`` that Keras uses needs
    XLA and measured 6 to 28 times slower without ``jit_compile``
    (``docs/performance.md``, "1-D and 3-D").
    """
    taps, depth_stride, depth_dilation = kernel.shape[0], strides[0], dilation_rate[0]
    span = (taps - 1) * depth_dilation + 1
    shape = ops.shape(inputs)
    before, after = _padding(shape[1], span, depth_stride, padding)
    if padding == "same":
        inputs = ops.pad(inputs, [(0, 0), (before, after), (0, 0), (0, 0), (0, 0)])
    out_depth = (shape[1] + before + after - span) // depth_stride + 1
    total = None
    for tap in range(taps):
        start = tap * depth_dilation
        frames = inputs[:, start : start + (out_depth - 1) * depth_stride + 1 : depth_stride]
        folded = ops.reshape(frames, (-1, shape[2], shape[3], shape[4]))
        y = depthwise_conv(folded, kernel[tap], strides[1:], padding, dilation_rate[1:])
        total = y if total is None else total + y
    out = ops.shape(total)
    return ops.reshape(total, (-1, out_depth, out[1], out[2], out[3]))


def _check_strides_and_dilation(strides, dilation_rate):
    """Refuses strides > 1 with dilation > 1, as Keras's conv layers do."""
    if max(strides) > 1 and max(dilation_rate) > 1:
        raise ValueError(
            "`strides > 1` is not supported together with `dilation_rate > 1`. "
            f"Received: strides={tuple(strides)} and "
            f"dilation_rate={tuple(dilation_rate)}."
        )


@functools.lru_cache(maxsize=None)
def _native_unequal_strides(dtype="float32"):
    """Whether TensorFlow's depthwise kernels for ``dtype`` take unequal strides.

    oneDNN's do, TensorFlow's own CPU kernels do not, and which of the two
    runs depends on the dtype too (with oneDNN on, float16 still runs on
    TensorFlow's own kernel). The kernels are asked once per process and
    dtype, forward and backward, on a 3x3 input, eagerly and on the default
    device, so that the native operation is used wherever it runs (it is up
    to 3 times faster than the rewrite, see ``docs/platforms.md``).
    """
    import tensorflow as tf

    with tf.init_scope():
        x, kernel = tf.zeros((1, 3, 3, 1), dtype), tf.zeros((1, 1, 1, 1), dtype)
        try:
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = tf.nn.depthwise_conv2d(x, kernel, (1, 2, 1, 1), "VALID")
            tape.gradient(y, [x, kernel])
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
    return True


def _phased_depthwise_conv(inputs, kernel, strides, padding):
    """:func:`depthwise_conv` for unequal strides: one conv at stride ``lcm``."""
    kernel_size = tuple(kernel.shape[:-2])
    channels, multiplier = kernel.shape[-2:]
    spatial = ops.shape(inputs)[1:-1]
    step = math.lcm(*strides)
    phases = tuple(step // s for s in strides)
    # The extent of a kernel shifted by up to (phases - 1) * stride taps.
    extents = tuple(k + (p - 1) * s for k, p, s in zip(kernel_size, phases, strides))
    pads, out_sizes = [], []
    for size, k, s, p, e in zip(spatial, kernel_size, strides, phases, extents):
        before, after = _padding(size, k, s, padding)
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


def _padded_depthwise_conv(inputs, kernel, stride, pads):
    """A depthwise conv with equal strides after zero ``pads`` of the input.

    With static pads, TensorFlow's explicit padding (no padded copy of the
    input, forward or backward); with pads known only at run time, a pad.
    """
    if all(isinstance(v, int) for pad in pads for v in pad):
        import tensorflow as tf

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


def _padding(size, kernel_size, stride, padding):
    """``(before, after)`` of TensorFlow's padding along one axis."""
    if padding == "valid":
        return 0, 0
    out_size = (size + stride - 1) // stride
    total = _maximum((out_size - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def _maximum(a, b):
    """``max`` of two sizes, a Python int when both are (static shapes)."""
    if isinstance(a, int) and isinstance(b, int):
        return max(a, b)
    return ops.maximum(a, b)
