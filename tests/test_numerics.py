"""Channel convolutions of every rank against independent references.

References: the Keras convolution of the layer's rank (``Conv1D`` /
``Conv2D`` / ``Conv3D`` for ``reduction="sum"``, ``DepthwiseConv1D`` /
``DepthwiseConv2D`` for ``"concat"``, or ``ConvND(groups=channels)`` where
Keras has no depthwise layer) loaded with the layer's effective kernel and
bias, and a direct NumPy convolution (:func:`harness.numpy_conv`). Every
test runs on every Keras backend (on JAX, a share of the large grids' rows:
see ``SPARED_ON_JAX``), except those about ``tf.function``, TensorFlow's own.
"""

import keras
import numpy as np
import pytest

from channelconv import ChannelConv2D
from channelconv.mask import random_frozen_mask
from harness import (
    BACKEND,
    CONVS,
    frozen_structures,
    LAYERS,
    SPATIAL,
    keras_output,
    keras_reference,
    layer_input,
    layer_vjp,
    numpy_conv,
    strict_tensorflow_kernels,
    to_numpy,
    vjp,
)

pytestmark = pytest.mark.numerics

IN_CHANNELS, FILTERS = 3, 4
ATOL = RTOL = 1e-5

# Each option of each rank appears in at least one row; every row runs with
# both reductions and both implementations (pruned grid, not a cartesian
# product).
OPTIONS = {
    1: [
        ("k1", dict(kernel_size=1)),
        ("k3-same-relu", dict(kernel_size=3, padding="same", activation="relu")),
        ("k3-stride2-nobias", dict(kernel_size=3, strides=2, use_bias=False)),
        ("k3-causal-dil2-tanh", dict(kernel_size=3, padding="causal", dilation_rate=2,
                                     activation="tanh")),
        ("k2-causal-stride2", dict(kernel_size=2, padding="Causal", strides=2)),
        ("cf-k3-stride2-same", dict(kernel_size=3, strides=2, padding="same",
                                    data_format="channels_first")),
        ("cf-k2-causal-dil3-nobias", dict(kernel_size=2, padding="causal", dilation_rate=3,
                                          use_bias=False, data_format="channels_first")),
    ],
    2: [
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
    ],
    3: [
        ("k1", dict(kernel_size=1)),
        ("k2x3x2-same-relu", dict(kernel_size=(2, 3, 2), padding="same", activation="relu")),
        ("k2-stride1x2x2-nobias", dict(kernel_size=2, strides=(1, 2, 2), use_bias=False)),
        ("k2-dil2-same", dict(kernel_size=2, dilation_rate=(1, 2, 2), padding="same")),
        ("cf-k2x2x3-stride2x1x2-same", dict(kernel_size=(2, 2, 3), strides=(2, 1, 2),
                                            padding="same", data_format="channels_first")),
        ("cf-k2-dil2-nobias-tanh", dict(kernel_size=2, dilation_rate=2, use_bias=False,
                                        activation="tanh", data_format="channels_first")),
    ],
}
RANKED_OPTIONS = [
    (rank, f"{rank}d-{name}", options)
    for rank, table in OPTIONS.items()
    for name, options in table
]
MODES = [
    ("sum-fused", "sum", "fused"),
    ("sum-per_channel", "sum", "per_channel"),
    ("sum-sparse", "sum", "sparse"),
    ("concat-fused", "concat", "fused"),
    ("concat-per_channel", "concat", "per_channel"),
    ("concat-sparse", "concat", "sparse"),
]

# JAX compiles every new shape with XLA, eagerly too (the random initial
# values of each kernel shape included: about two seconds an option row), so
# there the grids run a share of their rows, which between them still have
# every option, structure, reduction, implementation and data format.
SPARED_ON_JAX = pytest.mark.skipif(
    BACKEND == "jax", reason="spared on JAX (XLA compiles each case); other rows cover it"
)


def _on_jax_if(keep):
    return () if keep else SPARED_ON_JAX


