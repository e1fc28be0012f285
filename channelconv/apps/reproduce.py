"""``channelconv reproduce``: the StackOverflow answer, replayed and checked.

:func:`run` executes the answer's code as written, builds its model both
ways (the transcribed :class:`~channelconv.apps.reference.AnswerConv2D` and the
equivalent :class:`~channelconv.ChannelConv2D`), prints their summaries side
by side, shows which filters a gradient step reaches, and compares
``ChannelConv2D``'s two reductions with Keras ``Conv2D`` and
``DepthwiseConv2D``. Every finding it prints is also a check; it returns 0
when all of them hold.
"""

import re

import keras
import numpy as np
import tensorflow as tf

from channelconv import ChannelConv2D, to_keras_layer
from channelconv.apps import reference
from channelconv.apps.answer import ANSWER_COUNTS, ANSWER_FROZEN
from channelconv.apps.report import Report, parameter_counts

#: Tolerance of the float32 comparisons with the Keras layers.
RTOL = ATOL = 1e-5


def side_by_side(left, right, gap=3):
    """Joins two blocks of text into columns.

    Example:

    >>> print(side_by_side("a\\nbb", "c"))
    a    c
    bb
    """
    left, right = left.splitlines(), right.splitlines()
    width = max(len(line) for line in left)
    rows = max(len(left), len(right))
    left += [""] * (rows - len(left))
    right += [""] * (rows - len(right))
    return "\n".join(
        (a.ljust(width + gap) + b).rstrip() for a, b in zip(left, right)
    )


def _summary_text(model, line_length=58):
    """``model.summary()`` as a string."""
    parts = []
    model.summary(
        line_length=line_length,
        print_fn=lambda text, line_break=False: parts.append(text),
    )
    return "\n".join(parts).rstrip("\n")


def _section_as_written(report):
    report.say("1. The answer's code as written, on TensorFlow " + tf.__version__)
    error = reference.run_answer_as_written()
    report.say(f"   {_describe(error)}")
    mark = report.check(
        isinstance(error, TypeError)
        and "Missing required positional argument" in str(error),
        "the answer as written raises TypeError (tf.nn.conv2d needs strides)",
    )
    report.say(
        f"   tf.nn.conv2d has no default for `strides`: {mark}",
        "   The transcription channelconv.apps.reference.AnswerConv2D adds "
        "strides=1 and changes nothing else.",
        "",
    )


def _describe(error):
    """One line for the outcome of running the answer as written."""
    if error is None:
        return "it ran without error"
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    line = next((line for line in lines if "Missing required" in line), lines[0] if lines else "")
    if "Missing required" in line:
        line = line[line.index("Missing required"):]
    return f"{type(error).__name__}: {line}"


def _section_summaries(report, answer, ours):
    report.say(
        "2. The answer's model, both ways: AnswerConv2D (left) and",
        "   ChannelConv2D(16, 3, frozen=[(0,0)..(0,4)], reduction=\"concat\", "
        "use_bias=False,",
        "                 kernel_initializer=\"zeros\", store_frozen=True) (right)",
    )
    left, right = _summary_text(answer), _summary_text(ours)
    report.say(side_by_side(left, right), "")
    published = dict(zip(("total", "trainable", "non-trainable"), ANSWER_COUNTS))
    rows = [
        ("the answer's published summary", ANSWER_COUNTS),
        ("AnswerConv2D", parameter_counts(answer)),
        ("ChannelConv2D (concat)", parameter_counts(ours)),
    ]
    report.say(f"   {'':32}{'total':>7}{'trainable':>11}{'non-trainable':>15}")
    for name, counts in rows:
        report.say(f"   {name:32}{counts[0]:>7}{counts[1]:>11}{counts[2]:>15}")
    for name, text, counts in (
        ("AnswerConv2D", left, rows[1][1]),
        ("ChannelConv2D", right, rows[2][1]),
    ):
        printed = all(
            f"{label.capitalize()} params: {value}" in text
            for label, value in published.items()
        )
        mark = report.check(
            counts == ANSWER_COUNTS and printed,
            f"{name} counts are {ANSWER_COUNTS[0]}/{ANSWER_COUNTS[1]}/"
            f"{ANSWER_COUNTS[2]}",
        )
        report.say(f"   {name}: counts and printed summary equal the answer's: {mark}")
    report.say("")


