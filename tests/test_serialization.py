"""The channel convolutions' config, registration and ``.keras`` save/load.

Every test runs for every rank (ChannelConv1D, ChannelConv2D, ChannelConv3D),
except the one loading the 2-D fixture file 0.1.0 wrote, and, on JAX only,
the layer-harness cases in :data:`JAX_2D_ONLY`. Everything runs on every
Keras backend.
"""

import inspect
import json
import pathlib

import keras
import numpy as np
import pytest

from channelconv.mask import grouped_frozen_mask, random_frozen_mask
from harness import (
    BACKEND,
    CONVS,
    LAYERS,
    layer_input,
    numpy_conv,
    run_layer_test,
    to_numpy,
)

RANKS = tuple(sorted(LAYERS))
RANK_IDS = [f"{rank}d" for rank in RANKS]
QUESTION_FROZEN = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]


def _sizes(rank, *sizes):
    """One size per spatial axis: the first ``rank`` of ``sizes``."""
    return tuple(sizes[:rank])


def _non_default(rank):
    """Every constructor argument away from its default, for ``rank``."""
    return dict(
        filters=5,
        kernel_size=_sizes(rank, 2, 3, 2),
        frozen=[(0, 1), (2, 4)],
        frozen_initializer=keras.initializers.Constant(0.25),
        reduction="concat",
        implementation="per_channel",
        strides={1: (2,), 2: (1, 2), 3: (1, 2, 2)}[rank],
        padding="same",
        data_format="channels_first",
        dilation_rate=(1,) * rank,  # strides > 1 excludes dilation > 1; see below
        activation="relu",
        use_bias=False,
        kernel_initializer=keras.initializers.HeNormal(seed=3),
        bias_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(0.01),
        bias_regularizer=keras.regularizers.L1(0.02),
        activity_regularizer=keras.regularizers.L2(0.03),
        kernel_constraint=keras.constraints.MaxNorm(2.0, axis=list(range(rank + 1))),
        bias_constraint=keras.constraints.NonNeg(),
        prunable=True,
        store_frozen=True,
    )


def _constructor_arguments(layer_cls):
    names = set(inspect.signature(layer_cls.__init__).parameters)
    return sorted(names - {"self", "kwargs"})


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_registered_name(rank):
    layer_cls = LAYERS[rank]
    name = f"channelconv>ChannelConv{rank}D"
    assert layer_cls.__name__ == f"ChannelConv{rank}D"
    assert keras.saving.get_registered_name(layer_cls) == name
    assert keras.saving.get_registered_object(name) is layer_cls
    serialized = keras.saving.serialize_keras_object(layer_cls(2, 1))
    assert serialized["registered_name"] == name
    serialized = json.loads(json.dumps(serialized))
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is layer_cls and restored.rank == rank


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_get_config_holds_every_constructor_argument(rank):
    config = LAYERS[rank](4, 3).get_config()
    missing = set(_constructor_arguments(LAYERS[rank])) - set(config)
    assert not missing
    assert {"name", "trainable", "dtype"} <= set(config)
    assert tuple(config["kernel_size"]) == (3,) * rank
    assert tuple(config["strides"]) == tuple(config["dilation_rate"]) == (1,) * rank


FROM_CONFIG = [
    pytest.param(rank, overrides, at_default, id=f"{rank}d-{case_id}")
    for rank in RANKS
    for case_id, overrides, at_default, ranks in [
        ("strides", {}, "dilation_rate", RANKS),
        (
            "dilation",
            dict(strides=1, dilation_rate=(2,) + (1,) * (rank - 1)),
            "strides",
            RANKS,
        ),
        ("causal-strides", dict(padding="causal"), "dilation_rate", (1,)),
    ]
    if rank in ranks
]


