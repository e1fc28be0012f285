"""``channelconv._routing`` and ``ops.convolve`` on every CPU, against NumPy.

The rewrites of :mod:`channelconv._routing` (channels-first through
channels-last, unequal depthwise strides through one equal-stride
convolution) must compute exactly the convolution they replace, for every
stride combination and size parity, with static and unknown spatial sizes,
eagerly, in ``tf.function`` and under XLA. CI runs this file with oneDNN off
and on.
"""

import functools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from channelconv import ChannelConv2D, _backend
from channelconv import _ops as ops
from channelconv import _routing as routing
from harness import numpy_conv, onednn_enabled, to_numpy

pytestmark = pytest.mark.numerics

ATOL = RTOL = 1e-5
MODES = {
    "eager": lambda fn: fn,
    "function": tf.function,
    "xla": lambda fn: tf.function(fn, jit_compile=True),
}


def _data(shape, kernel_shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype("float32")
    kernel = rng.normal(size=kernel_shape).astype("float32")
    return x, kernel


def test_onednn_setting_took_effect():
    """CI's two passes really run different kernels."""
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if setting not in ("0", "1"):
        pytest.skip("TF_ENABLE_ONEDNN_OPTS is not set: the machine's default")
    assert onednn_enabled() == (setting == "1")


STRIDES = [(2, 1), (1, 2), (3, 1), (1, 3), (3, 2), (2, 3)]
SHAPES = [(2, 9, 7, 3), (2, 10, 8, 3), (1, 4, 5, 2)]


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", STRIDES, ids=lambda s: f"strides{s[0]}x{s[1]}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[2]}")
@pytest.mark.parametrize("kernel_size", [(3, 2), (1, 1), (2, 4)], ids=lambda k: f"k{k[0]}x{k[1]}")
@pytest.mark.parametrize("path", ["dispatched", "rewritten"])
def test_depthwise_unequal_strides_match_numpy(path, kernel_size, shape, strides, padding):
    """``dispatched``: whatever runs here (native with oneDNN); ``rewritten``:
    the equal-stride rewrite itself, whatever the kernels."""
    x, kernel = _data(shape, kernel_size + (shape[-1], 2))
    choice = "auto" if path == "dispatched" else "rewrite"
    y = routing.depthwise_conv(x, kernel, strides, padding, (1, 1), unequal_strides=choice)
    expected = numpy_conv(x, kernel, "concat", strides, padding)
    assert tuple(y.shape) == expected.shape
    np.testing.assert_allclose(to_numpy(y), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("mode", MODES)
def test_depthwise_unequal_strides_with_unknown_spatial_sizes(mode):
    signature = [tf.TensorSpec((None, None, None, 3), tf.float32)]
    kernel = _data((1,), (3, 3, 3, 2))[1]

    def run(x):
        return routing.depthwise_conv(x, kernel, (2, 1), "same", (1, 1))

    fn = tf.function(run, input_signature=signature, jit_compile=mode == "xla")
    for shape in ((2, 9, 7, 3), (1, 6, 4, 3)):
        x = _data(shape, (1,), seed=1)[0]
        expected = numpy_conv(x, kernel, "concat", (2, 1), "same")
        np.testing.assert_allclose(to_numpy(fn(x)), expected, atol=ATOL, rtol=RTOL)


@functools.lru_cache(maxsize=None)
def _convolve_expected(reduction, strides=(2, 1), padding="same"):
    """Input, kernel, upstream gradient; NumPy's output and both gradients.

    The loss ``sum(y * upstream)`` is linear in the kernel and in the input,
    so each gradient entry is the loss of the convolution with a one-hot
    kernel (or input): NumPy computes it directly from the definition.
    """
    x, kernel = _data((2, 8, 7, 3), (3, 2, 3, 4))
    y = numpy_conv(x, kernel, reduction, strides, padding)
    upstream = np.random.default_rng(2).normal(size=y.shape)

    def loss(x, kernel):
        return np.sum(numpy_conv(x, kernel, reduction, strides, padding) * upstream)

    d_kernel = np.zeros(kernel.shape)
    for index in np.ndindex(kernel.shape):
        d_kernel[index] = loss(x, _one_hot(kernel.shape, index))
    d_x = np.zeros(x.shape)
    for index in np.ndindex(x.shape[1:]):  # one batch entry: the rest is alike
        d_x[(0,) + index] = loss(_one_hot(x.shape, (0,) + index), kernel)
    return x, kernel, upstream, y, d_x[:1], d_kernel


def _one_hot(shape, index):
    basis = np.zeros(shape)
    basis[index] = 1.0
    return basis


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("implementation", ["fused", "per_channel"])
@pytest.mark.parametrize("reduction", ["sum", "concat"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_convolve_forward_and_backward(data_format, reduction, implementation, mode):
    """Output and both gradients against NumPy, with strides (2, 1)."""
    x, kernel, upstream, y_ref, dx_ref, dk_ref = _convolve_expected(reduction)
    to_format = lambda a: a  # noqa: E731
    if data_format == "channels_first":
        to_format = lambda a: np.transpose(a, (0, 3, 1, 2))  # noqa: E731

    def run(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = ops.convolve(
                x, kernel, reduction, implementation, strides=(2, 1),
                padding="same", data_format=data_format,
            )
            loss = tf.reduce_sum(y * to_format(upstream).astype("float32"))
        return (y, *tape.gradient(loss, [x, kernel]))

    y, dx, dk = MODES[mode](run)(tf.constant(to_format(x)), tf.constant(kernel))
    np.testing.assert_allclose(to_numpy(y), to_format(y_ref), atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(to_numpy(dk), dk_ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(to_numpy(dx)[:1], to_format(dx_ref), atol=1e-4, rtol=1e-4)


def test_channels_first_is_transposed_once_around_the_whole_computation():
    """One transpose in, one out, whatever the implementation."""
    x, kernel = _data((1, 3, 6, 6), (3, 3, 3, 4))

    @tf.function
    def run(x):
        return ops.convolve(
            x, kernel, "sum", "per_channel", data_format="channels_first"
        )

    graph = run.get_concrete_function(tf.constant(x)).graph
    transposes = [op for op in graph.get_operations() if op.type == "Transpose"]
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"]
    assert len(transposes) == 2 and len(convs) == 3
    assert all(op.get_attr("data_format") == b"NHWC" for op in convs)


@pytest.mark.parametrize("op", [routing.conv, routing.depthwise_conv])
@pytest.mark.parametrize("strides", [(2, 1), (2, 2)])
def test_strides_with_dilation_are_refused(op, strides):
    x, kernel = _data((1, 6, 6, 2), (3, 3, 2, 1))
    match = rf"strides=\({strides[0]}, {strides[1]}\) and dilation_rate=\(1, 2\)"
    with pytest.raises(ValueError, match=match):
        op(x, kernel, strides, "valid", (1, 2))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_native_unequal_strides_only_with_onednn(dtype):
    """TensorFlow's own CPU depthwise kernel refuses unequal strides, oneDNN's
    float32 kernel takes them. (Whether oneDNN runs float16 and bfloat16
    depends on the CPU; either way the routed result is tested below.)"""
    if not onednn_enabled():
        assert not _backend.native_unequal_strides(dtype)
    elif dtype == "float32":
        assert _backend.native_unequal_strides(dtype)
    else:
        pytest.skip(f"whether oneDNN runs {dtype} depends on the CPU")


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    "policy, tolerance", [("mixed_float16", 1e-2), ("mixed_bfloat16", 6e-2)]
)
def test_routed_layer_under_mixed_precision(policy, tolerance, data_format):
    """The rewrites keep the compute dtype and the values, and train."""
    layer = ChannelConv2D(
        3, 3, frozen=[(0, 1)], reduction="concat", strides=(2, 1), padding="same",
        dtype=policy, data_format=data_format,
        frozen_initializer=keras.initializers.RandomNormal(seed=1),
    )
    x = _data((2, 9, 7, 4), (1,))[0]
    if data_format == "channels_first":
        x = np.transpose(x, (0, 3, 1, 2))
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    frozen = to_numpy(layer.frozen_kernels).copy()
    y = model(x)
    assert y.dtype == policy.split("_")[1]
    expected = numpy_conv(
        x, to_numpy(layer.kernel), "concat", (2, 1), "same",
        data_format=data_format, bias=to_numpy(layer.bias),
    )
    np.testing.assert_allclose(to_numpy(y).astype("float32"), expected, atol=tolerance, rtol=tolerance)
    model.fit(x, np.zeros(y.shape, "float32"), verbose=0)
    np.testing.assert_array_equal(to_numpy(layer.frozen_kernels), frozen)
