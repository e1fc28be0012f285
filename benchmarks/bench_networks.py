"""Whole converted networks against the Keras networks they came from.

Run from the repository root, once per oneDNN setting::

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_networks.py   # about 10 min
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/bench_networks.py
    python benchmarks/bench_networks.py --quick                    # MobileNetV2 only
    python benchmarks/bench_networks.py --large                    # ResNet50 at 224x224
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/bench_networks.py --rounds 20   # less noise, ~2.5x longer
    python benchmarks/bench_networks.py --report benchmarks/results/bench_networks_onednn-off.json

It writes ``bench_networks_onednn-off.{json,md}`` (or ``-on``; ``_quick`` and
``_large`` runs under their own names) to ``benchmarks/results/`` (``--out``
to change).

What a user runs: a ``keras.applications`` network (``weights=None``),
every ``Conv2D`` converted with :func:`channelconv.convert_model` with a
fraction of its kernels frozen (:func:`channelconv.random_frozen_mask`,
seed 0), every ``DepthwiseConv2D`` converted with nothing frozen; the same
network stripped back to plain Keras layers (:func:`channelconv.strip`) for
deployment. Each is compiled with Adam and mean squared error and timed with
``train_on_batch`` and ``predict_on_batch`` at batch 16 (Keras's own
compiled steps, including their per-call Python cost), ResNet50 at 64x64,
MobileNetV2 at 96x96 (and, with ``--large``, ResNet50 at the 224x224 it was
designed for: the same kernels against 12 times the pixels).

How: after 2 warm-up calls, rounds; each round times every variant once
(``calls`` calls, shuffled order). A variant's figure is the median over
rounds of its time divided by the Keras network's time in the same round.
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
import tensorflow as tf  # noqa: E402

from benchlib.environment import environment, onednn_text  # noqa: E402
from benchlib.report import table, write_setting_reports  # noqa: E402
from benchlib.timing import interleaved, seconds, summary  # noqa: E402
from channelconv import convert_model, random_frozen_mask, strip  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NETWORKS = {
    "ResNet50": keras.applications.ResNet50,
    "MobileNetV2": keras.applications.MobileNetV2,
}
FULL = dict(cases=[("ResNet50", 64, 0.1), ("ResNet50", 64, 0.5), ("MobileNetV2", 96, 0.1),
                   ("MobileNetV2", 96, 0.5)], rounds=8, calls=3)
QUICK = dict(cases=[("MobileNetV2", 96, 0.1)], rounds=3, calls=2)
LARGE = dict(cases=[("ResNet50", 224, 0.1)], rounds=5, calls=2)
BATCH, WARMUP = 16, 2


def frozen_sets(model, fraction, seed=0):
    """The ``frozen_by_layer`` of :func:`channelconv.convert_model`."""
    frozen = {}
    for layer in model.layers:
        if type(layer) is keras.layers.Conv2D:
            channels, filters = layer.kernel.shape[-2:]
            count = round(fraction * channels * filters)
            frozen[layer.name] = random_frozen_mask(channels, filters, count, seed=seed)
        elif type(layer) is keras.layers.DepthwiseConv2D:
            frozen[layer.name] = None
    return frozen


def variants(name, size, fraction):
    """``{"Keras": model, "converted": ..., "stripped": ...}``, compiled."""
    keras.utils.set_random_seed(0)
    model = NETWORKS[name](weights=None, input_shape=(size, size, 3), classes=10)
    converted = convert_model(model, frozen_sets(model, fraction))
    stripped = strip(converted)
    models = {"Keras": model, "converted": converted, "stripped": stripped}
    for m in models.values():
        m.compile(keras.optimizers.Adam(1e-4), "mse")
    return models


def time_case(name, size, fraction, rounds, calls, rng):
    models = variants(name, size, fraction)
    data = np.random.default_rng(1)
    x = data.normal(size=(BATCH, size, size, 3)).astype("float32")
    y = data.normal(size=(BATCH, 10)).astype("float32")
    steps = {
        "train": lambda m: m.train_on_batch(x, y),
        "infer": lambda m: m.predict_on_batch(x),
    }
    result, first_call = {}, {}
    for mode, step in steps.items():
        fns = {v: functools.partial(step, m) for v, m in models.items()}
        first_call.update({f"{mode} {v}": seconds(fn) for v, fn in fns.items()})
        times = interleaved(fns, rounds, warmup=WARMUP - 1, rng=rng, calls=calls)
        result[mode] = summary(times, "Keras")
        print(f"{name} {size}x{size} {fraction:.0%} frozen, {mode}: " + ", ".join(
            f"{v} {r['ms']:.0f} ms ({r['ratio']:.3f}x)" for v, r in result[mode].items()
        ), flush=True)
    counts = {v: int(m.count_params()) for v, m in models.items()}
    trainable = {v: int(sum(np.prod(w.shape) for w in m.trainable_weights))
                 for v, m in models.items()}
    return {"network": name, "image": size, "batch": BATCH, "frozen": fraction,
            "params": counts, "trainable_params": trainable, "steps": result,
            "first_call_s": first_call}


def run(plan):
    rng = random.Random(0)
    env = environment()
    start = time.perf_counter()
    cases = [time_case(*case, plan["rounds"], plan["calls"], rng) for case in plan["cases"]]
    return {"environment": env, "plan": plan, "wall_s": time.perf_counter() - start,
            "cases": cases}


def _cell(variant):
    return f"{variant['ratio']:.3f} ({variant['ms']:.0f})"


def markdown(result):
    env, plan = result["environment"], result["plan"]
    lines = [
        "# Converted networks against Keras", "",
        f"- TensorFlow {env['tensorflow']}, Keras {env['keras']}, Python {env['python']}",
        f"- CPU: {env['cpu']}, {env['cores']} cores; {env['date']}",
        f"- {onednn_text(env)}",
        f"- batch {BATCH}, Adam, `train_on_batch` / `predict_on_batch`; {plan['rounds']} "
        f"interleaved rounds of {plan['calls']} calls; ratio = median of per-round ratios "
        "to the Keras network; ms = median time per call",
        f"- wall time {result['wall_s'] / 60:.1f} min", "",
    ]
    rows = []
    for case in result["cases"]:
        s = case["steps"]
        rows.append([
            f"{case['network']}, {case['image']}x{case['image']}", f"{case['frozen']:.0%}",
            f"{s['train']['Keras']['ms']:.0f}",
            _cell(s["train"]["converted"]),
            _cell(s["train"]["stripped"]),
            f"{s['infer']['Keras']['ms']:.0f}",
            _cell(s["infer"]["converted"]),
            _cell(s["infer"]["stripped"]),
            f"{case['trainable_params']['converted']:,} / {case['params']['converted']:,}",
        ])
    lines += table(
        ["network", "frozen", "Keras train ms", "converted train", "stripped train",
         "Keras infer ms", "converted infer", "stripped infer",
         "converted trainable / total params"],
        rows, "lrrrrrrrr")
    lines += ["", "Each ratio: median of per-round ratios (in parentheses: median ms). "
              "A stripped network runs the same layers as the Keras one, so its ratio "
              "shows the run's noise."]
    lines += ["", "First call (trace and compile), s:", ""]
    names = list(result["cases"][0]["first_call_s"])
    lines += table(
        ["network", "frozen"] + names,
        [[case["network"], f"{case['frozen']:.0%}"]
         + [f"{case['first_call_s'][n]:.1f}" for n in names] for case in result["cases"]],
        "ll" + "r" * len(names))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="MobileNetV2 at 10%% only")
    group.add_argument("--large", action="store_true", help="ResNet50 at 224x224, 10%% frozen")
    parser.add_argument("--out", default=RESULTS, help="output directory (default: %(default)s)")
    parser.add_argument("--rounds", type=int,
                        help="rounds per step kind (default: 8; written as bench_networks_long_*)")
    parser.add_argument("--report", metavar="JSON",
                        help="time nothing: rewrite the Markdown of a recorded JSON")
    args = parser.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            result = json.load(f)
        with open(os.path.splitext(args.report)[0] + ".md", "w") as f:
            f.write(markdown(result))
        return
    tf.get_logger().setLevel("ERROR")
    plan, name = ((QUICK, "bench_networks_quick") if args.quick
                  else (LARGE, "bench_networks_large") if args.large
                  else (FULL, "bench_networks"))
    if args.rounds:
        plan, name = dict(plan, rounds=args.rounds), name.replace("networks", "networks_long")
    write_setting_reports(run(plan), args.out, name, markdown)


if __name__ == "__main__":
    main()