def _section_same_outputs(report, answer, ours, rng):
    layer = answer.layers[0]
    variables = reference.answer_variables(layer)
    for name in ("c1_2", "c2", "c3"):
        variables[name].assign(rng.standard_normal(variables[name].shape))
    x = rng.standard_normal((2, 8, 8, 3)).astype("float32")

    report.say(
        "3. Same kernel, same output. Random values are assigned to c1_2, c2, c3."
    )
    bank0 = np.asarray(layer.c1)
    mark = report.check(
        not bank0.any(), "the answer's channel-0 bank ignores its c1_2 variable"
    )
    report.say(
        "   The answer convolves channel 0 with self.c1, fixed in __init__: "
        f"still all zero: {mark}"
    )
    ours.layers[0].assign_kernel(reference.answer_kernel(layer))
    diff = np.abs(answer(x).numpy() - ours(x).numpy()).max()
    mark = report.check(
        diff <= ATOL, "ChannelConv2D equals AnswerConv2D on its effective kernel"
    )
    report.say(
        "   ChannelConv2D loaded (assign_kernel) with the kernel the answer "
        f"really uses: max |diff| {diff:.1e}: {mark}"
    )
    # Re-run the answer's own concat, as __init__ did, on the new values.
    layer.c1 = tf.concat([variables["c1_1"], variables["c1_2"]], axis=-1)
    ours.layers[0].assign_kernel(reference.answer_kernel(layer))
    diff = np.abs(answer(x).numpy() - ours(x).numpy()).max()
    mark = report.check(
        diff <= ATOL and np.asarray(layer.c1).any(),
        "ChannelConv2D equals AnswerConv2D with a refreshed c1",
    )
    report.say(
        "   ... and after refreshing self.c1 = tf.concat([c1_1, c1_2]) "
        f"(random channel 0): max |diff| {diff:.1e}: {mark}",
        "",
    )


def _section_gradients(report, rng):
    report.say(
        "4. One gradient step (mean squared error against a random target, "
        "SGD, learning rate 0.1)",
        "   from freshly built models (all kernels zero, as the answer initialises them)",
    )
    x = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    target = rng.standard_normal((2, 6, 6, 48)).astype("float32")
    answer, ours = _fresh_models()
    _step_answer(report, answer, x, target)
    _step_ours(report, ours, x, target)


def _fresh_models():
    """The answer's model and the ChannelConv2D equivalent, freshly built."""
    answer = reference.answer_model()
    ours = keras.Sequential([reference.channel_conv2d_like_answer()])
    ours.build((None, None, None, 3))
    return answer, ours


#: The answer's kernel variables: the (input channel, filter) pairs they hold.
ANSWER_KERNEL_PAIRS = {
    "c1_1": "(0,0)-(0,4)",
    "c1_2": "(0,5)-(0,15)",
    "c2": "(1,0)-(1,15)",
    "c3": "(2,0)-(2,15)",
}


def _step_answer(report, answer, x, target):
    """Which of the answer's kernels get a gradient, and what one step changes."""
    layer = answer.layers[0]
    variables = reference.answer_variables(layer)
    grads = _gradients(answer, x, target)
    report.say("   AnswerConv2D      kernels       filters  gradient")
    for name, pairs in ANSWER_KERNEL_PAIRS.items():
        var = variables[name]
        n = var.shape[-1]
        if not var.trainable:
            text = "none (non-trainable: frozen, as intended)"
        elif grads[id(var)] is None:
            text = "None -> never trains"
        else:
            nonzero = _nonzero_kernels(grads[id(var)])
            text = f"non-zero for {nonzero}/{n} filters"
        report.say(f"   {name:<17} {pairs:<13} {n:>7}  {text}")
    report.check(
        grads[id(variables["c1_2"])] is None,
        "the answer's 11 trainable channel-0 filters get gradient None",
    )
    report.check(
        all(_nonzero_kernels(grads[id(variables[n])]) == 16 for n in ("c2", "c3")),
        "the answer's channel-1 and channel-2 filters get a gradient",
    )
    before = reference.answer_kernel(layer)
    _sgd_step(answer, grads)
    after = reference.answer_kernel(layer)
    changed0 = int((before[..., 0, :] != after[..., 0, :]).any(axis=(0, 1)).sum())
    mark = report.check(
        changed0 == 0, "a gradient step changes no channel-0 filter of the answer"
    )
    report.say(
        f"   after the step, channel-0 filters changed: {changed0}/16 "
        f"(expected 0, the defect): {mark}"
    )


