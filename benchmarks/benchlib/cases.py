"""What the layer benchmarks time: sizes, plans, variants and their frozen sets.

A :class:`Size` is one layer shape at one rank; a :class:`Plan` lists sizes
and how long to time them; a :class:`Variant` makes one layer to time (the
dense Keras baseline, the channel convolution's implementations, the mask
workaround, the StackOverflow answer). Every rank's cases live here, so the
2-D grid, the 1-D / 3-D grid and later studies share one timing and report
path (:mod:`benchlib.groups`, :mod:`benchlib.report`).
"""

import dataclasses
import math

import keras
import numpy as np

from channelconv import ChannelConv1D, ChannelConv2D, ChannelConv3D
from channelconv.mask import random_frozen_mask


try:  # TensorFlow only: channelconv.apps.reference raises an ImportError on other backends
    from channelconv.apps.reference import AnswerConv2D
except ImportError:
    AnswerConv2D = None


#: Targets of issue 4: (reduction, step kind) -> largest fused/baseline ratio.
TARGETS = {
    ("sum", "train"): 1.05,
    ("sum", "infer"): 1.03,
    ("concat", "train"): 1.05,
    ("concat", "infer"): 1.05,
}


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
    rank: int = 2
    image: int = 32  # the size of every spatial axis
    kernel: int = 3  # the size of the kernel along every spatial axis
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


#: The 1-D and 3-D grids: the same method and targets as the 2-D one, at
#: sizes a step of tens of milliseconds allows on 2 cores (sequences of 1024
#: steps; volumes of 12x12x12 voxels, about the pixels of a 32x32 image);
#: (in_channels, filters, train batch, inference batch) as above. Keras's
#: 3-D depthwise equivalent, a grouped Conv3D, runs under XLA on CPU and
#: takes about 40 ms per training step at 16x16 and batch 1, 0.4 s at 64x16;
#: 64x64 (seconds per step) is left out.
GRID_1D = {
    "sum": [(16, 16, 256, 1024), (64, 64, 48, 160), (256, 64, 12, 40)],
    "concat": [(16, 16, 48, 192), (64, 64, 2, 8)],
}
GRID_3D = {
    "sum": [(16, 16, 32, 128), (64, 64, 3, 16), (256, 64, 1, 4)],
    "concat": [(16, 16, 1, 4), (64, 16, 1, 1)],
}
FULL_1D = Plan(rank=1, image=1024, sizes=_sizes(GRID_1D))
FULL_3D = Plan(rank=3, image=12, sizes=_sizes(GRID_3D))
PLANS = {1: FULL_1D, 2: FULL, 3: FULL_3D}


def quick_plan(rank):
    """A run of under a minute: the full plan's first size of each reduction."""
    full = PLANS[rank]
    first = {}
    for size in full.sizes:
        first.setdefault(size.reduction, size)
    return dataclasses.replace(
        QUICK if rank == 2 else full,
        sizes=QUICK.sizes if rank == 2 else tuple(first.values()),
        warmup=QUICK.warmup, min_rounds=QUICK.min_rounds, max_rounds=QUICK.max_rounds,
        group_seconds=QUICK.group_seconds,
    )


#: A run of seconds through every path at toy sizes (batch 2, 8 pixels a
#: side, two rounds): for tests, and for checking a backend's install.
SMOKE = Plan(
    sizes=_sizes({"sum": [(3, 16, 2, 2)], "concat": [(3, 16, 2, 2)]}),
    image=8,
    warmup=1,
    min_rounds=2,
    max_rounds=2,
    group_seconds=0.0,
)


def smoke_plan(rank):
    """:data:`SMOKE` at ``rank``."""
    return dataclasses.replace(SMOKE, rank=rank)


def cells_plan(cells, jit, max_rounds, group_seconds, rank=2):
    """The full plan cut to ``cells`` (``"reduction:in_channels:filters"``).

    For re-timing a few cells of the full run with more rounds (its batch
    sizes), e.g. to tell a real miss from a noisy one.

    Raises:
        ValueError: a cell is not of that form or not in the full plan.
    """
    full = PLANS[rank]
    sizes = {f"{s.reduction}:{s.in_channels}:{s.filters}": s for s in full.sizes}
    unknown = [cell for cell in cells if cell not in sizes]
    if unknown:
        raise ValueError(
            f"`--cells` must name cells of the full plan, from {sorted(sizes)}. "
            f"Received: {unknown}."
        )
    return dataclasses.replace(
        full, sizes=tuple(sizes[cell] for cell in cells), jit=jit,
        max_rounds=max_rounds, group_seconds=group_seconds,
    )


