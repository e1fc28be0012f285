"""What may enter a layer's weights: every way in, tried as an attacker would.

The promises these tests hold are written down in ``docs/guarantees.md``:

1. A layer computes with ``layer.kernel``, whatever was done to its
   weights: kernels frozen at zero are structure, not values, so no path
   can make them anything else (refused where values are offered).
2. Weights never load under another frozen mask (the mask travels with
   saved weights and checkpoints); the same mask under another
   implementation loads.
3. Inputs smaller than the kernel raise the layer's ``ValueError`` also
   eagerly; empty batches give empty outputs of the right shape; integer and
   boolean inputs compute as their float values.
4. Pruned kernels are exactly zero (selected, not multiplied) and the
   pruning state holds 0 and 1 only.
5. Sizes a layer cannot build are refused before allocating.
6. Files written before 0.2.0 load unchanged.

Each runs on every Keras backend; the TensorFlow checkpoint rows on
TensorFlow only.
"""

import json
import pathlib
import tracemalloc
import zipfile

import keras
import numpy as np
import pytest

import channelconv
from channelconv import ChannelConv2D, random_frozen_mask
from harness import LAYERS, SPATIAL, layer_input, numpy_conv, onednn_enabled, to_numpy

RANKS = tuple(sorted(LAYERS))
IMPLEMENTATIONS = ("fused", "per_channel", "sparse", "auto")
DATA = pathlib.Path(__file__).resolve().parent / "data"
MASK = np.zeros((3, 4), bool)
MASK[0, :2] = True
tensorflow_only = pytest.mark.tensorflow


def _model(implementation="fused", frozen_initializer="zeros", mask=MASK, **kwargs):
    """``Input((6, 6, 3)) -> ChannelConv2D(4, 3, frozen=mask)`` named ``cc``."""
    channels = mask.shape[0]
    layer = ChannelConv2D(mask.shape[1], 3, frozen=mask, implementation=implementation,
                          frozen_initializer=frozen_initializer, name="cc", **kwargs)
    return keras.Sequential([keras.Input((6, 6, channels)), layer])


def _assert_computes_with_its_kernel(model, x):
    """The layer's output is NumPy's convolution with ``layer.kernel`` and its bias."""
    layer = model.get_layer("cc")
    expected = numpy_conv(x, to_numpy(layer.kernel), reduction=layer.reduction,
                          bias=to_numpy(layer.bias))
    np.testing.assert_allclose(to_numpy(model(x)), expected, rtol=1e-5, atol=1e-5)
    stripped = channelconv.strip(model)
    np.testing.assert_allclose(to_numpy(stripped(x)), expected, rtol=1e-5, atol=1e-5)


def _weights(model):
    return [to_numpy(w).copy() for w in model.weights]


def _restore_checkpoint(source, target, tmp_path):
    import tensorflow as tf

    path = tf.train.Checkpoint(model=source).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=target).read(path)


def _load_weights(source, target, tmp_path):
    path = str(tmp_path / "source.weights.h5")
    source.save_weights(path)
    target.load_weights(path)


def _assign_by_name(source, target, tmp_path):
    """A loop of ``variable.assign`` over the target's weights, by name."""
    values = {w.name: to_numpy(w) for w in source.get_layer("cc").weights}
    for variable in target.get_layer("cc").weights:
        variable.assign(values[variable.name])


# Every way values enter a layer, as (source model, target model, tmp_path) -> None.
ENTRIES = {
    "model_set_weights": lambda s, t, p: t.set_weights(s.get_weights()),
    "layer_set_weights": lambda s, t, p: t.get_layer("cc").set_weights(
        s.get_layer("cc").get_weights()),
    "assign_loop": _assign_by_name,
    "assign_kernel": lambda s, t, p: t.get_layer("cc").assign_kernel(
        to_numpy(s.get_layer("cc").kernel)),
    "load_weights": _load_weights,
    "checkpoint": pytest.param(_restore_checkpoint, marks=tensorflow_only),
}
ENTRY_IDS = list(ENTRIES)
ENTRY_VALUES = list(ENTRIES.values())


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("enter", ENTRY_VALUES, ids=ENTRY_IDS)
def test_no_way_in_gives_zero_frozen_kernels_values(enter, implementation, tmp_path):
    """Issue 20.1: frozen at zero means zero, whatever is offered, however."""
    source = _model("fused", "ones")  # a twin storing non-zero frozen kernels
    target = _model(implementation)
    layer = target.get_layer("cc")
    assert layer.store_frozen is False and layer.frozen_kernels is None
    before = _weights(target)
    try:
        enter(source, target, tmp_path)
    except ValueError as error:  # refused: the weights are as they were
        assert "cc" in str(error) or target.name in str(error)  # the layer, or the model
        for old, new in zip(before, _weights(target)):
            np.testing.assert_array_equal(old, new)
    kernel = to_numpy(layer.kernel)
    np.testing.assert_array_equal(kernel[..., MASK], 0.0)
    _assert_computes_with_its_kernel(target, layer_input("channels_last", (6, 6), 3))


