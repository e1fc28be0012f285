"""Sparse plans: the dense convolutions that skip a layer's frozen-zero kernels.

A plan is data, made once when a layer is built, from the frozen-zero mask
(``(in_channels, filters)``, ``True`` where a kernel is frozen at zero) and
the kernel size, by :func:`make_plan`; NumPy only. The sparse implementation
(:class:`channelconv._sparse.SparseConvolution`) runs it:

- ``reduction="sum"``: each :class:`ConvBlock` is one convolution of the
  input channels it reads with the kernels (those channels x its filters);
  the blocks' filters are disjoint, so their outputs are concatenated and
  put back in filter order. Input channels no block reads are never read;
  filters no block computes are zero (their output is the bias).
- ``reduction="concat"``: a :class:`DepthwiseBlock` is one depthwise
  convolution; each of its rows reads one input channel and computes some
  of that channel's live kernels (padded with zero kernels to the block's
  multiplier). Output ``c * filters + f`` of a frozen-zero kernel is zero.

The blocks come from a :class:`CostModel`, in multiply-adds per output
position (one tap of one kernel = 1): a block costs its multiply-adds, plus
``copy`` per channel it reads or writes, plus ``call`` for being one more
convolution. ``sum`` starts from one block per set of filters with the same
live input channels (none of them computes a zero) and merges the pair whose
merge lowers the cost most, while one does; ``concat`` is one block whose
multiplier (the kernels per row) has the lowest cost. :data:`CALIBRATED`,
the default, is calibrated on ``benchmarks/bench_sparse.py``
(``docs/performance.md``, "Sparse"); :data:`EXACT` (calls and copies free)
makes blocks that follow the frozen structure exactly.

``implementation="auto"`` runs a plan when :attr:`SparsePlan.prefer_sparse`:
its cost is at most the cost model's ``auto_ratio`` (:data:`AUTO_RATIO`)
times the dense convolution's.

A plan is made with the cost model given to :func:`make_plan`; without one,
with the model of the innermost :func:`using_cost_model` block, else
:data:`CALIBRATED`. Layers make theirs without one, when they are built
(and for :attr:`~channelconv.layers.BaseChannelConv.plan` on first use), so
a layer built inside ``with using_cost_model(EXACT):`` runs the exact
structure.
"""

import contextlib
import contextvars
import dataclasses

import numpy as np

#: Calibrated cost of one convolution call, in multiply-adds per output position.
CALL_COST = 2048
#: Calibrated cost of copying one channel (reading it, or writing an output).
COPY_COST = 16
#: ``auto`` runs the plan when it costs at most this fraction of dense.
AUTO_RATIO = 0.8
#: ``sum`` plans start from at most this many blocks (see :func:`make_plan`).
MAX_START_BLOCKS = 64


@dataclasses.dataclass(frozen=True)
class CostModel:
    """What a plan's blocks cost, in multiply-adds per output position.

    Attributes:
        call: the cost of one more convolution call.
        copy: the cost of reading one channel, or writing one output.
        auto_ratio: ``implementation="auto"`` runs a plan that costs at most
            this fraction of the dense convolution.
    """

    call: float = CALL_COST
    copy: float = COPY_COST
    auto_ratio: float = AUTO_RATIO

    def block(self, taps, channels, width):
        """One convolution of ``channels`` x ``width`` kernels (vectorised)."""
        return taps * channels * width + self.copy * (channels + width) + self.call


#: The cost model calibrated on ``benchmarks/bench_sparse.py``: the default.
CALIBRATED = CostModel()
#: Calls and copies free: the blocks are the frozen structure itself, each
#: set of filters with the same live input channels its own convolution
#: (what tests use to run several blocks at small sizes).
EXACT = CostModel(call=0, copy=0)

_cost_model = contextvars.ContextVar("channelconv_plan_cost_model", default=CALIBRATED)


@contextlib.contextmanager
def using_cost_model(cost_model):
    """Makes ``cost_model`` the default of the plans made inside the block.

    :func:`make_plan` called without a cost model, and so every layer built
    inside the block (and the :attr:`~channelconv.layers.BaseChannelConv.plan`
    of a layer first asked for it there), uses it. A plan keeps the model it
    was made with; a layer keeps its plan.

    Example:

    >>> zero = np.kron(1 - np.eye(2), np.ones((2, 2))).astype(bool)
    >>> len(make_plan(zero, (3, 3)).blocks)
    1
    >>> with using_cost_model(EXACT):
    ...     len(make_plan(zero, (3, 3)).blocks)
    2
    """
    if not isinstance(cost_model, CostModel):
        raise TypeError(
            "`cost_model` must be a channelconv.plan.CostModel. "
            f"Received: cost_model={cost_model!r} of type {type(cost_model).__name__}."
        )
    token = _cost_model.set(cost_model)
    try:
        yield cost_model
    finally:
        _cost_model.reset(token)


