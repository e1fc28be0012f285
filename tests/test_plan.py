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
COSTS = {"calibrated": plan_module.CALIBRATED, "exact": plan_module.EXACT}


@pytest.fixture(params=list(COSTS))
def costs(request):
    """The cost model: calibrated, or ``exact`` (calls and copies free)."""
    return COSTS[request.param]


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
    plan = make_plan(zero, (3, 2), reduction, cost_model=costs)
    assert plan.cost_model is costs
    np.testing.assert_allclose(
        _run_plan(plan, x, kernel), numpy_conv(x, kernel, reduction=reduction), atol=1e-12
    )


@pytest.mark.parametrize("reduction", ["sum", "concat"])
@pytest.mark.parametrize("structure", STRUCTURES)
def test_every_live_kernel_is_computed_once_and_no_dead_one_is_read(
    costs, structure, reduction
):
    zero = frozen_structures(8, 6)[structure]
    plan = make_plan(zero, (3, 3), reduction, cost_model=costs)
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


def test_exact_structure_blocks():
    """With free calls and copies the blocks are the structure itself."""
    zero = grouped_frozen_mask(8, 8, 4)
    plan = make_plan(zero, (3, 3), cost_model=plan_module.EXACT)
    assert [b.channels for b in plan.blocks] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert plan.macs_fraction == 0.25
    concat = make_plan(zero, (3, 3), "concat", cost_model=plan_module.EXACT)
    assert sum(len(b.channels) * b.width for b in concat.blocks) == (~zero).sum()
    # The calibrated model (the default) merges them at this size.
    assert len(make_plan(zero, (3, 3)).blocks) == 1


def test_cost_model_scope_and_what_a_plan_keeps():
    """``using_cost_model`` sets the default inside its block only, nested too;
    layers built there keep the plan (and model) they were built with."""
    from harness import LAYERS

    zero = grouped_frozen_mask(8, 8, 4)
    exact, calibrated = plan_module.EXACT, plan_module.CALIBRATED
    assert make_plan(zero, (3,)).cost_model is calibrated
    with plan_module.using_cost_model(exact):
        assert make_plan(zero, (3,)).cost_model is exact
        assert make_plan(zero, (3,), cost_model=calibrated).cost_model is calibrated
        with plan_module.using_cost_model(calibrated):
            assert make_plan(zero, (3,)).cost_model is calibrated
        inside = LAYERS[1](8, 3, frozen=zero, implementation="sparse")
        inside.build((None, 10, 8))
    assert make_plan(zero, (3,)).cost_model is calibrated
    assert inside.plan.cost_model is exact and len(inside.plan.blocks) == 4
    outside = LAYERS[1](8, 3, frozen=zero, implementation="sparse")
    outside.build((None, 10, 8))
    assert outside.plan.cost_model is calibrated and len(outside.plan.blocks) == 1
    with pytest.raises(TypeError, match=r"`cost_model` must be a channelconv\.plan\."
                       r"CostModel or None\. Received: cost_model=\{\} of type dict\."):
        make_plan(zero, (3,), cost_model={})
    with pytest.raises(TypeError, match=r"Received: cost_model=None of type NoneType\."):
        with plan_module.using_cost_model(None):
            pass


@pytest.mark.parametrize("ratio, prefer", [(0.45, False), (0.5, True)])
def test_auto_ratio_decides_prefer_sparse(ratio, prefer):
    """Dense costs 9*4*4 = 144, the plan two blocks of 9*2*2: at most the
    ratio (here 0.5) prefers sparse."""
    zero = grouped_frozen_mask(4, 4, 2)
    model = plan_module.CostModel(call=0, copy=0, auto_ratio=ratio)
    plan = make_plan(zero, (3, 3), cost_model=model)
    assert (plan.cost, plan.dense_cost) == (72, 144)
    assert plan.prefer_sparse is prefer


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


def _components_structure():
    """Two components (channels 0-7, 8-15): every 3 of a component's channels
    feed one filter, 2 * C(8, 3) = 112 distinct filter patterns."""
    import itertools

    triples = list(itertools.combinations(range(8), 3))
    zero = np.ones((16, 2 * len(triples)), bool)
    for component in range(2):
        for i, triple in enumerate(triples):
            zero[[8 * component + c for c in triple], component * len(triples) + i] = False
    return zero


@pytest.mark.parametrize(
    "name, zero, channel_sets",
    [
        # Over MAX_START_BLOCKS (64) patterns, the two components start as
        # two blocks (the exact model never merges distinct patterns, so one
        # block per pattern would stay 112).
        ("components", _components_structure(), [set(range(8)), set(range(8, 16))]),
        # 130 components (a diagonal): chunks of neighbouring ones, 64 blocks.
        ("chunks", ~np.eye(130, dtype=bool),
         [set(np.flatnonzero(np.arange(130) * 64 // 130 == g).tolist()) for g in range(64)]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_many_distinct_filter_patterns_start_from_components(name, zero, channel_sets):
    """Over MAX_START_BLOCKS patterns: components, then chunks; still exact."""
    assert len(np.unique(~zero, axis=1).T) > plan_module.MAX_START_BLOCKS
    plan = make_plan(zero, (1,), cost_model=plan_module.EXACT)
    assert [set(b.channels) for b in plan.blocks] == channel_sets
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(1,) + zero.shape) * ~zero
    x = rng.normal(size=(1, 4, zero.shape[0]))
    np.testing.assert_allclose(_run_plan(plan, x, kernel), numpy_conv(x, kernel), atol=1e-12)
