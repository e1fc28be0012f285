"""Sparse plans (channelconv.plan) against their definition, in NumPy only.

A plan is correct when running it (each block a dense convolution of the
channels it reads, the outputs put in place by ``output_index``) gives the
full convolution with the frozen-zero kernels at zero: checked with
:func:`harness.numpy_conv` on random kernels for every structure, both
reductions, with the calibrated cost model and with the exact structure
(calls and copies free). The structural tests check the blocks the
benchmark structures get, and that no live kernel is lost or computed twice.
"""

import numpy as np
import pytest

from channelconv import grouped_frozen_mask, plan as plan_module
from channelconv.mask import random_frozen_mask
from channelconv.plan import ConvBlock, DepthwiseBlock, make_plan
from harness import frozen_structures, numpy_conv


STRUCTURES = list(frozen_structures(4, 4))
COSTS = {"calibrated": None, "exact": dict(CALL_COST=0, COPY_COST=0)}


@pytest.fixture(params=list(COSTS))
def costs(request, monkeypatch):
    """The cost model: calibrated, or ``exact`` (calls and copies free)."""
    for name, value in (COSTS[request.param] or {}).items():
        monkeypatch.setattr(plan_module, name, value)
    return request.param


def _run_plan(plan, x, kernel):
    """Executes ``plan`` block by block with NumPy convolutions."""
    flat = kernel.reshape(kernel.shape[:-2] + (-1,))
    flat = np.concatenate([flat, np.zeros(flat.shape[:-1] + (1,))], axis=-1)
    outputs = []
    for block in plan.blocks:
        numbers = block.kernel_numbers(plan.filters)
        k = flat[..., numbers]  # -1 takes the zero column
        if plan.reduction == "sum":
            outputs.append(numpy_conv(x[..., list(block.channels)], k))
        else:
            outputs.append(numpy_conv(x[..., list(block.channels)], k, reduction="concat"))
    spatial = numpy_conv(x[..., :1], kernel[..., :1, :1]).shape[:-1]
    stacked = np.concatenate(outputs + [np.zeros(spatial + (1,))], axis=-1)
    return stacked[..., plan.output_index]  # -1 takes the zero column


@pytest.mark.parametrize("reduction", ["sum", "concat"])
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("shape", [(4, 4), (8, 6), (12, 16)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_running_the_plan_is_the_convolution(costs, shape, structure, reduction):
    zero = frozen_structures(*shape)[structure]
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(3, 2) + shape) * ~zero
    x = rng.normal(size=(2, 5, 6, shape[0]))
    plan = make_plan(zero, (3, 2), reduction)
    np.testing.assert_allclose(
        _run_plan(plan, x, kernel), numpy_conv(x, kernel, reduction=reduction), atol=1e-12
    )


@pytest.mark.parametrize("reduction", ["sum", "concat"])
@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_live_kernel_is_computed_once_and_no_dead_one_is_read(
    costs, structure, reduction
):
    zero = frozen_structures(8, 6)[structure]
    plan = make_plan(zero, (3, 3), reduction)
    numbers = plan.kernel_numbers
    real = numbers[numbers >= 0]
    assert len(set(real.tolist())) == real.size  # no kernel twice
    assert set(np.flatnonzero(~zero.reshape(-1))) <= set(real.tolist())
    read = set(plan.input_index.tolist())
    assert read == set(np.flatnonzero((~zero).any(axis=1)))  # dead channels unread
    placed = np.flatnonzero(plan.output_index >= 0)
    if reduction == "sum":
        assert set(placed) == set(np.flatnonzero((~zero).any(axis=0)))
        filters = [f for b in plan.blocks for f in b.filters]
        assert len(filters) == len(set(filters))  # blocks' filters disjoint
    else:
        assert set(placed) == set(np.flatnonzero(~zero.reshape(-1)))
    assert 0 <= plan.macs_fraction <= 1


def test_exact_structure_blocks(exact_plans):
    """With free calls and copies the blocks are the structure itself."""
    zero = grouped_frozen_mask(8, 8, 4)
    plan = make_plan(zero, (3, 3))
    assert [b.channels for b in plan.blocks] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert plan.macs_fraction == 0.25
    concat = make_plan(zero, (3, 3), "concat")
    assert sum(len(b.channels) * b.width for b in concat.blocks) == (~zero).sum()


@pytest.mark.parametrize(
    "name, zero, blocks, macs, prefer",
    [
        ("4 groups", grouped_frozen_mask(256, 256, 4), 4, 0.25, True),
        ("8 groups", grouped_frozen_mask(256, 256, 8), 8, 0.125, True),
        ("half the input channels",
         np.repeat(np.arange(256) % 2 == 0, 256).reshape(256, 256), 1, 0.5, True),
        ("a quarter of the filters",
         np.tile(np.arange(256) % 4 == 0, (256, 1)), 1, 0.75, True),
        ("10% random", random_frozen_mask(256, 256, 6554, seed=0), 1, 1.0, False),
        ("nothing frozen", np.zeros((256, 256), bool), 1, 1.0, False),
        ("4 groups at 8 channels", grouped_frozen_mask(8, 8, 4), 1, 1.0, False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_calibrated_plans_of_the_benchmark_structures(name, zero, blocks, macs, prefer):
    plan = make_plan(zero, (3, 3))
    assert len(plan.blocks) == blocks
    assert plan.macs_fraction == pytest.approx(macs)
    assert plan.prefer_sparse is prefer
    assert str(plan).count("\n") == blocks


def test_everything_frozen_plan_is_empty():
    for reduction, n_out in (("sum", 5), ("concat", 15)):
        plan = make_plan(np.ones((3, 5), bool), (3,), reduction)
        assert plan.blocks == () and plan.macs_fraction == 0
        assert plan.output_index.tolist() == [-1] * n_out
        assert plan.kernel_numbers.size == 0 and plan.input_index.size == 0


def test_one_live_kernel():
    zero = np.ones((3, 5), bool)
    zero[2, 4] = False
    assert make_plan(zero, (3,)).blocks == (ConvBlock((2,), (4,)),)
    concat = make_plan(zero, (3,), "concat")
    assert concat.blocks == (DepthwiseBlock((2,), ((4,),)),)
    assert concat.output_index.tolist() == [-1] * 14 + [0]


def test_many_distinct_filter_patterns_start_from_components(monkeypatch):
    """Over MAX_START_BLOCKS patterns: components, then chunks; still exact."""
    monkeypatch.setattr(plan_module, "MAX_START_BLOCKS", 4)
    monkeypatch.setattr(plan_module, "CALL_COST", 0)
    zero = np.ones((12, 12), bool)
    for f in range(12):  # two components (channels 0-5, 6-11), 12 patterns
        group = f // 6
        zero[group * 6 + (f % 6), f] = zero[group * 6 + (f + 1) % 6, f] = False
    plan = make_plan(zero, (1,))
    assert len(plan.blocks) == 2
    assert [set(b.channels) for b in plan.blocks] == [set(range(6)), set(range(6, 12))]
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(1, 12, 12)) * ~zero
    x = rng.normal(size=(1, 4, 12))
    np.testing.assert_allclose(_run_plan(plan, x, kernel), numpy_conv(x, kernel), atol=1e-12)
