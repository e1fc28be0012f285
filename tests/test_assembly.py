"""``channelconv.assembly.KernelAssembly`` against NumPy, bit for bit.

The full kernel is rebuilt here from the two compact parts and the mask
(kernel ``(c, f)`` is number ``c * filters + f``; each part holds its kernels
in increasing number order), and the gradients of ``sum(kernel *
upstream)`` are ``upstream`` at those numbers. Every path of the assembly
(the XLA-compiled gather, the concatenation of the identity case, nothing or
everything frozen), eagerly, in ``tf.function`` and under XLA, in float32
and with a frozen part of another dtype.
"""

import numpy as np
import pytest
import tensorflow as tf

from channelconv.assembly import KernelAssembly
from channelconv.mask import random_frozen_mask
from harness import to_numpy

pytestmark = pytest.mark.numerics


def _last(channels, filters, count):
    mask = np.zeros(channels * filters, bool)
    mask[mask.size - count:] = True
    return mask.reshape(channels, filters)


# name: (kernel_size, frozen mask, path)
CASES = {
    "3x16-5-scattered": ((3, 2), random_frozen_mask(3, 16, 5, seed=1), "gather"),
    "4x5-19-scattered": ((3, 2), random_frozen_mask(4, 5, 19, seed=1), "gather"),
    "1x1-64x32-10pct": ((1, 1), random_frozen_mask(64, 32, 205, seed=2), "gather"),
    "3x3-64x64-50pct": ((3, 3), random_frozen_mask(64, 64, 2048, seed=3), "gather"),
    "frozen-last": ((2, 2), _last(3, 4, 5), "concat"),
    "nothing-frozen": ((2, 2), np.zeros((3, 4), bool), "concat"),
    "all-frozen": ((2, 2), np.ones((3, 4), bool), "concat"),
}
MODES = {"eager": None, "function": False, "xla": True}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CASES)
def test_kernel_and_gradients_match_numpy(name, mode):
    kernel_size, mask, path = CASES[name]
    assembly = KernelAssembly(mask, kernel_size)
    assert (assembly.index is None) == (path == "concat")
    flat_mask = mask.reshape(-1)
    rng = np.random.default_rng(0)
    trainable = tf.Variable(rng.standard_normal(kernel_size + (int((~flat_mask).sum()),)),
                            dtype="float32")
    frozen = tf.Variable(rng.standard_normal(kernel_size + (int(flat_mask.sum()),)),
                         dtype="float32")
    shape = kernel_size + mask.shape
    upstream = rng.standard_normal(shape).astype("float32")

    def assemble():
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(frozen)
            kernel = assembly(trainable, frozen)
            loss = tf.reduce_sum(kernel * upstream)
        return kernel, tape.gradient(loss, trainable), tape.gradient(loss, frozen)

    if MODES[mode] is not None:
        assemble = tf.function(assemble, jit_compile=MODES[mode])
    kernel, d_trainable, d_frozen = (to_numpy(t) for t in assemble())

    expected = np.empty(kernel_size + (flat_mask.size,), "float32")
    expected[..., ~flat_mask] = to_numpy(trainable)
    expected[..., flat_mask] = to_numpy(frozen)
    flat_upstream = upstream.reshape(kernel_size + (-1,))
    assert kernel.shape == shape
    np.testing.assert_array_equal(kernel, expected.reshape(shape))
    np.testing.assert_array_equal(d_trainable, flat_upstream[..., ~flat_mask])
    np.testing.assert_array_equal(d_frozen, flat_upstream[..., flat_mask])
    parts = assembly.split(kernel)
    np.testing.assert_array_equal(parts[0], to_numpy(trainable))
    np.testing.assert_array_equal(parts[1], to_numpy(frozen))


def test_frozen_part_is_cast_to_the_trainable_dtype_and_back():
    assembly = KernelAssembly(np.array([[False, True, False]]), (1, 1))
    trainable = tf.constant([[[1.5, 2.5]]], "float16")
    frozen = tf.constant([[[7.0]]], "float32")
    with tf.GradientTape() as tape:
        tape.watch([trainable, frozen])
        kernel = assembly(trainable, frozen)
    assert kernel.dtype == tf.float16
    assert to_numpy(kernel).reshape(-1).tolist() == [1.5, 7.0, 2.5]
    d_trainable, d_frozen = tape.gradient(kernel, [trainable, frozen])
    assert (d_trainable.dtype, d_frozen.dtype) == (tf.float16, tf.float32)


def test_the_gather_is_compiled_with_xla():
    """The speed of a converted network rests on it (docs/performance.md)."""
    assembly = KernelAssembly(random_frozen_mask(8, 8, 6, seed=0), (3, 3))
    trainable = tf.zeros((3, 3, 58))
    frozen = tf.zeros((3, 3, 6))
    graph = tf.function(lambda: assembly(trainable, frozen)).get_concrete_function().graph
    calls = [op for op in graph.get_operations() if op.type == "StatefulPartitionedCall"
             or op.type == "PartitionedCall"]
    assert calls and all(op.get_attr("_XlaMustCompile") for op in calls)