# The option rows run on JAX: per rank, every padding, equal and unequal
# strides, dilation, no bias, an activation and channels_first.
JAX_OPTIONS = {
    "1d-k3-stride2-nobias", "1d-k3-causal-dil2-tanh", "1d-cf-k3-stride2-same",
    "2d-k3-same-relu", "2d-k2x3-stride1x2-same-tanh", "2d-cf-k2x3-dil2-nobias",
    "3d-k2-stride1x2x2-nobias", "3d-k2-dil2-same", "3d-cf-k2x2x3-stride2x1x2-same",
}
assert JAX_OPTIONS <= {name for _, name, _ in RANKED_OPTIONS}
GRID = [
    pytest.param(rank, options, reduction, implementation, id=f"{name}-{mode}",
                 marks=_on_jax_if(name in JAX_OPTIONS))
    for rank, name, options in RANKED_OPTIONS
    for mode, reduction, implementation in MODES
]


def _input(rank, data_format, spatial=None, seed=0):
    # SPATIAL's last sizes keep every output width of OPTIONS different from
    # the number of output channels (4 or 12): with channels_first and equal
    # sizes, Keras's own convolutions add the bias on the wrong axis (see
    # test_channels_first_bias_when_width_equals_channels).
    return layer_input(data_format, spatial or SPATIAL[rank], IN_CHANNELS, seed)


def _layer(rank, options, reduction, implementation, **extra):
    """A layer with 5 of 12 kernels frozen and a non-zero bias.

    The frozen kernels are non-zero, except for the sparse implementation
    (its rule: frozen kernels are zeros).
    """
    sparse = implementation in ("sparse", "auto")
    kwargs = dict(
        filters=FILTERS,
        frozen=random_frozen_mask(IN_CHANNELS, FILTERS, 5, seed=3),
        frozen_initializer="zeros" if sparse else keras.initializers.RandomNormal(seed=1),
        bias_initializer=keras.initializers.RandomNormal(seed=2),
        reduction=reduction,
        implementation=implementation,
        data_format="channels_last",
    )
    kwargs.update(options)
    kwargs.update(extra)
    return LAYERS[rank](**kwargs)


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


@pytest.mark.parametrize("rank, options, reduction, implementation", GRID)
def test_matches_keras_and_numpy(request, rank, options, reduction, implementation):
    if implementation == "sparse":
        request.getfixturevalue("exact_plans")  # several blocks (conftest)
    layer = _layer(rank, options, reduction, implementation)
    x = _input(rank, layer.data_format)
    y = to_numpy(layer(x))
    frozen = layer.frozen_mask
    kernel = to_numpy(layer.kernel)
    # The case is meaningful: trainable kernels are non-zero, frozen ones
    # too except for sparse, which runs more than one convolution or row.
    assert frozen.sum() == 5 and np.all(kernel[..., ~frozen] != 0)
    if implementation == "sparse":
        assert np.all(kernel[..., frozen] == 0)
        plan = layer.plan
        assert len(plan.blocks) > 1 or len(set(plan.blocks[0].channels)) < len(
            plan.blocks[0].channels
        )
    else:
        assert np.all(kernel[..., frozen] != 0)

    expected = _numpy_reference(layer, x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=ATOL, rtol=RTOL)
    keras_y = keras_output(keras_reference(layer, x.shape), x)
    # Keras's DepthwiseConv2D cannot run unequal strides on TensorFlow's own
    # CPU kernels (oneDNN off).
    assert (keras_y is None) == (
        rank == 2
        and reduction == "concat"
        and len(set(layer.strides)) > 1
        and strict_tensorflow_kernels()
    )
    if keras_y is not None:
        np.testing.assert_allclose(y, keras_y, atol=ATOL, rtol=RTOL)
    channel_axis = -1 if layer.data_format == "channels_last" else 1
    out_channels = FILTERS if reduction == "sum" else IN_CHANNELS * FILTERS
    assert y.shape[channel_axis] == out_channels


