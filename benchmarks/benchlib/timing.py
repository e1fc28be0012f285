"""Interleaved timing of layer variants (their steps: :mod:`benchlib.steps`)."""

import dataclasses
import gc
import sys
import time

import keras
import numpy as np
from keras import ops

from benchlib.cases import (
    KernelMask,
    Size,
    Variant,
    frozen_mask,
    group_label,
    variants_for,
)
from benchlib.steps import kernel_functions, make_step, tensor
from channelconv.layers import BaseChannelConv


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


def call(step, x):
    """Seconds of one call of ``step`` (with ``x``, or none if ``x`` is None).

    The functions of :mod:`benchlib.steps` return only once their result is
    computed, so this is the step's time on every backend.
    """
    start = time.perf_counter()
    if x is None:
        step()
    else:
        step(x)
    return time.perf_counter() - start


def build_entries(size, mode, jit, plan, progress):
    """Builds, traces and warms up every variant of one group."""
    shape = (size.batch(mode),) + (plan.image,) * plan.rank + (size.in_channels,)
    x = tensor(_normal(shape, (plan.seed, 1)))
    mask = frozen_mask(size, plan)
    entries = []
    for variant in variants_for(size, plan):
        layer = variant.make(size, mask, plan)
        layer(x[:1])
        constraint = getattr(layer, "kernel_constraint", None)
        if isinstance(constraint, KernelMask):  # start with the frozen kernels at 0
            layer.kernel.assign(constraint(layer.kernel))
        optimizer = keras.optimizers.Adam()
        optimizer.build(layer.trainable_variables)
        step = make_step(layer, mode, jit, optimizer)
        entry = Entry(variant, jit, step, layer, optimizer)
        entry.first_call_s = call(step, x)
        for _ in range(plan.warmup):
            if call(step, x) > 1.0:
                break
        entries.append(entry)
        progress.advance(f"{group_label(size, mode, jit)}: warm {variant.name}")
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
                entries[i].times.append(call(entries[i].step, x))
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
    base = entries[0]  # the baseline: variants_for puts it first
    return np.median(entry.times) <= FAST * np.median(base.times)


def paired(times, base):
    """``times`` and ``base`` cut to the rounds both were timed in."""
    n = min(len(times), len(base))
    return np.array(times[:n]), np.array(base[:n])


def time_assembly(plan, rng, calls=150):
    """Times the kernel assembly alone, per (in_channels, filters), at the plan's rank.

    For each shape of ``plan``, four compiled functions
    (:func:`benchlib.steps.kernel_functions`) are timed interleaved: the
    assembled ``layer.kernel`` and a copy of a plain variable of the full
    kernel's shape (forward), and the gradient of ``sum(kernel * upstream)``
    through the assembly and through that copy (forward + backward). The
    differences of the medians are the cost of the assembly, which is all
    the fused path adds to the dense layer.
    """
    out = []
    shapes = sorted({(s.in_channels, s.filters) for s in plan.sizes}, key=lambda s: (s[1], s[0]))
    for c, f in shapes:
        size = Size("sum", c, f, 1, 1)
        (make,) = [v.make for v in variants_for(size, plan) if v.name.endswith(" fused")]
        layer = make(size, frozen_mask(size, plan), plan)
        assert isinstance(layer, BaseChannelConv)
        layer.build((None,) + (plan.image,) * plan.rank + (c,))
        shape = tuple(layer.kernel.shape)
        upstream = tensor(_normal(shape, (plan.seed, 2)))
        dense = keras.Variable(np.zeros(shape, "float32"))
        plain_forward, plain_backward = kernel_functions(
            lambda: ops.copy(dense), [dense], dense, upstream)
        forward, backward = kernel_functions(
            lambda layer=layer: layer.kernel, layer.variables, layer.trainable_kernels, upstream)
        fns = {
            "plain forward": plain_forward,
            "forward": forward,
            "plain backward": plain_backward,
            "backward": backward,
        }
        times = {k: [] for k in fns}
        for fn in fns.values():
            fn()
            fn()
        order = list(fns)
        for _ in range(calls):
            rng.shuffle(order)
            for k in order:
                times[k].append(call(fns[k], None))
        ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        out.append({
            "in_channels": c,
            "filters": f,
            "kernel_elements": int(np.prod(shape)),
            "forward_ms": ms["forward"] - ms["plain forward"],
            "forward_backward_ms": ms["backward"] - ms["plain backward"],
        })
    return out


def _normal(shape, seed):
    """Standard normal float32 values of ``shape``, the same on every backend."""
    return np.random.default_rng(seed).standard_normal(shape, dtype="float32")


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
