"""Reordering along the last axis, with zeros, and its exact gradient.

:class:`LastAxisTake` is ``concat(values, -1)[..., index]`` where an index
of ``-1`` stands for a zero entry. The kernel assembly
(:mod:`channelconv._assembly`) uses it to make kernels from the compact
variables; the sparse implementation (:class:`channelconv._sparse.SparseConvolution`)
to pick the channels each block reads and to put the blocks' outputs back in
order.

The index and its inverses are made here, once, with NumPy; the gather is
the backend facade's (:func:`channelconv._backend.take_last_axis`). On JAX
and PyTorch it is ``keras.ops.take``, whose gradient (a scatter-add) is exact
and sums over repetitions. On TensorFlow it is a gather compiled with XLA,
with the inverse gather as its gradient (why: ``docs/performance.md``,
"Where the fused path's extra time goes"). The inverse gather is exact (no
summation) when no source entry is taken twice; an entry taken ``r`` times
gets the sum of its ``r`` incoming gradients, one inverse gather per
repetition.
"""

import numpy as np
from keras import ops

from channelconv import _backend


class LastAxisTake:
    """``concat(values, -1)[..., index]``, ``-1`` for zero, differentiable.

    Made once from the index (NumPy, when a layer is built); calling it
    concatenates its arguments along the last axis and takes from them
    (on TensorFlow in one XLA-compiled gather each way).

    Args:
        index: 1-D ints in ``[-1, sum(sizes))``; ``-1`` gives a zero entry.
        sizes: the last-axis length of each argument it is called with (an
            int for a single argument).

    Attributes:
        identity: ``True`` when ``index`` is ``range(sum(sizes))``: the
            result is the concatenation.

    Example:

    >>> from keras import ops
    >>> take = LastAxisTake([2, -1, 0], sizes=3)
    >>> x = np.array([[1.0, 2.0, 3.0]], "float32")
    >>> ops.convert_to_numpy(take(x)).tolist()
    [[3.0, 0.0, 1.0]]
    >>> ops.convert_to_numpy(LastAxisTake([1, 2], sizes=(2, 1))(x[:, :2], x[:, 2:])).tolist()
    [[2.0, 3.0]]
    """

    def __init__(self, index, sizes):
        self.sizes = (int(sizes),) if np.ndim(sizes) == 0 else tuple(int(s) for s in sizes)
        total = sum(self.sizes)
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < -1 or index.max() >= total):
            raise ValueError(
                f"`index` must hold values in [-1, {total}). Received: "
                f"min {index.min()}, max {index.max()}."
            )
        self.index = index.astype(np.int32)
        self.identity = np.array_equal(index, np.arange(total))
        self._forward = _with_zero_slot(self.index, total)
        # The gradient of argument j: one inverse gather per repetition.
        positions = np.flatnonzero(index >= 0)
        sources = index[positions]
        occurrence = _occurrence(sources)
        starts = np.cumsum((0,) + self.sizes)
        self._inverses = []
        for start, size in zip(starts, self.sizes):
            inverses = []
            for k in range(max(1, int(occurrence.max(initial=-1)) + 1)):
                inverse = np.full(size, -1, dtype=np.int32)
                chosen = (occurrence == k) & (sources >= start) & (sources < start + size)
                inverse[sources[chosen] - start] = positions[chosen]
                if k == 0 or chosen.any():
                    inverses.append(_with_zero_slot(inverse, index.size))
            self._inverses.append(inverses)

    def __call__(self, *values):
        """``concat(values, -1)[..., index]``, zeros where the index is ``-1``."""
        if len(values) != len(self.sizes):
            raise ValueError(
                f"Expected {len(self.sizes)} tensors. Received: {len(values)}."
            )
        values = [ops.convert_to_tensor(v) for v in values]
        values = [values[0]] + [ops.cast(v, values[0].dtype) for v in values[1:]]
        if self.identity:  # a concatenation; empty parts after the first add nothing
            kept = values[:1] + [v for v, size in zip(values[1:], self.sizes[1:]) if size]
            return kept[0] if len(kept) == 1 else ops.concatenate(kept, axis=-1)
        return _backend.take_last_axis(values, self._forward, self._inverses)


def _with_zero_slot(index, total):
    """``index`` with ``-1`` as ``total`` (where a zero is appended), and whether any is."""
    pad = bool((index < 0).any())  # a zero column costs a copy: only if needed
    return (np.where(index < 0, total, index).astype(np.int32) if pad else index), pad


def _occurrence(values):
    """For each entry, how many equal entries come before it."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, ordered.size]))
    occurrence = np.empty(values.size, dtype=np.int64)
    occurrence[order] = np.arange(values.size) - run_start
    return occurrence