@dataclasses.dataclass(frozen=True)
class ConvBlock:
    """One convolution of a ``sum`` plan: ``channels`` x ``filters`` kernels.

    Its kernel is ``kernel_size + (len(channels), len(filters))``; kernels of
    the block that are frozen at zero are computed, as zeros.
    """

    channels: tuple
    filters: tuple

    @property
    def width(self):
        """Output channels of the convolution."""
        return len(self.filters)

    def kernel_numbers(self, filters):
        """``(len(channels), width)`` kernel numbers ``c * filters + f``."""
        return np.add.outer(np.multiply(self.channels, filters), self.filters)

    def outputs(self, filters):
        """The layer output channel of each of the convolution's outputs."""
        return np.asarray(self.filters, dtype=np.int64)

    def __str__(self):
        return f"conv {_span(self.channels, 'channels')} -> {_span(self.filters, 'filters')}"


@dataclasses.dataclass(frozen=True)
class DepthwiseBlock:
    """One depthwise convolution of a ``concat`` plan.

    Row ``i`` convolves input channel ``channels[i]`` (a channel may have
    several rows) with the kernels of filters ``filters[i]``, padded with
    ``-1`` (a zero kernel whose output is dropped) to the multiplier
    ``width``.
    """

    channels: tuple
    filters: tuple  # one tuple of ``width`` filters (or -1) per row

    @property
    def width(self):
        """The depth multiplier."""
        return len(self.filters[0])

    def kernel_numbers(self, filters):
        """``(len(channels), width)`` kernel numbers, ``-1`` for padding."""
        f = np.asarray(self.filters, dtype=np.int64)
        numbers = np.asarray(self.channels, dtype=np.int64)[:, None] * filters + f
        return np.where(f < 0, -1, numbers)

    def outputs(self, filters):
        """The layer output channel of each output, ``-1`` for padding."""
        return self.kernel_numbers(filters).reshape(-1)

    def __str__(self):
        return f"depthwise {_span(self.channels, 'channels')} x {self.width}"


@dataclasses.dataclass(frozen=True)
class SparsePlan:
    """The blocks that compute a layer, and the indices that connect them.

    Attributes:
        reduction: ``"sum"`` or ``"concat"``.
        in_channels, filters: the layer's sizes.
        taps: the number of taps of one kernel (``prod(kernel_size)``).
        blocks: the :class:`ConvBlock` or :class:`DepthwiseBlock` s.
        cost_model: the :class:`CostModel` the plan was made with.
        kernel_numbers: the kernels of every block, concatenated (block by
            block, row-major), as kernel numbers (``-1``: zero).
        input_index: the input channels the blocks read, concatenated.
        output_index: for each output channel of the layer, its position in
            the blocks' concatenated outputs, or ``-1`` (zero).

    Made by :func:`make_plan`; a built layer has its own as ``layer.plan``.

    Example: a layer whose kernels are frozen at zero outside two groups.

    >>> import numpy as np, channelconv
    >>> zero = ~np.kron(np.eye(2, dtype=bool), np.ones((32, 32), bool))  # 64 -> 64
    >>> layer = channelconv.ChannelConv2D(64, 3, frozen=zero)
    >>> layer.build((None, 16, 16, 64))
    >>> plan = layer.plan
    >>> isinstance(plan, channelconv.SparsePlan), len(plan.blocks), plan.macs_fraction
    (True, 2, 0.5)
    >>> plan.blocks[0].channels == tuple(range(32)), plan.blocks[1].filters[:2]
    (True, (32, 33))
    """

    reduction: str
    in_channels: int
    filters: int
    taps: int
    blocks: tuple
    cost_model: CostModel = CALIBRATED

    @property
    def kernel_numbers(self):
        return _concat([b.kernel_numbers(self.filters).reshape(-1) for b in self.blocks])

    @property
    def input_index(self):
        return _concat([np.asarray(b.channels, dtype=np.int64) for b in self.blocks])

    @property
    def output_index(self):
        outputs = _concat([b.outputs(self.filters) for b in self.blocks])
        n_out = self.filters if self.reduction == "sum" else self.in_channels * self.filters
        index = np.full(n_out, -1, dtype=np.int64)
        used = outputs >= 0
        index[outputs[used]] = np.flatnonzero(used)
        return index

    @property
    def macs_fraction(self):
        """Multiply-adds performed, as a fraction of the dense convolution's."""
        macs = sum(len(b.channels) * b.width for b in self.blocks)
        return macs / (self.in_channels * self.filters)

    @property
    def cost(self):
        """The model's cost of running the plan (per output position)."""
        reads = self.input_index.size if not _identity(self.input_index, self.in_channels) else 0
        output_index = self.output_index
        writes = output_index.size if not _identity(output_index, output_index.size) else 0
        model = self.cost_model
        blocks = sum(model.block(self.taps, len(b.channels), b.width) for b in self.blocks)
        return blocks + model.copy * (reads + writes)

    @property
    def dense_cost(self):
        """The model's cost of the dense convolution (per output position)."""
        return self.cost_model.block(self.taps, self.in_channels, self.filters)

    @property
    def prefer_sparse(self):
        """Whether ``implementation="auto"`` runs this plan."""
        return self.cost <= self.cost_model.auto_ratio * self.dense_cost

    def __str__(self):
        lines = [
            f"SparsePlan({self.reduction}, {self.in_channels} -> {self.filters}: "
            f"{len(self.blocks)} convolution{'s' * (len(self.blocks) != 1)}, "
            f"{self.macs_fraction:.3f} of the dense multiply-adds, "
            f"cost {self.cost / self.dense_cost:.3f} of dense, "
            f"auto: {'sparse' if self.prefer_sparse else 'fused'})"
        ]
        lines += [f"  {block}" for block in self.blocks]
        return "\n".join(lines)


