"""ChannelConv2D outputs and initial values against independent references.

References: Keras ``Conv2D`` (``reduction="sum"``) and ``DepthwiseConv2D``
(``reduction="concat"``) loaded with the layer's effective kernel and bias,
and a direct-loop NumPy convolution (:func:`harness.numpy_conv`).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from channelconv.layers.channel_conv2d import ChannelConv2D
from channelconv.mask import random_frozen_mask
from harness import (
    keras_output,
    keras_reference,
    numpy_conv,
    onednn_enabled,
    to_numpy,
)

pytestmark = pytest.mark.numerics

IN_CHANNELS, FILTERS = 3, 4
ATOL = RTOL = 1e-5

# Each option appears in at least one row; every row runs with both
# reductions and both implementations (pruned grid, not a cartesian product).
OPTIONS = [
    ("k1", dict(kernel_size=1)),
    ("k3-same-relu", dict(kernel_size=3, padding="same", activation="relu")),
    ("k2x3-stride2-nobias", dict(kernel_size=(2, 3), strides=2, use_bias=False)),
    (
        "k2x3-stride1x2-same-tanh",
        dict(kernel_size=(2, 3), strides=(1, 2), padding="same", activation="tanh"),
    ),
    ("k3-dil2-nobias", dict(kernel_size=3, dilation_rate=2, use_bias=False)),
    (
        "k2x3-dil2x1-same",
        dict(kernel_size=(2, 3), dilation_rate=(2, 1), padding="SAME"),
    ),
    (
        "cf-k3-stride2-same-relu",
        dict(
            kernel_size=3,
            strides=2,
            padding="same",
            activation="relu",
            data_format="channels_first",
        ),
    ),
    (
        "cf-k2x3-dil2-nobias",
        dict(
            kernel_size=(2, 3),
            dilation_rate=2,
            use_bias=False,
            data_format="channels_first",
        ),
    ),
    (
        "cf-k1-stride2x1",
        dict(kernel_size=1, strides=(2, 1), data_format="channels_first"),
    ),
]
MODES = [
    ("sum-fused", "sum", "fused"),
    ("sum-per_channel", "sum", "per_channel"),
    ("concat-fused", "concat", "fused"),
    ("concat-per_channel", "concat", "per_channel"),
]
GRID = [
    pytest.param(options, reduction, implementation, id=f"{name}-{mode}")
    for name, options in OPTIONS
    for mode, reduction, implementation in MODES
]


def _input(data_format, height=7, width=9, seed=0):
    # Width 9 keeps every output width of OPTIONS different from the number
    # of output channels (4 or 12): with channels_first and equal sizes,
    # Keras's own Conv2D adds the bias on the wrong axis (see
    # test_channels_first_bias_when_width_equals_channels).
    shape = (2, height, width, IN_CHANNELS)
    if data_format == "channels_first":
        shape = (2, IN_CHANNELS, height, width)
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _layer(options, reduction, implementation, **extra):
    """A layer with 5 of 12 kernels frozen at non-zero values and a non-zero bias."""
    kwargs = dict(
        filters=FILTERS,
        frozen=random_frozen_mask(IN_CHANNELS, FILTERS, 5, seed=3),
        frozen_initializer=keras.initializers.RandomNormal(seed=1),
        bias_initializer=keras.initializers.RandomNormal(seed=2),
        reduction=reduction,
        implementation=implementation,
        data_format="channels_last",
    )
    kwargs.update(options)
    kwargs.update(extra)
    return ChannelConv2D(**kwargs)


def _numpy_reference(layer, x):
    return numpy_conv(
        x,
        to_numpy(layer.kernel),
        reduction=layer.reduction,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
        bias=to_numpy(layer.bias) if layer.use_bias else None,
        activation=keras.activations.serialize(layer.activation),
    )


@pytest.mark.parametrize("options, reduction, implementation", GRID)
def test_matches_keras_and_numpy(options, reduction, implementation):
    layer = _layer(options, reduction, implementation)
    x = _input(layer.data_format)
    y = to_numpy(layer(x))
    frozen = layer.frozen_mask
    kernel = to_numpy(layer.kernel)
    # The case is meaningful: frozen and trainable kernels are both non-zero.
    assert frozen.sum() == 5 and np.all(kernel[..., frozen] != 0)

    expected = _numpy_reference(layer, x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=ATOL, rtol=RTOL)
    keras_y = keras_output(keras_reference(layer, x.shape), x)
    # Keras's DepthwiseConv2D cannot run unequal strides without oneDNN.
    assert (keras_y is None) == (
        reduction == "concat" and len(set(layer.strides)) > 1 and not onednn_enabled()
    )
    if keras_y is not None:
        np.testing.assert_allclose(y, keras_y, atol=ATOL, rtol=RTOL)
    channel_axis = -1 if layer.data_format == "channels_last" else 1
    out_channels = FILTERS if reduction == "sum" else IN_CHANNELS * FILTERS
    assert y.shape[channel_axis] == out_channels


@pytest.mark.parametrize(
    "options, reduction",
    [
        pytest.param(options, reduction, id=f"{name}-{reduction}")
        for name, options in OPTIONS
        for reduction in ("sum", "concat")
    ],
)
def test_fused_and_per_channel_agree(options, reduction):
    fused = _layer(options, reduction, "fused")
    x = _input(fused.data_format, seed=1)
    y_fused = to_numpy(fused(x))
    config = dict(fused.get_config(), implementation="per_channel")
    per_channel = ChannelConv2D.from_config(config)
    per_channel.build(x.shape)
    per_channel.set_weights(fused.get_weights())
    np.testing.assert_allclose(to_numpy(per_channel(x)), y_fused, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize(
    "reduction, implementation, data_format, options",
    [
        ("sum", "fused", "channels_last", dict(padding="valid")),
        ("sum", "per_channel", "channels_first", dict(padding="valid")),
        ("concat", "fused", "channels_first", dict(padding="valid")),
        ("concat", "per_channel", "channels_last", dict(padding="valid")),
        ("concat", "fused", "channels_last", dict(padding="same", strides=(2, 1))),
        ("concat", "fused", "channels_first", dict(padding="valid", strides=(1, 2))),
    ],
)
def test_unknown_spatial_size(reduction, implementation, data_format, options):
    layer = _layer(
        dict(kernel_size=3, **options),
        reduction,
        implementation,
        data_format=data_format,
    )
    shape = (None, None, 3) if data_format == "channels_last" else (3, None, None)
    inputs = keras.Input(shape=shape)
    outputs = layer(inputs)
    channel_axis = -1 if data_format == "channels_last" else 1
    assert outputs.shape[channel_axis] == (
        FILTERS if reduction == "sum" else IN_CHANNELS * FILTERS
    )
    model = keras.Model(inputs, outputs)
    for height, width in ((7, 8), (5, 4)):
        x = _input(data_format, height, width)
        np.testing.assert_allclose(
            to_numpy(model(x)), _numpy_reference(layer, x), atol=ATOL, rtol=RTOL
        )


@pytest.mark.parametrize("implementation", ["fused", "per_channel"])
@pytest.mark.parametrize("reduction", ["sum", "concat"])
def test_channels_first_bias_when_width_equals_channels(reduction, implementation):
    """Regression: ``keras.ops.add`` put the bias on the width axis here."""
    out_channels = FILTERS if reduction == "sum" else IN_CHANNELS * FILTERS
    layer = _layer(
        dict(kernel_size=1, data_format="channels_first"), reduction, implementation
    )
    x = _input("channels_first", height=3, width=out_channels)
    y = to_numpy(layer(x))
    expected = _numpy_reference(layer, x)
    np.testing.assert_allclose(y, expected, atol=ATOL, rtol=RTOL)
    graph_call = tf.function(layer.__call__, jit_compile=False)
    np.testing.assert_allclose(
        to_numpy(graph_call(tf.constant(x))), expected, atol=ATOL, rtol=RTOL
    )


@pytest.mark.parametrize("reduction", ["sum", "concat"])
def test_frozen_pairs_are_zero_kernels_of_the_full_convolution(reduction):
    """The question's semantics, from an independently drawn full kernel."""
    pairs = [(0, 0), (0, 3), (2, 1)]
    init = keras.initializers.GlorotUniform(seed=21)
    layer = ChannelConv2D(
        FILTERS, (2, 3), frozen=pairs, reduction=reduction, kernel_initializer=init
    )
    x = _input("channels_last")
    y = to_numpy(layer(x))
    full = to_numpy(init((2, 3, IN_CHANNELS, FILTERS)))
    for channel, filter_ in pairs:
        full[:, :, channel, filter_] = 0.0
    np.testing.assert_allclose(
        y, numpy_conv(x, full, reduction=reduction), atol=ATOL, rtol=RTOL
    )


