"""The sparse implementation against the dense Keras layer, by structure of the zeros.

Run from the repository root, once per oneDNN setting::

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_sparse.py   # about 10 min
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/bench_sparse.py
    python benchmarks/bench_sparse.py --quick                    # small size, 2 rows
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_sparse.py --targets --rounds 15   # the target rows
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_sparse.py --only "pruned groups"  # issue 13's row
    python benchmarks/bench_sparse.py --report benchmarks/results/bench_sparse_onednn-off.json
    KERAS_BACKEND=jax python benchmarks/bench_sparse.py --targets --multipliers 1
                                            # on JAX (..._targets_x1_jax.*), concat x1 only
    KERAS_BACKEND=jax python benchmarks/bench_sparse.py --smoke     # seconds: checks the install

It writes ``bench_sparse_onednn-off.{json,md,png}`` (or ``-on``; ``--quick``,
``--smoke`` and ``--targets`` runs as ``bench_sparse_quick_...``,
``bench_sparse_smoke_...``, ``bench_sparse_targets_...``) to
``benchmarks/results/`` (``--out`` to change). On JAX or PyTorch
(``KERAS_BACKEND``), where TensorFlow's oneDNN setting does not apply,
the files end in ``_jax`` / ``_torch`` instead of ``_onednn-off``.

The full run also profiles, at its first size, the sparse ``concat`` layer
(256 channels, 75% frozen, inference): the dense depthwise convolution
against each step of the sparse path (input gather, depthwise convolution
of the live kernels, output placement) and a plain copy of the output; and
it times the copies a 4-block ``sum`` plan adds to its convolutions in a
training step.

Each row is one frozen-zero structure (:data:`ROWS`) at one size
(:data:`SIZES`: 256 -> 256 channels, 3x3, 56x56, batch 4, and 64 -> 64 at
32x32, batch 8; ``concat`` rows: 256 or 64 channels with 1 or 4 kernels each
(:data:`MULTIPLIERS`), against ``DepthwiseConv2D(depth_multiplier=...)``), all
with ``padding="same"``. The
variants of a row:

- ``keras``: the dense ``Conv2D`` / ``DepthwiseConv2D``, the baseline;
- ``sparse``: ``ChannelConv2D(implementation="sparse")``;
- ``auto``: ``implementation="auto"``, timed where it does not run the plan
  (it is then the fused path);
- ``limit``: the plan's convolutions alone, each on an input that already
  has the block's channels, with no gather and no output placement: what
  running the blocks costs on this machine, the floor of any sparse path;

A training step is forward, gradient of the kernels and an Adam update
(``benchlib.steps.make_step``: on TensorFlow a ``tf.function`` without XLA,
on JAX a ``jax.jit`` function, XLA's only way, on PyTorch eager); an
inference step is the forward call. After 2 warm-up calls (1 if it takes
over :data:`SLOW` seconds), every round times each variant once in a
shuffled order; a variant's figure is the median over
rounds of its time divided by the baseline's time in the same round.
"""