# The ways between twins that differ in what they store (Keras's model-level
# set_weights pairs weights by position and refuses: see the next test).
EXCHANGES = ["layer_set_weights", "assign_kernel", "load_weights", "checkpoint"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("enter", [ENTRIES[k] for k in EXCHANGES], ids=EXCHANGES)
def test_twins_exchange_weights_where_the_values_allow(enter, implementation, tmp_path):
    """A twin storing zero frozen kernels and a zero-by-construction one: both ways."""
    x = layer_input("channels_last", (6, 6), 3, seed=4)
    stored = _model("fused", store_frozen=True)  # frozen kernels stored, at zero
    zero = _model(implementation)
    for source, target in ((stored, zero), (zero, stored)):
        source.get_layer("cc").trainable_kernels.assign(
            np.random.default_rng(1).normal(size=source.get_layer("cc").trainable_kernels.shape))
        enter(source, target, tmp_path)
        np.testing.assert_allclose(to_numpy(target(x)), to_numpy(source(x)), rtol=1e-5,
                                   atol=1e-5)
        _assert_computes_with_its_kernel(target, x)


def test_model_level_set_weights_between_storage_twins_is_refused_by_keras():
    """Keras pairs a model's weights by position: a twin with one more is refused."""
    stored, zero = _model("fused", "ones"), _model("sparse")
    before = _weights(zero)
    with pytest.raises(ValueError, match="expecting 2 weights"):
        zero.set_weights(stored.get_weights())
    for old, new in zip(before, _weights(zero)):
        np.testing.assert_array_equal(old, new)


def test_refusal_names_layer_pairs_and_fix():
    zero = _model("sparse")
    with pytest.raises(ValueError, match=(
            r"Layer 'cc': `set_weights` gives 2 of its 2 frozen kernels non-zero values: "
            r"\(input channel, filter\) \(0, 0\), \(0, 1\)\. .*store_frozen=True")):
        zero.get_layer("cc").set_weights(_model("fused", "ones").get_layer("cc").get_weights())


@pytest.mark.parametrize("implementation", ["fused", "per_channel"])
def test_stored_frozen_kernels_compute_through_every_way_in(implementation, tmp_path):
    """A layer storing its frozen kernels runs fused: any stored value is its kernel."""
    layer = _model(implementation, "ones").get_layer("cc")
    assert layer.store_frozen and layer.implementation_in_use == implementation
    layer.frozen_kernels.assign(np.full(layer.frozen_kernels.shape, 2.5))
    kernel = to_numpy(layer.kernel)
    np.testing.assert_array_equal(kernel[..., MASK], 2.5)
    model = keras.Sequential([keras.Input((6, 6, 3)), layer])
    _assert_computes_with_its_kernel(model, layer_input("channels_last", (6, 6), 3))


def test_stateless_call_has_no_frozen_values_to_take():
    """``stateless_call`` takes the layer's variables; zeros by construction are none."""
    layer = _model("sparse").get_layer("cc")
    assert [v.name for v in layer.non_trainable_variables] == []
    stored = _model("fused", "ones").get_layer("cc")
    x = layer_input("channels_last", (6, 6), 3)
    trainable = [to_numpy(v) for v in stored.trainable_variables]
    frozen = np.full(stored.frozen_kernels.shape, -1.5, "float32")
    y, _ = stored.stateless_call(trainable, [frozen], x)
    kernel = np.zeros((3, 3, 3, 4), "float32")
    kernel[..., ~MASK] = trainable[0]
    kernel[..., MASK] = frozen
    expected = numpy_conv(x, kernel, bias=trainable[1])
    np.testing.assert_allclose(to_numpy(y), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "config, pattern",
    [
        (dict(implementation="sparse", frozen_initializer="ones"), "store_frozen=True"),
        (dict(implementation="sparse", store_frozen=True), "store_frozen=True"),
        (dict(frozen_initializer="ones", store_frozen=False), "store_frozen=False"),
        (dict(store_frozen=1), "must be a bool"),
    ],
    ids=["sparse-ones", "sparse-stored", "zeros-with-ones", "not-bool"],
)
def test_storage_arguments_are_checked(config, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        ChannelConv2D(4, 3, frozen=[(0, 0)], **config)


def test_auto_storing_frozen_kernels_runs_fused():
    layer = _model("auto", "ones").get_layer("cc")
    assert layer.implementation_in_use == "fused"


# -- 2. The mask travels with the weights --------------------------------------


def _two_masks():
    a = _model(mask=random_frozen_mask(4, 6, 12, seed=0))
    b = _model(mask=random_frozen_mask(4, 6, 12, seed=1))
    return a, b


MASK_ENTRIES = {
    "load_weights": _load_weights,
    "checkpoint": pytest.param(_restore_checkpoint, marks=tensorflow_only),
}


@pytest.mark.parametrize("enter", list(MASK_ENTRIES.values()), ids=list(MASK_ENTRIES))
def test_weights_never_load_under_another_mask(enter, tmp_path):
    """Issue 20.2: same shapes, other mask: refused, naming layer and pairs."""
    a, b = _two_masks()
    before = _weights(b)
    with pytest.raises(ValueError, match=(
            r"Layer 'cc' freezes other kernels than the weights .* were saved with.*"
            r"Frozen here and not in the saved weights: \(\d, \d\)")):
        enter(a, b, tmp_path)
    for old, new in zip(before, _weights(b)):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("implementation", ["per_channel", "sparse", "auto"])
@pytest.mark.parametrize("enter", list(MASK_ENTRIES.values()), ids=list(MASK_ENTRIES))
def test_the_same_mask_loads_under_another_implementation(enter, implementation, tmp_path):
    mask = random_frozen_mask(4, 6, 12, seed=0)
    source, target = _model(mask=mask), _model(implementation, mask=mask)
    source.get_layer("cc").trainable_kernels.assign(
        np.random.default_rng(2).normal(size=source.get_layer("cc").trainable_kernels.shape))
    enter(source, target, tmp_path)
    x = layer_input("channels_last", (6, 6), 4)
    np.testing.assert_allclose(to_numpy(target(x)), to_numpy(source(x)), rtol=1e-5, atol=1e-5)


def test_a_keras_file_whose_mask_was_moved_does_not_load(tmp_path):
    """A ``.keras`` whose config's frozen rows were swapped: the weights' mask disagrees."""
    mask = random_frozen_mask(4, 6, 12, seed=0)
    path = tmp_path / "model.keras"
    _model(mask=mask).save(path)
    tampered = tmp_path / "tampered.keras"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tampered, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                frozen = config["config"]["layers"][-1]["config"]["frozen"]
                frozen["rows"] = frozen["rows"][1:] + frozen["rows"][:1]
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    with pytest.raises(ValueError, match="freezes other kernels than the weights"):
        keras.saving.load_model(tampered)


def test_saved_weights_hold_the_mask_and_named_variables(tmp_path):
    import h5py

    path = tmp_path / "a.weights.h5"
    _model(mask=random_frozen_mask(4, 6, 12, seed=0), prunable=True).save_weights(path)
    with h5py.File(path) as f:
        entries = sorted(f["layers/channel_conv2d/vars"])
        packed = f["layers/channel_conv2d/vars/frozen_mask"][()]
    assert entries == ["bias", "frozen_mask", "frozen_mask_shape", "pruned_kernels",
                       "trainable_kernels"]
    unpacked = np.unpackbits(packed, axis=1, count=6).astype(bool)
    np.testing.assert_array_equal(unpacked, random_frozen_mask(4, 6, 12, seed=0))


# -- 3. Inputs: too small, empty, integer ---------------------------------------

CALLS = [
    pytest.param(rank, reduction, implementation, use_bias,
                 id=f"{rank}d-{reduction}-{implementation}-{'bias' if use_bias else 'nobias'}")
    for rank in RANKS
    for reduction in ("sum", "concat")
    for implementation in ("fused", "per_channel", "sparse")
    for use_bias in (True, False)
]


def _small_layer(rank, reduction, implementation, use_bias):
    layer = LAYERS[rank](4, 3, frozen=[(0, 1)], reduction=reduction,
                         implementation=implementation, use_bias=use_bias)
    layer(layer_input("channels_last", SPATIAL[rank], 3))
    return layer


# The input rows run with oneDNN on too (CI's numerics pass): its kernels
# are the ones that return empty batches in the input's shape.
@pytest.mark.numerics
@pytest.mark.parametrize("rank, reduction, implementation, use_bias", CALLS)
def test_eager_input_smaller_than_the_kernel_is_refused(rank, reduction, implementation,
                                                        use_bias):
    """Issue 20.3: the backends return garbage or raw errors; the layer refuses."""
    layer = _small_layer(rank, reduction, implementation, use_bias)
    with pytest.raises(ValueError, match="The input is too small for the kernel"):
        layer(np.ones((2,) + (2,) * rank + (3,), "float32"))


@pytest.mark.numerics
@pytest.mark.parametrize("rank, reduction, implementation, use_bias", CALLS)
def test_empty_batch_gives_an_empty_output_of_the_right_shape(rank, reduction,
                                                              implementation, use_bias):
    """Issue 20.4, eagerly (oneDNN's convolutions return the input's shape)."""
    layer = _small_layer(rank, reduction, implementation, use_bias)
    x = np.zeros((0,) + SPATIAL[rank] + (3,), "float32")
    assert tuple(layer(x).shape) == layer.compute_output_shape(x.shape)


@pytest.mark.numerics
@tensorflow_only
@pytest.mark.parametrize("implementation", ["fused", "per_channel", "sparse"])
@pytest.mark.parametrize("reduction", ["sum", "concat"])
@pytest.mark.parametrize("spatial", ["known", "unknown"])
def test_empty_batch_in_a_graph_with_unknown_batch(request, spatial, reduction,
                                                   implementation):
    """Issue 20.4 under ``tf.distribute``'s conditions: a graph whose batch is unknown.

    Not with oneDNN on and the spatial sizes known (docs/guarantees.md): there,
    TensorFlow's oneDNN convolutions return an empty batch in the input's shape
    and Grappler removes the reshape that corrects it (shape inference calls
    it an identity), and the kernel gradient raises; Keras's Conv2D fails the
    same way. Strict: when TensorFlow fixes it, this row passes and fails.
    """
    import tensorflow as tf

    if onednn_enabled() and spatial == "known":
        request.applymarker(pytest.mark.xfail(
            strict=True, reason="TensorFlow 2.21's oneDNN kernels and Grappler"))
    layer = _small_layer(2, reduction, implementation, True)
    shape = (None, 7, 9, 3) if spatial == "known" else (None, None, None, 3)

    @tf.function(input_signature=[tf.TensorSpec(shape)])
    def step(x):
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(y)
        return y, tape.gradient(loss, layer.trainable_variables)

    y, grads = step(tf.zeros((0, 7, 9, 3)))
    assert tuple(y.shape) == layer.compute_output_shape((0, 7, 9, 3))
    assert all(not np.any(to_numpy(g)) for g in grads)
    y, _ = step(tf.ones((2, 7, 9, 3)))
    assert tuple(y.shape) == layer.compute_output_shape((2, 7, 9, 3))


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int32", "int64"])
@pytest.mark.parametrize("implementation", ["fused", "per_channel", "sparse"])
@pytest.mark.parametrize("reduction", ["sum", "concat"])
def test_integer_and_boolean_inputs_compute_as_their_float_values(reduction,
                                                                 implementation, dtype):
    """Issue 20.5: one behaviour on every backend, reduction and implementation."""
    layer = _small_layer(2, reduction, implementation, True)
    x = np.random.default_rng(0).integers(0, 2 if dtype == "bool" else 5, (2, 7, 9, 3))
    y = layer(x.astype(dtype))
    assert keras.backend.standardize_dtype(y.dtype) == layer.compute_dtype
    np.testing.assert_array_equal(to_numpy(y), to_numpy(layer(x.astype("float32"))))


def test_complex_inputs_are_refused_with_the_fix():
    layer = _small_layer(2, "sum", "fused", True)
    x = keras.ops.cast(np.ones((1, 7, 9, 3)), "complex64")
    with pytest.raises(TypeError, match="Received: inputs of dtype complex64"):
        layer(x)


# -- 4. Pruning state -------------------------------------------------------------


def _prunable():
    model = _model(prunable=True)
    return model, model.get_layer("cc")


def test_a_pruned_kernel_is_zero_even_if_its_values_are_not_finite():
    """Issue 20.6: selected, not multiplied (``inf * 0`` would be NaN)."""
    model, layer = _prunable()
    trainable = to_numpy(layer.trainable_kernels).copy()
    trainable[..., 0] = np.inf  # kernel (0, 2), the first trainable one
    layer.trainable_kernels.assign(trainable)
    pruned = np.zeros((3, 4), "float32")
    pruned[0, 2] = 1.0
    layer.pruned_kernels.assign(pruned)
    kernel = to_numpy(layer.kernel)
    np.testing.assert_array_equal(kernel[..., 0, 2], 0.0)
    assert np.isfinite(to_numpy(model(layer_input("channels_last", (6, 6), 3)))).all()


@pytest.mark.parametrize("enter", ["set_weights", "load_weights"])
def test_pruning_state_other_than_0_and_1_is_refused(enter, tmp_path):
    model, layer = _prunable()
    weights = layer.get_weights()
    weights[-1] = np.full((3, 4), 0.5, "float32")
    before = _weights(model)
    with pytest.raises(ValueError, match=r"`pruned_kernels` holds 1.0 .* e.g. 0.5 at"):
        if enter == "set_weights":
            layer.set_weights(weights)
        else:
            source, source_layer = _prunable()
            source_layer.pruned_kernels.assign(weights[-1])
            _load_weights(source, model, tmp_path)
    for old, new in zip(before, _weights(model)):
        np.testing.assert_array_equal(old, new)


def test_a_nonzero_pruning_state_written_directly_prunes():
    """``variable.assign`` is not checked; any non-zero state means pruned, everywhere."""
    model, layer = _prunable()
    layer.pruned_kernels.assign(np.full((3, 4), 0.5, "float32") * np.eye(3, 4))
    np.testing.assert_array_equal(to_numpy(layer.kernel)[..., np.eye(3, 4, dtype=bool)], 0.0)
    condensed = channelconv.condense(model).get_layer("cc")
    np.testing.assert_array_equal(condensed.frozen_mask, MASK | np.eye(3, 4, dtype=bool))
    assert condensed.store_frozen is False


def test_a_sparsity_rounding_to_the_whole_layer_is_refused_at_training_start():
    model = keras.Sequential([keras.Input((6, 6, 4)),
                              ChannelConv2D(6, 3, prunable=True, name="cc")])
    model.compile("sgd", "mse")
    pruning = channelconv.KernelPruning(channelconv.ConstantSparsity(0.999, frequency=1))
    with pytest.raises(ValueError, match=r"would have all 24 of its kernels zero at "
                                         r"sparsity 0.999 \(round\(0.999 \* 24\) = 24\)"):
        model.fit(np.zeros((2, 6, 6, 4)), np.zeros((2, 4, 4, 6)), verbose=0,
                  callbacks=[pruning])
    assert not to_numpy(model.get_layer("cc").pruned_kernels).any()


# -- 5. Sizes ----------------------------------------------------------------------


def test_a_size_too_large_to_build_is_refused_before_allocating():
    """Issue 20.7: ``filters=10**9`` from a tampered file, refused at once."""
    config = ChannelConv2D(4, 3).get_config()
    config["filters"] = 10**9
    layer = ChannelConv2D.from_config(config)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="filters=1000000000"):
            layer.build((None, 8, 8, 3))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak  # nothing of the layer's size was allocated


# -- 6. Files written before 0.2.0 -------------------------------------------------


def test_a_model_written_before_0_2_0_loads_unchanged():
    """Every kind of layer such files hold: same kernels, outputs, implementations."""
    stored = np.load(DATA / "3a61663_model.npz")
    model = keras.saving.load_model(DATA / "3a61663_model.keras")
    implementations = json.loads(str(stored["implementations"]))
    storing = {"kept", "auto_fused", "pruned", "ones", "per_channel", "conv3d"}
    for name, implementation in implementations.items():
        layer = model.get_layer(name)
        assert layer.implementation_in_use == implementation, name
        assert layer.store_frozen == (name in storing), name
        np.testing.assert_array_equal(to_numpy(layer.kernel), stored[f"kernel_{name}"])
        for variable in layer.weights:
            np.testing.assert_array_equal(
                to_numpy(variable), stored[f"weight_{name}_{variable.name}"])
    inputs = [stored[f"input_{k}"] for k in ("image", "sequence", "volume")]
    # Written on TensorFlow with oneDNN on; kernels of other settings and
    # backends round differently.
    np.testing.assert_allclose(to_numpy(model(inputs)), stored["output"], rtol=1e-5, atol=1e-5)
    kept = model.get_layer("kept")  # from_conv(..., frozen_values="keep"): non-zero
    assert np.abs(to_numpy(kept.frozen_kernels)).min() > 0


def test_a_model_written_before_0_2_0_resaves_in_the_new_format(tmp_path):
    model = keras.saving.load_model(DATA / "3a61663_model.keras")
    model.save(tmp_path / "again.keras")
    again = keras.saving.load_model(tmp_path / "again.keras")
    stored = np.load(DATA / "3a61663_model.npz")
    inputs = [stored[f"input_{k}"] for k in ("image", "sequence", "volume")]
    np.testing.assert_array_equal(to_numpy(again(inputs)), to_numpy(model(inputs)))
    for layer in model.layers:
        if isinstance(layer, channelconv.layers.BaseChannelConv):
            assert again.get_layer(layer.name).get_config() == layer.get_config()
