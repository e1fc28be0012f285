"""Step times of ChannelConv2D against dense Conv2D and DepthwiseConv2D.

Run from the repository root, with the ``bench`` extra installed
(``pip install -e ".[bench]"``)::

    python benchmarks/bench_conv.py            # full run, about 14 min on 2 cores
    python benchmarks/bench_conv.py --quick    # a smaller run, under a minute
    python benchmarks/bench_conv.py --cells concat:64:64 sum:256:64 --jit off --rounds 121 --seconds 12
                                               # re-time cells of the full run, longer
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_conv.py   # with oneDNN off

It writes ``bench_conv.json``, ``bench_conv.md`` and ``bench_conv.png``
(``bench_conv_quick.*`` with ``--quick``) to ``benchmarks/results/`` (change
with ``--out``) and shows a progress bar on stderr.

TensorFlow's oneDNN CPU kernels change the dense baselines' times. Whether
they run is decided when TensorFlow starts, by ``TF_ENABLE_ONEDNN_OPTS`` or,
unset, by the CPU (on Linux: on for CPUs with AVX512_VNNI, AVX512_BF16,
AVX_VNNI or AMX, off on others). Each run records the setting TensorFlow
actually used (see :func:`onednn_setting`) in the JSON environment and the
Markdown header; compare runs only with the same one.

What is timed, for each size (input channels 3, 16, 64, 256; filters 16 and
64; 3x3 kernels; 32x32 images; ``valid`` padding; 10% of the kernels frozen
with :func:`channelconv.random_frozen_mask`):

- sum semantics: ``keras.layers.Conv2D`` (the baseline),
  ``ChannelConv2D(reduction="sum")`` fused and per_channel, and ``Conv2D``
  with a mask ``kernel_constraint`` (the usual workaround);
- concat semantics: ``keras.layers.DepthwiseConv2D(depth_multiplier=filters)``
  (the baseline), ``ChannelConv2D(reduction="concat")`` fused and
  per_channel, and the StackOverflow answer's layer
  (:class:`channelconv.reference.AnswerConv2D`) where its fixed shape
  applies (3 input channels, 16 filters);
- a training step (forward, backward and Adam update in one compiled
  ``tf.function``) and an inference step (forward only), each with and
  without ``jit_compile``.

The training step is written here with ``tf.GradientTape`` and
``optimizer.apply_gradients`` rather than taken from ``model.fit`` /
``train_on_batch``: those add a per-call Python cost (data adapter, logs,
callbacks) that is the same for every variant and only dilutes the ratios,
and the hand-written step makes it explicit what is compiled (exactly
forward + backward + update) and with which ``jit_compile``.

How it is timed: the variants of one size, one step kind and one
``jit_compile`` setting are built, traced and warmed up, then timed in
rounds; each round runs every variant once, in a shuffled order, so that
drift of a shared machine hits all alike (see :class:`Plan` for how many
rounds). A variant's time is its median over rounds; its ratio to the
baseline is the median of the per-round ratios (each round pairs the variant
with the baseline timed moments apart). The batch size of each size and step
kind is chosen so that a baseline step takes tens of milliseconds on a
2-core CPU; the plot divides by it (time per image).
"""

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from channelconv.layers import ChannelConv2D  # noqa: E402
from channelconv.mask import random_frozen_mask  # noqa: E402
from channelconv.report import parameter_counts  # noqa: E402

try:  # written alongside this benchmark; optional
    from channelconv.reference import AnswerConv2D
except ImportError:  # pragma: no cover - depends on the checkout
    AnswerConv2D = None

#: Targets of issue 4: (reduction, step kind) -> largest fused/baseline ratio.
TARGETS = {
    ("sum", "train"): 1.05,
    ("sum", "infer"): 1.03,
    ("concat", "train"): 1.05,
    ("concat", "infer"): 1.05,
}
BASELINES = {"sum": "Conv2D", "concat": "DepthwiseConv2D"}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODES = ("train", "infer")


