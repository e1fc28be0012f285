"""Tests of channelconv.convert: plain Keras layers of every rank in
(from_conv, convert_model) and out (to_keras_layer, strip), checked against
the Keras layers themselves and a NumPy convolution."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
from typing import NamedTuple

import keras
import numpy as np
import pytest

from channelconv.convert import convert_model, from_conv, from_conv2d, strip, to_keras_layer
from channelconv.layers import BaseChannelConv, ChannelConv2D
from channelconv.mask import grouped_frozen_mask
from harness import (
    BACKEND, CONVS, DEPTHWISE, LAYERS, SPATIAL, keras_output, layer_input, numpy_conv,
)

pytestmark = pytest.mark.numerics

# JAX compiles every new shape with XLA, the random initial values of each
# kernel shape included (a second or two per layer configuration), so the
# tables of source layers run there on a share of their rows (JAX_SOURCES,
# JAX_GROUPED), which between them have every class, rank and option that
# changes the computation; the conversion of the others is backend-neutral
# Python that the TensorFlow and PyTorch runs cover.
SPARED_ON_JAX = pytest.mark.skipif(
    BACKEND == "jax", reason="spared on JAX (XLA compiles each case); other rows cover it"
)


def _params(argnames, rows, on_jax):
    """``parametrize`` arguments for ``rows`` ``(id, *values)``; rows whose id
    is not in ``on_jax`` are spared on JAX."""
    assert on_jax <= {row_id for row_id, *_ in rows}, on_jax
    return dict(argnames=argnames, argvalues=[
        pytest.param(*values, id=row_id, marks=() if row_id in on_jax else SPARED_ON_JAX)
        for row_id, *values in rows
    ])


RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 9, 9, 3)).astype("float32")

KERNEL_ARGS = ("initializer", "regularizer", "constraint")
L = keras.layers


def np_(tensor):
    return keras.ops.convert_to_numpy(tensor)


def build_shape(rank, channels, data_format="channels_last"):
    """The build shape of a rank-``rank`` layer on ``channels`` channels."""
    if data_format == "channels_first":
        return (None, channels) + (None,) * rank
    return (None,) * (rank + 1) + (channels,)


def built(layer, channels=3, data_format="channels_last"):
    """Builds ``layer`` for ``channels`` inputs and gives it random weights."""
    layer.build(build_shape(layer.rank, channels, data_format))
    rng = np.random.default_rng(1)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.weights])
    return layer


def zeroed(conv, pairs):
    """A copy of ``conv`` (same class and config) with kernels ``pairs`` at 0.

    In a grouped convolution, kernel ``(c, f)`` (which must be one of filter
    ``f``'s group) is entry ``c % (in_channels // groups)`` of Keras's
    kernel, whose input axis holds one group's channels.
    """
    kernel = np_(conv.kernel).copy()
    per_group = kernel.shape[-2]
    for channel, filter_ in pairs:
        assert live_mask(conv)[channel, filter_], (channel, filter_)
        kernel[..., channel % per_group, filter_] = 0.0
    reference = type(conv).from_config(conv.get_config())
    reference.build(_shape_of(conv))
    reference.set_weights([kernel] + [np_(w) for w in conv.weights[1:]])
    return reference


def _shape_of(conv):
    ((axis, channels),) = conv.input_spec.axes.items()
    return build_shape(conv.rank, channels, "channels_last" if axis == -1 else "channels_first")


def live_mask(conv):
    """Which (input channel, filter) kernels a Keras convolution has.

    All of them, except in a grouped one: Keras's docs define ``groups`` as
    channels and filters split in order into equal groups, filter ``f``
    seeing only its own group's channels.
    """
    ((_, channels),) = conv.input_spec.axes.items()
    filters = np_(conv.kernel).shape[-1]
    groups = getattr(conv, "groups", 1)
    channel_group = [c // (channels // groups) for c in range(channels)]
    filter_group = [f // (filters // groups) for f in range(filters)]
    return np.array([[cg == fg for fg in filter_group] for cg in channel_group])


def full_kernel(conv):
    """A Keras convolution's kernel as ``kernel_size + (in_channels, filters)``.

    Keras stores a grouped kernel as ``kernel_size + (in_channels // groups,
    filters)``: kernel ``(c, f)`` is entry ``c % (in_channels // groups)``
    there; the kernels across groups do not exist and are zero here.
    """
    kernel = np_(conv.kernel)
    live = live_mask(conv)
    full = np.zeros(kernel.shape[:-2] + live.shape, kernel.dtype)
    for channel, filter_ in zip(*np.nonzero(live)):
        full[..., channel, filter_] = kernel[..., channel % kernel.shape[-2], filter_]
    return full


REGULARIZED = dict(
    kernel_initializer="he_normal",
    bias_initializer="ones",
    kernel_regularizer=keras.regularizers.L2(0.01),
    bias_regularizer="l1",
    activity_regularizer="l2",
    kernel_constraint=keras.constraints.MaxNorm(2.0),
    bias_constraint="non_neg",
)
# Per rank, the options of the Keras layers that convert in.
CONV_CASES = {
    1: [
        ("default", dict(filters=4, kernel_size=3)),
        ("causal_dilated_tanh",
         dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2, activation="tanh")),
        ("causal_strides_channels_first",
         dict(filters=5, kernel_size=2, padding="causal", strides=2,
              data_format="channels_first")),
        ("same_regularized_constrained", dict(filters=4, kernel_size=2, padding="same",
                                              **REGULARIZED)),
    ],
    2: [
        ("default", dict(filters=4, kernel_size=3)),
        ("strides_same_relu",
         dict(filters=5, kernel_size=(3, 2), strides=2, padding="same", activation="relu")),
        ("dilation_no_bias", dict(filters=4, kernel_size=3, dilation_rate=2, use_bias=False)),
        ("channels_first", dict(filters=4, kernel_size=3, data_format="channels_first")),
        ("regularized_constrained", dict(filters=4, kernel_size=1, **REGULARIZED)),
    ],
    3: [
        ("default", dict(filters=4, kernel_size=2)),
        ("strides_same_channels_first_no_bias",
         dict(filters=4, kernel_size=(2, 3, 2), strides=(1, 2, 2), padding="same",
              use_bias=False, data_format="channels_first")),
        ("dilation_relu", dict(filters=3, kernel_size=2, dilation_rate=(1, 2, 2),
                               activation="relu")),
    ],
}
DEPTHWISE_CASES = {
    1: [
        ("default", dict(depth_multiplier=2, kernel_size=3)),
        ("strides_same_relu",
         dict(depth_multiplier=3, kernel_size=3, strides=2, padding="same", activation="relu")),
        ("dilation_no_bias_channels_first",
         dict(depth_multiplier=2, kernel_size=2, dilation_rate=3, use_bias=False,
              data_format="channels_first")),
    ],
    2: [
        ("default", dict(depth_multiplier=2, kernel_size=3)),
        ("strides_same_tanh",
         dict(depth_multiplier=3, kernel_size=3, strides=(2, 1), padding="same",
              activation="tanh")),
        ("dilation_no_bias",
         dict(depth_multiplier=2, kernel_size=2, dilation_rate=(1, 2), use_bias=False)),
        ("channels_first", dict(depth_multiplier=2, kernel_size=3, data_format="channels_first")),
    ],
}
SOURCES = [  # (id, rank, class, options)
    (f"{classes[rank].__name__}-{name}", rank, classes[rank], kwargs)
    for classes, cases in ((CONVS, CONV_CASES), (DEPTHWISE, DEPTHWISE_CASES))
    for rank, table in cases.items()
    for name, kwargs in table
]
JAX_SOURCES = {
    "Conv1D-causal_strides_channels_first", "Conv2D-strides_same_relu",
    "Conv2D-dilation_no_bias", "Conv3D-strides_same_channels_first_no_bias",
    "DepthwiseConv1D-dilation_no_bias_channels_first", "DepthwiseConv2D-strides_same_tanh",
}
SOURCE_PARAMS = _params("rank, cls, kwargs", SOURCES, JAX_SOURCES)
FROZEN = [(0, 0), (2, 1), (1, 0)]


def _unequal_depthwise_strides(conv):
    return isinstance(conv, keras.layers.DepthwiseConv2D) and len(set(conv.strides)) > 1


def assert_computes(y, conv, x):
    """``y`` is what the Keras layer ``conv`` computes on ``x``.

    Bit for bit where both run the same TensorFlow kernel. Two exceptions
    are equal to float rounding: a grouped Keras convolution (TensorFlow
    runs it through XLA; a channel convolution runs the full kernel, zeros
    included) and a depthwise layer with unequal strides (channelconv
    computes it another, exact way, ``channelconv._routing``, that
    TensorFlow's kernels accept without oneDNN; without oneDNN, Keras cannot
    run it at all). Ungrouped layers are also checked against NumPy.
    """
    expected = keras_output(conv, x)
    if getattr(conv, "groups", 1) == 1 and not _unequal_depthwise_strides(conv):
        np.testing.assert_array_equal(y, expected)
    elif expected is not None:
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    else:
        assert _unequal_depthwise_strides(conv)  # Keras runs everything else
    if getattr(conv, "groups", 1) > 1:
        return
    reference = numpy_conv(
        x, np_(conv.kernel),
        "concat" if isinstance(conv, tuple(DEPTHWISE.values())) else "sum",
        conv.strides, conv.padding, conv.dilation_rate, conv.data_format,
        np_(conv.bias) if conv.use_bias else None,
        keras.activations.serialize(conv.activation),
    )
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5)


def make_source(cls, kwargs, channels=3, name="src"):
    conv = cls(name=name, **kwargs)
    return built(conv, channels, data_format=kwargs.get("data_format", "channels_last"))


def inputs_for(rank, kwargs, channels=3):
    return layer_input(kwargs.get("data_format", "channels_last"), SPATIAL[rank], channels)


@pytest.mark.parametrize(**SOURCE_PARAMS)
@pytest.mark.parametrize(
    "frozen, frozen_values",
    [(None, "zeros"), (FROZEN, "keep"), (FROZEN, "zeros")],
    ids=["nothing_frozen", "keep", "zeros"],
)
def test_from_conv_computes_the_source_layer(rank, cls, kwargs, frozen, frozen_values):
    conv = make_source(cls, kwargs)
    layer = from_conv(conv, frozen, frozen_values=frozen_values)
    assert type(layer) is LAYERS[rank]
    reference = zeroed(conv, frozen or ()) if frozen_values == "zeros" else conv
    x = inputs_for(rank, kwargs)
    assert_computes(np_(layer(x)), reference, x)
    assert np.array_equal(np_(layer.kernel), np_(reference.kernel))
    if conv.use_bias:
        assert np.array_equal(np_(layer.bias), np_(conv.bias))
    expected_mask = np.zeros(np_(conv.kernel).shape[-2:], dtype=bool)
    for pair in frozen or ():
        expected_mask[pair] = True
    assert np.array_equal(layer.frozen_mask, expected_mask)


@pytest.mark.parametrize(**SOURCE_PARAMS)
def test_from_conv_copies_the_configuration(rank, cls, kwargs):
    conv = make_source(cls, kwargs)
    layer = from_conv(conv, FROZEN)
    source, ours = conv.get_config(), layer.get_config()
    depthwise = cls is DEPTHWISE.get(rank)
    assert layer.reduction == ("concat" if depthwise else "sum")
    assert ours["filters"] == (source["depth_multiplier"] if depthwise else source["filters"])
    for key in (
        "name", "dtype", "trainable", "kernel_size", "strides", "padding", "data_format",
        "dilation_rate", "activation", "use_bias", "bias_initializer", "bias_regularizer",
        "activity_regularizer", "bias_constraint",
    ):
        assert ours[key] == source[key], key
    for suffix in KERNEL_ARGS:
        theirs = source[("depthwise_" if depthwise else "kernel_") + suffix]
        assert ours["kernel_" + suffix] == theirs, suffix


def test_from_conv2d_is_from_conv_and_deprecated():
    conv = make_source(keras.layers.Conv1D, dict(filters=4, kernel_size=3))
    with pytest.warns(DeprecationWarning, match="removed in 1.0.0: call `from_conv`"):
        old = from_conv2d(conv, FROZEN)
    new = from_conv(conv, FROZEN)
    assert type(old) is type(new) and old.get_config() == new.get_config()
    assert np.array_equal(np_(old.kernel), np_(new.kernel))


def test_from_conv_leaves_the_source_untouched():
    conv = make_source(keras.layers.Conv2D, dict(filters=4, kernel_size=3))
    before = [np_(w).copy() for w in conv.weights]
    from_conv(conv, FROZEN, frozen_values="zeros")
    assert all(np.array_equal(a, np_(b)) for a, b in zip(before, conv.weights))


def test_channels_first_bias_is_added_on_the_channel_axis():
    # Keras 3.15's Conv2D(data_format="channels_first") adds its bias along
    # the last spatial axis when that axis has `filters` entries (its ops.add
    # guesses the bias axis from sizes). The converted layer must not: its
    # reference is the same convolution computed channels_last.
    conv = make_source(
        keras.layers.Conv2D, dict(filters=4, kernel_size=3, data_format="channels_first")
    )
    conv.bias.assign(np.arange(4, dtype="float32"))
    x = RNG.standard_normal((2, 3, 9, 6)).astype("float32")  # output width 4 == filters
    last = keras.layers.Conv2D(4, 3)
    last.build((None, None, None, 3))
    last.set_weights(conv.get_weights())
    expected = np.transpose(np_(last(np.transpose(x, (0, 2, 3, 1)))), (0, 3, 1, 2))
    assert np.array_equal(np_(from_conv(conv, None)(x)), expected)


def test_from_conv_keeps_mixed_precision_policy():
    conv = keras.layers.Conv2D(4, 3, dtype="mixed_float16")
    built(conv)
    layer = from_conv(conv, FROZEN, frozen_values="keep")
    assert layer.dtype_policy.name == "mixed_float16"
    assert np.array_equal(np_(layer(X)), np_(conv(X)))


def test_from_conv_merges_lora():
    conv = make_source(keras.layers.Conv2D, dict(filters=4, kernel_size=3))
    conv.enable_lora(2)
    conv.lora_kernel_b.assign(RNG.standard_normal(conv.lora_kernel_b.shape))
    layer = from_conv(conv, None)
    np.testing.assert_array_equal(np_(layer(X)), np_(conv(X)))


# --- grouped convolutions ------------------------------------------------------

# Keras convolutions with groups in {2, in_channels}, on 4 input channels.
GROUPED = [  # (id, rank, options)
    ("Conv1D-groups2", 1, dict(filters=6, kernel_size=3, groups=2)),
    ("Conv1D-groups4-causal_dilated", 1,
     dict(filters=8, kernel_size=3, groups=4, padding="causal", dilation_rate=2)),
    ("Conv2D-groups2-channels_first", 2,
     dict(filters=6, kernel_size=3, groups=2, data_format="channels_first")),
    ("Conv2D-groups4-strides_same_relu", 2,
     dict(filters=4, kernel_size=(2, 3), groups=4, strides=2, padding="same",
          activation="relu")),
    ("Conv3D-groups2", 3, dict(filters=4, kernel_size=2, groups=2)),
    ("Conv3D-groups4-channels_first_no_bias", 3,
     dict(filters=4, kernel_size=2, groups=4, use_bias=False, data_format="channels_first")),
]
JAX_GROUPED = {
    "Conv1D-groups4-causal_dilated", "Conv2D-groups4-strides_same_relu", "Conv3D-groups2",
}
GROUPED_PARAMS = _params("rank, kwargs", GROUPED, JAX_GROUPED)
GROUPED_CHANNELS = 4
EXTRA = [(0, 0)]  # a live kernel in every grouping: channel 0 and filter 0 are group 0


def make_grouped(rank, kwargs):
    return make_source(CONVS[rank], kwargs, GROUPED_CHANNELS)


@pytest.mark.parametrize(**GROUPED_PARAMS)
@pytest.mark.parametrize(
    "frozen, frozen_values",
    [(None, "zeros"), (EXTRA, "keep"), (EXTRA, "zeros")],
    ids=["nothing_more_frozen", "one_more_kept", "one_more_zeroed"],
)
def test_from_conv_of_a_grouped_layer_computes_it(rank, kwargs, frozen, frozen_values):
    conv = make_grouped(rank, kwargs)
    layer = from_conv(conv, frozen, frozen_values=frozen_values)
    assert type(layer) is LAYERS[rank] and layer.reduction == "sum"
    extra = np.zeros((GROUPED_CHANNELS, kwargs["filters"]), dtype=bool)
    for pair in frozen or ():
        extra[pair] = True
    np.testing.assert_array_equal(layer.frozen_mask, ~live_mask(conv) | extra)
    grouped = grouped_frozen_mask(GROUPED_CHANNELS, kwargs["filters"], kwargs["groups"])
    np.testing.assert_array_equal(layer.frozen_mask, grouped | extra)
    reference = zeroed(conv, frozen or ()) if frozen_values == "zeros" else conv
    np.testing.assert_array_equal(np_(layer.kernel), full_kernel(reference))
    x = inputs_for(rank, kwargs, GROUPED_CHANNELS)
    assert_computes(np_(layer(x)), reference, x)


@pytest.mark.parametrize(**GROUPED_PARAMS)
def test_grouped_layer_converted_to_sparse_runs_its_groups(exact_plans, rank, kwargs):
    """One convolution per group, the grouped layer's output; strip gives it back."""
    conv = make_grouped(rank, kwargs)
    layer = from_conv(conv, implementation="sparse")
    assert layer.implementation_in_use == "sparse"
    assert len(layer.plan.blocks) == kwargs["groups"]
    x = inputs_for(rank, kwargs, GROUPED_CHANNELS)
    assert_computes(np_(layer(x)), conv, x)
    plain = to_keras_layer(layer)
    assert plain.get_config() == conv.get_config()
    np.testing.assert_array_equal(np_(plain.kernel), np_(conv.kernel))


def test_from_conv_sparse_refuses_kept_nonzero_frozen_kernels():
    conv = make_grouped(2, dict(filters=4, kernel_size=3, groups=2))
    with pytest.raises(ValueError, match=r"Cannot convert layer '(.*)': Layer '\1': `kernel` "
                       r"gives 1 of its 9 frozen kernels non-zero values: "
                       r"\(input channel, filter\) \(0, 0\)\. implementation='sparse' skips"):
        from_conv(conv, EXTRA, frozen_values="keep", implementation="sparse")
    kept = from_conv(conv, EXTRA, frozen_values="keep", implementation="auto")
    assert kept.store_frozen and kept.implementation_in_use == "fused"
    # At 64 channels auto runs the groups sparse, unless a kept frozen kernel is
    # non-zero: then the layer stores its frozen kernels and runs fused (not refused).
    big = make_source(keras.layers.Conv2D, dict(filters=64, kernel_size=3, groups=4), 64)
    sparse = from_conv(big, implementation="auto")
    assert not sparse.store_frozen and sparse.implementation_in_use == "sparse"
    kept = from_conv(big, [(0, 0)], frozen_values="keep", implementation="auto")
    assert kept.store_frozen and kept.implementation_in_use == "fused"
    # Kept frozen kernels that are all zero need no storage: sparse runs.
    zero_kept = from_conv(big, frozen_values="keep", implementation="auto")
    assert not zero_kept.store_frozen and zero_kept.implementation_in_use == "sparse"


STRIPPED_GROUPED = [  # (id, change to the converted layer, whether it stays grouped)
    ("exactly_grouped", None, True),
    ("one_more_frozen", "freeze_one_more", False),
    ("a_frozen_kernel_not_zero", "set_one_frozen", False),
]


@pytest.mark.parametrize(**GROUPED_PARAMS)
@pytest.mark.parametrize(
    "change, stays_grouped", [s[1:] for s in STRIPPED_GROUPED], ids=[s[0] for s in STRIPPED_GROUPED]
)
def test_to_keras_layer_of_a_converted_grouped_layer(rank, kwargs, change, stays_grouped):
    conv = make_grouped(rank, kwargs)
    layer = from_conv(conv, EXTRA if change == "freeze_one_more" else None)
    if change == "set_one_frozen":  # the twin that stores its frozen kernels, one at 0.5
        kernel = np_(layer.kernel).copy()
        channel, filter_ = np.argwhere(layer.frozen_mask)[-1]
        kernel[..., channel, filter_] = 0.5
        config = {k: v for k, v in layer.get_config().items()
                  if k not in ("filters", "kernel_size", "store_frozen")}
        bias = np_(layer.bias) if layer.use_bias else None
        layer = type(layer).from_kernel(kernel, bias, **config)
        assert layer.store_frozen
    plain = to_keras_layer(layer)
    assert type(plain) is CONVS[rank]
    x = inputs_for(rank, kwargs, GROUPED_CHANNELS)
    if stays_grouped:
        # The source layer back: same configuration, same (grouped) kernel.
        assert plain.get_config() == conv.get_config()
        np.testing.assert_array_equal(np_(plain.kernel), np_(conv.kernel))
        np.testing.assert_array_equal(keras_output(plain, x), keras_output(conv, x))
    else:
        assert plain.groups == 1
        np.testing.assert_array_equal(np_(plain.kernel), np_(layer.kernel))
    assert_computes(np_(layer(x)), plain, x)


# --- errors ----------------------------------------------------------------------


class _MyConv(keras.layers.Conv2D):
    pass


def _unbuilt(name):
    return keras.layers.Conv2D(4, 3, name=name)


REFUSED = [  # (id, make(name), error, message)
    *[
        (cls.__name__, lambda n, cls=cls: built(cls(4, 3, name=n)), TypeError,
         rf"Received: layer 'the_layer' of type {cls.__name__}\.")
        for cls in (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose,
                    L.SeparableConv1D, L.SeparableConv2D)
    ],
    ("dense", lambda n: L.Dense(4, name=n), TypeError, "of type Dense"),
    ("subclass", lambda n: built(_MyConv(4, 3, name=n)), TypeError, "of type _MyConv"),
    ("unbuilt", _unbuilt, ValueError, "not built"),
]


@pytest.mark.parametrize(
    "make, error, match", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_from_conv_refuses(make, error, match):
    with pytest.raises(error, match=match) as info:
        from_conv(make("the_layer"), None)
    assert "'the_layer'" in str(info.value)


@pytest.mark.parametrize(
    "frozen, frozen_values, error, match",
    [
        (None, "random", ValueError,
         r"`frozen_values` must be one of \['keep', 'zeros'\]. Received: frozen_values='random'"),
        (None, None, TypeError, r"`frozen_values` must be one of.*Received: frozen_values=None of type NoneType"),
        ([(3, 0)], "zeros", ValueError, "'src'.*input channel 3.*3 channels"),
        ([(0, 4)], "zeros", ValueError, "'src'.*filter 4.*filters=4"),
        (np.zeros((2, 4), bool), "zeros", ValueError, r"'src'.*shape \(2, 4\)"),
        ("0,1", "zeros", TypeError, "'src'.*frozen"),
    ],
    ids=["unknown_frozen_values", "none_frozen_values", "channel_out_of_range",
         "filter_out_of_range", "mask_wrong_shape", "string_frozen"],
)
def test_from_conv_bad_arguments(frozen, frozen_values, error, match):
    conv = make_source(keras.layers.Conv2D, dict(filters=4, kernel_size=3))
    with pytest.raises(error, match=match):
        from_conv(conv, frozen, frozen_values=frozen_values)


# --- convert_model -----------------------------------------------------------


def question_model():
    """The StackOverflow question's model (three Conv2D(16) with ReLU)."""
    x_in = keras.Input((None, None, 3), name="image")
    h = keras.layers.Conv2D(16, 3, name="conv1")(x_in)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.Conv2D(16, 3, name="conv2")(h)
    h = keras.layers.ReLU(name="relu2")(h)
    out = keras.layers.Conv2D(16, 3, name="conv3")(h)
    return keras.Model(x_in, out)


def branchy_model():
    """Two inputs, a shared Conv2D, a nested Sequential, BatchNorm, Depthwise."""
    a = keras.Input((9, 9, 3), name="a")
    b = keras.Input((9, 9, 3), name="b")
    shared = keras.layers.Conv2D(4, 3, padding="same", name="shared")
    nested = keras.Sequential(
        [
            keras.Input((9, 9, 4)),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="inner_dw"),
            keras.layers.BatchNormalization(name="bn"),
        ],
        name="nested",
    )
    h = keras.layers.Add()([shared(a), shared(b)])
    h = nested(h)
    h = keras.layers.Conv2D(3, 1, name="head")(h)
    out = keras.layers.Dense(2, name="dense")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model([a, b], [out, h])
    rng = np.random.default_rng(2)
    model.set_weights([rng.random(w.shape).astype("float32") + 0.5 for w in model.weights])
    return model


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def outputs(model, inputs):
    result = model(inputs)
    return [np_(t) for t in (result if isinstance(result, (list, tuple)) else [result])]


def weights_by_path(model):
    return {w.path: np_(w) for w in model.weights}


def test_convert_model_with_nothing_frozen_is_identical():
    model = question_model()
    new = convert_model(model, {"conv1": None, "conv2": None, "conv3": None})
    assert [type(layer).__name__ for layer in new.layers[1:]] == [
        "ChannelConv2D", "ReLU", "ChannelConv2D", "ReLU", "ChannelConv2D"
    ]
    assert np.array_equal(outputs(new, X)[0], outputs(model, X)[0])
    assert new.name == model.name and new.count_params() == model.count_params()


@pytest.mark.parametrize("rebuild", ["convert_model", "strip"])
def test_rebuilt_models_keep_the_compile_configuration(rebuild):
    model = question_model()
    model.compile(keras.optimizers.SGD(0.05), "mae", metrics=["mse"])
    if rebuild == "convert_model":
        new = convert_model(model, {"conv1": [(0, 0)]})
    else:
        new = strip(convert_model(model, {"conv1": [(0, 0)]}))
    assert new.compiled
    assert new.get_compile_config() == model.get_compile_config()
    assert new.optimizer is not model.optimizer  # a fresh optimizer


def test_convert_model_freezes_like_zeroed_keras_kernels():
    model = question_model()
    pairs = [(0, i) for i in range(5)]  # the question's five frozen kernels
    new = convert_model(model, {"conv1": pairs})
    reference = keras.models.clone_model(model)
    reference.set_weights(model.get_weights())
    reference.get_layer("conv1").set_weights(
        zeroed(model.get_layer("conv1"), pairs).get_weights()
    )
    assert np.array_equal(outputs(new, X)[0], outputs(reference, X)[0])
    trainable = sum(int(np.prod(w.shape)) for w in new.trainable_weights)
    assert trainable == model.count_params() - 5 * 9


def test_convert_model_handles_shared_nested_and_multi_input_models():
    model = branchy_model()
    before = weights_by_path(model)
    spec = {"shared": [(1, 2)], "inner_dw": [(0, 1), (3, 0)], "head": None}
    new = convert_model(model, spec, frozen_values="keep")
    new_layers = {layer.name: layer for layer in all_layers(new)}
    assert all(isinstance(new_layers[name], ChannelConv2D) for name in spec)
    # The shared layer is still one layer (called twice): shared + head.
    assert sum(isinstance(layer, ChannelConv2D) for layer in new.layers) == 2
    inputs = [X, X[::-1].copy()]
    for got, want in zip(outputs(new, inputs), outputs(model, inputs)):
        assert np.array_equal(got, want)
    # Every other weight (BatchNorm statistics included) is an equal copy, in
    # a distinct variable.
    for layer in all_layers(model):
        if layer.name in spec or isinstance(layer, keras.Model):
            continue
        for old, copy in zip(layer.weights, new_layers[layer.name].weights, strict=True):
            assert np.array_equal(np_(old), np_(copy)) and old is not copy
    # The original is untouched.
    assert all(np.array_equal(v, before[k]) for k, v in weights_by_path(model).items())
    assert isinstance(model.get_layer("shared"), keras.layers.Conv2D)


def test_convert_model_converted_layers_train_with_frozen_kernels_fixed():
    model = question_model()
    new = convert_model(model, {"conv2": [(3, 3), (5, 0)]}, frozen_values="keep")
    kept = np_(model.get_layer("conv2").kernel)[:, :, [3, 5], [3, 0]]
    new.compile(keras.optimizers.Adam(0.1), "mse")
    new.fit(X, np.ones((2, 3, 3, 16), "float32"), epochs=2, verbose=0)
    after = np_(new.get_layer("conv2").kernel)
    assert np.array_equal(after[:, :, [3, 5], [3, 0]], kept)
    assert not np.array_equal(after, np_(model.get_layer("conv2").kernel))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(2, 3)

    def call(self, x):
        return self.conv(x)


@pytest.mark.parametrize(
    "make_model, spec, error, match",
    [
        (question_model, {"conv9": None, "convX": None, "conv1": None}, ValueError,
         r"does not have: \['conv9', 'convX'\]"),
        (question_model, {"relu1": None}, TypeError, "'relu1' of type ReLU"),
        (question_model, [("conv1", None)], TypeError, "`frozen_by_layer` must be a dict"),
        (question_model, {"conv1": [(3, 0)]}, ValueError, "'conv1'.*input channel 3"),
        (_Subclassed, {"conv": None}, TypeError, "Sequential and functional.*_Subclassed"),
    ],
    ids=["unknown_names", "non_conv_layer", "not_a_dict", "bad_frozen_set", "subclassed_model"],
)
def test_convert_model_errors(make_model, spec, error, match):
    model = make_model()
    model(X)
    with pytest.raises(error, match=match):
        convert_model(model, spec)


def test_convert_model_unbuilt_sequential_names_the_layer():
    model = keras.Sequential([keras.layers.Conv2D(2, 3, name="lazy")])
    with pytest.raises(ValueError, match="'lazy': it is not built"):
        convert_model(model, {"lazy": None})


# --- strip -------------------------------------------------------------------

# (id, rank, options, the Keras class it strips to, its groups on 3 input channels)
CHANNEL_CASES = [
    ("1d-sum-causal_dilated", 1,
     dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2), keras.layers.Conv1D, 1),
    ("1d-concat-strides_channels_first", 1,
     dict(filters=2, kernel_size=3, reduction="concat", strides=2, data_format="channels_first"),
     keras.layers.DepthwiseConv1D, None),
    ("1d-concat-causal", 1,
     dict(filters=2, kernel_size=2, reduction="concat", padding="causal", kernel_regularizer="l2"),
     keras.layers.Conv1D, 3),
    ("2d-sum", 2, dict(filters=4, kernel_size=3, padding="same", activation="relu"),
     keras.layers.Conv2D, 1),
    ("2d-sum_channels_first_no_bias", 2,
     dict(filters=3, kernel_size=3, data_format="channels_first", use_bias=False),
     keras.layers.Conv2D, 1),
    ("2d-concat", 2, dict(filters=2, kernel_size=3, reduction="concat", strides=2),
     keras.layers.DepthwiseConv2D, None),
    ("2d-concat_dilated", 2, dict(filters=2, kernel_size=2, reduction="concat", dilation_rate=2,
                                  kernel_regularizer="l2", kernel_constraint="non_neg"),
     keras.layers.DepthwiseConv2D, None),
    ("3d-sum-channels_first_no_bias", 3,
     dict(filters=3, kernel_size=2, data_format="channels_first", use_bias=False),
     keras.layers.Conv3D, 1),
    ("3d-concat-same", 3,
     dict(filters=2, kernel_size=2, reduction="concat", padding="same",
          kernel_constraint="non_neg"),
     keras.layers.Conv3D, 3),
]


@pytest.mark.parametrize(
    "rank, kwargs, cls, groups", [c[1:] for c in CHANNEL_CASES], ids=[c[0] for c in CHANNEL_CASES]
)
def test_to_keras_layer_equals_the_channel_layer(rank, kwargs, cls, groups):
    layer = LAYERS[rank](frozen=FROZEN[:2], name="cc", **kwargs)
    built(layer, data_format=kwargs.get("data_format", "channels_last"))
    plain = to_keras_layer(layer)
    assert type(plain) is cls and getattr(plain, "groups", None) == groups
    x = inputs_for(rank, kwargs)
    assert_computes(np_(layer(x)), plain, x)
    # A grouped concat's kernel is ours, (c, f) at output channel c * filters + f.
    assert np.array_equal(np_(plain.kernel).reshape(layer.kernel.shape), np_(layer.kernel))
    ours, theirs = layer.get_config(), plain.get_config()
    for key in ("name", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
                "activation", "use_bias", "bias_initializer", "activity_regularizer"):
        assert theirs[key] == ours[key], key
    prefix = "depthwise_" if cls in DEPTHWISE.values() else "kernel_"
    for suffix in KERNEL_ARGS:
        assert theirs[prefix + suffix] == ours["kernel_" + suffix]


def test_to_keras_layer_per_channel_is_equal_to_float_tolerance():
    layer = built(ChannelConv2D(4, 3, frozen=FROZEN, implementation="per_channel"))
    # per_channel sums one convolution per channel: same maths, other rounding.
    np.testing.assert_allclose(np_(to_keras_layer(layer)(X)), np_(layer(X)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer, error, match",
    [
        (keras.layers.Conv2D(2, 3, name="plain"), TypeError, "'plain' of type Conv2D"),
        (ChannelConv2D(2, 3, name="lazy"), ValueError, "'lazy': it is not built"),
    ],
    ids=["not_channel_conv", "unbuilt"],
)
def test_to_keras_layer_errors(layer, error, match):
    with pytest.raises(error, match=match):
        to_keras_layer(layer)


def test_strip_refuses_subclassed_models():
    model = _Subclassed()
    model(X)
    with pytest.raises(TypeError, match="`strip` rebuilds Sequential and functional"):
        strip(model)


def test_keras_still_has_the_functional_class():
    """Fails loudly if Keras moves the private class of functional models.

    channelconv._graph imports it from ``keras.src`` (no public name exists)
    and falls back to the class's name; this test says when the fallback is
    in use, so that a Keras release that moves it is seen here first.
    """
    from channelconv import _graph

    assert _graph.Functional is not None, (
        "keras.src.models.functional.Functional is gone: update the import in "
        "channelconv/_graph.py"
    )
    inputs = keras.Input((4,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert isinstance(functional, _graph.Functional)
    assert _graph.is_graph_model(functional) and _graph.is_graph_model(keras.Sequential())
    assert not _graph.is_graph_model(_Subclassed())


def test_convert_then_strip_round_trips_the_weights():
    model = branchy_model()
    spec = {"shared": [(1, 2)], "inner_dw": [(0, 1)], "head": None}
    back = strip(convert_model(model, spec, frozen_values="keep"))
    assert not any(isinstance(layer, ChannelConv2D) for layer in all_layers(back))
    # Same structure, same weights in the same order (variable paths of
    # layers nested in sub-models differ: they are built outside the model).
    assert [w.name for w in back.weights] == [w.name for w in model.weights]
    for old, new in zip(model.weights, back.weights):
        assert np.array_equal(np_(new), np_(old)), old.path


class StripCase(NamedTuple):
    """A model with channel convolutions, to strip."""

    model: keras.Model
    x: np.ndarray  # an input for it
    kinds: dict  # layer name -> (the Keras class it strips to, its groups)
    source: keras.Model = None  # the Keras model it was converted from


def _randomized(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.random(w.shape).astype("float32") + 0.1 for w in model.weights])
    return model


def _channel_model_2d():
    inputs = keras.Input((9, 9, 3))
    h = ChannelConv2D(4, 3, frozen=FROZEN, frozen_initializer="ones", activation="relu",
                      name="c1")(inputs)
    h = ChannelConv2D(2, 3, reduction="concat", frozen=[(3, 1)], padding="same", name="c2")(h)
    h = L.BatchNormalization(name="bn")(h)
    outputs_ = L.Dense(2, name="d")(L.GlobalAveragePooling2D()(h))
    model = _randomized(keras.Model(inputs, outputs_, name="channel_model"), 3)
    return StripCase(model, X, {"c1": (L.Conv2D, 1), "c2": (L.DepthwiseConv2D, None)})


def _converted_sequence_model():
    """A Conv1D sequence model (causal, grouped, depthwise) after convert_model."""
    inputs = keras.Input((SPATIAL[1][0], 4))
    h = L.Conv1D(6, 3, padding="causal", activation="relu", name="c1")(inputs)
    h = L.Conv1D(6, 3, groups=2, name="grouped")(h)
    h = L.DepthwiseConv1D(2, depth_multiplier=2, name="dw")(h)
    outputs_ = L.Dense(2, name="d")(L.GlobalAveragePooling1D()(h))
    source = _randomized(keras.Model(inputs, outputs_, name="sequence_model"), 4)
    spec = {"c1": [(0, 1), (3, 5)], "grouped": None, "dw": [(1, 0)]}
    kinds = {"c1": (L.Conv1D, 1), "grouped": (L.Conv1D, 2), "dw": (L.DepthwiseConv1D, None)}
    model = convert_model(source, spec, frozen_values="keep")
    return StripCase(model, layer_input("channels_last", SPATIAL[1], 4, seed=5), kinds, source)


def _converted_volume_model():
    """A small Conv3D model (plain and grouped) after convert_model."""
    inputs = keras.Input(SPATIAL[3] + (4,))
    h = L.Conv3D(4, 2, padding="same", activation="relu", name="c1")(inputs)
    h = L.Conv3D(4, (1, 2, 2), groups=4, name="grouped")(h)
    outputs_ = L.BatchNormalization(name="bn")(h)
    source = _randomized(keras.Model(inputs, outputs_, name="volume_model"), 6)
    kinds = {"c1": (L.Conv3D, 1), "grouped": (L.Conv3D, 4)}
    model = convert_model(source, {"c1": [(2, 3)], "grouped": None}, frozen_values="keep")
    return StripCase(model, layer_input("channels_last", SPATIAL[3], 4, seed=7), kinds, source)


STRIP_MODELS = {
    "2d-channel_layers": _channel_model_2d,
    "1d-converted_sequence_model": _converted_sequence_model,
    "3d-converted_volume_model": _converted_volume_model,
}


@pytest.fixture(scope="module", params=list(STRIP_MODELS))
def channel_model(request):
    return STRIP_MODELS[request.param]()


def test_strip_gives_plain_layers_and_identical_outputs(channel_model):
    case = channel_model
    plain = strip(case.model)
    for name, (cls, groups) in case.kinds.items():
        layer = plain.get_layer(name)
        assert type(layer) is cls and getattr(layer, "groups", None) == groups, name
        # The source's kernel: the Keras layer's, or the channel layer's effective one.
        source = (case.source or case.model).get_layer(name)
        assert np.array_equal(np_(layer.kernel), np_(source.kernel)), name
        # The original keeps its layers.
        assert isinstance(case.model.get_layer(name), BaseChannelConv)
    y = outputs(plain, case.x)[0]
    if case.source is None:
        assert np.array_equal(y, outputs(case.model, case.x)[0])
    else:
        # The source's layers and kernels, grouped ones included, so its outputs
        # exactly; the channel model's to float rounding (it runs grouped layers
        # on their full kernels).
        assert np.array_equal(y, outputs(case.source, case.x)[0])
        np.testing.assert_allclose(y, outputs(case.model, case.x)[0], rtol=1e-5, atol=1e-5)


# Run in a fresh process of the same backend (KERAS_BACKEND is inherited),
# for every model in STRIP_MODELS at once: directory/{stripped,original}.keras
# and directory/x.npy in, directory/y.npy out.
LOADER = textwrap.dedent(
    """
    import pathlib, sys
    sys.modules["channelconv"] = None  # as if channelconv were not installed
    import numpy as np, keras
    for directory in map(pathlib.Path, sys.argv[1:]):
        model = keras.saving.load_model(directory / "stripped.keras")
        y = model(np.load(directory / "x.npy"))
        np.save(directory / "y.npy", keras.ops.convert_to_numpy(y))
        try:
            keras.saving.load_model(directory / "original.keras")
        except Exception as error:
            print("ORIGINAL_FAILED", directory.name, type(error).__name__)
    """
)
# The same with SavedModels: directory/served in, directory/y.npy out.
SERVER = textwrap.dedent(
    """
    import pathlib, sys
    sys.modules["channelconv"] = None  # as if channelconv were not installed
    import numpy as np, tensorflow as tf
    for directory in map(pathlib.Path, sys.argv[1:]):
        artifact = tf.saved_model.load(str(directory / "served"))
        np.save(directory / "y.npy", artifact.serve(np.load(directory / "x.npy")).numpy())
    """
)


def _run(script, directories):
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, directories)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _strip_cases(tmp_path):
    """``{directory: case}`` for every model of STRIP_MODELS, ``x.npy`` saved."""
    cases = {}
    for name, make in STRIP_MODELS.items():
        directory = tmp_path / name
        directory.mkdir()
        cases[directory] = make()
        np.save(directory / "x.npy", cases[directory].x)
    return cases


@pytest.mark.subprocess
def test_stripped_models_load_without_channelconv(tmp_path):
    """In one fresh process for all of STRIP_MODELS (a process start is slow)."""
    cases = _strip_cases(tmp_path)
    for directory, case in cases.items():
        strip(case.model).save(directory / "stripped.keras")
        case.model.save(directory / "original.keras")
    result = _run(LOADER, cases)
    for directory, case in cases.items():
        # The control: the unstripped model does need channelconv.
        assert f"ORIGINAL_FAILED {directory.name} " in result.stdout
        # The stripped model computes what its source computes (see above).
        expected = outputs(case.source or case.model, case.x)[0]
        assert np.array_equal(np.load(directory / "y.npy"), expected), directory.name


@pytest.mark.tensorflow
@pytest.mark.subprocess
def test_saved_models_of_unstripped_models_need_no_channelconv(tmp_path):
    cases = _strip_cases(tmp_path)
    for directory, case in cases.items():
        case.model.export(str(directory / "served"), verbose=False)
    _run(SERVER, cases)
    for directory, case in cases.items():
        served = np.load(directory / "y.npy")
        assert np.array_equal(served, outputs(case.model, case.x)[0]), directory.name


# --- the docs walkthrough ------------------------------------------------------

ROOT = pathlib.Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "examples" / "pretrained_walkthrough.py"


def test_pretrained_doc_code_blocks_are_in_the_walkthrough():
    page = (ROOT / "docs" / "pretrained.md").read_text()
    script = WALKTHROUGH.read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 6
    for block in blocks:
        assert block in script or textwrap.indent(block, "    ") in script, block


@pytest.mark.tensorflow  # it ends with a SavedModel export and tf.saved_model.load
@pytest.mark.subprocess
def test_pretrained_walkthrough_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(WALKTHROUGH), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    # 10% of 3*16 and of 16*16 kernels, rounded; 9 weights per 3x3 kernel.
    assert results["frozen_kernels"] == {"conv1": 5, "conv2": 26, "conv3": 26}
    pretrained = (3 * 16 * 9 + 16) + 2 * (16 * 16 * 9 + 16) + (16 * 3 + 3)
    assert results["trainable_params"] == {
        "pretrained": pretrained, "fine_tuned": pretrained - 57 * 9
    }
    assert results["deploy_layers"][1:4] == ["Conv2D"] * 3
    assert results["fine_tuned_accuracy"] > 0.5  # chance is 1/3
    assert (tmp_path / "conv2_mask.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "serving" / "saved_model.pb").exists()