@pytest.mark.parametrize("rank, overrides, at_default", FROM_CONFIG)
def test_every_argument_survives_from_config(rank, overrides, at_default):
    """Each argument, set away from its default, is carried by the config."""
    layer_cls = LAYERS[rank]
    kwargs = dict(_non_default(rank), **overrides)
    assert sorted(kwargs) == _constructor_arguments(layer_cls)
    layer = layer_cls(**kwargs)
    config = layer.get_config()
    json.dumps(config)  # JSON-friendly
    default_config = layer_cls(4, 1).get_config()
    for name in set(kwargs) - {at_default}:
        assert config[name] != default_config[name], name
    clone = layer_cls.from_config(json.loads(json.dumps(config)))
    assert type(clone) is layer_cls
    assert clone.get_config() == config
    # Spot-check that the values, not only the keys, came back.
    assert clone.kernel_size == _sizes(rank, 2, 3, 2) and clone.filters == 5
    for name in ("strides", "dilation_rate"):
        given = kwargs[name]
        assert getattr(clone, name) == ((given,) * rank if given == 1 else given)
    assert clone.reduction == "concat" and clone.implementation == "per_channel"
    assert clone.data_format == "channels_first"
    assert clone.padding == kwargs["padding"]
    assert clone.use_bias is False
    assert keras.activations.serialize(clone.activation) == "relu"
    assert clone.kernel_constraint.max_value == 2.0
    assert list(clone.kernel_constraint.axis) == list(range(rank + 1))
    assert float(clone.frozen_initializer.value) == 0.25
    assert clone.prunable is True


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
@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_config_holds_resolved_frozen_set(
    rank, frozen, before_build, after_build, expected_mask
):
    layer = LAYERS[rank](4, 3, frozen=frozen)
    assert layer.get_config()["frozen"] == before_build
    input_shape = (None,) + (6,) * rank + (3,)
    layer.build(input_shape)
    assert layer.get_config()["frozen"] == after_build
    np.testing.assert_array_equal(layer.frozen_mask, expected_mask)
    # A layer rebuilt from the resolved config, through JSON, freezes the
    # same kernels and writes the same config.
    config = json.loads(json.dumps(layer.get_config()))
    clone = LAYERS[rank].from_config(config)
    clone.build(input_shape)
    np.testing.assert_array_equal(clone.frozen_mask, expected_mask)
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_question_mask_config_is_json_and_readable(rank):
    layer = LAYERS[rank](16, 3, frozen=QUESTION_FROZEN)
    layer.build((None,) + (8,) * rank + (3,))
    text = json.dumps(layer.get_config())
    # Kernels (0, 0)..(0, 4): the five high bits of channel 0's row, by hand.
    assert json.loads(text)["frozen"] == {
        "shape": [3, 16],
        "rows": ["f800", "0000", "0000"],
    }


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_large_built_layer_config_is_small_and_round_trips(rank):
    mask = random_frozen_mask(512, 512, 100_000, seed=7)
    layer = LAYERS[rank](512, 1, frozen=mask)
    input_shape = (None,) + (1,) * rank + (512,)
    layer.build(input_shape)
    text = json.dumps(layer.get_config())
    # 512 rows of 128 hex digits (about 68 kB) plus the other arguments. The
    # 0.1.0 format, one JSON boolean per kernel, takes about 1.8 MB.
    bound = 80_000
    assert len(text) < bound
    assert len(json.dumps(mask.tolist())) > 10 * bound
    clone = LAYERS[rank].from_config(json.loads(text))
    clone.build(input_shape)
    np.testing.assert_array_equal(clone.frozen_mask, mask)
    assert json.dumps(clone.get_config()) == text


