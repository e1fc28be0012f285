"""ChannelConv2D in models: the question's model, parameter counts, and
Sequential, functional and subclassed models, traced (``tf.function``,
``jax.jit``), in ``fit`` and in custom training loops."""

import re

import keras
import numpy as np
import pytest

from channelconv.layers.channel_conv2d import ChannelConv2D
from channelconv.mask import random_frozen_mask
from harness import BACKEND, to_numpy, vjp, weights_by_name

QUESTION_FROZEN = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]


def _size(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _summary_counts(model):
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    text = "\n".join(lines)
    counts = {}
    for label in ("Total", "Trainable", "Non-trainable"):
        match = re.search(rf"{label} params: ([\d,]+)", text)
        counts[label] = int(match.group(1).replace(",", ""))
    return counts


# --- Parameter counts --------------------------------------------------------


@pytest.mark.parametrize("store_frozen", [False, True], ids=["zero", "stored"])
def test_question_first_layer_counts(store_frozen):
    """Conv2D(16, 3)'s 448 parameters; the 45 frozen ones only when stored."""
    layer = ChannelConv2D(16, 3, frozen=QUESTION_FROZEN, store_frozen=store_frozen)
    layer.build((None, None, None, 3))
    conv = keras.layers.Conv2D(16, 3)
    conv.build((None, None, None, 3))
    assert conv.count_params() == 448
    assert _size(layer.trainable_weights) == 403  # 43 * 9 + 16
    assert _size(layer.non_trainable_weights) == (45 if store_frozen else 0)  # 5 * 9
    assert layer.count_params() == (448 if store_frozen else 403)


def test_answer_layout_counts():
    """The answer's layer (concat, no bias, frozen zeros stored) printed 432 / 387 / 45."""
    layer = ChannelConv2D(
        16, 3, frozen=QUESTION_FROZEN, reduction="concat", use_bias=False,
        store_frozen=True,
    )
    layer.build((None, None, None, 3))
    assert layer.count_params() == 432
    assert _size(layer.trainable_weights) == 387
    assert _size(layer.non_trainable_weights) == 45


@pytest.mark.parametrize(
    "reduction, bias_size", [("sum", 16), ("concat", 48)], ids=["sum", "concat"]
)
def test_bias_size(reduction, bias_size):
    layer = ChannelConv2D(16, 3, frozen=QUESTION_FROZEN, reduction=reduction)
    y = layer(np.zeros((1, 5, 5, 3), "float32"))
    assert tuple(layer.bias.shape) == (bias_size,)
    assert y.shape[-1] == bias_size
    assert _size(layer.trainable_weights) == 43 * 9 + bias_size


# --- The question's model ----------------------------------------------------


def _question_model(first, second=None, third=None):
    """The question's three-layer model; ``None`` means keras Conv2D(16, 3)."""
    x_in = keras.Input(shape=(None, None, 3))
    layers = [
        layer if layer is not None else keras.layers.Conv2D(16, (3, 3))
        for layer in (first, second, third)
    ]
    x = layers[0](x_in)
    x = keras.layers.ReLU()(x)
    x = layers[1](x)
    x = keras.layers.ReLU()(x)
    x = layers[2](x)
    return keras.Model(inputs=x_in, outputs=x)


@pytest.fixture(scope="module")
def conv2d_model():
    return _question_model(None)


@pytest.mark.parametrize(
    "replace_all", [False, True], ids=["first-layer", "all-three-layers"]
)
def test_question_model_with_channel_conv(conv2d_model, replace_all):
    frozen = [QUESTION_FROZEN, None, None]
    if replace_all:
        frozen[1] = random_frozen_mask(16, 16, 25, seed=0)
        frozen[2] = [(15, 15)]
    layers = [ChannelConv2D(16, 3, frozen=frozen[0]), None, None]
    if replace_all:
        layers[1:] = [ChannelConv2D(16, (3, 3), frozen=f) for f in frozen[1:]]
    model = _question_model(*layers)
    n_frozen = 5 + (26 if replace_all else 0)

    assert model.output_shape == conv2d_model.output_shape == (None, None, None, 16)
    x = np.random.default_rng(0).normal(size=(2, 11, 9, 3)).astype("float32")
    assert model(x).shape == conv2d_model(x).shape == (2, 5, 3, 16)

    reference = _summary_counts(conv2d_model)
    counts = _summary_counts(model)
    dense = (3 * 9 * 16 + 16) + 2 * (16 * 9 * 16 + 16)  # three Conv2D(16, 3)
    assert reference == {"Total": dense, "Trainable": dense, "Non-trainable": 0}
    assert counts["Total"] == reference["Total"] - 9 * n_frozen  # zeros: no parameters
    assert counts["Trainable"] == reference["Trainable"] - 9 * n_frozen
    assert counts["Non-trainable"] == 0
    assert _size(model.trainable_weights) == counts["Trainable"]


def test_question_model_trains_with_frozen_kernels_at_zero():
    first = ChannelConv2D(16, 3, frozen=QUESTION_FROZEN)
    model = _question_model(first)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 9, 9, 3)).astype("float32")
    y = rng.normal(size=(4, 3, 3, 16)).astype("float32")
    before = to_numpy(first.kernel)
    model.compile("adam", "mse")
    history = model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    after = to_numpy(first.kernel)
    assert np.array_equal(after[:, :, 0, :5], np.zeros((3, 3, 5), "float32"))
    assert np.all(after[:, :, 0, 5:] != before[:, :, 0, 5:])
    assert np.all(after[:, :, 1:, :] != before[:, :, 1:, :])
    assert history.history["loss"][-1] < history.history["loss"][0]


