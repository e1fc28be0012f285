"""``channelconv prune-demo``: learned kernel sparsity on scikit-learn's digits.

A small CNN on the 8x8 digits bundled with scikit-learn (no download) is
trained dense; then, from those weights, pruned with :class:`KernelPruning`
to 50% and 75% of the kernels of its two larger convolutions with each
granularity, fine-tuned, and condensed; and, as the baseline, pruned at
random to 75%. For each: test accuracy (mean over the seeds), trainable
parameters of the condensed convolutions, and inference time of the
condensed model against the dense one. It checks what must hold exactly
(pruned kernels are zero, the condensed model computes what the pruned one
does, the counts are the schedule's) and reports the rest. See
``docs/pruning.md``.
"""

import functools

import keras
import numpy as np

from channelconv import ChannelConv2D, KernelPruning, PolynomialDecay, condense
from channelconv.apps import timing
from channelconv.apps.defaults import PRUNE_DEMO as DEFAULTS
from channelconv.apps.report import Report
from channelconv.pruning import GRANULARITIES

SPARSITIES = (0.5, 0.75)
GROUPS = 4
PRUNED = ("c2", "c3")  # the two larger convolutions (c1 has one input channel)


def load_digits(seed=0):
    """``(x_train, y_train, x_test, y_test)``: scikit-learn's digits, a 75/25 split.

    Images scaled to [0, 1], shape ``(n, 8, 8, 1)``; the split is stratified
    and fixed by ``seed``.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "channelconv prune-demo needs scikit-learn for its bundled digits: "
            "pip install 'channelconv[demo]' (or scikit-learn)."
        ) from error
    digits = sklearn_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in range(10):
        where = np.flatnonzero(y == label)
        test[rng.choice(where, len(where) // 4, replace=False)] = True
    return x[~test], y[~test], x[test], y[test]


def build_model(seed):
    """The CNN: three 3x3 channel convolutions (16, 32, 32 filters), prunable."""
    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input((8, 8, 1))
    h = ChannelConv2D(16, 3, padding="same", activation="relu", kernel_initializer=init,
                      name="c1")(inputs)
    h = ChannelConv2D(32, 3, padding="same", activation="relu", prunable=True,
                      kernel_initializer=keras.initializers.HeNormal(seed=seed + 1),
                      name="c2")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = ChannelConv2D(32, 3, padding="same", activation="relu", prunable=True,
                      kernel_initializer=keras.initializers.HeNormal(seed=seed + 2),
                      name="c3")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(10, activation="softmax",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed))(h)
    return keras.Model(inputs, outputs)


def _compile(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def _accuracy(model, x, y):
    predicted = keras.ops.convert_to_numpy(model(x, training=False))
    return float((np.argmax(predicted, axis=1) == y).mean())


def _conv_trainable(model):
    return sum(int(np.prod(model.get_layer(n).trainable_kernels.shape)) for n in PRUNED)


def _random_criterion(seed):
    rng = np.random.default_rng(seed)
    return lambda kernel: rng.random(kernel.shape[-2:])


def prune_run(dense, data, granularity, sparsity, epochs, batch_size, seed, random=False):
    """Prunes a copy of ``dense`` while fine-tuning; returns the pruned and condensed models."""
    x_train, y_train = data[:2]
    model = keras.models.clone_model(dense)
    model.set_weights(dense.get_weights())
    _compile(model, 1e-3)
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    schedule = PolynomialDecay(0.0, sparsity, begin_step=0, end_step=max(1, steps * 2 // 3),
                               frequency=max(1, steps // 20))
    pruning = KernelPruning(
        schedule, criterion=_random_criterion(seed) if random else "l1",
        granularity=granularity, groups=GROUPS if granularity == "group" else None,
        layers=list(PRUNED),
    )
    keras.utils.set_random_seed(seed)
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=[pruning])
    return model, condense(model)


def _inference_ms(models, x, rounds=30):
    """Median ms of ``predict_on_batch(x)`` for each model, in interleaved rounds."""
    calls = {i: functools.partial(model.predict_on_batch, x) for i, model in enumerate(models)}
    return list(timing.medians(timing.interleaved(calls, rounds, warmup=3), scale=1e3).values())


def run(seeds=DEFAULTS["seeds"], dense_epochs=DEFAULTS["dense_epochs"],
        finetune_epochs=DEFAULTS["finetune_epochs"], batch_size=DEFAULTS["batch_size"],
        plot=DEFAULTS["plot"], verbose=DEFAULTS["verbose"], out=None):
    """Runs the study; prints the table; returns the exit code (0: checks hold)."""
    report = Report("channelconv prune-demo", out=out)
    data = load_digits()
    x_test, y_test = data[2], data[3]
    cases = [(g, s, False) for g in GRANULARITIES for s in SPARSITIES] + [("kernel", 0.75, True)]
    results = {case: [] for case in [("dense", 0.0, False)] + cases}
    progress = keras.utils.Progbar(seeds * (1 + len(cases)), verbose=verbose,
                                   stateful_metrics=["run"])
    zeros_exact = counts_exact = condensed_equal = True
    for seed in range(seeds):
        keras.utils.set_random_seed(seed)
        dense = build_model(seed)
        _compile(dense, 3e-3)
        dense.fit(data[0], data[1], batch_size=batch_size, epochs=dense_epochs, verbose=0)
        results[("dense", 0.0, False)].append(
            (_accuracy(dense, x_test, y_test), _conv_trainable(dense), dense))
        progress.add(1)
        for granularity, sparsity, random in cases:
            pruned, small = prune_run(dense, data, granularity, sparsity, finetune_epochs,
                                      batch_size, seed, random)
            for name in PRUNED:
                layer = pruned.get_layer(name)
                mask = keras.ops.convert_to_numpy(layer.pruned_kernels) > 0
                kernel = keras.ops.convert_to_numpy(layer.kernel)
                zeros_exact &= not kernel[..., mask].any()
                channels, filters = mask.shape
                expected = {"kernel": round(sparsity * channels * filters),
                            "input_channel": round(sparsity * channels) * filters,
                            "filter": round(sparsity * filters) * channels,
                            "group": round(sparsity * channels) * filters}[granularity]
                counts_exact &= int(mask.sum()) == expected
            probe = x_test[:64]
            condensed_equal &= np.allclose(keras.ops.convert_to_numpy(small(probe)),
                                           keras.ops.convert_to_numpy(pruned(probe)), atol=1e-5)
            results[(granularity, sparsity, random)].append(
                (_accuracy(small, x_test, y_test), _conv_trainable(small), small))
            progress.add(1)
    report.say("", _table(results, x_test), "")
    report.say(
        "Checks:",
        "  pruned kernels exactly zero in every pruned layer: "
        + report.check(zeros_exact, "a pruned kernel is not zero"),
        "  zero kernels after the last update = the schedule's count: "
        + report.check(counts_exact, "a layer has another number of zero kernels"),
        "  condensed models compute what the pruned ones compute: "
        + report.check(condensed_equal, "a condensed model's outputs differ"),
    )
    dense_acc = np.mean([r[0] for r in results[("dense", 0.0, False)]])
    kernel75 = np.mean([r[0] for r in results[("kernel", 0.75, False)]])
    random75 = np.mean([r[0] for r in results[("kernel", 0.75, True)]])
    report.say(
        "Targets (reported, not checked):",
        f"  kernel granularity at 75%: {100 * kernel75:.2f}% against dense "
        f"{100 * dense_acc:.2f}% ({100 * (kernel75 - dense_acc):+.2f} points; target: "
        "within 1.5)",
        f"  magnitude against random pruning at 75%: {100 * kernel75:.2f}% against "
        f"{100 * random75:.2f}%",
    )
    if plot:
        report.say("", f"Plot: {_plot(results, plot)}")
    return report.verdict("All checks passed.")


def _table(results, x_test):
    milliseconds = _inference_ms([runs[0][2] for runs in results.values()], x_test)
    lines = ["| pruning | sparsity | test accuracy (mean, min-max) | trainable conv weights "
             "| inference / dense |", "|---|---:|---:|---:|---:|"]
    for ms, ((granularity, sparsity, random), runs) in zip(milliseconds, results.items()):
        accuracy = np.array([r[0] for r in runs])
        ratio = ms / milliseconds[0]
        name = "dense" if granularity == "dense" else (
            f"{'random' if random else 'magnitude (l1)'}, {granularity}")
        lines.append(
            f"| {name} | {sparsity:.0%} | {100 * accuracy.mean():.2f}% "
            f"({100 * accuracy.min():.1f}-{100 * accuracy.max():.1f}) | {runs[0][1]} "
            f"| {ratio:.2f} |")
    return "\n".join(lines)


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    dense = np.mean([r[0] for r in results[("dense", 0.0, False)]])
    for granularity in GRANULARITIES:
        points = [(s, np.mean([r[0] for r in results[(granularity, s, False)]]))
                  for s in SPARSITIES]
        ax.plot([0.0] + [p[0] for p in points], [dense] + [p[1] for p in points], "o-",
                label=granularity)
    random = np.mean([r[0] for r in results[("kernel", 0.75, True)]])
    ax.plot([0.75], [random], "kx", markersize=9, label="random, kernel")
    ax.set(xlabel="fraction of kernels pruned (c2, c3)", ylabel="test accuracy",
           title="digits: accuracy against sparsity (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
