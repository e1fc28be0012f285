"""The frozen set: its accepted forms and ``random_frozen_mask``."""

import json

import numpy as np
import pytest

from channelconv.layers.channel_conv2d import ChannelConv2D
from channelconv.mask import (
    frozen_to_config,
    parse_frozen,
    random_frozen_mask,
    resolve_frozen,
)

IN_CHANNELS, FILTERS = 3, 4
PAIRS = [(0, 1), (2, 3), (1, 0)]


def _mask(shape, pairs):
    mask = np.zeros(shape, dtype=bool)
    for channel, filter_ in pairs:
        mask[channel, filter_] = True
    return mask


def _expected(pairs):
    return _mask((IN_CHANNELS, FILTERS), pairs)


FORMS = [
    pytest.param(None, [], id="none"),
    pytest.param([], [], id="empty-list"),
    pytest.param(PAIRS, PAIRS, id="list-of-tuples"),
    pytest.param(tuple(map(list, PAIRS)), PAIRS, id="tuple-of-lists"),
    pytest.param(np.array(PAIRS), PAIRS, id="int-array-of-pairs"),
    pytest.param([(np.int64(0), np.int32(1))], [(0, 1)], id="numpy-int-pair"),
    pytest.param(_expected(PAIRS), PAIRS, id="bool-mask"),
    pytest.param(_expected(PAIRS).tolist(), PAIRS, id="nested-bool-list"),
    pytest.param(
        [[np.bool_(v) for v in row] for row in _expected(PAIRS).tolist()],
        PAIRS,
        id="nested-numpy-bool-list",
    ),
    # The compact form get_config writes, derived by hand: 4 filters fill the
    # high nibble of one byte, filter 0 in the most significant bit.
    pytest.param(
        {"shape": [3, 4], "rows": ["40", "80", "10"]}, PAIRS, id="config-hex-rows"
    ),
    pytest.param(
        {"shape": (3, 4), "rows": ("40", "80", "10")}, PAIRS, id="config-tuples"
    ),
    pytest.param(
        {"shape": [np.int64(3), 4], "rows": ["00", "00", "00"]}, [], id="config-empty"
    ),
    pytest.param(
        {"shape": [3, 4], "rows": ["F0", "f0", "F0"]},
        [(c, f) for c in range(IN_CHANNELS) for f in range(FILTERS)],
        id="config-upper-case-hex",
    ),
    pytest.param(
        np.ones((IN_CHANNELS, FILTERS), bool),
        [(c, f) for c in range(IN_CHANNELS) for f in range(FILTERS)],
        id="all-true-mask",
    ),
]


@pytest.mark.parametrize("frozen, pairs", FORMS)
def test_forms_resolve_to_the_same_mask(frozen, pairs):
    expected = _expected(pairs)
    resolved = resolve_frozen(parse_frozen(frozen, FILTERS), IN_CHANNELS, FILTERS)
    assert resolved.dtype == bool
    np.testing.assert_array_equal(resolved, expected)
    layer = ChannelConv2D(FILTERS, 1, frozen=frozen)
    layer.build((None, 4, 4, IN_CHANNELS))
    np.testing.assert_array_equal(layer.frozen_mask, expected)
    assert layer.frozen_kernels.shape[-1] == len(pairs)
    assert layer.trainable_kernels.shape[-1] == IN_CHANNELS * FILTERS - len(pairs)


@pytest.mark.parametrize("frozen, pairs", FORMS)
def test_config_form_round_trips(frozen, pairs):
    parsed = parse_frozen(frozen, FILTERS)
    again = parse_frozen(frozen_to_config(parsed), FILTERS)
    np.testing.assert_array_equal(
        resolve_frozen(again, IN_CHANNELS, FILTERS), _expected(pairs)
    )


# Expected configs derived by hand: each row is the mask row read as bits,
# filter 0 first (most significant), padded with zeros to whole bytes.
CONFIGS = [
    pytest.param((), [], id="nothing-given"),
    pytest.param(((0, 1), (2, 3)), [[0, 1], [2, 3]], id="pairs-stay-pairs"),
    pytest.param(
        _mask((3, 16), [(0, f) for f in range(5)]),
        {"shape": [3, 16], "rows": ["f800", "0000", "0000"]},
        id="question-mask",
    ),
    pytest.param(
        _mask((2, 9), [(0, 8), (1, 0), (1, 7)]),
        {"shape": [2, 9], "rows": ["0080", "8100"]},
        id="9-filters-two-bytes",
    ),
    pytest.param(
        _mask((1, 1), [(0, 0)]), {"shape": [1, 1], "rows": ["80"]}, id="1x1"
    ),
    pytest.param(
        np.ones((2, 12), dtype=bool),
        {"shape": [2, 12], "rows": ["fff0", "fff0"]},
        id="all-frozen-12",
    ),
]


@pytest.mark.parametrize("parsed, expected", CONFIGS)
def test_frozen_to_config_is_compact_and_readable(parsed, expected):
    config = frozen_to_config(parsed)
    assert config == expected
    assert json.loads(json.dumps(config)) == expected
    filters = 16 if not isinstance(parsed, np.ndarray) else parsed.shape[1]
    again = parse_frozen(json.loads(json.dumps(config)), filters)
    if isinstance(parsed, np.ndarray):
        np.testing.assert_array_equal(again, parsed)
    else:
        assert again == parsed


def test_layer_keeps_its_own_copy_of_the_mask():
    mask = _expected(PAIRS)
    layer = ChannelConv2D(FILTERS, 1, frozen=mask)
    mask[:] = True  # the caller's array changes afterwards
    layer.build((None, 4, 4, IN_CHANNELS))
    np.testing.assert_array_equal(layer.frozen_mask, _expected(PAIRS))
    assert not layer.frozen_mask.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        layer.frozen_mask[0, 0] = True


@pytest.mark.parametrize(
    "in_channels, filters, count",
    [(3, 16, 5), (1, 1, 0), (1, 1, 1), (2, 3, 6), (16, 16, 25)],
    ids=["question", "single-none", "single-all", "all", "16x16"],
)
def test_random_frozen_mask_shape_and_count(in_channels, filters, count):
    mask = random_frozen_mask(in_channels, filters, count, seed=0)
    assert isinstance(mask, np.ndarray)
    assert mask.dtype == bool
    assert mask.shape == (in_channels, filters)
    assert int(mask.sum()) == count


def test_random_frozen_mask_is_reproducible_with_a_seed():
    first = random_frozen_mask(3, 16, 5, seed=42)
    np.testing.assert_array_equal(first, random_frozen_mask(3, 16, 5, seed=42))
    np.testing.assert_array_equal(
        first, random_frozen_mask(np.int64(3), np.int32(16), np.int64(5), np.int64(42))
    )
    others = [random_frozen_mask(3, 16, 5, seed=s) for s in range(1, 6)]
    assert any(not np.array_equal(first, other) for other in others)


def test_random_frozen_mask_covers_every_kernel():
    """Over seeds, every one of the 48 kernels gets chosen: no position is excluded."""
    seen = np.zeros((3, 16), dtype=bool)
    for seed in range(60):
        seen |= random_frozen_mask(3, 16, 5, seed=seed)
    assert seen.all()


def test_random_frozen_mask_unseeded():
    masks = [random_frozen_mask(3, 16, 5) for _ in range(5)]
    assert all(int(m.sum()) == 5 for m in masks)
    assert any(not np.array_equal(masks[0], m) for m in masks[1:])