# --- Initial values ----------------------------------------------------------


@pytest.mark.parametrize(
    "initializer",
    [
        keras.initializers.GlorotUniform(seed=7),
        keras.initializers.HeNormal(seed=8),
        keras.initializers.RandomUniform(-1.0, 1.0, seed=9),
    ],
    ids=["glorot_uniform", "he_normal", "random_uniform"],
)
def test_kernel_initializer_draws_the_full_kernel(initializer):
    mask = random_frozen_mask(IN_CHANNELS, FILTERS, 5, seed=4)
    layer = ChannelConv2D(FILTERS, 3, frozen=mask, kernel_initializer=initializer)
    layer.build((None, 6, 6, IN_CHANNELS))
    full = to_numpy(initializer((3, 3, IN_CHANNELS, FILTERS)))
    kernel = to_numpy(layer.kernel)
    np.testing.assert_array_equal(kernel[..., ~mask], full[..., ~mask])
    assert np.array_equal(kernel[..., mask], np.zeros_like(full[..., mask]))
    assert layer.trainable_kernels.shape == (3, 3, IN_CHANNELS * FILTERS - 5)


def test_nothing_frozen_starts_like_conv2d():
    initializer = keras.initializers.GlorotUniform(seed=5)
    layer = ChannelConv2D(FILTERS, 3, kernel_initializer=initializer)
    conv = keras.layers.Conv2D(FILTERS, 3, kernel_initializer=initializer)
    layer.build((None, 6, 6, IN_CHANNELS))
    conv.build((None, 6, 6, IN_CHANNELS))
    np.testing.assert_array_equal(to_numpy(layer.kernel), to_numpy(conv.kernel))


