"""The frozen set: its accepted forms, ``random_frozen_mask`` and
``grouped_frozen_mask``."""

import json

import keras
import numpy as np
import pytest

import channelconv
from channelconv.mask import (
    frozen_to_config,
    parse_frozen,
    random_frozen_mask,
    resolve_frozen,
)
from harness import CONVS, LAYERS, layer_input, to_numpy

RANKS = tuple(sorted(LAYERS))
RANK_IDS = [f"{rank}d" for rank in RANKS]

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


# Every form through a layer, the layer classes in turn (each parses with
# the same function, so each form needs one; each class gets several).
FORMS_BY_RANK = [
    pytest.param(RANKS[i % len(RANKS)], *form.values, id=f"{RANKS[i % len(RANKS)]}d-{form.id}")
    for i, form in enumerate(FORMS)
]


@pytest.mark.parametrize("rank, frozen, pairs", FORMS_BY_RANK)
def test_forms_resolve_to_the_same_mask(rank, frozen, pairs):
    expected = _expected(pairs)
    resolved = resolve_frozen(parse_frozen(frozen, FILTERS), IN_CHANNELS, FILTERS)
    assert resolved.dtype == bool
    np.testing.assert_array_equal(resolved, expected)
    layer = LAYERS[rank](FILTERS, 1, frozen=frozen)
    layer.build((None,) + (4,) * rank + (IN_CHANNELS,))
    np.testing.assert_array_equal(layer.frozen_mask, expected)
    assert layer.frozen_kernels is None  # zeros by construction: stored nowhere
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


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_layer_keeps_its_own_copy_of_the_mask(rank):
    mask = _expected(PAIRS)
    layer = LAYERS[rank](FILTERS, 1, frozen=mask)
    mask[:] = True  # the caller's array changes afterwards
    layer.build((None,) + (4,) * rank + (IN_CHANNELS,))
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


# --- grouped_frozen_mask ------------------------------------------------------

# (in_channels, filters, groups); groups=1 freezes nothing, groups=in_channels
# leaves each input channel its own filters (a depthwise convolution).
GROUPED = [
    pytest.param(4, 6, 1, id="4x6-groups1"),
    pytest.param(1, 3, 1, id="1x3-groups1"),
    pytest.param(4, 6, 2, id="4x6-groups2"),
    pytest.param(6, 3, 3, id="6x3-groups3"),
    pytest.param(6, 4, 2, id="6x4-groups2"),
    pytest.param(8, 12, 4, id="8x12-groups4"),
    pytest.param(4, 4, 4, id="4x4-groups4-depthwise"),
    pytest.param(3, 6, 3, id="3x6-groups3-depthwise-multiplier2"),
    pytest.param(12, 6, 6, id="12x6-groups6"),
]


def _documented_live(in_channels, filters, groups):
    """Live kernels from Keras's documented group order, one loop per group.

    Keras's ``Conv*D`` docstring: "the number of groups in which the input
    is split along the channel axis. Each group is convolved separately with
    ``filters // groups`` filters. The output is the concatenation of all
    the ``groups`` results along the channel axis": group ``g`` holds the
    ``g``-th run of consecutive input channels and of consecutive filters.
    """
    live = np.zeros((in_channels, filters), dtype=bool)
    per_group = in_channels // groups, filters // groups
    for group in range(groups):
        channels = range(group * per_group[0], (group + 1) * per_group[0])
        filters_ = range(group * per_group[1], (group + 1) * per_group[1])
        for channel in channels:
            for filter_ in filters_:
                live[channel, filter_] = True
    return live


def _probed_live(in_channels, filters, groups):
    """Live kernels of Keras's own ``Conv2D(filters, 1, groups=groups)``.

    With every kernel weight one and no bias, a one-hot input on channel
    ``c`` reaches output ``f`` (as exactly 1) iff kernel ``(c, f)`` exists.
    """
    conv = keras.layers.Conv2D(
        filters, 1, groups=groups, use_bias=False, kernel_initializer="ones"
    )
    probes = np.eye(in_channels, dtype="float32").reshape(in_channels, 1, 1, in_channels)
    reached = to_numpy(conv(probes)).reshape(in_channels, filters)
    assert set(np.unique(reached)) <= {0.0, 1.0}
    return reached == 1.0


