"""TensorFlow's convolutions of channels-last data, on every CPU, and the bias add.

TensorFlow's CPU kernels accept less than the convolution they compute, and
how much less depends on the machine: without oneDNN (the default on most
CPUs, or ``TF_ENABLE_ONEDNN_OPTS=0``) ``DepthwiseConv2dNative`` takes only
equal row and column strides and returns uninitialised memory as the kernel
gradient of a batch with no examples; with oneDNN the convolutions return a
batch with no examples in the input's shape. Grouped 3-D convolutions run
only under XLA, and slowly. Each function here computes the convolution it
names on every kernel set, exactly (``docs/platforms.md``; the versions
these were seen with, and what the workarounds cost: ``docs/performance.md``,
"Keras and TensorFlow notes").
"""

import functools

import keras
import tensorflow as tf
from keras import ops

from channelconv._backend import generic
from channelconv._backend.tensorflow import phased


def conv(inputs, kernel, strides, padding, dilation_rate):
    """``keras.ops.conv`` on channels-last inputs, right for empty batches too."""
    outputs = generic.conv(inputs, kernel, strides, padding, dilation_rate)
    return _empty_batch_shaped(
        outputs, inputs, kernel, strides, padding, dilation_rate, kernel.shape[-1])


def depthwise_conv(inputs, kernel, strides, padding, dilation_rate, unequal_strides="auto"):
    """A depthwise convolution of channels-last inputs, any rank and strides.

    In 2-D, with equal strides, ``keras.ops.depthwise_conv``. With unequal
    strides, the same where TensorFlow's kernel for the dtype takes them
    (``unequal_strides="auto"`` and :func:`native_unequal_strides`, or
    ``"native"``), otherwise (or with ``"rewrite"``) the equal-stride
    rewrite of :func:`channelconv._backend.tensorflow.phased.depthwise_conv`.
    In 3-D, a sum over the depth taps of 2-D depthwise convolutions
    (:func:`_depth_tap_sum`), where Keras runs a grouped ``Conv3D``.
    Arguments as for ``channelconv._backend.depthwise_conv``.
    """
    if len(strides) == 2 and inputs.shape[0] in (None, 0):
        kernel = _zero_gradient_for_no_examples(kernel, ops.shape(inputs)[0])
    if len(strides) == 3:
        return _depth_tap_sum(
            inputs, kernel, tuple(strides), padding, tuple(dilation_rate), unequal_strides)
    if len(set(strides)) == 1 or unequal_strides == "native" or (
        unequal_strides == "auto"
        and native_unequal_strides(keras.backend.standardize_dtype(inputs.dtype))
    ):
        outputs = generic.depthwise_conv(inputs, kernel, strides, padding, dilation_rate)
        return _empty_batch_shaped(
            outputs, inputs, kernel, strides, padding, dilation_rate,
            kernel.shape[-2] * kernel.shape[-1])
    return phased.depthwise_conv(inputs, kernel, tuple(strides), padding)


def bias_add(outputs, bias, data_format):
    """``tf.nn.bias_add`` with the data format stated, not guessed from the sizes.

    ``keras.ops.add`` on TensorFlow guesses the channel axis of a
    bias-shaped operand from the sizes alone (``docs/performance.md``,
    "Keras and TensorFlow notes"); ``tf.nn.bias_add`` is told it.
    """
    tf_format = "N...C" if data_format == "channels_last" else "NC..."
    return tf.nn.bias_add(outputs, bias, data_format=tf_format)


@functools.lru_cache(maxsize=None)
def native_unequal_strides(dtype="float32"):
    """Whether TensorFlow's depthwise kernels for ``dtype`` take unequal strides.

    oneDNN's do, TensorFlow's own CPU kernels do not, and which of the two
    runs depends on the dtype too (with oneDNN on, float16 still runs on
    TensorFlow's own kernel). The kernels are asked once per process and
    dtype, forward and backward, on a 3x3 input, eagerly and on the default
    device, so that the native operation is used wherever it runs (what it
    saves: ``docs/platforms.md``).
    """
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


def _empty_batch_shaped(outputs, inputs, kernel, strides, padding, dilation_rate, channels):
    """``outputs`` of a convolution, in the right shape for an empty batch.

    With oneDNN, TensorFlow's CPU convolutions (``Conv2D``,
    ``DepthwiseConv2dNative``, fused with a bias or not) return an input
    with no examples unchanged, in the input's shape, where the output's is
    due; the next op fails or passes the wrong shape on. An empty batch is a
    normal one under ``tf.distribute`` (a replica's share of the last, short
    batch). Where the batch may be empty (its size is 0 or unknown), the
    output is reshaped to the convolution's output shape, computed from the
    input's and the kernel's, with the batch left to the reshape: the same
    tensor for any other batch (no copy), the right empty one for none.
    TensorFlow's own kernels (oneDNN off, and the phased rewrite of unequal
    depthwise strides, which runs only on them) compute empty batches right.
    Not fixed here: in a traced graph whose spatial sizes are known, Grappler
    removes this reshape as an identity (``docs/guarantees.md``, "What is not
    covered").
    """
    if inputs.shape[0] not in (None, 0):
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
    """``kernel``, whose gradient is exactly zero when ``batch`` is 0.

    TensorFlow's own ``DepthwiseConv2dNativeBackpropFilter`` (oneDNN off)
    returns uninitialised memory for a batch with no examples: under
    ``tf.distribute`` a replica with an empty share of the last batch would
    add it to the others' gradients. The gradient is selected (not
    multiplied, which keeps a NaN) to zero then.
    """

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


def _depth_tap_sum(inputs, kernel, strides, padding, dilation_rate, unequal_strides):
    """A 3-D depthwise convolution as 2-D ones: one per tap along the depth.

    Output frame ``i`` is the sum over depth taps ``a`` of input frame ``i *
    stride + a * dilation`` (after the depth padding) convolved, depthwise in
    2-D, with ``kernel[a]``. All output frames of one tap are one 2-D
    depthwise convolution, on the strided slice of the input's frames
    folded into the batch. On TensorFlow's CPU this runs the native
    depthwise kernel, where the grouped ``Conv3D`` that Keras uses needs
    XLA (what that costs: ``docs/performance.md``, "1-D and 3-D").
    """
    taps, depth_stride, depth_dilation = kernel.shape[0], strides[0], dilation_rate[0]
    span = (taps - 1) * depth_dilation + 1
    shape = ops.shape(inputs)
    before, after = phased.padding_of(shape[1], span, depth_stride, padding)
    if padding == "same":
        inputs = ops.pad(inputs, [(0, 0), (before, after), (0, 0), (0, 0), (0, 0)])
    out_depth = (shape[1] + before + after - span) // depth_stride + 1
    total = None
    for tap in range(taps):
        start = tap * depth_dilation
        frames = inputs[:, start : start + (out_depth - 1) * depth_stride + 1 : depth_stride]
        folded = ops.reshape(frames, (-1, shape[2], shape[3], shape[4]))
        y = depthwise_conv(
            folded, kernel[tap], strides[1:], padding, dilation_rate[1:], unequal_strides)
        total = y if total is None else total + y
    out = ops.shape(total)
    return ops.reshape(total, (-1, out_depth, out[1], out[2], out[3]))