class KernelMask(keras.constraints.Constraint):
    """The usual workaround: after every update, multiply the kernel by a mask.

    Args:
        keep: float array ``(in_channels, filters)``, 0 where frozen.
    """

    def __init__(self, keep):
        self.keep = np.asarray(keep, dtype="float32")

    def __call__(self, w):
        return keras.ops.multiply(w, keras.ops.cast(self.keep, w.dtype))


_CONVS = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
_DEPTHWISE = {1: keras.layers.DepthwiseConv1D, 2: keras.layers.DepthwiseConv2D}
_CHANNEL_CONVS = {1: ChannelConv1D, 2: ChannelConv2D, 3: ChannelConv3D}


def _conv(size, mask, plan):
    return _CONVS[plan.rank](size.filters, plan.kernel)


def _masked_conv(size, mask, plan):
    return _CONVS[plan.rank](size.filters, plan.kernel, kernel_constraint=KernelMask(~mask))


def _depthwise(size, mask, plan):
    if plan.rank in _DEPTHWISE:
        return _DEPTHWISE[plan.rank](plan.kernel, depth_multiplier=size.filters)
    # Keras has no DepthwiseConv3D: the same function is a grouped Conv3D.
    channels = size.in_channels
    return keras.layers.Conv3D(channels * size.filters, plan.kernel, groups=channels)


def _channel_conv(implementation):
    def make(size, mask, plan):
        return _CHANNEL_CONVS[plan.rank](
            size.filters,
            plan.kernel,
            frozen=mask,
            reduction=size.reduction,
            implementation=implementation,
        )

    return make


def _answer(size, mask, plan):
    return AnswerConv2D(plan.kernel)


def _answer_applies(size, plan):
    return (AnswerConv2D is not None and plan.rank == 2 and size.in_channels == 3
            and size.filters == 16)


def _depthwise_name(rank):
    return f"DepthwiseConv{rank}D" if rank in _DEPTHWISE else f"Conv{rank}D groups=C"


@dataclasses.dataclass(frozen=True)
class Variant:
    """A layer to time: its name, reduction, constructor and where it applies.

    ``name`` is a template of the rank (``"Conv{rank}D"``) or a function of
    it; :func:`variants_for` fills it in.
    """

    name: object
    reduction: str
    make: object
    applies: object = lambda size, plan: True

    def named(self, rank):
        """This variant with its name for ``rank``."""
        name = self.name(rank) if callable(self.name) else self.name.format(rank=rank)
        return dataclasses.replace(self, name=name)


VARIANTS = (
    Variant("Conv{rank}D", "sum", _conv),
    Variant("ChannelConv{rank}D fused", "sum", _channel_conv("fused")),
    Variant("ChannelConv{rank}D per_channel", "sum", _channel_conv("per_channel")),
    Variant("Conv{rank}D + mask constraint", "sum", _masked_conv),
    Variant(_depthwise_name, "concat", _depthwise),
    Variant("ChannelConv{rank}D fused", "concat", _channel_conv("fused")),
    Variant("ChannelConv{rank}D per_channel", "concat", _channel_conv("per_channel")),
    Variant("AnswerConv2D", "concat", _answer, _answer_applies),
)


def variant_names(reduction, rank):
    """The names of ``reduction``'s variants at ``rank``, baseline first."""
    return [v.named(rank).name for v in VARIANTS if v.reduction == reduction]


def baseline_name(reduction, rank):
    """The dense Keras layer each ratio is taken against."""
    return variant_names(reduction, rank)[0]


def is_channel_conv(name, implementation):
    """Whether a variant name is ours with ``implementation``."""
    return name.startswith("ChannelConv") and name.endswith(f" {implementation}")


def variants_for(size, plan):
    """The variants that apply to ``size`` in ``plan``, baseline first, named."""
    return [v.named(plan.rank) for v in VARIANTS
            if v.reduction == size.reduction and v.applies(size, plan)]


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


def group_label(size, mode, jit):
    jit = " jit" if jit else ""
    return f"{size.reduction} {size.in_channels}x{size.filters} {mode}{jit}"
