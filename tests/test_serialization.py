"""ChannelConv2D's config, registration and ``.keras`` save/load."""

import inspect
import json
import pathlib

import keras
import numpy as np
import pytest

from channelconv.layers.channel_conv2d import ChannelConv2D
from channelconv.mask import random_frozen_mask
from harness import numpy_conv, run_layer_test, to_numpy

QUESTION_FROZEN = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]

# Every constructor argument away from its default.
NON_DEFAULT = dict(
    filters=5,
    kernel_size=(2, 3),
    frozen=[(0, 1), (2, 4)],
    frozen_initializer=keras.initializers.Constant(0.25),
    reduction="concat",
    implementation="per_channel",
    strides=(1, 2),
    padding="same",
    data_format="channels_first",
    dilation_rate=(1, 1),  # strides > 1 excludes dilation > 1; see below
    activation="relu",
    use_bias=False,
    kernel_initializer=keras.initializers.HeNormal(seed=3),
    bias_initializer="ones",
    kernel_regularizer=keras.regularizers.L2(0.01),
    bias_regularizer=keras.regularizers.L1(0.02),
    activity_regularizer=keras.regularizers.L2(0.03),
    kernel_constraint=keras.constraints.MaxNorm(2.0, axis=[0, 1, 2]),
    bias_constraint=keras.constraints.NonNeg(),
)


def _constructor_arguments():
    names = set(inspect.signature(ChannelConv2D.__init__).parameters)
    return sorted(names - {"self", "kwargs"})


def test_registered_name():
    assert (
        keras.saving.get_registered_name(ChannelConv2D) == "channelconv>ChannelConv2D"
    )
    assert (
        keras.saving.get_registered_object("channelconv>ChannelConv2D") is ChannelConv2D
    )
    serialized = keras.saving.serialize_keras_object(ChannelConv2D(2, 1))
    assert serialized["registered_name"] == "channelconv>ChannelConv2D"


def test_get_config_holds_every_constructor_argument():
    config = ChannelConv2D(4, 3).get_config()
    missing = set(_constructor_arguments()) - set(config)
    assert not missing
    assert {"name", "trainable", "dtype"} <= set(config)


@pytest.mark.parametrize(
    "overrides, at_default",
    [
        pytest.param({}, "dilation_rate", id="strides"),
        pytest.param(dict(strides=1, dilation_rate=(2, 1)), "strides", id="dilation"),
    ],
)
def test_every_argument_survives_from_config(overrides, at_default):
    """Each argument, set away from its default, is carried by the config."""
    kwargs = dict(NON_DEFAULT, **overrides)
    assert sorted(kwargs) == _constructor_arguments()
    layer = ChannelConv2D(**kwargs)
    config = layer.get_config()
    json.dumps(config)  # JSON-friendly
    default_config = ChannelConv2D(4, 1).get_config()
    for name in set(kwargs) - {at_default}:
        assert config[name] != default_config[name], name
    clone = ChannelConv2D.from_config(config)
    assert clone.get_config() == config
    # Spot-check that the values, not only the keys, came back.
    assert clone.kernel_size == (2, 3) and clone.filters == 5
    assert clone.reduction == "concat" and clone.implementation == "per_channel"
    assert clone.data_format == "channels_first" and clone.padding == "same"
    assert clone.use_bias is False
    assert keras.activations.serialize(clone.activation) == "relu"
    assert clone.kernel_constraint.max_value == 2.0
    assert list(clone.kernel_constraint.axis) == [0, 1, 2]
    assert float(clone.frozen_initializer.value) == 0.25


def _mask(pairs, shape=(3, 4)):
    mask = np.zeros(shape, dtype=bool)
    for channel, filter_ in pairs:
        mask[channel, filter_] = True
    return mask


HAND_MASK = _mask([(0, 0), (0, 3), (1, 1), (2, 2), (2, 3)])