# The masks tests/data/make_v010_model.py wrote, transcribed from its source.
V010_MASKS = {
    "sum_layer": _mask([(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (2, 7)], (3, 8)),
    "concat_layer": _mask([(1, 0), (5, 1), (7, 0)], (8, 2)),
}


def _full_kernel(layer, mask):
    """The full kernel put together here from the variables and the mask."""
    trainable = to_numpy(layer.trainable_kernels)
    kernel = np.zeros(layer.kernel_size + mask.shape, dtype=trainable.dtype)
    kernel[..., ~mask] = trainable  # both in (channel, filter) row-major order
    if layer.store_frozen:  # otherwise zeros by construction
        kernel[..., mask] = to_numpy(layer.frozen_kernels)
    return kernel


def test_model_saved_by_0_1_0_loads():
    data = pathlib.Path(__file__).resolve().parent / "data"
    with pytest.warns(DeprecationWarning, match="saved by channelconv 0.1.0") as caught:
        model = keras.saving.load_model(data / "v010_model.keras", safe_mode=True)
    warned = {str(w.message).split("'")[1] for w in caught if w.category is DeprecationWarning}
    assert warned == set(V010_MASKS)  # one warning per layer, naming it
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


# Arguments normalised in __init__: each stored canonically, as the Keras
# convolution of the rank stores it where it takes the argument.
NORMALISED = [
    pytest.param(rank, name, given, stored, id=f"{rank}d-{case_id}")
    for rank in RANKS
    for case_id, name, given, stored, ranks in [
        ("data_format", "data_format", "Channels_First", "channels_first", RANKS),
        ("data_format-upper", "data_format", "CHANNELS_LAST", "channels_last", RANKS),
        ("padding", "padding", "Same", "same", RANKS),
        ("padding-causal", "padding", "Causal", "causal", (1,)),
        ("reduction", "reduction", "Concat", "concat", RANKS),
        ("implementation", "implementation", "PER_CHANNEL", "per_channel", RANKS),
        ("use_bias-numpy-true", "use_bias", np.True_, True, RANKS),
        ("use_bias-numpy-false", "use_bias", np.False_, False, RANKS),
    ]
    if rank in ranks
]


@pytest.mark.parametrize("rank, name, given, stored", NORMALISED)
def test_arguments_are_normalised(rank, name, given, stored):
    layer = LAYERS[rank](4, 3, **{name: given})
    assert getattr(layer, name) == stored
    assert type(getattr(layer, name)) is type(stored)
    config = layer.get_config()
    assert config[name] == stored and type(config[name]) is type(stored)
    json.dumps(config)
    assert LAYERS[rank].from_config(config).get_config() == config
    if name in ("data_format", "padding", "use_bias"):
        keras_layer = CONVS[rank](4, 3, **{name: given})
        assert getattr(keras_layer, name) == stored


def _harness_cases(rank):
    """``run_layer_test`` cases of one rank: ``(id, init_kwargs, input_shape,
    output_shape, n_trainable, n_non_trainable)``, shapes with the batch."""
    cases = [
        (
            "question-layer",
            dict(filters=16, kernel_size=3, frozen=QUESTION_FROZEN),
            (2, *_sizes(rank, 8, 8, 8), 3),
            (2, *_sizes(rank, 6, 6, 6), 16),
            2,
            0,
        ),
        (
            "concat-per_channel-random-mask",
            dict(
                filters=4,
                kernel_size=_sizes(rank, 2, 3, 2),
                frozen=random_frozen_mask(3, 4, 5, seed=1),
                frozen_initializer=keras.initializers.RandomNormal(seed=2),
                reduction="concat",
                implementation="per_channel",
                strides=2,
                padding="same",
            ),
            (2, *_sizes(rank, 7, 7, 7), 3),
            (2, *_sizes(rank, 4, 4, 4), 12),
            2,
            1,
        ),
        (
            "concat-fused-channels_first",
            dict(
                filters=2,
                kernel_size=2,
                frozen=[(0, 1), (2, 0)],
                frozen_initializer=keras.initializers.Constant(-0.5),
                reduction="concat",
                data_format="channels_first",
            ),
            (2, 3, *_sizes(rank, 5, 6, 7)),
            (2, 6, *_sizes(rank, 4, 5, 6)),
            2,
            1,
        ),
        (
            "channels_first-dilated-regularized",
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
                kernel_constraint=keras.constraints.MaxNorm(
                    3.0, axis=list(range(rank + 1))
                ),
                bias_constraint="non_neg",
            ),
            (2, 2, *_sizes(rank, 7, 8, 9)),
            (2, 3, *_sizes(rank, 3, 4, 5)),
            2,
            0,
        ),
        (
            "sparse-blocks-channels_first",
            dict(
                filters=6,
                kernel_size=2,
                frozen=grouped_frozen_mask(4, 6, 2),
                implementation="sparse",
                data_format="channels_first",
                strides=2,
            ),
            (2, 4, *_sizes(rank, 7, 7, 7)),
            (2, 6, *_sizes(rank, 3, 3, 3)),
            2,
            0,
        ),
        (
            "sparse-concat-same",
            dict(filters=2, kernel_size=3, frozen=random_frozen_mask(3, 2, 4, seed=3),
                 reduction="concat", implementation="sparse", padding="same"),
            (2, *_sizes(rank, 5, 6, 7), 3),
            (2, *_sizes(rank, 5, 6, 7), 6),
            2,
            0,
        ),
        (
            "auto",
            dict(filters=4, kernel_size=3, frozen=[(0, 1)], implementation="auto"),
            (2, *_sizes(rank, 6, 6, 6), 3),
            (2, *_sizes(rank, 4, 4, 4), 4),
            2,
            0,
        ),
        (
            "nothing-frozen-no-bias",
            dict(filters=4, kernel_size=3, use_bias=False),
            (2, *_sizes(rank, 6, 6, 6), 3),
            (2, *_sizes(rank, 4, 4, 4), 4),
            1,
            0,
        ),
        (
            "everything-frozen",
            dict(
                filters=4,
                kernel_size=3,
                frozen=np.ones((3, 4), dtype=bool),
                frozen_initializer=keras.initializers.Constant(0.5),
            ),
            (2, *_sizes(rank, 6, 6, 6), 3),
            (2, *_sizes(rank, 4, 4, 4), 4),
            2,
            1,
        ),
    ]
    if rank == 1:  # causal padding keeps the length, strided: ceil(length / 2)
        cases += [
            (
                "causal-dilated-sum",
                dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2,
                     frozen=[(0, 0), (1, 3)]),
                (2, 9, 3),
                (2, 9, 4),
                2,
                0,
            ),
            (
                "causal-strided-concat-channels_first",
                dict(filters=2, kernel_size=2, padding="causal", strides=2,
                     reduction="concat", frozen=[(1, 1)],
                     frozen_initializer=keras.initializers.Constant(0.25),
                     data_format="channels_first"),
                (2, 3, 9),
                (2, 6, 5),
                2,
                1,
            ),
            (
                "causal-concat-per_channel",
                dict(filters=3, kernel_size=4, padding="causal", reduction="concat",
                     implementation="per_channel", frozen=[(0, 2), (2, 0)]),
                (2, 6, 3),
                (2, 6, 9),
                2,
                0,
            ),
        ]
    return cases