@dataclasses.dataclass(frozen=True)
class Size:
    """One layer shape: reduction, input channels, filters, batch sizes.

    ``train_batch`` and ``infer_batch`` are the batch sizes of the training
    and the inference step.
    """

    reduction: str
    in_channels: int
    filters: int
    train_batch: int
    infer_batch: int

    def batch(self, mode):
        """The batch size of a ``"train"`` or ``"infer"`` step."""
        return self.train_batch if mode == "train" else self.infer_batch


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to run and how long to measure.

    Each group (one size, one step kind, one ``jit_compile``) is timed in
    rounds; a round times every variant of the group once, in random order.
    The first ``min_rounds`` rounds time all variants (stopping after 3 if
    they take over ``3 * group_seconds``); later rounds time only the
    variants at most ``FAST`` times as slow as the baseline (this leaves the
    slow per-channel path out), until ``max_rounds`` or until these later
    rounds have taken ``group_seconds``. A warm-up step of over a second
    ends the warm-up of its variant.
    """

    sizes: tuple
    jit: tuple = (False, True)
    modes: tuple = MODES
    image: int = 32
    kernel: int = 3
    frozen_fraction: float = 0.1
    warmup: int = 2
    min_rounds: int = 4
    max_rounds: int = 61
    group_seconds: float = 2.5
    seed: int = 0


def _sizes(table):
    return tuple(Size(r, *row) for r, rows in table.items() for row in rows)


#: (in_channels, filters, train batch, inference batch): batch sizes such
#: that a baseline step without jit_compile takes about 15-50 ms on a quiet
#: 2-core AMD EPYC. Two are shorter: DepthwiseConv2D training at 256 input
#: channels x 16 filters (about 14 ms at batch 1), and at 256 x 64 it takes
#: about 50 ms at batch 1. With jit_compile, DepthwiseConv2D training takes
#: seconds per step at these batches (XLA on CPU).
FULL = Plan(
    sizes=_sizes(
        {
            "sum": [
                (3, 16, 512, 2048), (16, 16, 256, 768), (64, 16, 64, 256),
                (256, 16, 16, 64), (3, 64, 96, 1024), (16, 64, 64, 256),
                (64, 64, 32, 64), (256, 64, 8, 16),
            ],
            "concat": [
                (3, 16, 192, 1024), (16, 16, 32, 256), (64, 16, 8, 32),
                (256, 16, 1, 8), (3, 64, 64, 256), (16, 64, 16, 64),
                (64, 64, 2, 16), (256, 64, 1, 4),
            ],
        }
    )
)

QUICK = Plan(
    sizes=_sizes(
        {
            "sum": [(3, 16, 64, 256), (16, 16, 32, 128)],
            "concat": [(3, 16, 16, 128)],
        }
    ),
    warmup=1,
    min_rounds=3,
    max_rounds=9,
    group_seconds=0.5,
)




def cells_plan(cells, jit, max_rounds, group_seconds):
    """The full plan cut to ``cells`` (``"reduction:in_channels:filters"``).

    For re-timing a few cells of the full run with more rounds (its batch
    sizes), e.g. to tell a real miss from a noisy one.

    Raises:
        ValueError: a cell is not of that form or not in the full plan.
    """
    sizes = {f"{s.reduction}:{s.in_channels}:{s.filters}": s for s in FULL.sizes}
    unknown = [cell for cell in cells if cell not in sizes]
    if unknown:
        raise ValueError(
            f"`--cells` must name cells of the full plan, from {sorted(sizes)}. "
            f"Received: {unknown}."
        )
    return dataclasses.replace(
        FULL, sizes=tuple(sizes[cell] for cell in cells), jit=jit,
        max_rounds=max_rounds, group_seconds=group_seconds,
    )


# --------------------------------------------------------------------------
# The variants


class KernelMask(keras.constraints.Constraint):
    """The usual workaround: after every update, multiply the kernel by a mask.

    Args:
        keep: float array ``(in_channels, filters)``, 0 where frozen.
    """

    def __init__(self, keep):
        self.keep = np.asarray(keep, dtype="float32")

    def __call__(self, w):
        return w * keras.ops.cast(self.keep, w.dtype)


def _conv2d(size, mask, k):
    return keras.layers.Conv2D(size.filters, k)


def _masked_conv2d(size, mask, k):
    return keras.layers.Conv2D(size.filters, k, kernel_constraint=KernelMask(~mask))


def _depthwise(size, mask, k):
    return keras.layers.DepthwiseConv2D(k, depth_multiplier=size.filters)


def _channel_conv(implementation):
    def make(size, mask, k):
        return ChannelConv2D(
            size.filters,
            k,
            frozen=mask,
            reduction=size.reduction,
            implementation=implementation,
        )

    return make


def _answer(size, mask, k):
    return AnswerConv2D(k)


def _answer_applies(size):
    return AnswerConv2D is not None and size.in_channels == 3 and size.filters == 16


@dataclasses.dataclass(frozen=True)
class Variant:
    """A layer to time: its name, reduction, constructor and where it applies."""

    name: str
    reduction: str
    make: object
    applies: object = lambda size: True


VARIANTS = (
    Variant("Conv2D", "sum", _conv2d),
    Variant("ChannelConv2D fused", "sum", _channel_conv("fused")),
    Variant("ChannelConv2D per_channel", "sum", _channel_conv("per_channel")),
    Variant("Conv2D + mask constraint", "sum", _masked_conv2d),
    Variant("DepthwiseConv2D", "concat", _depthwise),
    Variant("ChannelConv2D fused", "concat", _channel_conv("fused")),
    Variant("ChannelConv2D per_channel", "concat", _channel_conv("per_channel")),
    Variant("AnswerConv2D", "concat", _answer, _answer_applies),
)


def variants_for(size):
    """The variants that apply to ``size``, baseline first."""
    return [v for v in VARIANTS if v.reduction == size.reduction and v.applies(size)]


def frozen_mask(size, plan):
    """The frozen set of ``size``: ``frozen_fraction`` of its kernels, seeded."""
    count = round(plan.frozen_fraction * size.in_channels * size.filters)
    return random_frozen_mask(size.in_channels, size.filters, count, seed=plan.seed)


def optimizer_state_bytes(optimizer):
    """Bytes of the optimizer's per-parameter state (Adam: two moments).

    The scalar bookkeeping variables (iteration count, learning rate) are
    left out; every per-parameter slot has the shape of its variable, and no
    variable of the timed layers is a scalar.
    """
    return sum(
        math.prod(v.shape) * np.dtype(v.dtype).itemsize
        for v in optimizer.variables
        if len(v.shape) > 0
    )


# --------------------------------------------------------------------------
# Steps and timing


def make_step(layer, mode, jit, optimizer=None):
    """A compiled step: ``"train"`` (forward, backward, update) or ``"infer"``."""
    if mode == "infer":

        @tf.function(jit_compile=jit, reduce_retracing=False)
        def infer(x):
            return layer(x, training=False)

        return infer

    variables = layer.trainable_variables

    @tf.function(jit_compile=jit, reduce_retracing=False)
    def train(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x, training=True)))
        grads = tape.gradient(loss, variables)
        # Variables without a gradient (the answer layer's dead channel-0
        # filters) are skipped, as Keras would, minus its warning.
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None]
        )
        return loss

    return train


@dataclasses.dataclass
class Entry:
    """One timed function of a group: a variant with one ``jit_compile``."""

    variant: Variant
    jit: bool
    step: object
    layer: object
    optimizer: object
    first_call_s: float = 0.0
    times: list = dataclasses.field(default_factory=list)


def _call(step, x):
    start = time.perf_counter()
    out = step() if x is None else step(x)
    # CPU execution is synchronous; touching the results costs nothing and
    # guards against a lazily finished output.
    for tensor in tf.nest.flatten(out):
        tensor.shape  # noqa: B018
    return time.perf_counter() - start


def build_entries(size, mode, jit, plan, progress):
    """Builds, traces and warms up every variant of one group."""
    x = tf.random.stateless_normal(
        (size.batch(mode), plan.image, plan.image, size.in_channels), seed=(plan.seed, 1)
    )
    mask = frozen_mask(size, plan)
    entries = []
    for variant in variants_for(size):
        layer = variant.make(size, mask, plan.kernel)
        layer(x[:1])
        constraint = getattr(layer, "kernel_constraint", None)
        if isinstance(constraint, KernelMask):  # start with the frozen kernels at 0
            layer.kernel.assign(constraint(layer.kernel))
        optimizer = keras.optimizers.Adam()
        optimizer.build(layer.trainable_variables)
        step = make_step(layer, mode, jit, optimizer)
        entry = Entry(variant, jit, step, layer, optimizer)
        entry.first_call_s = _call(step, x)
        for _ in range(plan.warmup):
            if _call(step, x) > 1.0:
                break
        entries.append(entry)
        progress.advance(f"{_group_label(size, mode, jit)}: warm {variant.name}")
    return x, entries


#: After ``min_rounds``, only entries at most this many times as slow as
#: their baseline keep being timed (see :class:`Plan`).
FAST = 1.5


def measure(entries, x, plan, rng):
    """Times the entries in shuffled rounds; fills ``entry.times`` (seconds).

    Round ``i`` of every entry timed in it is ``entry.times[i]``: entries left
    out of later rounds just have shorter lists, so pairing by position
    pairs times of the same round.
    """
    order = list(range(len(entries)))
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for round_ in range(plan.max_rounds):
            rng.shuffle(order)
            for i in order:
                entries[i].times.append(_call(entries[i].step, x))
            done, elapsed = round_ + 1, time.perf_counter() - start
            if done < plan.min_rounds:
                if done >= 3 and elapsed > 3 * plan.group_seconds:
                    break  # very slow steps: 3 rounds must do
                continue
            if done == plan.min_rounds:
                order = [i for i in order if _fast(entries, entries[i])]
                start = time.perf_counter()
            elif elapsed > plan.group_seconds:
                break
    finally:
        gc.enable()


def _fast(entries, entry):
    baseline = BASELINES[entry.variant.reduction]
    (base,) = [e for e in entries if e.variant.name == baseline]
    return np.median(entry.times) <= FAST * np.median(base.times)


def _paired(times, base):
    """``times`` and ``base`` cut to the rounds both were timed in."""
    n = min(len(times), len(base))
    return np.array(times[:n]), np.array(base[:n])


def time_assembly(plan, rng, calls=150):
    """Times ``ChannelConv2D``'s kernel assembly alone, per (in_channels, filters).

    For each shape of ``plan``, four compiled functions are timed
    interleaved: the assembled ``layer.kernel`` and a plain read of a
    variable (forward), and the gradient of ``sum(kernel * upstream)``
    through the assembly and through a plain variable of the full kernel's
    shape (forward + backward). The differences of the medians are the cost
    of the assembly, which is all the fused path adds to the dense layer.
    """
    out = []
    shapes = sorted({(s.in_channels, s.filters) for s in plan.sizes}, key=lambda s: (s[1], s[0]))
    for c, f in shapes:
        mask = frozen_mask(Size("sum", c, f, 1, 1), plan)
        layer = ChannelConv2D(f, plan.kernel, frozen=mask)
        layer.build((None, plan.image, plan.image, c))
        shape = layer.kernel.shape
        upstream = tf.random.stateless_normal(shape, seed=(plan.seed, 2))
        dense = tf.Variable(tf.zeros(shape))

        def backward(read, var):
            with tf.GradientTape() as tape:
                kernel = read()
                loss = tf.reduce_sum(kernel * upstream)
            # the kernel is returned too: the gradient alone does not need it
            return kernel, tape.gradient(loss, var)

        def compiled(fn):
            return tf.function(fn, autograph=False)

        fns = {
            "plain forward": compiled(lambda: tf.identity(dense)),
            "forward": compiled(lambda layer=layer: layer.kernel),
            "plain backward": compiled(lambda: backward(lambda: dense, dense)),
            "backward": compiled(lambda layer=layer: backward(
                lambda: layer.kernel, layer.trainable_kernels)),
        }
        times = {k: [] for k in fns}
        for fn in fns.values():
            fn()
            fn()
        order = list(fns)
        for _ in range(calls):
            rng.shuffle(order)
            for k in order:
                times[k].append(_call(fns[k], None))
        ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        out.append({
            "in_channels": c,
            "filters": f,
            "kernel_elements": int(np.prod(shape)),
            "forward_ms": ms["forward"] - ms["plain forward"],
            "forward_backward_ms": ms["backward"] - ms["plain backward"],
        })
    return out


def summarize(size, mode, entries, plan):
    """One record per entry: medians, paired ratio to the baseline, state size."""
    (baseline,) = [e for e in entries if e.variant.name == BASELINES[size.reduction]]
    records = []
    for e in entries:
        times = np.array(e.times)
        paired, base = _paired(e.times, baseline.times)
        batch = size.batch(mode)
        records.append(
            {
                "reduction": size.reduction,
                "in_channels": size.in_channels,
                "filters": size.filters,
                "batch": batch,
                "image": plan.image,
                "n_frozen": int(frozen_mask(size, plan).sum()),
                "mode": mode,
                "jit_compile": e.jit,
                "variant": e.variant.name,
                "baseline": BASELINES[size.reduction],
                "rounds": len(times),
                "median_ms": 1e3 * float(np.median(times)),
                "q25_ms": 1e3 * float(np.percentile(times, 25)),
                "q75_ms": 1e3 * float(np.percentile(times, 75)),
                "ms_per_image": 1e3 * float(np.median(times)) / batch,
                "ratio": float(np.median(paired / base)),
                "ratio_of_medians": float(np.median(times) / np.median(baseline.times)),
                "ratio_of_minima": float(times.min() / min(baseline.times)),
                "extra_ms": 1e3 * float(np.median(paired - base)),
                "first_call_s": e.first_call_s,
                "traces": int(e.step.experimental_get_tracing_count()),
                "times_ms": [round(1e3 * t, 4) for t in e.times],
                "trainable_params": parameter_counts(e.layer).trainable,
                "optimizer_state_bytes": int(optimizer_state_bytes(e.optimizer)),
            }
        )
    return records


# --------------------------------------------------------------------------
# Reporting


def environment():
    """TF/Keras versions, oneDNN, CPU model, core count and date of this run."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "answer_layer": AnswerConv2D is not None,
        **onednn_setting(),
    }


