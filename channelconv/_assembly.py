"""The kernel assembly: the full kernel from the compact trainable and frozen ones.

A layer keeps the ``in_channels * filters`` kernels of its full kernel
(shape ``kernel_size + (in_channels, filters)``) in two variables, the
trainable ones and the frozen ones, each of shape ``kernel_size + (n,)`` and
each in the order of the kernels' numbers ``c * filters + f`` (the order of
the full kernel reshaped to ``kernel_size + (-1,)``). The full kernel is one
permutation of their concatenation along the last axis, and its gradient is
the inverse permutation of the incoming gradient: a gather each way, exact
(no summation).

Every call of a layer pays one gather (and a training step one more for the
gradient), so its speed is what a converted network pays over the Keras one.
On the kernels of whole converted networks, TensorFlow's own CPU gather
costs 2.3 to 4.2 ns per element, the same gather compiled with XLA 0.7 to
1.8 ns, and a plain copy 0.3 to 0.75 ns (2 CPU cores, TensorFlow 2.21;
``benchmarks/bench_assembly.py``, ``docs/performance.md``), so on TensorFlow
the gathers are XLA-compiled, as a separate small cluster each, whatever the
caller compiles (:mod:`channelconv._take`). On JAX and PyTorch they are
``keras.ops.take`` with its own gradient.
"""

import numpy as np
from keras import ops

from channelconv._take import LastAxisTake


class KernelAssembly:
    """How a layer's full kernel is made from its compact kernels.

    Made once, when the layer is built, from the frozen mask; calling it
    assembles the kernel, with the exact gradient. :meth:`taker` makes any
    other selection of kernels (the sparse implementation's blocks) the
    same way.

    Args:
        frozen_mask: boolean array ``(in_channels, filters)``, ``True`` where
            the kernel is frozen.
        kernel_size: tuple of ints, the spatial size of one kernel.

    Attributes:
        kernel_shape: ``kernel_size + (in_channels, filters)``.
        trainable_positions: the kernel numbers held by the trainable
            variable, in storage order (increasing).
        frozen_positions: the kernel numbers held by the frozen variable.
        index: ``int32`` array with ``full = take(concat([trainable,
            frozen], -1), index, axis=-1)``, or ``None`` when that is the
            identity (nothing frozen before a trainable kernel): the
            assembly is then a concatenation.

    Example:

    >>> assembly = KernelAssembly(np.array([[False, True], [False, False]]), (1, 1))
    >>> assembly.trainable_positions.tolist(), assembly.frozen_positions.tolist()
    ([0, 2, 3], [1])
    >>> assembly.index.tolist()
    [0, 3, 1, 2]
    >>> from keras import ops
    >>> trainable = np.array([[[1.0, 3.0, 4.0]]], "float32")
    >>> frozen = np.array([[[2.0]]], "float32")
    >>> kernel = ops.convert_to_numpy(assembly(trainable, frozen))
    >>> kernel.reshape(-1).tolist()
    [1.0, 2.0, 3.0, 4.0]
    >>> ops.convert_to_numpy(assembly(trainable)).reshape(-1).tolist()  # frozen at zero
    [1.0, 0.0, 3.0, 4.0]
    >>> [part.reshape(-1).tolist() for part in assembly.split(kernel)]
    [[1.0, 3.0, 4.0], [2.0]]
    >>> ops.convert_to_numpy(assembly.taker([3, -1, 1])(trainable, frozen)).reshape(-1).tolist()
    [4.0, 0.0, 2.0]
    >>> ops.convert_to_numpy(assembly.taker([3, -1, 1], frozen=False)(trainable)).reshape(-1).tolist()
    [4.0, 0.0, 0.0]
    """

    def __init__(self, frozen_mask, kernel_size):
        mask = np.asarray(frozen_mask, dtype=bool)
        flat = mask.reshape(-1)
        self.kernel_shape = tuple(kernel_size) + mask.shape
        self.trainable_positions = np.flatnonzero(~flat)
        self.frozen_positions = np.flatnonzero(flat)
        order = np.concatenate([self.trainable_positions, self.frozen_positions])
        self._slot = np.argsort(order)  # kernel number -> storage slot
        self._full = self.taker(np.arange(flat.size))
        self._full_zero = self.taker(np.arange(flat.size), frozen=False)
        self.index = None if self._full.identity else self._full.index

    def taker(self, numbers, frozen=True):
        """A :class:`~channelconv._take.LastAxisTake` of kernels by number.

        Args:
            numbers: 1-D ints, kernel numbers ``c * filters + f``, or ``-1``
                for a zero kernel; no kernel number twice.
            frozen: if ``False``, frozen kernels are taken as zeros and the
                result is called with the trainable kernels alone.

        Returns:
            A callable ``(trainable, frozen) -> kernels`` (``trainable ->
            kernels`` if not ``frozen``) of shape ``kernel_size +
            (len(numbers),)``, with the exact gradient.
        """
        numbers = np.asarray(numbers, dtype=np.int64)
        index = np.where(numbers < 0, -1, self._slot[np.maximum(numbers, 0)])
        n_trainable = self.trainable_positions.size
        if not frozen:
            return LastAxisTake(np.where(index >= n_trainable, -1, index), n_trainable)
        return LastAxisTake(index, (n_trainable, self.frozen_positions.size))

    def __call__(self, trainable, frozen=None):
        """The full kernel from ``trainable`` and ``frozen``.

        Args:
            trainable: tensor ``kernel_size + (len(trainable_positions),)``.
            frozen: tensor ``kernel_size + (len(frozen_positions),)``, cast
                to ``trainable``'s dtype; or ``None``: the frozen kernels are
                zeros (nothing is read for them).

        Returns:
            A tensor of shape :attr:`kernel_shape` in ``trainable``'s dtype.
        """
        if frozen is None:
            return ops.reshape(self._full_zero(trainable), self.kernel_shape)
        return ops.reshape(self._full(trainable, frozen), self.kernel_shape)

    def split(self, kernel):
        """The inverse of the assembly: a full kernel to its compact parts.

        Args:
            kernel: array of shape :attr:`kernel_shape`.

        Returns:
            ``(trainable, frozen)`` NumPy arrays, in storage order.
        """
        kernel = np.asarray(kernel)
        flat = kernel.reshape(kernel.shape[:-2] + (-1,))
        return flat[..., self.trainable_positions], flat[..., self.frozen_positions]