# On JAX every eager op compiles once per shape, and a harness case costs 1
# to 4 s there: these cases, whose config, save/load and fit step are the
# base class's whatever the rank, run in 2-D only on JAX (every rank on the
# other backends; their convolutions at every rank are test_numerics's).
JAX_2D_ONLY = (
    "concat-per_channel-random-mask",
    "channels_first-dilated-regularized",
    "sparse-blocks-channels_first",
    "sparse-concat-same",
)
assert set(JAX_2D_ONLY) <= {case[0] for case in _harness_cases(2)}
_JAX_2D_ONLY = pytest.mark.skipif(
    BACKEND == "jax", reason="slow on JAX (XLA compiles each eager op): runs in 2-D there"
)
HARNESS_CASES = [
    pytest.param(
        rank, *case[1:], id=f"{rank}d-{case[0]}",
        marks=[_JAX_2D_ONLY] if case[0] in JAX_2D_ONLY and rank != 2 else [],
    )
    for rank in RANKS
    for case in _harness_cases(rank)
]


@pytest.mark.parametrize(
    "rank, init_kwargs, input_shape, output_shape, n_trainable, n_non_trainable",
    HARNESS_CASES,
)
def test_layer_harness(
    tmp_path, rank, init_kwargs, input_shape, output_shape, n_trainable, n_non_trainable
):
    run_layer_test(
        LAYERS[rank],
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
@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_zero_size_variables_save_and_load(tmp_path, rank, frozen, n_trainable, n_frozen):
    inputs = keras.Input(shape=(6,) * rank + (3,))
    layer = LAYERS[rank](
        4, 3, frozen=frozen, frozen_initializer=keras.initializers.Constant(-0.5)
    )
    model = keras.Model(inputs, layer(inputs))
    kernel_size = (3,) * rank
    assert tuple(layer.trainable_kernels.shape) == kernel_size + (n_trainable,)
    assert tuple(layer.frozen_kernels.shape) == kernel_size + (n_frozen,)
    x = layer_input("channels_last", (6,) * rank, 3)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    loaded_layer = loaded.layers[1]
    assert type(loaded_layer) is LAYERS[rank]
    np.testing.assert_array_equal(loaded_layer.frozen_mask, layer.frozen_mask)
    assert tuple(loaded_layer.trainable_kernels.shape) == kernel_size + (n_trainable,)
    assert tuple(loaded_layer.frozen_kernels.shape) == kernel_size + (n_frozen,)
    if n_frozen:
        assert np.array_equal(
            to_numpy(loaded_layer.kernel), np.full(kernel_size + (3, 4), -0.5, "float32")
        )


# The first layer's padding: causal where the rank has it.
FIRST_PADDING = {1: "causal", 2: "valid", 3: "same"}


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_sequential_model_save_load_keeps_outputs_and_masks(tmp_path, rank):
    first_pairs = [(0, 0), (1, 3)]
    mask = random_frozen_mask(4, 4, 6, seed=5)
    second_mask = mask[:, :2]
    model = keras.Sequential(
        [
            keras.Input(shape=(8,) * rank + (3,)),
            LAYERS[rank](
                4,
                3,
                frozen=first_pairs,
                padding=FIRST_PADDING[rank],
                bias_initializer=keras.initializers.RandomNormal(seed=1),
                name="first",
            ),
            keras.layers.ReLU(),
            LAYERS[rank](
                2,
                3,
                frozen=second_mask,
                reduction="concat",
                frozen_initializer=keras.initializers.Constant(0.3),
                bias_initializer=keras.initializers.RandomNormal(seed=2),
                name="second",
            ),
        ]
    )
    x = layer_input("channels_last", (8,) * rank, 3)
    path = str(tmp_path / "seq.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    y = to_numpy(loaded(x))
    np.testing.assert_array_equal(y, to_numpy(model(x)))
    for name in ("first", "second"):
        loaded_layer, layer = loaded.get_layer(name), model.get_layer(name)
        assert type(loaded_layer) is LAYERS[rank]
        np.testing.assert_array_equal(loaded_layer.frozen_mask, layer.frozen_mask)
        assert [w.name for w in loaded_layer.weights] == [w.name for w in layer.weights]
        for loaded_weight, weight in zip(loaded_layer.weights, layer.weights):
            np.testing.assert_array_equal(to_numpy(loaded_weight), to_numpy(weight))
    assert model.get_layer("first").frozen_kernels is None  # zeros: stored nowhere
    assert model.get_layer("second").store_frozen  # at 0.3
    # The loaded model is the convolution of the kernels put together here
    # from the loaded variables and the masks as given.
    first_mask = np.zeros((3, 4), dtype=bool)
    first_mask[tuple(zip(*first_pairs))] = True
    first, second = loaded.get_layer("first"), loaded.get_layer("second")
    np.testing.assert_array_equal(first.frozen_mask, first_mask)
    np.testing.assert_array_equal(second.frozen_mask, second_mask)
    first_kernel = _full_kernel(first, first_mask)
    second_kernel = _full_kernel(second, second_mask)
    assert not first_kernel[..., first_mask].any()
    assert (second_kernel[..., second_mask] == np.float32(0.3)).all()
    hidden = np.maximum(
        numpy_conv(x, first_kernel, padding=FIRST_PADDING[rank], bias=to_numpy(first.bias)),
        0.0,
    )
    expected = numpy_conv(
        hidden, second_kernel, reduction="concat", bias=to_numpy(second.bias)
    )
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # The JSON config round-trips too.
    rebuilt = keras.models.model_from_json(model.to_json())
    for name in ("first", "second"):
        assert type(rebuilt.get_layer(name)) is LAYERS[rank]
        np.testing.assert_array_equal(
            rebuilt.get_layer(name).frozen_mask, model.get_layer(name).frozen_mask
        )
    assert rebuilt.get_layer("first").padding == FIRST_PADDING[rank]
