"""What the CPU routing of ``channelconv._routing`` costs, against Keras.

Run from the repository root, once per oneDNN setting::

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_routing.py   # about 2 min
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/bench_routing.py

It writes ``bench_routing_onednn-off.{json,md}`` (or ``-on``) to
``benchmarks/results/`` (``--out`` to change). Two studies, each a training
step (forward, backward, Adam) and an inference step, as in
``bench_conv.py`` (whose steps, timing loop and environment record it uses):

- ``channels_first``: ``ChannelConv2D`` fused with ``data_format=
  "channels_first"`` (transposed to channels-last around the convolution,
  on every machine) against the same layer and Keras's layer channels-last,
  and against Keras's own channels-first layer where it runs (``Conv2D``
  only with oneDNN; ``DepthwiseConv2D`` transposes by itself).
- ``unequal strides``: ``ChannelConv2D(reduction="concat")`` with strides
  ``(2, 1)`` and ``same`` padding, as routed here (TensorFlow's native
  kernel with oneDNN, the equal-stride rewrite without), the rewrite forced,
  and ``DepthwiseConv2D`` with strides ``(2, 1)`` (oneDNN only), ``(1, 1)``
  and ``(2, 2)``, which bracket the work of ``(2, 1)``.

Each group's variants are timed in interleaved rounds, in shuffled order;
a variant's figure is the median over rounds of its ratio to the group's
baseline (Keras channels-last, or ``DepthwiseConv2D`` with strides
``(1, 1)``) timed in the same round.
"""

import argparse
import contextlib
import functools
import os
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchlib.environment import environment, onednn_setting, onednn_text  # noqa: E402
from benchlib.report import fmt_ms, table, write_setting_reports  # noqa: E402
from benchlib.steps import make_step  # noqa: E402
from benchlib.timing import interleaved, summary  # noqa: E402
from channelconv import ChannelConv2D, _backend, random_frozen_mask  # noqa: E402
from channelconv import _routing as routing  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROUNDS, WARMUP = 25, 3


def _keras(reduction, filters, **kwargs):
    if reduction == "sum":
        return keras.layers.Conv2D(filters, 3, **kwargs)
    return keras.layers.DepthwiseConv2D(3, depth_multiplier=filters, **kwargs)


def _ours(reduction, channels, filters, **kwargs):
    frozen = random_frozen_mask(channels, filters, round(0.1 * channels * filters), seed=0)
    return ChannelConv2D(filters, 3, frozen=frozen, reduction=reduction, **kwargs)


@contextlib.contextmanager
def _rewrite_forced():
    """Makes the routing take the equal-stride rewrite while a step traces."""
    with routing.unequal_strides_setting("rewrite"):
        yield


def channels_first_groups():
    """(label, batch, image, channels, [(variant, layer, data_format, forced)])."""
    groups = []
    for reduction, channels, filters in (("sum", 16, 64), ("sum", 64, 64),
                                         ("concat", 16, 4), ("concat", 64, 1)):
        last, first = dict(data_format="channels_last"), dict(data_format="channels_first")
        variants = [
            ("Keras, channels_last (baseline)", _keras(reduction, filters, **last), "last"),
            ("ChannelConv2D, channels_last", _ours(reduction, channels, filters, **last), "last"),
            ("ChannelConv2D, channels_first", _ours(reduction, channels, filters, **first), "first"),
        ]
        if reduction == "concat" or onednn_setting()["onednn"]:
            variants.append(("Keras, channels_first", _keras(reduction, filters, **first), "first"))
        groups.append((f"{reduction} {channels}->{filters}", 16, 32, channels,
                       [(n, layer, f, False) for n, layer, f in variants]))
    return groups


def strides_groups():
    groups = []
    for channels, filters, image, batch in ((3, 16, 32, 16), (16, 4, 32, 16), (64, 1, 56, 16)):
        def ours():
            return _ours("concat", channels, filters, strides=(2, 1), padding="same")

        variants = [
            ("DepthwiseConv2D (1, 1) (baseline)", _keras("concat", filters, padding="same"), False),
            ("DepthwiseConv2D (2, 2)", _keras("concat", filters, strides=2, padding="same"), False),
            ("ChannelConv2D (2, 1), as routed", ours(), False),
            ("ChannelConv2D (2, 1), rewrite forced", ours(), True),
        ]
        if _backend.native_unequal_strides():
            variants.append(("DepthwiseConv2D (2, 1)",
                             _keras("concat", filters, strides=(2, 1), padding="same"), False))
        groups.append((f"concat {channels}x{filters}, {image}x{image}", batch, image, channels,
                       [(n, layer, "last", forced) for n, layer, forced in variants]))
    return groups


def time_group(batch, image, channels, variants, mode, rng):
    """Median ratio to the first variant and median ms of each variant."""
    x_last = tf.random.stateless_normal((batch, image, image, channels), seed=(0, 1))
    inputs = {"last": x_last, "first": tf.transpose(x_last, (0, 3, 1, 2))}
    steps = {}
    for name, layer, data_format, forced in variants:
        x = inputs[data_format]
        layer(x[:1])
        optimizer = keras.optimizers.Adam()
        optimizer.build(layer.trainable_variables)
        steps[name] = functools.partial(make_step(layer, mode, False, optimizer), x)
        with _rewrite_forced() if forced else contextlib.nullcontext():
            steps[name]()  # traces
    times = interleaved(steps, ROUNDS, warmup=WARMUP, rng=rng)
    return summary(times, variants[0][0])


def run():
    rng = random.Random(0)
    env = environment()
    start = time.perf_counter()
    studies = {}
    for study, groups in (("channels_first", channels_first_groups()),
                          ("unequal strides", strides_groups())):
        rows = studies.setdefault(study, [])
        for label, batch, image, channels, variants in groups:
            for mode in ("train", "infer"):
                result = time_group(batch, image, channels, variants, mode, rng)
                rows.append({"group": label, "batch": batch, "mode": mode, "variants": result})
                print(f"{study}: {label}, {mode}: " + ", ".join(
                    f"{n} {r['ratio']:.2f}x" for n, r in result.items()), flush=True)
    return {"environment": env, "wall_s": time.perf_counter() - start,
            "rounds": ROUNDS, "studies": studies}


def markdown(result):
    env = result["environment"]
    lines = [
        "# Routing costs: channels_first and unequal depthwise strides", "",
        f"- TensorFlow {env['tensorflow']}, Keras {env['keras']}, Python {env['python']}",
        f"- CPU: {env['cpu']}, {env['cores']} cores; {env['date']}",
        f"- {onednn_text(env)}",
        f"- {result['rounds']} interleaved rounds per group; ratio = median of per-round "
        "ratios to the group's first variant; ms = median step time", "",
    ]
    for study, rows in result["studies"].items():
        lines += [f"## {study}", ""]
        names = list(dict.fromkeys(n for row in rows for n in row["variants"]))
        body = [
            [row["group"], row["mode"], row["batch"]] + [
                f"{row['variants'][n]['ratio']:.2f}x ({fmt_ms(row['variants'][n]['ms'])} ms)"
                if n in row["variants"] else "-" for n in names
            ]
            for row in rows
        ]
        lines += table(["group", "step", "batch"] + names, body, "llr" + "r" * len(names))
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=RESULTS, help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    write_setting_reports(run(), args.out, "bench_routing", markdown)


if __name__ == "__main__":
    main()