# --- Model kinds -------------------------------------------------------------


class SubclassedModel(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = ChannelConv2D(4, 3, frozen=[(0, 0), (1, 2)], activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.head = keras.layers.Dense(2)

    def call(self, inputs):
        return self.head(self.pool(self.conv(inputs)))


def _sequential():
    return keras.Sequential(
        [
            keras.Input(shape=(6, 6, 3)),
            ChannelConv2D(4, 3, frozen=[(0, 0), (1, 2)], activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )


def _functional():
    """Its frozen kernels stored, at ones (the other kinds: zeros by construction)."""
    inputs = keras.Input(shape=(6, 6, 3))
    x = ChannelConv2D(4, 3, frozen=[(0, 0), (1, 2)], activation="relu",
                      frozen_initializer="ones")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _conv_of(model):
    return next(layer for layer in model.layers if isinstance(layer, ChannelConv2D))


def _frozen_values(conv):
    """The frozen kernels (0, 0) and (1, 2), read from the layer's kernel."""
    return to_numpy(conv.kernel)[:, :, [0, 1], [0, 2]]


# Where a model's call is also traced: tf.function on TensorFlow, jax.jit on
# JAX; PyTorch runs eagerly only (fit traces on every backend but PyTorch).
TRACED = {"tensorflow": "function", "jax": "xla"}.get(BACKEND)


@pytest.mark.parametrize(
    "make_model",
    [_sequential, _functional, SubclassedModel],
    ids=["sequential", "functional", "subclassed"],
)
def test_model_kinds_fit_and_trace(make_model):
    model = make_model()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(4, 2)).astype("float32")
    eager = to_numpy(model(x))
    assert eager.shape == (4, 2)
    conv = _conv_of(model)

    # The conv's output equals Conv2D with the same effective kernel.
    reference = keras.layers.Conv2D(4, 3, activation="relu")
    reference.build(x.shape)
    reference.set_weights([to_numpy(conv.kernel), to_numpy(conv.bias)])
    np.testing.assert_allclose(
        to_numpy(conv(x)), to_numpy(reference(x)), rtol=1e-5, atol=1e-5
    )

    if TRACED:
        traced, _ = vjp(model, [x], np.zeros_like(eager), TRACED)
        np.testing.assert_allclose(traced, eager, rtol=1e-6, atol=1e-6)

    before, frozen = weights_by_name(conv), _frozen_values(conv)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    after = weights_by_name(conv)
    assert np.array_equal(_frozen_values(conv), frozen)
    assert np.array_equal(frozen, np.full((3, 3, 2), float(conv.store_frozen), "float32"))
    assert not np.array_equal(after["trainable_kernels"], before["trainable_kernels"])


@pytest.mark.parametrize(
    "mode",
    ["eager", pytest.param("xla", marks=pytest.mark.skipif(
        BACKEND == "torch", reason="PyTorch has no XLA mode"))],
)
def test_custom_training_loop(mode):
    """Gradients of the trainable variables (as JAX needs them, from
    ``stateless_call``), applied by the optimizer: the frozen kernels are
    not among them."""
    model = _functional()
    conv = _conv_of(model)
    optimizer = keras.optimizers.Adam(0.01)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    y = rng.normal(size=(4, 2)).astype("float32")
    non_trainable = [to_numpy(v) for v in model.non_trainable_variables]

    def loss_of(*trainable):
        y_pred, _ = model.stateless_call(list(trainable), non_trainable, x, training=True)
        return keras.ops.mean(keras.ops.square(keras.ops.subtract(y_pred, y)))

    before, frozen = weights_by_name(conv), _frozen_values(conv)
    losses = []
    for _ in range(3):
        trainable = [to_numpy(v) for v in model.trainable_variables]
        loss, grads = vjp(loss_of, trainable, np.float32(1.0), mode)
        grads = [keras.ops.convert_to_tensor(g) for g in grads]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
    after = weights_by_name(conv)
    assert np.array_equal(_frozen_values(conv), frozen)
    assert not np.array_equal(after["trainable_kernels"], before["trainable_kernels"])
    assert losses[-1] < losses[0]


@pytest.mark.tensorflow
def test_custom_training_loop_under_tf_function():
    import tensorflow as tf

    model = _functional()
    conv = _conv_of(model)
    optimizer = keras.optimizers.Adam(0.01)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(4, 6, 6, 3)).astype("float32"))
    y = tf.constant(rng.normal(size=(4, 2)).astype("float32"))

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    before, frozen = weights_by_name(conv), _frozen_values(conv)
    losses = [float(train_step()) for _ in range(3)]
    after = weights_by_name(conv)
    assert np.array_equal(_frozen_values(conv), frozen)
    assert not np.array_equal(after["trainable_kernels"], before["trainable_kernels"])
    assert losses[-1] < losses[0]
