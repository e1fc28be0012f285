"""The transcribed StackOverflow answer: faithful, and its defects are real.

Every claim of ``channelconv.apps.reference.AnswerConv2D``'s docstring is checked
here against the transcription itself, TensorFlow, and Keras's own
``Conv2D`` / ``DepthwiseConv2D``.
"""

import ast
import pathlib
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from channelconv.layers import ChannelConv2D
from channelconv.apps.reference import (
    ANSWER_FROZEN,
    ANSWER_SOURCE,
    ANSWER_USAGE,
    RUNNABLE_SOURCE,
    AnswerConv2D,
    answer_model,
    answer_variables,
    channel_conv2d_like_answer,
    run_answer_as_written,
)
from channelconv.apps.report import parameter_counts

SEED_FILE = (
    pathlib.Path(__file__).resolve().parents[2]
    / "shared"
    / "seed"
    / "question-and-answer.zh.txt"
)
K = 3
# The question's layer: 3 input channels x 16 filters = 48 kernels of K x K,
# of which the answer freezes 5.
TOTAL, FROZEN = 3 * 16 * K * K, 5 * K * K


def _x(seed, shape=(2, 8, 8, 3)):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _summary(model):
    lines = []
    model.summary(print_fn=lambda text, line_break=False: lines.append(text))
    return "\n".join(lines)


def _fresh_pair():
    answer = answer_model()
    ours = keras.Sequential([channel_conv2d_like_answer()])
    ours.build((None, None, None, 3))
    return answer, ours


# --- the transcription is faithful ------------------------------------------


@pytest.mark.skipif(not SEED_FILE.exists(), reason="seed page not next to the repo")
def test_answer_source_is_verbatim_from_the_page():
    page = SEED_FILE.read_text(encoding="utf-8")
    assert ANSWER_SOURCE in page
    assert ANSWER_USAGE in page


class _Normalise(ast.NodeTransformer):
    """Undoes the transcription's allowed changes: name, docstring, strides=1."""

    def __init__(self):
        self.strides_removed = 0

    def visit_ClassDef(self, node):
        node.name = "CustomConv2D"
        body = node.body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:]
        self.generic_visit(node)
        return node

    def visit_Name(self, node):
        if node.id == "AnswerConv2D":
            node.id = "CustomConv2D"
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if ast.unparse(node.func) == "tf.nn.conv2d":
            kept = []
            for keyword in node.keywords:
                if keyword.arg == "strides" and ast.unparse(keyword.value) == "1":
                    self.strides_removed += 1
                else:
                    kept.append(keyword)
            node.keywords = kept
        return node


def test_the_runnable_answer_differs_from_the_answer_only_by_strides():
    """AnswerConv2D runs RUNNABLE_SOURCE: the answer's text, with strides=1 in
    its three tf.nn.conv2d calls and the class renamed, nothing else."""
    normalise = _Normalise()
    transcribed = normalise.visit(ast.parse(RUNNABLE_SOURCE))
    assert normalise.strides_removed == 3
    assert ast.dump(transcribed) == ast.dump(ast.parse(ANSWER_SOURCE))


# --- defect 1: it does not run as written on TF 2 ---------------------------


def test_tf_nn_conv2d_requires_strides():
    x, filters = tf.ones((1, 4, 4, 1)), tf.ones((3, 3, 1, 2))
    with pytest.raises(TypeError, match="Missing required positional argument"):
        tf.nn.conv2d(x, filters, padding="VALID")
    assert tf.nn.conv2d(x, filters, strides=1, padding="VALID").shape == (1, 2, 2, 2)


def test_the_answer_as_written_raises_type_error():
    error = run_answer_as_written()
    assert isinstance(error, TypeError)
    assert "Missing required positional argument" in str(error)


# --- the counts of the answer's summary -------------------------------------


@pytest.fixture(scope="module")
def pair():
    return _fresh_pair()


@pytest.mark.parametrize("which", [0, 1], ids=["AnswerConv2D", "ChannelConv2D-concat"])
def test_parameter_counts_are_the_answers(pair, which):
    model = pair[which]
    counts = parameter_counts(model)
    assert counts == (TOTAL, TOTAL - FROZEN, FROZEN) == (432, 387, 45)  # as printed
    assert counts.total == model.count_params()
    text = _summary(model)
    for line in (
        "Total params: 432",
        "Trainable params: 387",
        "Non-trainable params: 45",
    ):
        assert line in text