import argparse
import functools
import json
import os
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from benchlib.environment import (  # noqa: E402
    backend_of,
    backend_title,
    environment,
    onednn_text,
    setting_name,
    versions_text,
)
from benchlib.report import table, write_setting_reports  # noqa: E402
from benchlib.steps import compiled, jit_text, make_step, quiet, tensor  # noqa: E402
from benchlib.timing import interleaved, medians, summary  # noqa: E402
from channelconv import ChannelConv2D, grouped_frozen_mask, random_frozen_mask  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SIZES = {
    "256x56": dict(channels=256, filters=256, spatial=56, batch=4),
    "64x32": dict(channels=64, filters=64, spatial=32, batch=8),
    "8x6": dict(channels=8, filters=8, spatial=6, batch=2),  # --smoke
}
#: ``concat`` rows run with each depth multiplier (kernels per channel).
MULTIPLIERS = (1, 4)
#: (reduction, structure, parameter): what is frozen at zero.
ROWS = [
    *(("sum", "block-diagonal", g) for g in (2, 4, 8, 16)),
    *(("sum", "input channels", f) for f in (0.25, 0.5, 0.75)),
    *(("sum", "filters", f) for f in (0.25, 0.5, 0.75)),
    *(("sum", "random", f) for f in (0.1, 0.5, 0.75, 0.9)),
    ("sum", "pruned groups", 4),
    *(("concat", "random", f) for f in (0.25, 0.5, 0.75, 0.9)),
]
#: Issue 12's targets at 256x56: (reduction, structure, parameter) -> largest ratio.
TARGETS = {
    ("sum", "block-diagonal", 4): {"train": 0.40, "infer": 0.40},
    ("sum", "block-diagonal", 8): {"train": 0.28, "infer": 0.28},
    ("sum", "input channels", 0.5): {"train": 0.60, "infer": 0.60},
    ("sum", "filters", 0.25): {"train": 0.85, "infer": 0.85},
    ("sum", "random", 0.1): {"train": 1.05, "infer": 1.03, "variant": "auto"},
    ("concat", "random", 0.75): {"train": 0.40, "infer": 0.40},  # each multiplier
    # Issue 13: what group pruning to 75% leaves, condensed, in inference.
    ("sum", "pruned groups", 4): {"infer": 0.50},
}
FULL = dict(sizes=list(SIZES), rows=ROWS, rounds=7, profile=True)
QUICK = dict(sizes=["64x32"], rows=[("sum", "block-diagonal", 4), ("concat", "random", 0.75)],
             rounds=3)
TARGET_RUN = dict(sizes=["256x56"], rows=list(TARGETS), rounds=15)
#: Seconds through every path, profiles included, at a toy size: for tests
#: and for checking a backend's install.
SMOKE = dict(sizes=["8x6"], rows=[("sum", "block-diagonal", 2), ("concat", "random", 0.75)],
             rounds=1, multipliers=(2,), profile=True)
WARMUP = 2
#: A warm-up call of more seconds than this ends the warm-up: on JAX, XLA's
#: CPU gradient of a depthwise convolution with several kernels per channel
#: takes minutes per step at 256x56 (jax-ml/jax#13800); no TensorFlow step
#: of the table comes near it.
SLOW = 10.0