@pytest.mark.parametrize(
    "rank, options, reduction, implementation",
    [
        pytest.param(rank, options, reduction, implementation,
                     id=f"{name}-{reduction}-{implementation}",
                     marks=_on_jax_if(name in JAX_OPTIONS))
        for rank, name, options in RANKED_OPTIONS
        for reduction in ("sum", "concat")
        for implementation in ("per_channel", "sparse")
    ],
)
def test_implementations_agree_with_fused(rank, options, reduction, implementation):
    fused = _layer(rank, options, reduction, "fused")
    if implementation == "sparse":  # its rule: frozen kernels are zeros
        fused = _layer(rank, options, reduction, "fused", frozen_initializer="zeros")
    x = _input(rank, fused.data_format, seed=1)
    y_fused = to_numpy(fused(x))
    config = dict(fused.get_config(), implementation=implementation)
    other = type(fused).from_config(config)
    other.build(x.shape)
    other.set_weights(fused.get_weights())
    assert other.implementation_in_use == implementation
    np.testing.assert_allclose(to_numpy(other(x)), y_fused, atol=ATOL, rtol=RTOL)


# --- The sparse implementation, structure by structure ----------------------

STRUCTURE_CHANNELS, STRUCTURE_FILTERS = 4, 6
# The number of blocks of the exact plans of the structured sum layers.
SUM_BLOCKS = {"nothing": 1, "everything": 0, "one_live": 1, "block_diagonal": 2,
              "input_channels": 1, "filters": 1, "groups_and_filters": 2}
STRUCTURE_OPTIONS = {
    1: dict(kernel_size=3, padding="causal", strides=2),
    2: dict(kernel_size=(2, 3), padding="same", strides=(2, 1)),
    3: dict(kernel_size=2, padding="same", dilation_rate=(1, 2, 1)),
}


# On JAX, structure i runs on rank i % 3 + 1 only, with one (reduction, data
# format) in turn: each structure once, each rank, reduction and format.
FORMATS = [(reduction, data_format) for reduction in ("sum", "concat")
           for data_format in ("channels_last", "channels_first")]
STRUCTURE_GRID = [
    pytest.param(
        rank, structure, reduction, data_format,
        id=f"{rank}-{structure}-{reduction}-{data_format}",
        marks=_on_jax_if(rank == row % 3 + 1 and FORMATS[row % 4] == (reduction, data_format)),
    )
    for rank in (1, 2, 3)
    for row, structure in enumerate(frozen_structures(4, 6))
    for reduction, data_format in FORMATS
]


@pytest.mark.parametrize("rank, structure, reduction, data_format", STRUCTURE_GRID)
def test_sparse_equals_fused_for_every_structure(
    exact_plans, rank, structure, reduction, data_format
):
    """Outputs and gradients (input, kernels, bias) equal the fused path's."""
    mask = frozen_structures(STRUCTURE_CHANNELS, STRUCTURE_FILTERS)[structure]
    layers = {}
    for implementation in ("fused", "sparse"):
        layers[implementation] = LAYERS[rank](
            STRUCTURE_FILTERS, frozen=mask, reduction=reduction,
            implementation=implementation, data_format=data_format,
            kernel_initializer=keras.initializers.RandomNormal(seed=4),
            bias_initializer=keras.initializers.RandomNormal(seed=5),
            **STRUCTURE_OPTIONS[rank],
        )
    x = layer_input(data_format, SPATIAL[rank], STRUCTURE_CHANNELS, seed=6)
    out_shape = layers["fused"].compute_output_shape(x.shape)
    upstream = np.random.default_rng(7).normal(size=out_shape).astype("float32")
    results = {}
    for implementation, layer in layers.items():
        layer.build(x.shape)
        grads = layer_vjp(layer, x, upstream)
        results[implementation] = [to_numpy(layer(x))] + [
            grads[name] for name in ("input", "trainable_kernels", "bias")
        ]
    np.testing.assert_array_equal(
        to_numpy(layers["sparse"].trainable_kernels),
        to_numpy(layers["fused"].trainable_kernels),
    )
    plan = layers["sparse"].plan
    if reduction == "concat":  # exact plans compute the live kernels only
        assert plan.macs_fraction == pytest.approx((~mask).mean())
    elif structure in SUM_BLOCKS:
        assert len(plan.blocks) == SUM_BLOCKS[structure]
    for what, got, want in zip(("output", "input", "kernels", "bias"),
                               results["sparse"], results["fused"]):
        if want is None or want.size == 0:
            assert got is None or not np.any(got)
            continue
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=what)