# --- same kernel, same output -----------------------------------------------


def _random_answer(seed, refresh):
    """The answer's model with random c1_2, c2, c3; returns it and its kernel.

    With ``refresh``, re-runs the answer's ``self.c1 = tf.concat(...)`` on the
    new values; the expected full kernel is assembled here by hand.
    """
    model = answer_model()
    layer = model.layers[0]
    v = answer_variables(layer)
    rng = np.random.default_rng(seed)
    values = {n: rng.standard_normal(v[n].shape).astype("float32") for n in ("c1_2", "c2", "c3")}
    for name, value in values.items():
        v[name].assign(value)
    if refresh:
        layer.c1 = tf.concat([v["c1_1"], v["c1_2"]], axis=-1)
        bank0 = np.concatenate([np.zeros((K, K, 1, 5), "float32"), values["c1_2"]], -1)
    else:
        bank0 = np.zeros((K, K, 1, 16), "float32")
    kernel = np.concatenate([bank0, values["c2"], values["c3"]], axis=2)
    return model, kernel


@pytest.mark.parametrize("refresh", [False, True], ids=["as-built", "c1-refreshed"])
@pytest.mark.parametrize("implementation", ["per_channel", "fused"])
def test_same_kernel_gives_the_same_output(refresh, implementation):
    answer, kernel = _random_answer(seed=1, refresh=refresh)
    layer = channel_conv2d_like_answer(implementation=implementation)
    layer.build((None, None, None, 3))
    layer.assign_kernel(kernel)
    x = _x(2)
    expected, got = answer(x).numpy(), keras.ops.convert_to_numpy(layer(x))
    assert got.shape == expected.shape == (2, 6, 6, 48)
    if implementation == "per_channel":  # the answer's own computation
        assert np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_the_answer_ignores_its_channel0_variable():
    answer, _ = _random_answer(seed=1, refresh=False)
    assert answer_variables(answer.layers[0])["c1_2"].numpy().any()
    y = answer(_x(2)).numpy()
    assert not y[..., :16].any()  # channel 0's 16 outputs: all exactly zero
    assert y[..., 16:].all()


# --- defect 2: the 11 "trainable" channel-0 filters never train -------------


def _gradients(model, x, target):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - target) ** 2)
    return dict(zip(map(id, model.trainable_weights), tape.gradient(loss, model.trainable_weights)))


def _changed_kernels(before, after):
    """Per kernel (last axis, after flattening channels), whether it changed."""
    flat = lambda a: np.asarray(a).reshape(K, K, -1)  # noqa: E731
    return (flat(before) != flat(after)).any(axis=(0, 1))


def test_a_gradient_step_reaches_no_channel0_filter_of_the_answer():
    answer, _ = _fresh_pair()
    layer = answer.layers[0]
    v = answer_variables(layer)
    x, target = _x(3), _x(4, (2, 6, 6, 48))
    grads = _gradients(answer, x, target)
    assert grads[id(v["c1_2"])] is None
    for name in ("c2", "c3"):
        assert (np.abs(grads[id(v[name])].numpy()).sum(axis=(0, 1, 2)) > 0).all()

    bank0_before = np.asarray(layer.c1).copy()
    pairs = [(g, w) for w, g in ((w, grads[id(w)]) for w in answer.trainable_weights) if g is not None]
    keras.optimizers.SGD(0.1).apply_gradients(pairs)
    assert np.array_equal(np.asarray(layer.c1), bank0_before)
    assert not v["c1_2"].numpy().any()
    assert v["c2"].numpy().any()
    assert not answer(x).numpy()[..., :16].any()


def test_a_gradient_step_reaches_every_trainable_kernel_of_channel_conv2d():
    _, ours = _fresh_pair()
    conv = ours.layers[0]
    x, target = _x(3), _x(4, (2, 6, 6, 48))
    grads = _gradients(ours, x, target)
    grad = grads[id(conv.trainable_kernels)].numpy()
    assert grad.shape == (K, K, 43)
    assert (np.abs(grad).sum(axis=(0, 1)) > 0).all()
    assert id(conv.frozen_kernels) not in grads

    before = keras.ops.convert_to_numpy(conv.kernel).copy()
    keras.optimizers.SGD(0.1).apply_gradients([(grads[id(w)], w) for w in ours.trainable_weights])
    after = keras.ops.convert_to_numpy(conv.kernel)
    changed = _changed_kernels(before, after).reshape(3, 16)
    expected_frozen = np.zeros((3, 16), bool)
    expected_frozen[0, :5] = True
    assert np.array_equal(changed, ~expected_frozen)
    frozen = after[:, :, 0, :5]
    assert np.array_equal(frozen, np.zeros_like(frozen))