def _step_ours(report, ours, x, target):
    """Every trainable kernel of ChannelConv2D gets a gradient; frozen stay."""
    conv = ours.layers[0]
    grads = _gradients(ours, x, target)
    n_trainable = conv.trainable_kernels.shape[-1]
    nonzero = _nonzero_kernels(grads[id(conv.trainable_kernels)])
    report.say(
        f"   ChannelConv2D     trainable_kernels: non-zero gradient for "
        f"{nonzero}/{n_trainable} kernels; frozen_kernels: non-trainable"
    )
    report.check(
        nonzero == n_trainable,
        "every trainable kernel of ChannelConv2D gets a non-zero gradient",
    )
    trainable_mask = ~conv.frozen_mask
    before = keras.ops.convert_to_numpy(conv.kernel)
    _sgd_step(ours, grads)
    after = keras.ops.convert_to_numpy(conv.kernel)
    changed = (before != after).any(axis=(0, 1))
    frozen_after = after[..., conv.frozen_mask]
    mark = report.check(
        changed[trainable_mask].all() and not changed[conv.frozen_mask].any()
        and np.array_equal(frozen_after, np.zeros_like(frozen_after)),
        "a gradient step changes every trainable kernel of ChannelConv2D and "
        "no frozen one",
    )
    report.say(
        f"   after the step: {int(changed[trainable_mask].sum())}/"
        f"{int(trainable_mask.sum())} trainable kernels changed, the "
        f"{int(conv.frozen_mask.sum())} frozen ones still exactly zero: {mark}",
        "",
    )


def _gradients(model, x, target):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - target) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    return {id(w): g for w, g in zip(model.trainable_weights, grads)}


def _nonzero_kernels(grad):
    grad = np.asarray(grad).reshape(grad.shape[0], grad.shape[1], -1)
    return int((grad != 0).any(axis=(0, 1)).sum())


def _sgd_step(model, grads, learning_rate=0.1):
    for w in model.trainable_weights:
        if grads[id(w)] is not None:
            w.assign_sub(learning_rate * grads[id(w)])


#: The Keras layer each reduction equals, as the table names it.
KERAS_EQUIVALENT = {
    "sum": "Conv2D(16, 3)",
    "concat": "DepthwiseConv2D(3, depth_multiplier=16)",
}


def _section_reductions(report, rng):
    report.say(
        "5. Sum vs concat: ChannelConv2D(16, 3, frozen=[(0,0)..(0,4)]) with "
        "random kernel and bias,",
        "   against the Keras layer with the same kernel (layer.kernel) and bias",
        f"   {'reduction':<10}{'implementation':<16}{'output shape':<17}"
        f"{'Keras reference':<42}max |diff|",
    )
    x = rng.standard_normal((2, 8, 8, 3)).astype("float32")
    for reduction, name in KERAS_EQUIVALENT.items():
        for implementation in ("fused", "per_channel"):
            layer = ChannelConv2D(
                16,
                3,
                frozen=ANSWER_FROZEN,
                reduction=reduction,
                implementation=implementation,
                bias_initializer="random_normal",
            )
            y = keras.ops.convert_to_numpy(layer(x))
            expected = keras.ops.convert_to_numpy(to_keras_layer(layer)(x))
            diff = float(np.abs(y - expected).max())
            ok = y.shape == expected.shape and np.allclose(
                y, expected, rtol=RTOL, atol=ATOL
            )
            mark = report.check(
                ok, f"reduction={reduction!r}, {implementation} equals {name}"
            )
            report.say(
                f"   {reduction:<10}{implementation:<16}{str(y.shape):<17}"
                f"{name:<42}{diff:.1e}  {mark}"
            )
    report.say(
        "   \"sum\" is what the question asked for (Conv2D, 16 outputs); "
        "\"concat\" is the answer's layout (48 outputs).",
        "",
    )


def run(seed=0, out=None):
    """Runs every section and prints the findings.

    Args:
        seed: seed of the random inputs and kernels.
        out: text stream for the report; ``sys.stdout`` by default.

    Returns:
        ``0`` if every check holds, else ``1`` after printing the failed
        checks to ``sys.stderr``.
    """
    report = Report("channelconv reproduce", out)
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    _section_as_written(report)
    answer, ours = _fresh_models()
    _section_summaries(report, answer, ours)
    _section_same_outputs(report, answer, ours, rng)
    _section_gradients(report, rng)
    _section_reductions(report, rng)
    return report.verdict("All {n} checks agree.")