def make_plan(frozen_zero, kernel_size, reduction="sum", cost_model=None):
    """The sparse plan of a layer whose ``frozen_zero`` kernels are zero.

    Args:
        frozen_zero: boolean array ``(in_channels, filters)``, ``True``
            where the kernel is frozen at zero.
        kernel_size: tuple of ints.
        reduction: ``"sum"`` or ``"concat"``.
        cost_model: the :class:`CostModel` that chooses the blocks; ``None``
            (default): that of the innermost :func:`using_cost_model` block,
            else :data:`CALIBRATED`.

    Returns:
        A :class:`SparsePlan`.

    Example: two groups, as a grouped convolution has them, with one input
    channel entirely frozen. At 4 channels one more convolution costs more
    than the multiply-adds it saves, so the groups are merged; the dead
    channel is still not read:

    >>> zero = np.kron(1 - np.eye(2), np.ones((2, 2))).astype(bool)
    >>> zero[3] = True
    >>> print(make_plan(zero, (3, 3)))  # doctest: +NORMALIZE_WHITESPACE
    SparsePlan(sum, 4 -> 4: 1 convolution, 0.750 of the dense multiply-adds,
               cost 0.998 of dense, auto: fused)
      conv channels 0-2 -> filters 0-3

    At 256 channels the groups are separate convolutions:

    >>> big = np.kron(np.eye(4, dtype=bool), np.ones((64, 64), bool))
    >>> plan = make_plan(~big, (3, 3))
    >>> len(plan.blocks), plan.macs_fraction, plan.prefer_sparse
    (4, 0.25, True)
    >>> plan.output_index[:3].tolist(), plan.input_index[-2:].tolist()
    ([0, 1, 2], [254, 255])

    With calls and copies free (:data:`EXACT`), the blocks are the groups
of the 4-channel example, and the second reads its live channel only:

    >>> print(make_plan(zero, (3, 3), cost_model=EXACT))  # doctest: +NORMALIZE_WHITESPACE
    SparsePlan(sum, 4 -> 4: 2 convolutions, 0.375 of the dense multiply-adds,
               cost 0.375 of dense, auto: sparse)
      conv channels 0-1 -> filters 0-1
      conv channels 2 -> filters 2-3
    """
    if cost_model is None:
        cost_model = _cost_model.get()
    elif not isinstance(cost_model, CostModel):
        raise TypeError(
            "`cost_model` must be a channelconv.plan.CostModel or None. "
            f"Received: cost_model={cost_model!r} of type {type(cost_model).__name__}."
        )
    zero = np.asarray(frozen_zero, dtype=bool)
    live = ~zero
    taps = int(np.prod(kernel_size))
    if reduction == "sum":
        blocks = _sum_blocks(live, taps, cost_model)
    else:
        blocks = _depthwise_blocks(live, taps, cost_model)
    return SparsePlan(
        reduction, zero.shape[0], zero.shape[1], taps, tuple(blocks), cost_model
    )


