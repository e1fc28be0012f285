"""Frozen kernels stay bit-exact through training; trainable ones train.

Every case freezes 5 of 12 kernels, 3 at zero and 2 at non-zero values (set
with ``assign_kernel``), so weight decay or a regularizer that reached a
frozen kernel would move it; equality is checked with ``np.array_equal``.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from channelconv.layers.channel_conv2d import ChannelConv2D
from harness import to_numpy, weights_by_name

IN_CHANNELS, FILTERS, KERNEL = 3, 4, 3
FROZEN = [(0, 0), (0, 3), (1, 1), (2, 0), (2, 2)]
NONZERO_FROZEN = [(1, 1), (2, 2)]  # the other three stay at zero
INPUT_SHAPE = (6, 6, IN_CHANNELS)


def _frozen_mask():
    mask = np.zeros((IN_CHANNELS, FILTERS), dtype=bool)
    for channel, filter_ in FROZEN:
        mask[channel, filter_] = True
    return mask


def _full_kernel(seed=0):
    """A full kernel whose frozen kernels are 0, except NONZERO_FROZEN."""
    rng = np.random.default_rng(seed)
    kernel = rng.normal(scale=0.3, size=(KERNEL, KERNEL, IN_CHANNELS, FILTERS))
    for channel, filter_ in FROZEN:
        kernel[:, :, channel, filter_] = 0.0
    for channel, filter_ in NONZERO_FROZEN:
        kernel[:, :, channel, filter_] = rng.uniform(0.5, 1.5, size=(KERNEL, KERNEL))
    return kernel.astype("float32")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8,) + INPUT_SHAPE).astype("float32")
    y = rng.normal(size=(8, 4, 4, FILTERS)).astype("float32")
    return x, y


@pytest.fixture
def dtype_policy():
    """Restores the global dtype policy whatever the test does to it."""
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)


def _model(seed=0, **layer_kwargs):
    inputs = keras.Input(shape=INPUT_SHAPE)
    layer = ChannelConv2D(FILTERS, KERNEL, frozen=FROZEN, **layer_kwargs)
    outputs = keras.layers.Activation("linear", dtype="float32")(layer(inputs))
    model = keras.Model(inputs, outputs)
    layer.assign_kernel(_full_kernel(seed))
    return model, layer


def _assert_frozen_exact(layer, kernel):
    """Frozen kernels equal ``kernel`` there, bit for bit, in both views."""
    mask = _frozen_mask()
    effective = to_numpy(layer.kernel)
    assert np.array_equal(effective[..., mask], kernel[..., mask])
    for channel, filter_ in FROZEN:
        expected = kernel[:, :, channel, filter_]
        assert np.array_equal(effective[:, :, channel, filter_], expected)
        if (channel, filter_) not in NONZERO_FROZEN:
            assert np.array_equal(expected, np.zeros((KERNEL, KERNEL)))
    stored = to_numpy(layer.frozen_kernels)
    flat = kernel.reshape(KERNEL, KERNEL, -1)[..., mask.reshape(-1)]
    assert np.array_equal(stored, flat)


def _assert_trained(layer, kernel):
    mask = _frozen_mask()
    effective = to_numpy(layer.kernel)
    assert np.all(np.isfinite(effective))
    changed = np.any(effective[..., ~mask] != kernel[..., ~mask], axis=(0, 1))
    assert changed.all(), "every trainable kernel should have moved"


CASES = [
    ("sgd-momentum", lambda: keras.optimizers.SGD(0.05, momentum=0.9), {}, {}, None),
    (
        "sgd-nesterov",
        lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        {},
        {},
        None,
    ),
    ("adam", lambda: keras.optimizers.Adam(0.01), {}, {}, None),
    (
        "adamw-weight_decay",
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
        {},
        {},
        None,
    ),
    ("rmsprop", lambda: keras.optimizers.RMSprop(0.01), {}, {}, None),
    ("adagrad", lambda: keras.optimizers.Adagrad(0.1), {}, {}, None),
    (
        "l2-kernel_regularizer",
        lambda: keras.optimizers.SGD(0.05),
        dict(kernel_regularizer=keras.regularizers.L2(1.0)),
        {},
        None,
    ),
    ("clipnorm", lambda: keras.optimizers.SGD(0.05, clipnorm=0.01), {}, {}, None),
    ("mixed_float16", lambda: keras.optimizers.Adam(0.01), {}, {}, "mixed_float16"),
    ("mixed_bfloat16", lambda: keras.optimizers.Adam(0.01), {}, {}, "mixed_bfloat16"),
    (
        "jit_compile",
        lambda: keras.optimizers.Adam(0.01),
        {},
        dict(jit_compile=True),
        None,
    ),
]


@pytest.mark.parametrize(
    "make_optimizer, layer_kwargs, compile_kwargs, policy",
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_frozen_kernels_exact_after_fit(
    data, dtype_policy, make_optimizer, layer_kwargs, compile_kwargs, policy
):
    if policy is not None:
        dtype_policy(policy)
    model, layer = _model(**layer_kwargs)
    if policy is not None:
        assert layer.compute_dtype != "float32"
    kernel = _full_kernel()
    _assert_frozen_exact(layer, kernel)
    model.compile(make_optimizer(), "mse", **compile_kwargs)
    x, y = data
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    _assert_frozen_exact(layer, kernel)
    _assert_trained(layer, kernel)
    assert layer.frozen_kernels.dtype == "float32"


def test_frozen_kernels_exact_after_set_weights_and_fit(data):
    model, layer = _model(seed=0)
    other, _ = _model(seed=1)
    model.set_weights(other.get_weights())
    new_kernel = _full_kernel(seed=1)
    _assert_frozen_exact(layer, new_kernel)
    assert not np.array_equal(new_kernel, _full_kernel(seed=0))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(*data, batch_size=4, epochs=1, verbose=0)
    _assert_frozen_exact(layer, new_kernel)
    _assert_trained(layer, new_kernel)


def test_frozen_kernels_exact_after_load_and_fit(data, tmp_path):
    model, _ = _model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(*data, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "trained.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.layers[1]
    kernel = _full_kernel()
    _assert_frozen_exact(layer, kernel)
    before = to_numpy(layer.kernel)
    loaded.fit(*data, batch_size=4, epochs=1, verbose=0)
    _assert_frozen_exact(layer, kernel)
    _assert_trained(layer, before)


def test_adam_keeps_state_for_trainable_kernels_only(data):
    model, layer = _model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(*data, batch_size=8, epochs=1, verbose=0)
    n_trainable = IN_CHANNELS * FILTERS - len(FROZEN)
    slots = [v for v in model.optimizer.variables if len(v.shape) > 0]
    assert sum(int(np.prod(v.shape)) for v in slots) == 2 * (
        KERNEL * KERNEL * n_trainable + FILTERS
    )
    assert sorted(tuple(v.shape) for v in slots) == sorted(
        2 * [(KERNEL, KERNEL, n_trainable), (FILTERS,)]
    )
    assert not [v for v in model.optimizer.variables if "frozen" in v.path]


def test_gradient_reaches_trainable_kernels_only(data):
    """Gradients equal Conv2D's kernel gradient at the trainable kernels."""
    x, _ = data
    _, layer = _model()
    conv = keras.layers.Conv2D(FILTERS, KERNEL)
    conv.build((None,) + INPUT_SHAPE)
    conv.set_weights([to_numpy(layer.kernel), to_numpy(layer.bias)])
    with tf.GradientTape(persistent=True) as tape:
        loss = tf.reduce_sum(tf.sin(layer(x)))
        reference_loss = tf.reduce_sum(tf.sin(conv(x)))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert [w.name for w in layer.trainable_weights] == ["trainable_kernels", "bias"]
    reference = to_numpy(tape.gradient(reference_loss, conv.kernel))
    mask = _frozen_mask()
    expected = reference.reshape(KERNEL, KERNEL, -1)[..., ~mask.reshape(-1)]
    np.testing.assert_allclose(to_numpy(grads[0]), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        to_numpy(grads[1]),
        to_numpy(tape.gradient(reference_loss, conv.bias)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_kernel_regularizer_sees_trainable_kernels_only():
    _, layer = _model(kernel_regularizer=keras.regularizers.L2(0.1))
    kernel = _full_kernel()
    trainable_part = kernel[..., ~_frozen_mask()]
    expected = 0.1 * np.sum(trainable_part.astype(np.float64) ** 2)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(to_numpy(layer.losses[0])), expected, rtol=1e-5)
    # The frozen kernels are non-zero, so including them would change it.
    assert 0.1 * np.sum(kernel.astype(np.float64) ** 2) > expected * 1.01


def _maxnorm_by_hand(full, max_value):
    norms = np.sqrt(np.sum(np.square(full), axis=(0, 1, 2), keepdims=True))
    desired = np.clip(norms, 0, max_value)
    return full * (desired / (keras.config.epsilon() + norms))


CONSTRAINTS = [
    pytest.param(keras.constraints.NonNeg(), lambda k: np.maximum(k, 0.0), id="nonneg"),
    pytest.param(
        keras.constraints.MaxNorm(max_value=0.5, axis=[0, 1, 2]),
        lambda k: _maxnorm_by_hand(k, 0.5),
        id="maxnorm-axis012",
    ),
]


@pytest.mark.parametrize("constraint, by_hand", CONSTRAINTS)
def test_kernel_constraint_acts_on_trainable_kernels_only(constraint, by_hand):
    """The optimizer's constraint step equals the constraint applied by hand.

    By hand: to the full kernel with zeros in the frozen places, keeping the
    trainable places. Zero gradients isolate the constraint from the update.
    """
    _, layer = _model(kernel_constraint=constraint)
    kernel = _full_kernel()
    kernel[..., NONZERO_FROZEN[0][0], NONZERO_FROZEN[0][1]] *= -1.0  # negative frozen
    layer.assign_kernel(kernel)
    mask = _frozen_mask()
    zeroed = np.where(mask, 0.0, kernel).astype("float32")
    expected = by_hand(zeroed)
    assert not np.allclose(expected[..., ~mask], kernel[..., ~mask])  # it acts
    optimizer = keras.optimizers.SGD(0.1)
    variables = layer.trainable_weights
    optimizer.apply_gradients([(tf.zeros_like(v.value), v) for v in variables])
    effective = to_numpy(layer.kernel)
    np.testing.assert_allclose(
        effective[..., ~mask], expected[..., ~mask], rtol=1e-6, atol=1e-7
    )
    assert np.array_equal(effective[..., mask], kernel[..., mask])


@pytest.mark.parametrize("constraint, by_hand", CONSTRAINTS)
def test_kernel_constraint_in_fit_leaves_frozen_kernels(data, constraint, by_hand):
    model, layer = _model(kernel_constraint=constraint)
    kernel = _full_kernel()
    kernel[..., NONZERO_FROZEN[0][0], NONZERO_FROZEN[0][1]] *= -1.0
    layer.assign_kernel(kernel)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(*data, batch_size=4, epochs=1, verbose=0)
    _assert_frozen_exact(layer, kernel)
    mask = _frozen_mask()
    trained = np.where(mask, 0.0, to_numpy(layer.kernel)).astype("float32")
    # A trained kernel satisfies the constraint: applying it again is a no-op.
    np.testing.assert_allclose(by_hand(trained), trained, rtol=1e-5, atol=1e-6)
    _assert_trained(layer, kernel)


def test_trainable_toggle_does_not_unfreeze(data):
    model, layer = _model()
    layer.trainable = False
    assert model.trainable_weights == []
    layer.trainable = True
    assert [w.name for w in layer.trainable_weights] == ["trainable_kernels", "bias"]
    assert [w.name for w in layer.non_trainable_weights] == ["frozen_kernels"]
    assert not layer.frozen_kernels.trainable
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(*data, batch_size=4, epochs=1, verbose=0)
    kernel = _full_kernel()
    _assert_frozen_exact(layer, kernel)
    _assert_trained(layer, kernel)


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_frozen_layer_does_not_train(data):
    """``trainable=False`` freezes everything, the usual Keras meaning."""
    model, layer = _model()
    layer.trainable = False
    before = weights_by_name(layer)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(*data, batch_size=4, epochs=1, verbose=0)
    for name, value in weights_by_name(layer).items():
        assert np.array_equal(value, before[name]), name