# The compact configs are derived by hand: 4 filters fill the high nibble of
# one byte per input channel, filter 0 in the most significant bit.
@pytest.mark.parametrize(
    "frozen, before_build, after_build, expected_mask",
    [
        pytest.param(
            None, [], {"shape": [3, 4], "rows": ["00", "00", "00"]}, _mask([]),
            id="none",
        ),
        pytest.param(
            [(0, 1), (2, 3)],
            [[0, 1], [2, 3]],
            {"shape": [3, 4], "rows": ["40", "00", "10"]},
            _mask([(0, 1), (2, 3)]),
            id="pairs",
        ),
        pytest.param(
            HAND_MASK,
            {"shape": [3, 4], "rows": ["90", "40", "30"]},
            {"shape": [3, 4], "rows": ["90", "40", "30"]},
            HAND_MASK,
            id="mask",
        ),
        pytest.param(
            HAND_MASK.tolist(),
            {"shape": [3, 4], "rows": ["90", "40", "30"]},
            {"shape": [3, 4], "rows": ["90", "40", "30"]},
            HAND_MASK,
            id="nested-bool-list",
        ),
    ],
)
def test_config_holds_resolved_frozen_set(
    frozen, before_build, after_build, expected_mask
):
    layer = ChannelConv2D(4, 3, frozen=frozen)
    assert layer.get_config()["frozen"] == before_build
    layer.build((None, 6, 6, 3))
    assert layer.get_config()["frozen"] == after_build
    np.testing.assert_array_equal(layer.frozen_mask, expected_mask)
    # A layer rebuilt from the resolved config, through JSON, freezes the
    # same kernels and writes the same config.
    config = json.loads(json.dumps(layer.get_config()))
    clone = ChannelConv2D.from_config(config)
    clone.build((None, 6, 6, 3))
    np.testing.assert_array_equal(clone.frozen_mask, expected_mask)
    assert clone.get_config() == layer.get_config()


def test_question_mask_config_is_json_and_readable():
    layer = ChannelConv2D(16, 3, frozen=QUESTION_FROZEN)
    layer.build((None, 8, 8, 3))
    text = json.dumps(layer.get_config())
    # Kernels (0, 0)..(0, 4): the five high bits of channel 0's row, by hand.
    assert json.loads(text)["frozen"] == {
        "shape": [3, 16],
        "rows": ["f800", "0000", "0000"],
    }


def test_large_built_layer_config_is_small_and_round_trips():
    mask = random_frozen_mask(512, 512, 100_000, seed=7)
    layer = ChannelConv2D(512, 1, frozen=mask)
    layer.build((None, 1, 1, 512))
    text = json.dumps(layer.get_config())
    # 512 rows of 128 hex digits (about 68 kB) plus the other arguments. The
    # 0.1.0 format, one JSON boolean per kernel, takes about 1.8 MB.
    bound = 80_000
    assert len(text) < bound
    assert len(json.dumps(mask.tolist())) > 10 * bound
    clone = ChannelConv2D.from_config(json.loads(text))
    clone.build((None, 1, 1, 512))
    np.testing.assert_array_equal(clone.frozen_mask, mask)
    assert json.dumps(clone.get_config()) == text