#: How TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` (case-insensitive); any
#: other value, or none, leaves TensorFlow's default for the CPU.
_ONEDNN_VALUES = {"0": False, "false": False, "1": True, "true": True}


def onednn_setting():
    """Whether TensorFlow runs its oneDNN CPU kernels in this process.

    oneDNN changes the dense baselines (``Conv2D``, ``DepthwiseConv2D``), so
    every run records it. ``TF_ENABLE_ONEDNN_OPTS`` decides when TensorFlow
    starts (``0`` or ``false`` off, ``1`` or ``true`` on; unset or another
    value, TensorFlow's default for the CPU: on Linux, on for CPUs with
    AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX, off on others). What TensorFlow actually
    does is asked from its private ``_pywrap_util_port.IsMklEnabled()``; if
    that cannot be imported or called, the variable alone decides, and
    ``onednn_source`` says so (``onednn`` is then ``None`` when it is unset).

    Returns:
        ``{"onednn": True, False or None, "onednn_env": the variable's
        value or None, "onednn_source": what "onednn" was read from}``.
    """
    env = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    try:
        enabled = _tensorflow_onednn()
        source = "TensorFlow: _pywrap_util_port.IsMklEnabled()"
    except (ImportError, AttributeError) as error:
        enabled = _ONEDNN_VALUES.get((env or "").strip().lower())
        source = (
            "TF_ENABLE_ONEDNN_OPTS only: TensorFlow's private "
            f"_pywrap_util_port.IsMklEnabled() is not available ({error})"
        )
    return {"onednn": enabled, "onednn_env": env, "onednn_source": source}


