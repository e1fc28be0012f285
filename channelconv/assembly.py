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
``benchmarks/bench_assembly.py``, ``docs/performance.md``), so the gathers
here are XLA-compiled, as a separate small cluster each, whatever the caller
compiles.
"""

import numpy as np
import tensorflow as tf


class KernelAssembly:
    """How a layer's full kernel is made from its compact kernels.

    Made once, when the layer is built, from the frozen mask; calling it
    assembles the kernel, with the exact gradient.

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
    >>> kernel = assembly(tf.constant([[[1.0, 3.0, 4.0]]]), tf.constant([[[2.0]]]))
    >>> kernel.numpy().reshape(-1).tolist()
    [1.0, 2.0, 3.0, 4.0]
    >>> [part.reshape(-1).tolist() for part in assembly.split(kernel.numpy())]
    [[1.0, 3.0, 4.0], [2.0]]
    """

    def __init__(self, frozen_mask, kernel_size):
        mask = np.asarray(frozen_mask, dtype=bool)
        flat = mask.reshape(-1)
        self.kernel_shape = tuple(kernel_size) + mask.shape
        self.trainable_positions = np.flatnonzero(~flat)
        self.frozen_positions = np.flatnonzero(flat)
        order = np.concatenate([self.trainable_positions, self.frozen_positions])
        index = np.argsort(order).astype(np.int32)
        self.index = None if np.array_equal(index, np.arange(flat.size)) else index
        self._take = tf.function(_take_last, jit_compile=True, autograph=False)

    def __call__(self, trainable, frozen):
        """The full kernel from ``trainable`` and ``frozen``.

        Args:
            trainable: tensor ``kernel_size + (len(trainable_positions),)``.
            frozen: tensor ``kernel_size + (len(frozen_positions),)``; cast
                to ``trainable``'s dtype.

        Returns:
            A tensor of shape :attr:`kernel_shape` in ``trainable``'s dtype.
        """
        trainable = tf.convert_to_tensor(trainable)
        frozen = tf.convert_to_tensor(frozen)
        if self.index is None:
            if not self.frozen_positions.size:
                return tf.reshape(trainable, self.kernel_shape)
            stacked = tf.concat([trainable, tf.cast(frozen, trainable.dtype)], axis=-1)
            return tf.reshape(stacked, self.kernel_shape)
        return self._permuted(trainable, frozen)

    def _permuted(self, trainable, frozen):
        take, shape = self._take, self.kernel_shape
        index = tf.constant(self.index)
        trainable_positions = tf.constant(self.trainable_positions, tf.int32)
        frozen_positions = tf.constant(self.frozen_positions, tf.int32)

        @tf.custom_gradient
        def permute(t, f):
            full = take(tf.concat([t, tf.cast(f, t.dtype)], axis=-1), index)

            def grad(upstream):
                flat = tf.reshape(upstream, shape[:-2] + (-1,))
                d_frozen = take(flat, frozen_positions)
                return take(flat, trainable_positions), tf.cast(d_frozen, f.dtype)

            return tf.reshape(full, shape), grad

        return permute(trainable, frozen)

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


def _take_last(values, positions):
    return tf.gather(values, positions, axis=-1)
