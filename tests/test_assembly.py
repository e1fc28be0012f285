"""``channelconv._assembly.KernelAssembly`` against NumPy, bit for bit.

The full kernel is rebuilt here from the two compact parts and the mask
(kernel ``(c, f)`` is number ``c * filters + f``; each part holds its kernels
in increasing number order), and the gradients of ``sum(kernel *
upstream)`` are ``upstream`` at those numbers. Every path of the assembly
(the XLA-compiled gather, the concatenation of the identity case, nothing or
everything frozen), eagerly on every backend, in ``tf.function``
(TensorFlow) and compiled with XLA (TensorFlow's ``jit_compile``,
``jax.jit``; PyTorch has none), in float32 and with a frozen part of another
dtype.
"""

import numpy as np
import pytest

from channelconv._assembly import KernelAssembly
from channelconv.mask import random_frozen_mask
from harness import BACKEND, vjp

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
MODES = [
    pytest.param("eager"),
    pytest.param("function", marks=pytest.mark.tensorflow),
    pytest.param("xla", marks=pytest.mark.skipif(BACKEND == "torch",
                                                 reason="PyTorch has no XLA mode")),
]


def _dense(gradient, expected):
    """``gradient``, or zeros where the backend says "none" (an empty part's)."""
    if gradient is None:
        assert expected.size == 0
        return np.zeros_like(expected)
    return gradient


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", CASES)
def test_kernel_and_gradients_match_numpy(name, mode):
    kernel_size, mask, path = CASES[name]
    assembly = KernelAssembly(mask, kernel_size)
    assert (assembly.index is None) == (path == "concat")
    flat_mask = mask.reshape(-1)
    rng = np.random.default_rng(0)
    trainable = rng.standard_normal(kernel_size + (int((~flat_mask).sum()),)).astype("float32")
    frozen = rng.standard_normal(kernel_size + (int(flat_mask.sum()),)).astype("float32")
    shape = kernel_size + mask.shape
    upstream = rng.standard_normal(shape).astype("float32")
    kernel, (d_trainable, d_frozen) = vjp(assembly, [trainable, frozen], upstream, mode)

    expected = np.empty(kernel_size + (flat_mask.size,), "float32")
    expected[..., ~flat_mask] = trainable
    expected[..., flat_mask] = frozen
    flat_upstream = upstream.reshape(kernel_size + (-1,))
    assert kernel.shape == shape
    np.testing.assert_array_equal(kernel, expected.reshape(shape))
    expected_trainable = flat_upstream[..., ~flat_mask]
    expected_frozen = flat_upstream[..., flat_mask]
    np.testing.assert_array_equal(_dense(d_trainable, expected_trainable), expected_trainable)
    np.testing.assert_array_equal(_dense(d_frozen, expected_frozen), expected_frozen)
    parts = assembly.split(kernel)
    np.testing.assert_array_equal(parts[0], trainable)
    np.testing.assert_array_equal(parts[1], frozen)


def test_frozen_part_is_cast_to_the_trainable_dtype_and_back():
    assembly = KernelAssembly(np.array([[False, True, False]]), (1, 1))
    trainable = np.array([[[1.5, 2.5]]], "float16")
    frozen = np.array([[[7.0]]], "float32")
    upstream = np.ones((1, 1, 1, 3), "float16")
    kernel, (d_trainable, d_frozen) = vjp(assembly, [trainable, frozen], upstream)
    assert kernel.dtype == np.float16
    assert kernel.reshape(-1).tolist() == [1.5, 7.0, 2.5]
    assert (d_trainable.dtype, d_frozen.dtype) == (np.float16, np.float32)
    assert (d_trainable.tolist(), d_frozen.tolist()) == ([[[1.0, 1.0]]], [[[1.0]]])


@pytest.mark.tensorflow
def test_the_gather_is_compiled_with_xla():
    """The speed of a converted network rests on it (docs/performance.md)."""
    import tensorflow as tf

    assembly = KernelAssembly(random_frozen_mask(8, 8, 6, seed=0), (3, 3))
    trainable = tf.zeros((3, 3, 58))
    frozen = tf.zeros((3, 3, 6))
    graph = tf.function(lambda: assembly(trainable, frozen)).get_concrete_function().graph
    calls = [op for op in graph.get_operations() if op.type == "StatefulPartitionedCall"
             or op.type == "PartitionedCall"]
    assert calls and all(op.get_attr("_XlaMustCompile") for op in calls)