def test_unseeded_initializer_uses_full_fan_in():
    """he_normal's spread follows the full kernel's fan-in (3*3*8 = 72)."""
    in_channels, filters = 8, 32
    mask = random_frozen_mask(in_channels, filters, 128, seed=0)
    layer = ChannelConv2D(filters, 3, frozen=mask, kernel_initializer="he_normal")
    layer.build((None, 6, 6, in_channels))
    values = to_numpy(layer.trainable_kernels)
    expected_std = np.sqrt(2.0 / (3 * 3 * in_channels))
    assert values.size == 9 * 128
    assert abs(values.std() / expected_std - 1.0) < 0.1


@pytest.mark.parametrize(
    "initializer",
    [
        keras.initializers.Constant(0.5),
        keras.initializers.RandomNormal(seed=6),
    ],
    ids=["constant-0.5", "seeded-random_normal"],
)
def test_frozen_initializer_sets_frozen_values(initializer):
    mask = random_frozen_mask(IN_CHANNELS, FILTERS, 5, seed=4)
    layer = ChannelConv2D(FILTERS, 3, frozen=mask, frozen_initializer=initializer)
    layer.build((None, 6, 6, IN_CHANNELS))
    full = to_numpy(initializer((3, 3, IN_CHANNELS, FILTERS)))
    kernel = to_numpy(layer.kernel)
    np.testing.assert_array_equal(kernel[..., mask], full[..., mask])
    assert np.all(kernel[..., mask] != 0)
    assert not np.array_equal(kernel[..., ~mask], full[..., ~mask])