def _tensorflow_onednn():
    """``IsMklEnabled()`` of TensorFlow (private API: may be missing)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def _onednn_text(env):
    """One line on oneDNN for the headers (old JSON files do not record it)."""
    if "onednn" not in env:
        return "oneDNN: not recorded"
    state = {True: "on", False: "off", None: "unknown"}[env["onednn"]]
    variable = env["onednn_env"]
    variable = " unset" if variable is None else f"={variable}"
    return (f"oneDNN: {state} (TF_ENABLE_ONEDNN_OPTS{variable}; "
            f"read from {env['onednn_source']})")


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def target_checks(records):
    """The fused/baseline ratio of every timed group against its target."""
    checks = []
    for r in records:
        if r["variant"] != "ChannelConv2D fused":
            continue
        limit = TARGETS[(r["reduction"], r["mode"])]
        checks.append(
            {
                key: r[key]
                for key in (
                    "reduction", "in_channels", "filters", "batch", "mode",
                    "jit_compile", "ratio", "extra_ms",
                )
            }
            | {"target": limit, "met": r["ratio"] <= limit}
        )
    return checks


def per_channel_scaling(records):
    """How the per-channel path scales with input channels.

    For each (reduction, filters, mode, jit): its ratio to the fused path at
    each channel count, and the log-log slope of time per image against
    input channels for both (1.0 = linear in channels).
    """
    out = []
    def key(r):
        return r["reduction"], r["filters"], r["mode"], r["jit_compile"]

    for red, filters, mode, jit in sorted({key(r) for r in records}):
        rows = {
            (r["variant"], r["in_channels"]): r
            for r in records
            if key(r) == (red, filters, mode, jit)
        }
        channels = sorted({c for _, c in rows})
        pc = [rows.get(("ChannelConv2D per_channel", c)) for c in channels]
        fu = [rows.get(("ChannelConv2D fused", c)) for c in channels]
        if None in pc or None in fu:
            continue
        item = {
            "reduction": red,
            "filters": filters,
            "mode": mode,
            "jit_compile": jit,
            "in_channels": channels,
            "per_channel_over_fused": [_paired_ratio(p, f) for p, f in zip(pc, fu)],
        }
        if len(channels) > 1:
            logc = np.log(channels)
            for name, rs in (("per_channel", pc), ("fused", fu)):
                item[f"slope_{name}"] = float(
                    np.polyfit(logc, np.log([r["ms_per_image"] for r in rs]), 1)[0]
                )
        out.append(item)
    return out


def _paired_ratio(record, other):
    """Median over rounds of ``record``'s time over ``other``'s (same group)."""
    times, base = _paired(record["times_ms"], other["times_ms"])
    return float(np.median(times / base))


def _fmt_ms(ms):
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _table(header, rows, align):
    """A Markdown table; ``align`` holds one ``"l"`` or ``"r"`` per column."""
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return ["| " + " | ".join(header) + " |", rule] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows
    ]


def _jit(flag):
    return "jit" if flag else "-"


def _variant_names(records, reduction):
    present = {r["variant"] for r in records if r["reduction"] == reduction}
    return [v.name for v in VARIANTS if v.reduction == reduction and v.name in present]


def _shapes(records, reduction):
    return sorted({(r["in_channels"], r["filters"]) for r in records
                   if r["reduction"] == reduction}, key=lambda s: (s[1], s[0]))


def _timing_tables(records):
    lines = []
    for red in ("sum", "concat"):
        names = _variant_names(records, red)
        for mode in MODES:
            rows = {(r["in_channels"], r["filters"], r["jit_compile"], r["variant"]): r
                    for r in records if (r["reduction"], r["mode"]) == (red, mode)}
            if not rows:
                continue
            body = []
            for c, f in _shapes(records, red):
                for jit in (False, True):
                    hits = [rows.get((c, f, jit, n)) for n in names]
                    if not any(hits):
                        continue
                    cells = [
                        "" if r is None else _fmt_ms(r["median_ms"]) if n == BASELINES[red]
                        else f"{_fmt_ms(r['median_ms'])} ({r['ratio']:.2f}x)"
                        for n, r in zip(names, hits)
                    ]
                    batch = next(r["batch"] for r in hits if r)
                    body.append([c, f, batch, _jit(jit)] + cells)
            title = "training step" if mode == "train" else "inference"
            lines += ["", f"## {red}, {title}: ms per step (ratio to {BASELINES[red]})", ""]
            lines += _table(["in ch", "filters", "batch", "jit"] + names, body,
                            "rrrl" + "r" * len(names))
    return lines


def _target_tables(checks):
    met = sum(c["met"] for c in checks)
    lines = [
        "",
        "## Targets: fused / baseline",
        "",
        f"{met} of {len(checks)} met. Each cell: the paired ratio and, in "
        "parentheses, the median extra time per step in ms; misses in bold. "
        "Targets: sum training 1.05, sum inference 1.03, concat 1.05.",
    ]
    for red in ("sum", "concat"):
        cells = {(c["in_channels"], c["filters"], c["mode"], c["jit_compile"]): c
                 for c in checks if c["reduction"] == red}
        if not cells:
            continue
        columns = [(m, j) for m in MODES for j in (False, True)
                   if any(k[2:] == (m, j) for k in cells)]
        body = []
        for c, f in sorted({k[:2] for k in cells}, key=lambda s: (s[1], s[0])):
            row = [c, f]
            for m, j in columns:
                check = cells.get((c, f, m, j))
                if check is None:
                    row.append("")
                    continue
                text = f"{check['ratio']:.3f}"
                row.append(f"{text if check['met'] else f'**{text}**'} "
                           f"({check['extra_ms']:+.2f})")
            body.append(row)
        header = ["in ch", "filters"] + [f"{m}{' jit' if j else ''}" for m, j in columns]
        lines += ["", f"{red} (baseline {BASELINES[red]}):", ""]
        lines += _table(header, body, "rr" + "r" * len(columns))
    return lines


def _state_tables(records):
    lines = [
        "",
        "## Optimizer state: Adam, bytes of per-parameter state",
        "",
        "Trainable parameters in parentheses. Adam keeps two float32 moments per "
        "trainable parameter: every entry below is exactly 8 bytes x parameters"
        + ("." if all(r["optimizer_state_bytes"] == 8 * r["trainable_params"]
                      for r in records) else " **except where it is not**."),
    ]
    for red in ("sum", "concat"):
        names = _variant_names(records, red)
        if not names:
            continue
        first = {(r["in_channels"], r["filters"], r["variant"]): r for r in reversed(records)
                 if r["reduction"] == red}
        body = []
        for c, f in _shapes(records, red):
            row = [c, f]
            for n in names:
                r = first.get((c, f, n))
                row.append("" if r is None else
                           f"{r['optimizer_state_bytes']} ({r['trainable_params']})")
            body.append(row)
        lines += [""] + _table(["in ch", "filters"] + names, body, "rr" + "r" * len(names))
    return lines


def _scaling_table(scaling):
    body = []
    for s in scaling:
        ratios = ", ".join(f"{c}: {v:.1f}x" for c, v in
                           zip(s["in_channels"], s["per_channel_over_fused"]))
        body.append([s["reduction"], s["filters"], s["mode"], _jit(s["jit_compile"]), ratios,
                     f"{s.get('slope_per_channel', float('nan')):.2f}",
                     f"{s.get('slope_fused', float('nan')):.2f}"])
    return [
        "",
        "## Per-channel path: time relative to fused, by input channels",
        "",
        "Paired ratio per_channel / fused at each input-channel count; slope: "
        "exponent of time per image against input channels (log-log fit, 1 = linear).",
        "",
    ] + _table(["reduction", "filters", "step", "jit", "per_channel / fused",
                "slope per_channel", "slope fused"], body, "lrllrrr")


def _assembly_table(assembly):
    if not assembly:
        return []
    body = [[a["in_channels"], a["filters"], a["kernel_elements"],
             f"{a['forward_ms']:.3f}", f"{a['forward_backward_ms']:.3f}"] for a in assembly]
    return [
        "",
        "## Kernel assembly alone (what the fused path adds), ms",
        "",
        "Median time of `layer.kernel` (forward) and of its gradient (forward + "
        "backward), minus the same on a plain variable of the full kernel's shape.",
        "",
    ] + _table(["in ch", "filters", "kernel elements", "forward",
                "forward + backward"], body, "rrrrr")


def _first_call_table(records, at_least=2.0):
    body = [[r["reduction"], r["mode"], r["in_channels"], r["filters"], _jit(r["jit_compile"]),
             r["variant"], f"{r['first_call_s']:.1f}"]
            for r in records if r["first_call_s"] >= at_least]
    return [
        "",
        f"## First call (trace and compile) of {at_least:g} s or more",
        "",
    ] + _table(["reduction", "step", "in ch", "filters", "jit", "variant", "s"], body,
               "llrrllr")


def markdown(result):
    """The results as Markdown: environment, timings, targets, state sizes, scaling."""
    env, plan, records = result["environment"], result["plan"], result["records"]
    retraced = [r for r in records if r["traces"] != 1]
    lines = [
        "# ChannelConv2D benchmark",
        "",
        f"- date: {env['date']}",
        f"- CPU: {env['cpu']}, {env['cores']} cores ({env['usable_cores']} usable)",
        f"- TensorFlow {env['tensorflow']}, Keras {env['keras']}, NumPy {env['numpy']}, "
        f"Python {env['python']}",
        f"- {_onednn_text(env)}",
        f"- load average (1, 5, 15 min) before: {result['load_before']}, "
        f"after: {result['load_after']}",
        f"- wall time: {result['wall_s'] / 60:.1f} min; mode: {result['mode']}",
        f"- images {plan['image']}x{plan['image']}, kernel {plan['kernel']}x{plan['kernel']}, "
        f"valid padding, {plan['frozen_fraction']:.0%} of kernels frozen; "
        f"after {plan['warmup']} warm-up steps, the median of {plan['min_rounds']} to "
        f"{plan['max_rounds']} interleaved rounds (all variants in the first "
        f"{plan['min_rounds']}, then only those at most {FAST}x their baseline; "
        "rounds per variant in the JSON)",
        "- ratios are medians of per-round paired ratios; `jit` = `jit_compile=True`",
        "- " + (f"every timed function was traced once ({len(records)} functions)"
                if not retraced else
                f"**{len(retraced)} functions were traced more than once**"),
    ]
    if not env["answer_layer"]:
        lines.append("- `channelconv.reference.AnswerConv2D` was not importable: not timed")
    lines += _timing_tables(records)
    lines += _target_tables(result["targets"])
    lines += _state_tables(records)
    lines += _scaling_table(result["per_channel_scaling"])
    lines += _assembly_table(result.get("assembly", []))
    lines += _first_call_table(records)
    return "\n".join(lines) + "\n"


PLOT_KEYS = ("reduction", "mode", "filters", "variant", "jit_compile")


def plot(result, path):
    """Time per image against input channels, one line per variant and jit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    records = result["records"]
    panels = sorted({(r["reduction"], r["mode"], r["filters"]) for r in records},
                    key=lambda p: (p[0] != "sum", p[1] != "train", p[2]))
    reductions = [r for r in ("sum", "concat") if any(p[0] == r for p in panels)]
    columns = sorted({(p[1], p[2]) for p in panels}, key=lambda c: (c[0] != "train", c[1]))
    fig, axes = plt.subplots(len(reductions), len(columns), squeeze=False,
                             figsize=(3.6 * len(columns) + 2.6, 3.4 * len(reductions)))
    channels = sorted({r["in_channels"] for r in records})
    colors = {}
    for i, red in enumerate(reductions):
        for j, (mode, filters) in enumerate(columns):
            ax = axes[i][j]
            for v in VARIANTS:
                if v.reduction != red:
                    continue
                for jit in (False, True):
                    where = (red, mode, filters, v.name, jit)
                    pts = sorted(
                        (r["in_channels"], r["ms_per_image"])
                        for r in records
                        if tuple(r[k] for k in PLOT_KEYS) == where
                    )
                    if not pts:
                        continue
                    color = colors.setdefault(v.name, f"C{len(colors)}")
                    xs, ys = zip(*pts)
                    # the baseline drawn wide and pale, so that a variant on it shows
                    style = (dict(linewidth=5, alpha=0.4, zorder=1)
                             if v.name == BASELINES[red] else dict(linewidth=1.5, zorder=2))
                    ax.plot(xs, ys, marker="o" if len(xs) > 1 else "s", color=color,
                            linestyle="--" if jit else "-",
                            label=f"{v.name}{' (jit)' if jit else ''}", **style)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(channels, [str(c) for c in channels])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            step = "training" if mode == "train" else "inference"
            ax.set_title(f"{red}, {step}, {filters} filters", fontsize=9)
            ax.set_xlabel("input channels")
            ax.set_ylabel("ms per image")
            ax.grid(True, which="both", alpha=0.3)
        handles, labels = axes[i][0].get_legend_handles_labels()
        axes[i][-1].legend(handles, labels, fontsize=7, loc="upper left",
                           bbox_to_anchor=(1.02, 1.0), title="solid: no jit; dashed: jit",
                           title_fontsize=7)
    env = result["environment"]
    fig.suptitle(f"ChannelConv2D step time ({env['cpu']}, {env['cores']} cores, "
                 f"TF {env['tensorflow']}, Keras {env['keras']}, {env['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------
# Progress bar and driver


class Progress:
    """A minimal progress bar on ``stream``: done/total, elapsed, estimate left.

    Redraws in place on a terminal; writes one line per step otherwise.
    """

    def __init__(self, total, stream=sys.stderr, width=24):
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self.start = time.perf_counter()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def advance(self, label):
        self.done += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        filled = round(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        text = (f"[{bar}] {self.done}/{self.total} {_mmss(elapsed)} "
                f"(~{_mmss(left)} left) {label}")
        if self.tty:
            self.stream.write("\r" + text[:150].ljust(150))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _mmss(seconds):
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def _group_label(size, mode, jit):
    jit = " jit" if jit else ""
    return f"{size.reduction} {size.in_channels}x{size.filters} {mode}{jit}"


def run(plan, out_dir, stem, mode_name="custom", stream=sys.stderr):
    """Runs ``plan``; writes ``<stem>.json``, ``.md`` and ``.png`` to ``out_dir``.

    Returns:
        The result dict that was written to the JSON file.
    """
    env, load_before = environment(), _load()
    start = time.perf_counter()
    rng = random.Random(plan.seed)
    groups = [(s, m, j) for s in plan.sizes for m in plan.modes for j in plan.jit]
    total = sum(len(variants_for(s)) + 1 for s, _, _ in groups) + 1
    progress = Progress(total, stream)
    assembly = time_assembly(plan, rng)
    progress.advance("kernel assembly alone: timed")
    records = []
    for size, mode, jit in groups:
        x, entries = build_entries(size, mode, jit, plan, progress)
        measure(entries, x, plan, rng)
        records += summarize(size, mode, entries, plan)
        progress.advance(f"{_group_label(size, mode, jit)}: timed")
        del x, entries
    result = {
        "mode": mode_name,
        "environment": env,
        "load_before": load_before,
        "load_after": _load(),
        "wall_s": time.perf_counter() - start,
        "plan": dataclasses.asdict(plan),
        "assembly": assembly,
        "records": records,
    }
    write_reports(result, out_dir, stem)
    return result


def write_reports(result, out_dir, stem):
    """Derives targets and scaling from the records; writes JSON, Markdown, PNG."""
    result["targets"] = target_checks(result["records"])
    result["per_channel_scaling"] = per_channel_scaling(result["records"])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(markdown(result))
    plot(result, os.path.join(out_dir, stem + ".png"))


def write_setting_reports(result, out_dir, name, markdown_of):
    """Writes ``<name>_onednn-<on|off>.{json,md}``: one file pair per oneDNN setting."""
    state = "on" if result["environment"]["onednn"] else "off"
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, f"{name}_onednn-{state}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown_of(result))
    print(f"done in {result['wall_s'] / 60:.1f} min: {stem}.md")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--out", default=RESULTS, help="output directory (default: %(default)s)")
    parser.add_argument("--report", metavar="JSON",
                        help="time nothing: rewrite the Markdown and PNG of a recorded JSON")
    parser.add_argument("--cells", nargs="+", metavar="REDUCTION:IN:FILTERS",
                        help="only these cells of the full plan (written as bench_conv_cells.*)")
    parser.add_argument("--jit", choices=("off", "on", "both"), default="both",
                        help="with --cells: jit_compile settings (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=FULL.max_rounds,
                        help="with --cells: most rounds per group (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=FULL.group_seconds,
                        help="with --cells: seconds per group (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            result = json.load(f)
        stem = os.path.splitext(os.path.basename(args.report))[0]
        write_reports(result, os.path.dirname(os.path.abspath(args.report)), stem)
        print(f"rewrote the reports of {args.report}")
        return
    # One trace per function is checked and reported; TensorFlow's retracing
    # warning counts traces across the many functions made here.
    tf.get_logger().setLevel("ERROR")
    plan, stem = (QUICK, "bench_conv_quick") if args.quick else (FULL, "bench_conv")
    if args.cells:
        jit = {"off": (False,), "on": (True,), "both": (False, True)}[args.jit]
        plan = cells_plan(args.cells, jit, args.rounds, args.seconds)
        stem = "bench_conv_cells"
    env = environment()
    print(f"TensorFlow {env['tensorflow']}, Keras {env['keras']}; {_onednn_text(env)}; "
          f"CPU {env['cpu']}, {env['cores']} cores; {env['date']}; load {_load()}", flush=True)
    mode_name = "cells" if args.cells else "quick" if args.quick else "full"
    result = run(plan, args.out, stem, mode_name)
    checks = result["targets"]
    print(f"done in {result['wall_s'] / 60:.1f} min; fused targets met: "
          f"{sum(c['met'] for c in checks)} of {len(checks)}; load after {result['load_after']}")
    for ext in ("json", "md", "png"):
        print(os.path.join(args.out, f"{stem}.{ext}"))


if __name__ == "__main__":
    main()