def test_keras_fit_warns_and_leaves_channel0_untrained():
    answer = answer_model()
    answer.compile(keras.optimizers.SGD(0.1), "mse")
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        answer.fit(_x(5), _x(6, (2, 6, 6, 48)), epochs=2, verbose=0)
    layer = answer.layers[0]
    assert not np.asarray(layer.c1).any()
    assert answer_variables(layer)["c2"].numpy().any()


# --- defect 3: concat, not Conv2D's sum; ChannelConv2D's two reductions -----


@pytest.mark.parametrize("implementation", ["fused", "per_channel"])
@pytest.mark.parametrize(
    "reduction, make_reference, channels",
    [
        ("sum", lambda: keras.layers.Conv2D(16, K), 16),
        ("concat", lambda: keras.layers.DepthwiseConv2D(K, depth_multiplier=16), 48),
    ],
    ids=["sum-is-Conv2D", "concat-is-DepthwiseConv2D"],
)
def test_reductions_equal_the_keras_layers(reduction, make_reference, channels, implementation):
    layer = ChannelConv2D(
        16,
        K,
        frozen=ANSWER_FROZEN,
        reduction=reduction,
        implementation=implementation,
        bias_initializer="random_normal",
    )
    x = _x(7)
    y = keras.ops.convert_to_numpy(layer(x))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    assert np.array_equal(kernel[:, :, 0, :5], np.zeros((K, K, 5), "float32"))
    reference = make_reference()
    reference.build(x.shape)
    reference.set_weights([kernel, keras.ops.convert_to_numpy(layer.bias)])
    expected = keras.ops.convert_to_numpy(reference(x))
    assert y.shape == expected.shape == (2, 6, 6, channels)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_the_answer_is_a_masked_depthwise_convolution():
    answer, kernel = _random_answer(seed=8, refresh=True)
    depthwise = keras.layers.DepthwiseConv2D(K, depth_multiplier=16, use_bias=False)
    depthwise.build((None, 8, 8, 3))
    depthwise.set_weights([kernel])
    x = _x(9)
    np.testing.assert_allclose(answer(x).numpy(), depthwise(x).numpy(), rtol=1e-5, atol=1e-5)


# --- defects 4 and 5: no bias, everything hard-coded -----------------------


def test_the_answer_has_no_bias_and_fixed_shapes():
    layer = answer_model().layers[0]
    assert [tuple(w.shape) for w in layer.weights] == [
        (K, K, 1, 11), (K, K, 1, 16), (K, K, 1, 16), (K, K, 1, 5)
    ]


def test_the_answer_silently_ignores_channels_beyond_three():
    answer, _ = _random_answer(seed=10, refresh=True)
    x = _x(11, (2, 8, 8, 4))
    assert np.array_equal(answer(x).numpy(), answer(x[..., :3]).numpy())


def test_a_stack_of_zero_initialised_answer_layers_gets_no_gradient():
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), AnswerConv2D(), keras.layers.ReLU(), AnswerConv2D()]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grads = _gradients(model, _x(12), _x(13, (2, 4, 4, 48)))
    assert len(grads) == 6
    assert all(g is None or not g.numpy().any() for g in grads.values())


def test_sum_is_concat_summed_over_input_channels():
    """docs/semantics.md: sum[..., f] == sum over c of concat[..., c * 16 + f]."""
    concat = channel_conv2d_like_answer(kernel_initializer="glorot_uniform")
    concat.build((None, None, None, 3))
    summed = channel_conv2d_like_answer(reduction="sum")
    summed.build((None, None, None, 3))
    summed.assign_kernel(keras.ops.convert_to_numpy(concat.kernel))
    x = _x(14)
    y_concat = keras.ops.convert_to_numpy(concat(x))
    expected = y_concat.reshape(2, 6, 6, 3, 16).sum(axis=3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(summed(x)), expected, rtol=1e-5, atol=1e-5)