@pytest.mark.parametrize(
    "rank, reduction, implementation, data_format, options",
    [
        (2, "sum", "fused", "channels_last", dict(padding="valid")),
        (2, "sum", "per_channel", "channels_first", dict(padding="valid")),
        (2, "concat", "fused", "channels_first", dict(padding="valid")),
        (2, "concat", "per_channel", "channels_last", dict(padding="valid")),
        (2, "concat", "fused", "channels_last", dict(padding="same", strides=(2, 1))),
        (2, "concat", "fused", "channels_first", dict(padding="valid", strides=(1, 2))),
        (1, "sum", "fused", "channels_first", dict(padding="causal")),
        (1, "concat", "fused", "channels_last", dict(padding="causal", strides=2)),
        (1, "concat", "per_channel", "channels_first", dict(padding="same")),
        (3, "sum", "fused", "channels_first", dict(padding="same", strides=(1, 2, 1))),
        (3, "concat", "fused", "channels_last", dict(padding="valid")),
        (3, "concat", "per_channel", "channels_first", dict(padding="same")),
        (2, "sum", "sparse", "channels_first", dict(padding="same", strides=2)),
        (2, "concat", "sparse", "channels_last", dict(padding="same", strides=(1, 2))),
        (1, "concat", "sparse", "channels_last", dict(padding="causal")),
        (3, "sum", "sparse", "channels_last", dict(padding="valid")),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unknown_spatial_size(rank, reduction, implementation, data_format, options):
    layer = _layer(
        rank,
        dict(kernel_size=3, **options),
        reduction,
        implementation,
        data_format=data_format,
    )
    shape = (None,) * rank
    shape = shape + (3,) if data_format == "channels_last" else (3,) + shape
    inputs = keras.Input(shape=shape)
    outputs = layer(inputs)
    channel_axis = -1 if data_format == "channels_last" else 1
    assert outputs.shape[channel_axis] == (
        FILTERS if reduction == "sum" else IN_CHANNELS * FILTERS
    )
    model = keras.Model(inputs, outputs)
    for spatial in ((7, 8, 5)[:rank], (5, 4, 3)[:rank]):
        x = _input(rank, data_format, spatial)
        np.testing.assert_allclose(
            to_numpy(model(x)), _numpy_reference(layer, x), atol=ATOL, rtol=RTOL
        )


@pytest.mark.parametrize(
    "mode", ["eager", pytest.param("function", marks=pytest.mark.tensorflow)]
)
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("implementation", ["fused", "per_channel", "sparse"])
@pytest.mark.parametrize("reduction", ["sum", "concat"])
def test_channels_first_bias_when_width_equals_channels(rank, reduction, implementation, mode):
    """Regression: ``keras.ops.add`` put the bias on the width axis here."""
    out_channels = FILTERS if reduction == "sum" else IN_CHANNELS * FILTERS
    layer = _layer(
        rank, dict(kernel_size=1, data_format="channels_first"), reduction, implementation
    )
    x = _input(rank, "channels_first", (3, 2, out_channels)[-rank:])
    if mode == "eager":
        y = to_numpy(layer(x))
    else:  # traced; only the output is used
        layer.build(x.shape)
        shape = layer.compute_output_shape(x.shape)
        y, _ = vjp(layer, [x], np.zeros(shape, "float32"), mode)
    np.testing.assert_allclose(y, _numpy_reference(layer, x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("reduction", ["sum", "concat"])
def test_frozen_pairs_are_zero_kernels_of_the_full_convolution(rank, reduction):
    """The question's semantics, from an independently drawn full kernel."""
    pairs = [(0, 0), (0, 3), (2, 1)]
    init = keras.initializers.GlorotUniform(seed=21)
    kernel_size = (2, 3, 2)[:rank]
    layer = LAYERS[rank](
        FILTERS, kernel_size, frozen=pairs, reduction=reduction, kernel_initializer=init
    )
    x = _input(rank, "channels_last")
    y = to_numpy(layer(x))
    full = to_numpy(init(kernel_size + (IN_CHANNELS, FILTERS)))
    for channel, filter_ in pairs:
        full[..., channel, filter_] = 0.0
    np.testing.assert_allclose(
        y, numpy_conv(x, full, reduction=reduction), atol=ATOL, rtol=RTOL
    )


# --- Initial values ----------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize(
    "initializer",
    [
        keras.initializers.GlorotUniform(seed=7),
        keras.initializers.HeNormal(seed=8),
        keras.initializers.RandomUniform(-1.0, 1.0, seed=9),
    ],
    ids=["glorot_uniform", "he_normal", "random_uniform"],
)
def test_kernel_initializer_draws_the_full_kernel(initializer, rank):
    mask = random_frozen_mask(IN_CHANNELS, FILTERS, 5, seed=4)
    layer = LAYERS[rank](FILTERS, 3, frozen=mask, kernel_initializer=initializer)
    layer.build((None,) + (6,) * rank + (IN_CHANNELS,))
    full = to_numpy(initializer((3,) * rank + (IN_CHANNELS, FILTERS)))
    kernel = to_numpy(layer.kernel)
    np.testing.assert_array_equal(kernel[..., ~mask], full[..., ~mask])
    assert np.array_equal(kernel[..., mask], np.zeros_like(full[..., mask]))
    assert layer.trainable_kernels.shape == (3,) * rank + (IN_CHANNELS * FILTERS - 5,)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_nothing_frozen_starts_like_the_keras_conv(rank):
    initializer = keras.initializers.GlorotUniform(seed=5)
    layer = LAYERS[rank](FILTERS, 3, kernel_initializer=initializer)
    conv = CONVS[rank](FILTERS, 3, kernel_initializer=initializer)
    layer.build((None,) + (6,) * rank + (IN_CHANNELS,))
    conv.build((None,) + (6,) * rank + (IN_CHANNELS,))
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
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_frozen_initializer_sets_frozen_values(initializer, rank):
    mask = random_frozen_mask(IN_CHANNELS, FILTERS, 5, seed=4)
    layer = LAYERS[rank](FILTERS, 3, frozen=mask, frozen_initializer=initializer)
    layer.build((None,) + (6,) * rank + (IN_CHANNELS,))
    full = to_numpy(initializer((3,) * rank + (IN_CHANNELS, FILTERS)))
    kernel = to_numpy(layer.kernel)
    np.testing.assert_array_equal(kernel[..., mask], full[..., mask])
    assert np.all(kernel[..., mask] != 0)
    assert not np.array_equal(kernel[..., ~mask], full[..., ~mask])


@pytest.mark.tensorflow
@pytest.mark.parametrize("jit", [False, True], ids=["function", "xla"])
@pytest.mark.parametrize(
    "padding, strides", [("same", 2), ("valid", 1), ("same", (1, 2, 1))],
    ids=["same-stride2", "valid", "same-stride1x2x1"],
)
def test_3d_concat_in_a_function_of_unknown_shape(padding, strides, jit):
    """The depth-tap path with every size unknown while tracing (one trace)."""
    import tensorflow as tf

    layer = _layer(3, dict(kernel_size=3, padding=padding, strides=strides), "concat", "fused")
    layer.build((None, None, None, None, IN_CHANNELS))
    spec = tf.TensorSpec((None, None, None, None, IN_CHANNELS))
    fn = tf.function(layer.__call__, input_signature=[spec], jit_compile=jit)
    for spatial in ((5, 7, 6), (8, 4, 5)):
        x = _input(3, "channels_last", spatial)
        np.testing.assert_allclose(
            to_numpy(fn(x)), _numpy_reference(layer, x), atol=ATOL, rtol=RTOL
        )
    assert fn.experimental_get_tracing_count() == 1