def frozen_zero(reduction, structure, parameter, channels, filters, seed=0):
    """The frozen-zero mask ``(channels, filters)`` of one row.

    Block-diagonal: ``parameter`` groups (a grouped convolution's mask);
    input channels / filters: that fraction of them (chosen at random) has
    every kernel frozen; random: that fraction of all kernels; pruned
    groups: what ``KernelPruning(granularity="group", groups=parameter)``
    leaves at 75%: in each of ``parameter`` consecutive groups of filters,
    a quarter of the input channels (chosen at random per group) live.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros((channels, filters), bool)
    if structure == "block-diagonal":
        return grouped_frozen_mask(channels, filters, parameter)
    if structure == "pruned groups":
        mask[:] = True
        size = filters // parameter
        for g in range(parameter):
            live = rng.choice(channels, channels // 4, replace=False)
            mask[np.ix_(live, np.arange(g * size, (g + 1) * size))] = False
        return mask
    if structure == "input channels":
        mask[rng.choice(channels, round(parameter * channels), replace=False)] = True
    elif structure == "filters":
        mask[:, rng.choice(filters, round(parameter * filters), replace=False)] = True
    else:
        mask = random_frozen_mask(channels, filters, round(parameter * channels * filters),
                                  seed=seed)
    return mask


class PlanLimit(keras.layers.Layer):
    """The plan's convolutions on inputs that already have the block's channels."""

    def __init__(self, plan, **kwargs):
        super().__init__(**kwargs)
        self.plan = plan

    def build(self, input_shape):
        self.kernels = [
            self.add_weight(shape=(3, 3, len(b.channels), b.width), name=f"block{i}")
            for i, b in enumerate(self.plan.blocks)
        ]

    def call(self, inputs):
        conv = keras.ops.depthwise_conv if self.plan.reduction == "concat" else keras.ops.conv
        return [conv(x, k, padding="same") for x, k in zip(inputs, self.kernels)]


def variants(reduction, mask, size):
    """``{name: (layer, input)}`` of one row (``limit`` takes its own inputs)."""
    x = _input(size)
    filters = mask.shape[1]
    if reduction == "sum":
        keras_layer = keras.layers.Conv2D(filters, 3, padding="same")
    else:
        keras_layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=filters, padding="same")

    def channel_conv(implementation):
        return ChannelConv2D(filters, 3, frozen=mask, reduction=reduction, padding="same",
                             implementation=implementation)

    layers = {"keras": (keras_layer, x), "sparse": (channel_conv("sparse"), x)}
    layers["sparse"][0].build(x.shape)
    plan = layers["sparse"][0].plan
    if not plan.prefer_sparse:
        layers["auto"] = (channel_conv("auto"), x)
    if plan.blocks:
        parts = [ops.take(x, list(b.channels), axis=-1) for b in plan.blocks]
        layers["limit"] = (PlanLimit(plan), parts)
    for layer, inputs in layers.values():
        if not layer.built:
            layer.build(keras.tree.map_structure(lambda t: tuple(t.shape), inputs))
    return layers, plan


def time_row(layers, mode, rounds, rng):
    """Median over rounds of each variant's time / the baseline's (and ms)."""
    steps = {name: functools.partial(make_step(layer, mode, jit=False,
                                               optimizer=keras.optimizers.Adam()), x)
             for name, (layer, x) in layers.items()}
    return summary(interleaved(steps, rounds, warmup=WARMUP, slow=SLOW, rng=rng), "keras")


def run(config, progress=print):
    """Times every row of ``config``; returns the result dict."""
    records, start, rng = [], time.time(), random.Random(0)
    rows = [(reduction, structure, parameter, filters)
            for reduction, structure, parameter in config["rows"]
            for filters in ((None,) if reduction == "sum"
                            else config.get("multipliers", MULTIPLIERS))]
    total = len(config["sizes"]) * len(rows)
    for size_name in config["sizes"]:
        size = SIZES[size_name]
        for reduction, structure, parameter, filters in rows:
            filters = filters or size["filters"]
            mask = frozen_zero(reduction, structure, parameter, size["channels"], filters)
            layers, plan = variants(reduction, mask, size)
            record = dict(size=size_name, reduction=reduction, structure=structure,
                          parameter=parameter, filters=filters,
                          frozen_fraction=float(mask.mean()),
                          macs_fraction=plan.macs_fraction, blocks=len(plan.blocks),
                          auto="sparse" if plan.prefer_sparse else "fused",
                          plan=str(plan).split("\n")[0])
            for mode in ("train", "infer"):
                record[mode] = time_row(layers, mode, config["rounds"], rng)
            records.append(record)
            progress(f"[{len(records)}/{total}] {size_name} {_row_name(record)}: sparse train {record['train']['sparse']['ratio']:.2f}, "
                     f"infer {record['infer']['sparse']['ratio']:.2f} "
                     f"({(time.time() - start) / 60:.1f} min)")
    result = dict(environment=environment(), config={k: v for k, v in config.items()},
                  records=records)
    if config.get("profile"):  # at the first size: 256x56 in the full run
        result["concat_profile"] = concat_profile(config["rounds"], rng, size=config["sizes"][0])
        result["copy_profile"] = copy_profile(config["rounds"], rng, size=config["sizes"][0])
    result["wall_s"] = time.time() - start
    return result


def copy_profile(rounds, rng, groups=4, size="256x56"):
    """Ms of the copies a block-diagonal sum plan adds to its convolutions.

    In a training step of ``groups`` blocks, against the plan's
    convolutions alone (``limit``): the split of the input into the
    blocks' channels, the concatenation of their outputs, and the split of
    the output's gradient (the concatenation's gradient); each moves one
    input- or output-sized tensor.
    """
    x = _input(SIZES[size])
    parts = ops.split(x, groups, axis=-1)
    steps = {
        "split of the input": (compiled(lambda t: ops.split(t, groups, axis=-1)), x),
        "concatenation of the outputs": (compiled(lambda p: ops.concatenate(p, axis=-1)), parts),
        "split of the output gradient": (compiled(lambda t: ops.split(t, groups, axis=-1)), x),
    }
    return dict(size=size, groups=groups, ms=_profile_ms(steps, rounds, rng))


def _profile_ms(steps, rounds, rng):
    """Median ms of each ``name: (function, argument)``, interleaved (3 ``rounds``)."""
    fns = {name: functools.partial(fn, arg) for name, (fn, arg) in steps.items()}
    return medians(interleaved(fns, 3 * rounds, warmup=WARMUP, rng=rng), scale=1e3)


def concat_profile(rounds, rng, fraction=0.75, size="256x56"):
    """Inference ms of the sparse concat layer's steps, and of the dense layer.

    Where the time of ``implementation="sparse"`` goes for a depthwise
    layer (1 kernel per channel): the gather of the live channels, the
    depthwise convolution of the live kernels, and the placement of their
    outputs among the zeros of the full output; beside the dense
    ``DepthwiseConv2D`` and a plain copy of a tensor of the output's size.
    """
    mask = frozen_zero("concat", "random", fraction, SIZES[size]["channels"], 1)
    layers, plan = variants("concat", mask, SIZES[size])
    x = layers["keras"][1]
    sparse = layers["sparse"][0]
    run = sparse._sparse  # the SparseConvolution the layer runs
    live = ops.take(x, plan.input_index.tolist(), axis=-1)
    kernel = tensor(np.random.default_rng((3, 4)).standard_normal(
        (3, 3, live.shape[-1], 1), dtype="float32"))
    y_live = ops.depthwise_conv(live, kernel, padding="same")
    y = layers["keras"][0](x)
    steps = {  # the layers' inference steps read their variables as a step does
        "DepthwiseConv2D": (make_step(layers["keras"][0], "infer", jit=False), x),
        "sparse layer": (make_step(sparse, "infer", jit=False), x),
        "input gather": (compiled(run._select), x),
        "depthwise of the live kernels": (
            compiled(lambda t: ops.depthwise_conv(t, kernel, padding="same")), live),
        "output placement": (compiled(run._place), y_live),
        "copy of the output": (compiled(lambda t: t * 2.0), y),  # (t * 1.0 is removed by grappler)
    }
    return dict(size=size, fraction=fraction, live=int(plan.input_index.size),
                ms=_profile_ms(steps, rounds, rng))


def _input(size):
    """The input of ``size``: standard normal values, the same on every backend."""
    shape = (size["batch"], size["spatial"], size["spatial"], size["channels"])
    return tensor(np.random.default_rng((1, 2)).standard_normal(shape, dtype="float32"))


def target_checks(records):
    """Issue 12's targets against the 256x56 records."""
    checks = []
    for r in records:
        target = TARGETS.get((r["reduction"], r["structure"], r["parameter"]))
        if r["size"] != "256x56" or target is None:
            continue
        variant = target.get("variant", "sparse")
        if variant not in r["train"]:
            variant = "sparse"  # auto ran the plan: its time is sparse's
        for mode in [m for m in ("train", "infer") if m in target]:
            ratio = r[mode][variant]["ratio"]
            checks.append(dict(row=_row_name(r), variant=variant, mode=mode, ratio=ratio,
                               target=target[mode], met=ratio <= target[mode],
                               limit=r[mode].get("limit", {}).get("ratio")))
    return checks


