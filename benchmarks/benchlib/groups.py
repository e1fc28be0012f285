"""The layer variants of one group, built and timed; the kernel assembly alone.

A group is the variants of one size, one step kind and one ``jit``
setting (:mod:`benchlib.cases`); their steps (:mod:`benchlib.steps`) are
timed by the one timing loop, :func:`benchlib.timing.interleaved`.
"""

import dataclasses
import functools

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
from benchlib.timing import interleaved, medians, seconds
from channelconv.layers import BaseChannelConv

#: After ``min_rounds``, only entries at most this many times as slow as
#: their baseline keep being timed (see :class:`benchlib.cases.Plan`).
FAST = 1.5
#: A warm-up call of more seconds than this ends an entry's warm-up.
SLOW = 1.0


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


def build_entries(size, mode, jit, plan, progress):
    """Builds and traces every variant of one group (the first call, timed)."""
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
        entry.first_call_s = seconds(functools.partial(step, x))
        entries.append(entry)
        progress.advance(f"{group_label(size, mode, jit)}: traced {variant.name}")
    return x, entries


def measure(entries, x, plan, rng):
    """Warms up and times the entries in shuffled rounds; fills ``entry.times`` (seconds).

    ``plan.warmup`` calls each, then ``plan.min_rounds`` to
    ``plan.max_rounds`` rounds within ``plan.group_seconds``; after
    ``min_rounds``, only the entries at most :data:`FAST` times as slow as
    the baseline (the first entry). Round ``i`` of every entry timed in it
    is ``entry.times[i]``.
    """
    times = interleaved(
        {i: functools.partial(e.step, x) for i, e in enumerate(entries)},
        plan.max_rounds, warmup=plan.warmup, slow=SLOW, rng=rng,
        min_rounds=plan.min_rounds, budget=plan.group_seconds, keep=_fast)
    for i, entry in enumerate(entries):
        entry.times = times[i]


def _fast(times):
    base = np.median(times[0])  # the baseline: variants_for puts it first
    return [i for i, t in times.items() if np.median(t) <= FAST * base]


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
        ms = medians(interleaved(fns, calls, warmup=2, rng=rng), scale=1e3)
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