def _sum_blocks(live, taps, cost_model):
    """``ConvBlock`` s covering every live kernel, by greedy merging."""
    live_filters = np.flatnonzero(live.any(axis=0))
    if not live_filters.size:
        return []
    patterns, group = np.unique(live[:, live_filters].T, axis=0, return_inverse=True)
    group = np.reshape(group, -1)
    if len(patterns) > MAX_START_BLOCKS:
        group = _coarse_groups(live[:, live_filters], MAX_START_BLOCKS)
        patterns = np.stack([live[:, live_filters[group == g]].any(axis=1)
                             for g in range(group.max() + 1)])
    members = [live_filters[group == g] for g in range(len(patterns))]
    reads = patterns.astype(np.int64)  # (blocks, in_channels) 0/1
    widths = np.array([m.size for m in members], dtype=np.int64)
    while len(members) > 1:
        n_reads = reads.sum(axis=1)
        union = n_reads[:, None] + n_reads[None, :] - reads @ reads.T
        merged = cost_model.block(taps, union, widths[:, None] + widths[None, :])
        single = cost_model.block(taps, n_reads, widths)
        gain = merged - single[:, None] - single[None, :]
        np.fill_diagonal(gain, 0)
        a, b = np.unravel_index(np.argmin(gain), gain.shape)
        if gain[a, b] >= 0:
            break
        a, b = min(a, b), max(a, b)
        reads[a] |= reads[b]
        widths[a] += widths[b]
        members[a] = np.sort(np.concatenate([members[a], members[b]]))
        reads, widths = np.delete(reads, b, axis=0), np.delete(widths, b)
        del members[b]
    blocks = [
        ConvBlock(tuple(np.flatnonzero(r).tolist()), tuple(m.tolist()))
        for r, m in zip(reads, members)
    ]
    return sorted(blocks, key=lambda block: block.filters[0])


def _coarse_groups(live, count):
    """At most ``count`` groups of filters: connected components, then chunks.

    Filters that share a live input channel are in one component; when there
    are more than ``count`` components, neighbouring ones (ordered by first
    filter) are joined into ``count`` chunks of about equal size.
    """
    labels = np.arange(live.shape[1])
    big = live.shape[1]
    while True:  # propagate the smallest label through shared channels
        channel_label = np.where(live, labels[None, :], big).min(axis=1)
        new = np.where(live, channel_label[:, None], big).min(axis=0)
        new = np.minimum(new, labels)
        if np.array_equal(new, labels):
            break
        labels = new
    _, component = np.unique(labels, return_inverse=True)
    component = np.reshape(component, -1)
    n = component.max() + 1
    if n <= count:
        return component
    return component * count // n


def _depthwise_blocks(live, taps, cost_model):
    """One ``DepthwiseBlock``: each channel's live kernels in rows of the best width.

    A channel with ``n`` live kernels takes ``ceil(n / width)`` rows (the
    channel is read once per row); the width with the lowest cost wins.
    Width 1 computes exactly the live kernels.
    """
    counts = live.sum(axis=1)
    if not counts.any():
        return []
    best = None
    for width in range(1, int(counts.max()) + 1):
        rows = -(-counts // width)
        cost = (cost_model.block(taps, int(rows.sum()), width)
                + cost_model.copy * int(rows.max()) * live.shape[0])
        if best is None or cost < best[0]:
            best = (cost, width)
    width = best[1]
    channels, filters = [], []
    for c in np.flatnonzero(counts):
        live_filters = np.flatnonzero(live[c]).tolist()
        for start in range(0, len(live_filters), width):
            chunk = live_filters[start : start + width]
            channels.append(int(c))
            filters.append(tuple(chunk) + (-1,) * (width - len(chunk)))
    return [DepthwiseBlock(tuple(channels), tuple(filters))]


def _identity(index, size):
    return np.array_equal(index, np.arange(size))


def _concat(arrays):
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


def _span(values, what):
    """``"channels 0-63"`` for a range, else ``"128 channels (0, 2, 4, 6, ...)"``."""
    values = list(values)
    if values and values == list(range(values[0], values[-1] + 1)):
        first, last = values[0], values[-1]
        return f"{what} {first}" if first == last else f"{what} {first}-{last}"
    head = ", ".join(str(v) for v in values[:4])
    return f"{len(values)} {what} ({head}{', ...' if len(values) > 4 else ''})"