def _row_name(r):
    p = r["parameter"]
    what = f"{p} groups" if r["structure"] in ("block-diagonal", "pruned groups") else f"{p:.0%}"
    multiplier = f" (x{r['filters']})" if r["reduction"] == "concat" else ""
    return f"{r['reduction']}{multiplier} {r['structure']} {what}"


def _line(record):
    """A plot line: reduction, structure, and the multiplier of a concat row."""
    multiplier = record["filters"] if record["reduction"] == "concat" else None
    return record["reduction"], record["structure"], multiplier


def markdown(result):
    env = result["environment"]
    steps = ("" if backend_of(env) == "tensorflow" else
             f" Steps: {jit_text(backend_of(env))}.")
    lines = [
        f"# Sparse implementation against the dense Keras layer{backend_title(env)}",
        "",
        f"{versions_text(env)}; {onednn_text(env)}; "
        f"CPU {env['cpu']}, {env['cores']} cores; {env['date']}; "
        f"{result['config']['rounds']} rounds; {result['wall_s'] / 60:.1f} min.{steps}",
        "",
        "Ratios: median over rounds of the variant's step time / the Keras layer's "
        "in the same round. `limit`: the plan's convolutions alone.",
        "",
    ]
    for size in dict.fromkeys(r["size"] for r in result["records"]):
        rows = []
        for r in (r for r in result["records"] if r["size"] == size):
            cells = [_row_name(r), f"{r['frozen_fraction']:.3f}", f"{r['macs_fraction']:.3f}",
                     str(r["blocks"]), r["auto"]]
            for mode in ("train", "infer"):
                t = r[mode]
                cells += [f"{t['keras']['ms']:.1f}"] + [
                    f"{t[name]['ratio']:.2f}" if name in t else "-"
                    for name in ("sparse", "limit", "auto")
                ]
            rows.append(cells)
        header = ["frozen zeros", "fraction", "MACs", "convs", "auto",
                  "train keras ms", "sparse", "limit", "auto (fused)",
                  "infer keras ms", "sparse", "limit", "auto (fused)"]
        lines += [f"## {size}", "", *table(header, rows, "lrrrl" + "rrrr" * 2), ""]
    profile = result.get("concat_profile")
    if profile:
        base = profile["ms"]["DepthwiseConv2D"]
        rows = [[name, f"{ms:.2f}", f"{ms / base:.2f}"] for name, ms in profile["ms"].items()]
        lines += [f"## Where sparse concat's time goes ({profile['size']}, 1 kernel per "
                  f"channel, {profile['fraction']:.0%} frozen: {profile['live']} live; "
                  "inference)", "", *table(["step", "ms", "/ DepthwiseConv2D"], rows, "lrr"), ""]
    copies = result.get("copy_profile")
    if copies:
        rows = [[name, f"{ms:.2f}"] for name, ms in copies["ms"].items()]
        rows.append(["total", f"{sum(copies['ms'].values()):.2f}"])
        lines += [f"## The copies of a {copies['groups']}-block sum plan ({copies['size']})", "",
                  *table(["copy", "ms"], rows, "lr"), ""]
    checks = target_checks(result["records"])
    if checks:
        rows = [[c["row"], c["variant"], c["mode"], f"{c['ratio']:.2f}", f"{c['target']:.2f}",
                 "yes" if c["met"] else "**no**",
                 "-" if c["limit"] is None else f"{c['limit']:.2f}"] for c in checks]
        header = ["frozen zeros", "variant", "step", "ratio", "target", "met", "limit"]
        lines += ["## Targets (256x56)", "", *table(header, rows, "lllrrlr"), ""]
    return "\n".join(lines) + "\n"


