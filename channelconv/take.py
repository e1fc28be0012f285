"""Reordering along the last axis, with zeros, and its exact gradient.

:class:`LastAxisTake` is ``concat(values, -1)[..., index]`` where an index
of ``-1`` stands for a zero entry. The kernel assembly
(:mod:`channelconv.assembly`) uses it to make kernels from the compact
variables; the sparse implementation (:func:`channelconv.ops.convolve_sparse`)
to pick the channels each block reads and to put the blocks' outputs back in
order.

Both ways are a gather, compiled with XLA as a small cluster of its own
whatever the caller compiles: TensorFlow's own CPU gather costs 2.3 to 4.2
ns per value, XLA's 0.7 to 1.8 ns (``benchmarks/bench_assembly.py``). The
gradient is the inverse gather, exact (no summation) when no source entry is
taken twice; an entry taken ``r`` times gets the sum of its ``r`` incoming
gradients, one inverse gather per repetition.
"""

import numpy as np
import tensorflow as tf


class LastAxisTake:
    """``concat(values, -1)[..., index]``, ``-1`` for zero, differentiable.

    Made once from the index (NumPy, when a layer is built); calling it
    concatenates its arguments along the last axis and takes from them,
    in one XLA-compiled gather each way.

    Args:
        index: 1-D ints in ``[-1, sum(sizes))``; ``-1`` gives a zero entry.
        sizes: the last-axis length of each argument it is called with (an
            int for a single argument).

    Attributes:
        identity: ``True`` when ``index`` is ``range(sum(sizes))``: the
            result is the concatenation.

    Example:

    >>> take = LastAxisTake([2, -1, 0], sizes=3)
    >>> x = tf.constant([[1.0, 2.0, 3.0]])
    >>> take(x).numpy().tolist()
    [[3.0, 0.0, 1.0]]
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = take(x) * tf.constant([[10.0, 20.0, 30.0]])
    >>> tape.gradient(y, x).numpy().tolist()
    [[30.0, 0.0, 10.0]]
    >>> LastAxisTake([1, 2], sizes=(2, 1))(x[:, :2], x[:, 2:]).numpy().tolist()
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
                    inverses.append(inverse)
            self._inverses.append(inverses)
        self._gather = tf.function(_gather, jit_compile=True, autograph=False)

    def __call__(self, *values):
        """``concat(values, -1)[..., index]``, zeros where the index is ``-1``."""
        if len(values) != len(self.sizes):
            raise ValueError(
                f"Expected {len(self.sizes)} tensors. Received: {len(values)}."
            )
        values = [tf.convert_to_tensor(v) for v in values]
        values = [values[0]] + [tf.cast(v, values[0].dtype) for v in values[1:]]
        if self.identity:  # a concatenation; empty parts after the first add nothing
            kept = values[:1] + [v for v, size in zip(values[1:], self.sizes[1:]) if size]
            return kept[0] if len(kept) == 1 else tf.concat(kept, axis=-1)

        @tf.custom_gradient
        def reorder(*parts):
            def grad(upstream):
                grads = []
                for part, inverses in zip(parts, self._inverses):
                    terms = [self._apply([upstream], inverse) for inverse in inverses]
                    total = terms[0] if len(terms) == 1 else tf.add_n(terms)
                    grads.append(tf.cast(total, part.dtype))
                return grads

            return self._apply(parts, self.index), grad

        return reorder(*values)

    def _apply(self, parts, index):
        pad = bool((index < 0).any())  # a zero column costs a copy: only if needed
        return self._gather(list(parts), tf.constant(index), pad)


def _occurrence(values):
    """For each entry, how many equal entries come before it."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, ordered.size]))
    occurrence = np.empty(values.size, dtype=np.int64)
    occurrence[order] = np.arange(values.size) - run_start
    return occurrence


def _gather(parts, index, pad):
    """``concat(parts)[..., index]``; with ``pad``, ``-1`` gives zero."""
    if pad:
        shape = tf.concat([tf.shape(parts[0])[:-1], [1]], axis=0)
        parts = parts + [tf.zeros(shape, parts[0].dtype)]
    values = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
    if pad:
        index = tf.where(index < 0, tf.shape(values)[-1] - 1, index)
    return tf.gather(values, index, axis=-1)