@pytest.mark.parametrize("in_channels, filters, groups", GROUPED)
def test_grouped_frozen_mask_freezes_what_keras_groups_cut(in_channels, filters, groups):
    mask = channelconv.grouped_frozen_mask(in_channels, filters, groups)
    assert isinstance(mask, np.ndarray) and mask.dtype == bool
    assert mask.shape == (in_channels, filters)
    live = _probed_live(in_channels, filters, groups)
    np.testing.assert_array_equal(live, _documented_live(in_channels, filters, groups))
    np.testing.assert_array_equal(mask, ~live)
    # Each filter sees in_channels / groups channels; each channel feeds
    # filters / groups filters; groups=1 freezes nothing.
    np.testing.assert_array_equal((~mask).sum(axis=0), in_channels // groups)
    np.testing.assert_array_equal((~mask).sum(axis=1), filters // groups)
    assert mask.any() == (groups > 1)


@pytest.mark.parametrize(
    "in_channels, filters, groups",
    [(5, 10, 5), (16, 32, 8), (9, 3, 3), (2, 2, 2)],
    ids=["5x10-groups5", "16x32-groups8", "9x3-groups3", "2x2-groups2"],
)
def test_grouped_frozen_mask_follows_the_documented_order(in_channels, filters, groups):
    np.testing.assert_array_equal(
        channelconv.grouped_frozen_mask(in_channels, filters, groups),
        ~_documented_live(in_channels, filters, groups),
    )


def test_grouped_frozen_mask_takes_numpy_integers():
    np.testing.assert_array_equal(
        channelconv.grouped_frozen_mask(np.int64(4), np.int32(6), np.int64(2)),
        channelconv.grouped_frozen_mask(4, 6, 2),
    )


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_grouped_mask_layer_is_the_grouped_keras_conv(rank):
    """A ``"sum"`` layer frozen at zero on the mask computes Keras's grouped conv."""
    in_channels, filters, groups = 4, 6, 2
    layer = LAYERS[rank](
        filters,
        2,
        frozen=channelconv.grouped_frozen_mask(in_channels, filters, groups),
        bias_initializer=keras.initializers.RandomNormal(seed=1),
    )
    x = layer_input("channels_last", (5,) * rank, in_channels)
    y = to_numpy(layer(x))
    kernel = to_numpy(layer.kernel)
    grouped = CONVS[rank](filters, 2, groups=groups)
    grouped.build(x.shape)
    # Keras's grouped kernel is (*kernel_size, in_channels / groups, filters):
    # filter f holds the kernels of the channels of its group, f // 3.
    channels_per_group, filters_per_group = in_channels // groups, filters // groups
    columns = []
    for filter_ in range(filters):
        first = filter_ // filters_per_group * channels_per_group
        columns.append(kernel[..., first : first + channels_per_group, filter_])
    grouped.set_weights([np.stack(columns, axis=-1), to_numpy(layer.bias)])
    np.testing.assert_allclose(y, to_numpy(grouped(x)), rtol=1e-5, atol=1e-5)


GROUPED_ERRORS = [
    pytest.param(
        dict(in_channels=6, filters=4, groups=4),
        ValueError,
        r"`groups` must divide both in_channels and filters\. "
        r"Received: groups=4 with in_channels=6 and filters=4\.",
        id="not-dividing-in_channels",
    ),
    pytest.param(
        dict(in_channels=4, filters=6, groups=4),
        ValueError,
        r"`groups` must divide both in_channels and filters\. "
        r"Received: groups=4 with in_channels=4 and filters=6\.",
        id="not-dividing-filters",
    ),
    pytest.param(
        dict(in_channels=5, filters=7, groups=3),
        ValueError,
        r"Received: groups=3 with in_channels=5 and filters=7\.",
        id="dividing-neither",
    ),
    pytest.param(
        dict(in_channels=2, filters=4, groups=4),
        ValueError,
        r"Received: groups=4 with in_channels=2 and filters=4\.",
        id="more-groups-than-channels",
    ),
    pytest.param(
        dict(groups=0),
        ValueError,
        r"`groups` must be a positive integer\. Received: groups=0",
        id="groups-zero",
    ),
    pytest.param(
        dict(groups=-2),
        ValueError,
        r"`groups` must be a positive integer\. Received: groups=-2",
        id="groups-negative",
    ),
    pytest.param(
        dict(groups=np.int64(0)),
        ValueError,
        r"`groups` must be a positive integer\. Received: groups=0",
        id="groups-numpy-zero",
    ),
    pytest.param(
        dict(groups=2.0),
        TypeError,
        r"`groups` must be a positive integer\. Received: groups=2\.0 of type float",
        id="groups-float",
    ),
    pytest.param(
        dict(groups=True),
        TypeError,
        r"`groups` must be a positive integer\. Received: groups=True of type bool",
        id="groups-bool",
    ),
    pytest.param(
        dict(groups="2"),
        TypeError,
        r"`groups` must be a positive integer\. Received: groups='2' of type str",
        id="groups-str",
    ),
    pytest.param(
        dict(groups=None),
        TypeError,
        r"`groups` must be a positive integer\. Received: groups=None of type NoneType",
        id="groups-none",
    ),
    pytest.param(
        dict(in_channels=0),
        ValueError,
        r"`in_channels` must be a positive integer\. Received: in_channels=0",
        id="in_channels-zero",
    ),
    pytest.param(
        dict(filters=6.0),
        TypeError,
        r"`filters` must be a positive integer\. Received: filters=6\.0 of type float",
        id="filters-float",
    ),
]


@pytest.mark.parametrize("kwargs, error, pattern", GROUPED_ERRORS)
def test_grouped_frozen_mask_bad_arguments(kwargs, error, pattern):
    kwargs = dict(dict(in_channels=4, filters=6, groups=2), **kwargs)
    with pytest.raises(error, match=pattern):
        channelconv.grouped_frozen_mask(**kwargs)