# The masks tests/data/make_v010_model.py wrote, transcribed from its source.
V010_MASKS = {
    "sum_layer": _mask([(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (2, 7)], (3, 8)),
    "concat_layer": _mask([(1, 0), (5, 1), (7, 0)], (8, 2)),
}


def _full_kernel(layer, mask):
    """The full kernel put together here from the two variables and the mask."""
    trainable = to_numpy(layer.trainable_kernels)
    frozen = to_numpy(layer.frozen_kernels)
    kernel = np.zeros(layer.kernel_size + mask.shape, dtype=trainable.dtype)
    kernel[:, :, ~mask] = trainable  # both in (channel, filter) row-major order
    kernel[:, :, mask] = frozen
    return kernel


def test_model_saved_by_0_1_0_loads():
    data = pathlib.Path(__file__).resolve().parent / "data"
    model = keras.saving.load_model(data / "v010_model.keras", safe_mode=True)
    kernels, biases = {}, {}
    for name, mask in V010_MASKS.items():
        layer = model.get_layer(name)
        np.testing.assert_array_equal(layer.frozen_mask, mask)
        assert tuple(layer.frozen_kernels.shape)[-1] == mask.sum()
        kernels[name] = _full_kernel(layer, mask)
        np.testing.assert_array_equal(to_numpy(layer.kernel), kernels[name])
        biases[name] = to_numpy(layer.bias)
    # The sum layer froze its kernels at zero, the concat layer at random
    # normal values; the trainable kernels are glorot-uniform draws.
    assert not kernels["sum_layer"][:, :, V010_MASKS["sum_layer"]].any()
    assert kernels["sum_layer"][:, :, ~V010_MASKS["sum_layer"]].all()
    assert kernels["concat_layer"].all()

    stored = np.load(data / "v010_model.npz")
    hidden = np.maximum(
        numpy_conv(
            stored["x"], kernels["sum_layer"], padding="same", bias=biases["sum_layer"]
        ),
        0.0,
    )
    expected = numpy_conv(
        hidden, kernels["concat_layer"], reduction="concat", bias=biases["concat_layer"]
    )
    y = to_numpy(model(stored["x"]))
    assert y.shape == (2, 8, 7, 16)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, stored["y"], rtol=1e-5, atol=1e-5)


# Arguments normalised in __init__: each stored canonically, as Keras's own
# Conv2D stores it where Conv2D takes the argument.
NORMALISED = [
    pytest.param("data_format", "Channels_First", "channels_first", id="data_format"),
    pytest.param("data_format", "CHANNELS_LAST", "channels_last", id="data_format-upper"),
    pytest.param("padding", "Same", "same", id="padding"),
    pytest.param("reduction", "Concat", "concat", id="reduction"),
    pytest.param("implementation", "PER_CHANNEL", "per_channel", id="implementation"),
    pytest.param("use_bias", np.True_, True, id="use_bias-numpy-true"),
    pytest.param("use_bias", np.False_, False, id="use_bias-numpy-false"),
]


@pytest.mark.parametrize("name, given, stored", NORMALISED)
def test_arguments_are_normalised(name, given, stored):
    layer = ChannelConv2D(4, 3, **{name: given})
    assert getattr(layer, name) == stored
    assert type(getattr(layer, name)) is type(stored)
    config = layer.get_config()
    assert config[name] == stored and type(config[name]) is type(stored)
    json.dumps(config)
    assert ChannelConv2D.from_config(config).get_config() == config
    if name in ("data_format", "padding", "use_bias"):
        keras_layer = keras.layers.Conv2D(4, 3, **{name: given})
        assert getattr(keras_layer, name) == stored


HARNESS_CASES = [
    pytest.param(
        dict(filters=16, kernel_size=3, frozen=QUESTION_FROZEN),
        (2, 8, 8, 3),
        (2, 6, 6, 16),
        2,
        1,
        id="question-layer",
    ),
    pytest.param(
        dict(
            filters=4,
            kernel_size=(2, 3),
            frozen=random_frozen_mask(3, 4, 5, seed=1),
            frozen_initializer=keras.initializers.RandomNormal(seed=2),
            reduction="concat",
            implementation="per_channel",
            strides=2,
            padding="same",
        ),
        (2, 7, 7, 3),
        (2, 4, 4, 12),
        2,
        1,
        id="concat-per_channel-random-mask",
    ),
    pytest.param(
        dict(
            filters=3,
            kernel_size=3,
            frozen=[(1, 2)],
            data_format="channels_first",
            dilation_rate=2,
            activation="tanh",
            kernel_initializer=keras.initializers.HeNormal(seed=4),
            bias_initializer=keras.initializers.Constant(0.1),
            kernel_regularizer=keras.regularizers.L2(0.01),
            bias_regularizer="l1",
            activity_regularizer="l2",
            kernel_constraint=keras.constraints.MaxNorm(3.0, axis=[0, 1, 2]),
            bias_constraint="non_neg",
        ),
        (2, 2, 7, 8),
        (2, 3, 3, 4),
        2,
        1,
        id="channels_first-dilated-regularized",
    ),
    pytest.param(
        dict(filters=4, kernel_size=3, use_bias=False),
        (2, 6, 6, 3),
        (2, 4, 4, 4),
        1,
        1,
        id="nothing-frozen-no-bias",
    ),
    pytest.param(
        dict(
            filters=4,
            kernel_size=3,
            frozen=np.ones((3, 4), dtype=bool),
            frozen_initializer=keras.initializers.Constant(0.5),
        ),
        (2, 6, 6, 3),
        (2, 4, 4, 4),
        2,
        1,
        id="everything-frozen",
    ),
]