def plot(result, path):
    """Sparse / Keras against frozen fraction: a line per structure, a panel per size and step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = result["records"]
    sizes = list(dict.fromkeys(r["size"] for r in records))
    fig, axes = plt.subplots(len(sizes), 2, squeeze=False, figsize=(11, 4 * len(sizes)))
    for i, size in enumerate(sizes):
        for j, mode in enumerate(("train", "infer")):
            ax = axes[i][j]
            groups = dict.fromkeys(_line(r) for r in records)
            for k, group in enumerate(groups):
                rows = sorted((r for r in records if r["size"] == size and _line(r) == group),
                              key=lambda r: r["frozen_fraction"])
                if not rows:
                    continue
                x = [r["frozen_fraction"] for r in rows]
                color = f"C{k}"
                grouped = group[1] in ("block-diagonal", "pruned groups")
                label = _row_name(rows[0]).rsplit(" ", 1 + grouped)[0]
                ax.plot(x, [r[mode]["sparse"]["ratio"] for r in rows], "o-", color=color,
                        label=label)
                limit = [(f, r[mode]["limit"]["ratio"]) for f, r in zip(x, rows)
                         if "limit" in r[mode]]
                if limit:
                    ax.plot(*zip(*limit), ":", color=color, alpha=0.7)
            ax.plot([0, 1], [1, 0], color="grey", lw=0.8, label="proportional to live kernels")
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set(xlim=(0, 1), ylim=(0, 2.0), xlabel="fraction of kernels frozen at zero",
                   ylabel="time / Keras layer", title=f"{size}, {mode} (dotted: limit)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    env = result["environment"]
    setting = (f"oneDNN {'on' if env['onednn'] else 'off'}, TensorFlow {env['tensorflow']}"
               if backend_of(env) == "tensorflow" else versions_text(env))
    fig.suptitle(f"implementation='sparse' / Keras layer ({setting}, {env['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small size, two rows, 3 rounds")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds at a toy size, through every path: checks a backend's install")
    parser.add_argument("--targets", action="store_true",
                        help="only the rows with a target, at 256x56")
    parser.add_argument("--rounds", type=int, help="rounds per row (default 7; 15 with --targets)")
    parser.add_argument("--only", metavar="STRUCTURE",
                        help="only the target rows of this structure, e.g. 'pruned groups'")
    parser.add_argument("--multipliers", type=int, nargs="+", metavar="N",
                        help=f"kernels per channel of the concat rows (default: "
                             f"{' '.join(map(str, MULTIPLIERS))}); named in the files")
    parser.add_argument("--out", default=RESULTS, help="directory of the reports")
    parser.add_argument("--report", metavar="JSON", help="rewrite the reports of a saved run")
    args = parser.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            result = json.load(f)
    else:
        quiet()
        env = environment()
        print(f"{versions_text(env)}; {onednn_text(env)}; "
              f"CPU {env['cpu']}, {env['cores']} cores", flush=True)
        config = dict(SMOKE if args.smoke else QUICK if args.quick else
                      TARGET_RUN if args.targets or args.only else FULL)
        if args.only:
            config["rows"] = [row for row in config["rows"] if row[1] == args.only]
        if args.rounds:
            config["rounds"] = args.rounds
        if args.multipliers:
            config["multipliers"] = tuple(args.multipliers)
        result = run(config, progress=lambda text: print(text, flush=True))
    name = "bench_sparse" + ("_smoke" if args.smoke else "_quick" if args.quick else
                             "_targets" if args.targets else "")
    if args.only:
        name = "bench_sparse_" + args.only.replace(" ", "_")
    if args.multipliers:
        name += "_x" + "-".join(map(str, args.multipliers))
    setting = setting_name(result["environment"])  # onednn-off, onednn-on, jax, torch
    if args.report:  # the saved run's own name
        name = os.path.basename(args.report).rsplit(f"_{setting}", 1)[0]
    write_setting_reports(result, args.out, name, markdown)
    plot(result, os.path.join(args.out, f"{name}_{setting}.png"))


if __name__ == "__main__":
    main()
