"""LastAxisTake (channelconv._take) against NumPy: values and exact gradients.

The gradient of ``y = concat(parts)[..., index]`` (``-1``: zero) is, for
each source entry, the sum of the incoming gradient over the positions that
took it: computed here with ``np.add.at``, independently of the inverse
gathers the class uses. Eagerly on every backend, in ``tf.function``
(TensorFlow) and compiled with XLA (TensorFlow's ``jit_compile``,
``jax.jit``; PyTorch has none).
"""

import keras
import numpy as np
import pytest

from channelconv._take import LastAxisTake
from harness import BACKEND, to_numpy, vjp

CASES = {
    "permutation": ([3, 0, 2, 1], (4,)),
    "identity": ([0, 1, 2, 3], (4,)),
    "identity-two_parts": ([0, 1, 2, 3, 4], (3, 2)),
    "zeros_and_omissions": ([2, -1, 0, -1], (4,)),
    "repeats": ([1, 1, 0, 1, -1, 2], (3,)),
    "two_parts-repeats": ([4, 0, 3, 4, -1, 1], (2, 3)),
    "empty_part": ([1, 0], (2, 0)),
    "all_zero": ([-1, -1, -1], (2,)),
    "nothing_taken": ([], (3,)),
}


def _reference(parts, index, upstream):
    values = np.concatenate(parts, axis=-1)
    padded = np.concatenate([values, np.zeros(values.shape[:-1] + (1,))], axis=-1)
    index_array = np.array(index, dtype=np.int64)
    y = padded[..., np.where(index_array < 0, values.shape[-1], index_array)]
    grad = np.zeros_like(values)
    for position, source in enumerate(index):
        if source >= 0:
            grad[..., source] += upstream[..., position]
    starts = np.cumsum([0] + [p.shape[-1] for p in parts])
    return y, [grad[..., a:b] for a, b in zip(starts[:-1], starts[1:])]


MODES = [
    pytest.param("eager"),
    pytest.param("function", marks=pytest.mark.tensorflow),
    pytest.param("xla", marks=pytest.mark.skipif(BACKEND == "torch",
                                                 reason="PyTorch has no XLA mode")),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_match_numpy(name, mode):
    index, sizes = CASES[name]
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(2, 3, size)).astype("float32") for size in sizes]
    upstream = rng.normal(size=(2, 3, len(index))).astype("float32")
    take = LastAxisTake(index, sizes)
    y, grads = vjp(take, parts, upstream, mode)
    expected_y, expected_grads = _reference(parts, index, upstream)
    np.testing.assert_array_equal(y, expected_y)
    for grad, expected in zip(grads, expected_grads):
        got = np.zeros_like(expected) if grad is None else grad
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert take.identity == (index == list(range(sum(sizes))))


def test_casts_later_parts_to_the_first_dtype():
    take = LastAxisTake([1, 0], (1, 1))
    y = take(np.array([[1.5]], "float16"), np.array([[2.5]], "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert to_numpy(y).tolist() == [[2.5, 1.5]]


@pytest.mark.parametrize(
    "index, sizes, pattern",
    [([0, 3], (3,), r"in \[-1, 3\)\. Received: min 0, max 3"),
     ([-2], (3,), r"in \[-1, 3\)\. Received: min -2, max -2")],
)
def test_bad_index(index, sizes, pattern):
    with pytest.raises(ValueError, match=pattern):
        LastAxisTake(index, sizes)


def test_wrong_number_of_parts():
    with pytest.raises(ValueError, match=r"Expected 2 tensors\. Received: 1\."):
        LastAxisTake([0], (1, 1))(np.zeros((1, 1), "float32"))



@pytest.mark.tensorflow
def test_layers_of_many_shapes_log_no_retracing_warning():
    """Each signature of the shared XLA take is traced once, by design: eager
    calls of layers of many shapes (``channelconv reproduce``, ``prune-demo``)
    must not make TensorFlow warn about frequent retracing."""
    import logging

    from channelconv import ChannelConv1D, ChannelConv2D, ChannelConv3D, grouped_frozen_mask

    messages = []

    class Capture(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Capture(level=logging.WARNING)
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        rng = np.random.default_rng(0)
        for channels, filters in [(3, 4), (5, 6), (4, 8), (6, 3), (7, 5), (8, 8)]:
            for layer_class, spatial in [(ChannelConv1D, (9,)), (ChannelConv2D, (7, 6)),
                                         (ChannelConv3D, (5, 4, 4))]:
                frozen = rng.random((channels, filters)) < 0.3
                layer = layer_class(filters, 3, frozen=frozen, reduction="sum")
                x = rng.normal(size=(2, *spatial, channels)).astype("float32")
                vjp(lambda x, layer=layer: layer(x), [x],
                    rng.normal(size=(2, *(s - 2 for s in spatial), filters)).astype("float32"))
        sparse = ChannelConv2D(8, 1, frozen=grouped_frozen_mask(8, 8, 2), implementation="sparse")
        sparse(np.ones((1, 3, 3, 8), "float32"))
    finally:
        logger.removeHandler(handler)
    assert not [m for m in messages if "retracing" in m]