@pytest.mark.parametrize(
    "init_kwargs, input_shape, output_shape, n_trainable, n_non_trainable",
    HARNESS_CASES,
)
def test_layer_harness(
    tmp_path, init_kwargs, input_shape, output_shape, n_trainable, n_non_trainable
):
    run_layer_test(
        ChannelConv2D,
        init_kwargs,
        input_shape,
        output_shape,
        tmp_path,
        expected_num_trainable_weights=n_trainable,
        expected_num_non_trainable_weights=n_non_trainable,
    )


@pytest.mark.parametrize(
    "frozen, n_trainable, n_frozen",
    [
        pytest.param(None, 12, 0, id="nothing-frozen"),
        pytest.param(np.ones((3, 4), dtype=bool), 0, 12, id="everything-frozen"),
    ],
)
def test_zero_size_variables_save_and_load(tmp_path, frozen, n_trainable, n_frozen):
    inputs = keras.Input(shape=(6, 6, 3))
    layer = ChannelConv2D(
        4, 3, frozen=frozen, frozen_initializer=keras.initializers.Constant(-0.5)
    )
    model = keras.Model(inputs, layer(inputs))
    assert tuple(layer.trainable_kernels.shape) == (3, 3, n_trainable)
    assert tuple(layer.frozen_kernels.shape) == (3, 3, n_frozen)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    loaded_layer = loaded.layers[1]
    np.testing.assert_array_equal(loaded_layer.frozen_mask, layer.frozen_mask)
    assert tuple(loaded_layer.trainable_kernels.shape) == (3, 3, n_trainable)
    assert tuple(loaded_layer.frozen_kernels.shape) == (3, 3, n_frozen)
    if n_frozen:
        assert np.array_equal(
            to_numpy(loaded_layer.kernel), np.full((3, 3, 3, 4), -0.5, "float32")
        )


def test_sequential_model_save_load_keeps_outputs_and_masks(tmp_path):
    mask = random_frozen_mask(4, 4, 6, seed=5)
    model = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 3)),
            ChannelConv2D(4, 3, frozen=[(0, 0), (1, 3)], name="first"),
            keras.layers.ReLU(),
            ChannelConv2D(
                2,
                3,
                frozen=mask[:, :2],
                reduction="concat",
                frozen_initializer=keras.initializers.Constant(0.3),
                name="second",
            ),
        ]
    )
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    path = str(tmp_path / "seq.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    for name in ("first", "second"):
        np.testing.assert_array_equal(
            loaded.get_layer(name).frozen_mask, model.get_layer(name).frozen_mask
        )
        np.testing.assert_array_equal(
            to_numpy(loaded.get_layer(name).kernel),
            to_numpy(model.get_layer(name).kernel),
        )
    assert loaded.get_layer("second").frozen_mask.sum() == mask[:, :2].sum()
    # The JSON config round-trips too.
    rebuilt = keras.models.model_from_json(model.to_json())
    np.testing.assert_array_equal(
        rebuilt.get_layer("first").frozen_mask, model.get_layer("first").frozen_mask
    )
