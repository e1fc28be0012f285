"""Bad input: each case raises ValueError/TypeError naming the argument,
what was expected and what was received.

The layer tables run for every rank (ChannelConv1D, ChannelConv2D,
ChannelConv3D): an error the 2-D layer raises, the 1-D and 3-D layers raise
with the same kind and message. A row whose arguments or message depend on
the rank gives them as functions of the rank; a row that only applies to
some ranks (``padding="causal"``) names them. The constructor's table has
one row per argument (the wiring); the helpers' rules are
``tests/test_validation.py``'s, and the frozen set's refused forms run once,
through the function every layer parses them with (:data:`FROZEN`).
"""

import re

import keras
import numpy as np
import pytest

from channelconv.mask import grouped_frozen_mask, parse_frozen, random_frozen_mask
from harness import BACKEND, CONVS, LAYERS, layer_input, to_numpy

RANKS = tuple(sorted(LAYERS))
RANK_IDS = [f"{rank}d" for rank in RANKS]

# The padding choices the messages list, by rank: as Keras's Conv1D, only
# the 1-D layer has "causal".
PADDING_CHOICES = {
    1: r"\['causal', 'same', 'valid'\]",
    2: r"\['same', 'valid'\]",
    3: r"\['same', 'valid'\]",
}


def _case(case_id, kwargs, error, pattern, ranks=RANKS):
    """A row of a table; ``kwargs`` and ``pattern`` may be functions of the rank."""
    return case_id, kwargs, error, pattern, ranks


def _grid(table):
    """The rows of ``table`` for each rank they apply to, ids ``1d-...``."""
    return [
        pytest.param(
            rank,
            kwargs(rank) if callable(kwargs) else kwargs,
            error,
            pattern(rank) if callable(pattern) else pattern,
            id=f"{rank}d-{case_id}",
        )
        for rank in RANKS
        for case_id, kwargs, error, pattern, ranks in table
        if rank in ranks
    ]


def _shown(value):
    """``value`` as the messages print it, as a regular expression."""
    return re.escape(repr(value))


def _ends_with(rank, last, fill):
    """A tuple of ``rank`` entries: ``fill`` then ``last``."""
    return (fill,) * (rank - 1) + (last,)


def _tuple_expected(name, rank):
    """The expectation the messages state for ``name`` at ``rank``."""
    return rf"`{name}` must be an integer or a tuple of {rank} integers\. "


def _wrong_length(name, value, delta):
    """A row giving ``name`` ``rank + delta`` entries of ``value``."""
    return _case(
        f"{name}-{'too-long' if delta > 0 else 'too-short'}",
        lambda rank: {name: (value,) * (rank + delta)},
        ValueError,
        lambda rank: _tuple_expected(name, rank)
        + rf"Received: {name}={_shown((value,) * (rank + delta))} "
        rf"with {rank + delta} entries",
    )


# One row per argument, for every layer class: each passes its argument,
# its name and (for tuples and paddings) its rank to the helper that checks
# it. What the helpers accept and refuse, with every message:
# tests/test_validation.py; the frozen set's forms, refused: FROZEN below.
CONSTRUCTION = [
    _case(
        "filters-zero",
        dict(filters=0),
        ValueError,
        r"`filters` must be a positive integer\. Received: filters=0",
    ),
    _wrong_length("kernel_size", 3, +1),
    _wrong_length("strides", 1, -1),
    _case(
        "dilation_rate-zero-entry",
        lambda rank: dict(dilation_rate=_ends_with(rank, 0, 1)),
        ValueError,
        lambda rank: r"`dilation_rate` must contain only positive integers\. "
        rf"Received: dilation_rate={_shown(_ends_with(rank, 0, 1))}",
    ),
    _case(
        "strides-and-dilation",
        lambda rank: dict(
            strides=_ends_with(rank, 2, 1), dilation_rate=(2,) + (1,) * (rank - 1)
        ),
        ValueError,
        lambda rank: r"`strides > 1` is not supported together with "
        r"`dilation_rate > 1`\. "
        rf"Received: strides={_shown(_ends_with(rank, 2, 1))} and "
        rf"dilation_rate={_shown((2,) + (1,) * (rank - 1))}",
    ),
    # Causal padding looks back only, but the rule is the same (Conv1D's too).
    _case(
        "causal-strides-and-dilation",
        dict(padding="causal", strides=2, dilation_rate=2),
        ValueError,
        r"`strides > 1` is not supported together with `dilation_rate > 1`\. "
        r"Received: strides=\(2,\) and dilation_rate=\(2,\)",
        ranks=(1,),
    ),
    _case(
        "reduction-unknown",
        dict(reduction="mean"),
        ValueError,
        r"`reduction` must be one of \['concat', 'sum'\]\. Received: reduction='mean'",
    ),
    _case(
        "implementation-unknown",
        dict(implementation="loop"),
        ValueError,
        r"`implementation` must be one of \['auto', 'fused', 'per_channel', 'sparse'\]\. "
        r"Received: implementation='loop'",
    ),
    _case(
        "padding-unknown",
        dict(padding="full"),
        ValueError,
        lambda rank: rf"`padding` must be one of {PADDING_CHOICES[rank]}\. "
        r"Received: padding='full'",
    ),
    # Only 1-D convolutions have causal padding, as in Keras.
    _case(
        "padding-causal",
        dict(padding="causal"),
        ValueError,
        r"`padding` must be one of \['same', 'valid'\]\. Received: padding='causal'",
        ranks=(2, 3),
    ),
    _case(
        "data_format-not-str",
        dict(data_format=0),
        TypeError,
        r"`data_format` must be one of \['channels_first', 'channels_last'\]\. "
        r"Received: data_format=0 of type int",
    ),
    _case(
        "prunable-not-bool",
        dict(prunable=1),
        TypeError,
        r"`prunable` must be a bool\. Received: prunable=1 of type int",
    ),
    _case(
        "use_bias-int",
        dict(use_bias=1),
        TypeError,
        r"`use_bias` must be a bool\. Received: use_bias=1 of type int",
    ),
    # The frozen set is parsed by one function for every layer class (its
    # refused forms: FROZEN, below).
    _case(
        "frozen-str",
        dict(frozen="all"),
        TypeError,
        r"`frozen` must be None, a sequence of \(input_channel, filter\) pairs, or a "
        r"boolean array of shape \(in_channels, filters\)\. "
        r"Received: frozen='all' of type str",
    ),
]


# The frozen set's refused forms, checked once, where every layer class parses
# it (channelconv.mask.parse_frozen, with the layer's filters: 16 unless the
# row says): the layers' wiring is CONSTRUCTION's "frozen-str" row.
FROZEN = [
    # frozen, checkable without the input
    _case(
        "frozen-filter-out-of-range",
        dict(frozen=[(0, 1), (2, 16)]),
        ValueError,
        r"A pair in `frozen` names filter 16, but the layer has filters=16 "
        r"\(valid filters: 0 to 15\)\. Received: \(2, 16\)",
    ),
    _case(
        "frozen-negative-channel",
        dict(frozen=[(-1, 0)]),
        ValueError,
        r"Indices in `frozen` must be non-negative\. Received: \(-1, 0\)",
    ),
    _case(
        "frozen-negative-filter",
        dict(frozen=[(0, -2)]),
        ValueError,
        r"Indices in `frozen` must be non-negative\. Received: \(0, -2\)",
    ),
    _case(
        "frozen-duplicate-pair",
        dict(frozen=[(0, 1), (2, 3), (0, 1)]),
        ValueError,
        r"Each \(input_channel, filter\) pair may appear in `frozen` only once\. "
        r"Received \(0, 1\) twice",
    ),
    _case(
        "frozen-triple",
        dict(frozen=[(0, 1, 2)]),
        ValueError,
        r"Each entry of `frozen` must be an \(input_channel, filter\) pair\. "
        r"Received: \(0, 1, 2\)",
    ),
    _case(
        "frozen-float-index",
        dict(frozen=[(0, 1.0)]),
        TypeError,
        r"Each \(input_channel, filter\) pair in `frozen` must hold two integers\. "
        r"Received: \(0, 1\.0\)",
    ),
    _case(
        "frozen-entry-not-pair",
        dict(frozen=[(0, 1), 3]),
        TypeError,
        r"Received an entry 3 that is not a pair",
    ),
    _case(
        "frozen-str",
        dict(frozen="all"),
        TypeError,
        r"`frozen` must be None, a sequence of \(input_channel, filter\) pairs, or a "
        r"boolean array of shape \(in_channels, filters\)\. "
        r"Received: frozen='all' of type str",
    ),
    _case("frozen-int", dict(frozen=5), TypeError, r"Received: frozen=5 of type int"),
    _case(
        "frozen-mask-wrong-filters",
        dict(frozen=np.zeros((3, 15), dtype=bool)),
        ValueError,
        r"`frozen` given as a boolean mask must have shape \(in_channels, "
        r"filters=16\)\. Received: a mask of shape \(3, 15\)",
    ),
    _case(
        "frozen-mask-1d",
        dict(frozen=np.zeros(16, dtype=bool)),
        ValueError,
        r"must have shape \(in_channels, filters=16\)\. "
        r"Received: a mask of shape \(16,\)",
    ),
    _case(
        "frozen-mask-no-rows",
        dict(frozen=np.zeros((0, 16), dtype=bool)),
        ValueError,
        r"`frozen` given as a boolean mask must have a row per input channel, at "
        r"least one\. Received: a mask of shape \(0, 16\)",
    ),
    _case(
        "frozen-mask-float",
        dict(frozen=np.zeros((3, 16))),
        TypeError,
        r"`frozen` given as an array must be a boolean mask of shape "
        r"\(in_channels, 16\).*"
        r"Received: an array of dtype float64 and shape \(3, 16\)",
    ),
    _case(
        "frozen-mask-int",
        dict(frozen=np.ones((3, 16), dtype=np.int64)),
        TypeError,
        r"must be a boolean mask.*Received: an array of dtype int64 and shape \(3, 16\)",
    ),
    _case(
        "frozen-list-of-rows-not-bool",
        dict(frozen=[[0] * 16, [1] * 16]),
        TypeError,
        r"`frozen` given as nested lists of rows of length filters=16 is a mask, "
        r"and a mask must hold booleans \(True = frozen\)\. "
        r"Received: row 0 = \[0, 0,.*\] holding int",
    ),
    _case(
        "frozen-list-of-float-rows",
        dict(frozen=[[0.0] * 16] * 3),
        TypeError,
        r"a mask must hold booleans \(True = frozen\)\. "
        r"Received: row 0 = \[0\.0, 0\.0,.*\] holding float",
    ),
    _case(
        "frozen-ragged-bool-mask",
        dict(frozen=[[True, False], [True]]),
        ValueError,
        r"`frozen` given as nested lists of booleans is a mask, and its rows must "
        r"all have length filters=16\. Received: rows of lengths \[2, 1\]",
    ),
    _case(
        "frozen-ragged-bool-mask-right-first-row",
        dict(frozen=[[False] * 16, [True] * 15]),
        ValueError,
        r"its rows must all have length filters=16\. "
        r"Received: rows of lengths \[16, 15\]",
    ),
    _case(
        "frozen-bool-mask-with-non-row",
        dict(frozen=[[False] * 16, True]),
        ValueError,
        r"its rows must all have length filters=16\. "
        r"Received: rows of lengths \[16, True \(not a row\)\]",
    ),
    _case(
        "frozen-bool-mask-mixed-with-ints",
        dict(frozen=[[True] + [0] * 15] * 3),
        TypeError,
        r"a mask must hold booleans \(True = frozen\)\. "
        r"Received: row 0 = \[True, 0,.*\] holding int",
    ),
    _case(
        "frozen-list-of-0d-arrays",
        dict(frozen=[np.array(0), np.array(1)]),
        TypeError,
        r"Received an entry array\(0\) that is not a pair",
    ),
    _case(
        "frozen-nested-list-3d",
        dict(frozen=np.zeros((3, 16, 1), dtype=bool).tolist()),
        ValueError,
        r"must have shape \(in_channels, filters=16\)\. "
        r"Received: a mask of shape \(3, 16, 1\)",
    ),
    _case(
        "frozen-mask-3d",
        dict(frozen=np.zeros((3, 16, 1), dtype=bool)),
        ValueError,
        r"must have shape \(in_channels, filters=16\)\. "
        r"Received: a mask of shape \(3, 16, 1\)",
    ),
    _case(
        "frozen-mask-0d",
        dict(frozen=np.array(True)),
        ValueError,
        r"must have shape \(in_channels, filters=16\)\. "
        r"Received: a mask of shape \(\)",
    ),
    _case(
        "frozen-int-array-0d",
        dict(frozen=np.array(3)),
        TypeError,
        r"must be a boolean mask.*Received: an array of dtype int64 and shape \(\)",
    ),
    # frozen in the compact form get_config writes
    _case(
        "frozen-config-unknown-key",
        dict(frozen={"shape": [3, 16], "rows": ["0000"] * 3, "count": 0}),
        ValueError,
        r"`frozen` given as a dict must be the form get_config writes, with exactly "
        r"the keys \['rows', 'shape'\]\. Received: keys \['count', 'rows', 'shape'\]",
    ),
    _case(
        "frozen-config-missing-rows",
        dict(frozen={"shape": [3, 16]}),
        ValueError,
        r"with exactly the keys \['rows', 'shape'\]\. Received: keys \['shape'\]",
    ),
    _case(
        "frozen-config-shape-not-list",
        dict(frozen={"shape": "3x16", "rows": ["0000"] * 3}),
        TypeError,
        r"`frozen\['shape'\]` must be a list of two positive integers "
        r"\[in_channels, filters\]\. Received: '3x16' of type str",
    ),
    _case(
        "frozen-config-shape-float",
        dict(frozen={"shape": [3.0, 16], "rows": ["0000"] * 3}),
        TypeError,
        r"`frozen\['shape'\]` must be a list of two positive integers "
        r"\[in_channels, filters\]\. Received: \[3\.0, 16\]",
    ),
    _case(
        "frozen-config-shape-three-entries",
        dict(frozen={"shape": [3, 16, 1], "rows": ["0000"] * 3}),
        ValueError,
        r"`frozen\['shape'\]` must be a list of two positive integers "
        r"\[in_channels, filters\]\. Received: \[3, 16, 1\]",
    ),
    _case(
        "frozen-config-shape-zero-channels",
        dict(frozen={"shape": [0, 16], "rows": []}),
        ValueError,
        r"`frozen\['shape'\]` must be a list of two positive integers "
        r"\[in_channels, filters\]\. Received: \[0, 16\]",
    ),
    _case(
        "frozen-config-shape-wrong-filters",
        dict(frozen={"shape": [3, 8], "rows": ["00"] * 3}),
        ValueError,
        r"`frozen\['shape'\]` must be \[in_channels, filters=16\]\. "
        r"Received: \[3, 8\]",
    ),
    _case(
        "frozen-config-rows-str",
        dict(frozen={"shape": [1, 16], "rows": "0000"}),
        TypeError,
        r"`frozen\['rows'\]` must be a list of hex strings, one per input channel\. "
        r"Received: '0000' of type str",
    ),
    _case(
        "frozen-config-row-not-str",
        dict(frozen={"shape": [2, 16], "rows": ["0000", 0]}),
        TypeError,
        r"`frozen\['rows'\]` must be a list of hex strings, one per input channel\. "
        r"Received: row 1 = 0 of type int",
    ),
    _case(
        "frozen-config-wrong-row-count",
        dict(frozen={"shape": [3, 16], "rows": ["0000"] * 2}),
        ValueError,
        r"`frozen\['rows'\]` must hold one row per input channel, 3 for "
        r"shape \[3, 16\]\. Received: 2 rows",
    ),
    _case(
        "frozen-config-hex-too-short",
        dict(frozen={"shape": [2, 16], "rows": ["0000", "f8"]}),
        ValueError,
        r"Each row of `frozen\['rows'\]` must be 4 hex digits for filters=16 "
        r"\(filter 0 is the most significant bit of the first digit\)\. "
        r"Received: row 1 = 'f8'",
    ),
    _case(
        "frozen-config-not-hex",
        dict(frozen={"shape": [1, 16], "rows": ["f8zz"]}),
        ValueError,
        r"must be 4 hex digits.*Received: row 0 = 'f8zz'",
    ),
    _case(
        "frozen-config-hex-with-space",
        dict(frozen={"shape": [1, 16], "rows": ["f8 0"]}),
        ValueError,
        r"must be 4 hex digits.*Received: row 0 = 'f8 0'",
    ),
    _case(
        "frozen-config-blank-row",
        dict(frozen={"shape": [1, 4], "rows": ["  "]}, filters=4),
        ValueError,
        r"must be 2 hex digits for filters=4 .*Received: row 0 = '  '",
    ),
    _case(
        "frozen-config-non-ascii-digit",
        dict(frozen={"shape": [1, 4], "rows": ["\u06630"]}, filters=4),
        ValueError,
        r"must be 2 hex digits for filters=4 .*Received: row 0 = '\u06630'",
    ),
    _case(
        "frozen-config-bits-past-filters",
        dict(frozen={"shape": [1, 15], "rows": ["0001"]}, filters=15),
        ValueError,
        r"Row 0 of `frozen\['rows'\]` sets bits past filter 14 \(filters=15\)\. "
        r"Received: '0001'",
    ),
]


@pytest.mark.parametrize("rank, kwargs, error, pattern", _grid(CONSTRUCTION))
def test_bad_constructor_argument(rank, kwargs, error, pattern):
    kwargs = dict(dict(filters=16, kernel_size=3), **kwargs)
    with pytest.raises(error, match=pattern):
        LAYERS[rank](**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [pytest.param(kwargs, error, pattern, id=case_id)
     for case_id, kwargs, error, pattern, _ in FROZEN],
)
def test_bad_frozen_set(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        parse_frozen(kwargs["frozen"], kwargs.get("filters", 16))


def _expects_refusal(rank, padding, strides, dilation_rate):
    """Keras's rules: causal padding is 1-D only; no strides with dilation."""
    return (padding == "causal" and rank != 1) or (strides > 1 and dilation_rate > 1)


@pytest.mark.parametrize(
    "padding, strides, dilation_rate",
    [
        pytest.param(padding, strides, dilation, id=f"{padding}-s{strides}-d{dilation}")
        for padding, strides, dilation in [
            ("causal", 1, 1),
            ("causal", 2, 1),
            ("causal", 1, 2),
            ("causal", 2, 2),
            ("same", 2, 2),
            ("valid", 1, 3),
        ]
    ],
)
@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_padding_and_strides_rules_are_keras_rules(rank, padding, strides, dilation_rate):
    """Refused exactly where the Keras convolution of the rank refuses it.

    Where both accept, both give the same output shape.
    """
    kwargs = dict(padding=padding, strides=strides, dilation_rate=dilation_rate)
    refused = _expects_refusal(rank, padding, strides, dilation_rate)
    input_shape = (2,) + (9,) * rank + (3,)
    if refused:
        with pytest.raises(ValueError):
            CONVS[rank](4, 3, **kwargs)
        with pytest.raises(ValueError, match=r"`(padding|strides > 1)`"):
            LAYERS[rank](4, 3, **kwargs)
        return
    layer = LAYERS[rank](4, 3, **kwargs)
    assert layer.padding == padding
    keras_shape = CONVS[rank](4, 3, **kwargs).compute_output_shape(input_shape)
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(keras_shape)


def _channels_last_input(rank, size=8, channels=3):
    return np.zeros((1,) + (size,) * rank + (channels,), "float32")


BUILD = [
    _case(
        "frozen-channel-out-of-range",
        dict(frozen=[(0, 0), (3, 5)]),
        ValueError,
        r"A pair in `frozen` names input channel 3, but the input has 3 channels "
        r"\(valid channels: 0 to 2\)\. Received: \(3, 5\)",
    ),
    _case(
        "frozen-channel-out-of-range-channels_first",
        dict(frozen=[(8, 0)], data_format="channels_first"),
        ValueError,
        r"names input channel 8, but the input has 8 channels",
    ),
    _case(
        "frozen-mask-wrong-channels",
        dict(frozen=np.zeros((4, 16), dtype=bool)),
        ValueError,
        r"`frozen` is a mask of shape \(4, 16\), but the input has 3 channels, so it "
        r"must have shape \(3, 16\)",
    ),
]


@pytest.mark.parametrize("rank, kwargs, error, pattern", _grid(BUILD))
def test_bad_frozen_set_for_the_input(rank, kwargs, error, pattern):
    layer = LAYERS[rank](16, 3, **kwargs)
    # Constructed fine: the channel count is only known at build time.
    if layer.data_format == "channels_last":
        x = layer_input(layer, (8,) * rank, channels=3, batch=1)
    else:
        x = layer_input(layer, (6,) * rank, channels=8, batch=1)
    with pytest.raises(error, match=pattern):
        layer(x)
    assert not layer.built


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_bad_frozen_mask_from_config(rank):
    layer = LAYERS[rank](4, 3, frozen=[(1, 2)])
    layer.build((None,) + (6,) * rank + (2,))
    clone = LAYERS[rank].from_config(layer.get_config())
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`frozen` is a mask of shape (2, 4), but the input has 3 channels"
        ),
    ):
        clone.build((None,) + (6,) * rank + (3,))


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_unknown_channel_dimension(rank):
    layer = LAYERS[rank](4, 3)
    shape = (None,) + (8,) * rank + (None,)
    with pytest.raises(
        ValueError,
        match=r"The channel dimension of the input must be known, but it is None "
        r"\(data_format='channels_last'\)\. Received input_shape=" + _shown(shape),
    ):
        layer(keras.Input(shape=shape[1:]))


# For each rank, an input one dimension short and one two dimensions over:
# a batch of images is the second for ChannelConv1D, the first for ChannelConv3D.
WRONG_INPUT_RANK = [
    pytest.param(rank, shape, id=f"{rank}d-rank{len(shape)}")
    for rank in RANKS
    for shape in (
        (2,) + (8,) * (rank - 1) + (3,),
        (2,) + (4,) * (rank + 1) + (3,),
    )
]


@pytest.mark.parametrize("rank, shape", WRONG_INPUT_RANK)
def test_wrong_input_rank(rank, shape):
    layer = LAYERS[rank](4, 3)
    name = LAYERS[rank].__name__
    spatial = "1 spatial dimension" if rank == 1 else f"{rank} spatial dimensions"
    with pytest.raises(
        ValueError,
        match=rf"{name} expects inputs of rank {rank + 2} \(batch, {spatial}, "
        r"channels\)\. Received input_shape=" + _shown(shape),
    ):
        layer(np.zeros(shape, "float32"))
    assert not layer.built


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_second_call_with_different_channel_count(rank):
    layer = LAYERS[rank](4, 3, frozen=[(2, 1)])
    layer(_channels_last_input(rank, size=6, channels=3))
    shape = (1,) + (6,) * rank + (4,)
    with pytest.raises(
        ValueError,
        match=r"expected axis -1 of input shape to have value 3, but received input "
        r"with shape " + _shown(shape),
    ):
        layer(np.zeros(shape, "float32"))


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_input_too_small_for_the_kernel(rank):
    layer = LAYERS[rank](4, 3, dilation_rate=2)
    shape = (1, 3) + (8,) * (rank - 1) + (3,)
    with pytest.raises(
        ValueError,
        match=r"The input is too small for the kernel: an output dimension would be "
        r"-1\. Received input_shape=" + _shown(shape),
    ):
        layer(np.zeros(shape, "float32"))


# On PyTorch a layer is a torch.nn.Module, whose __getattr__ replaces the
# AttributeError a property raises with "object has no attribute": the
# layer's own message is lost (a library issue, not the test's).
MESSAGE_LOST_ON_TORCH = pytest.mark.xfail(
    BACKEND == "torch", strict=True, raises=AssertionError,
    reason="torch.nn.Module.__getattr__ replaces the property's AttributeError message",
)


@MESSAGE_LOST_ON_TORCH
@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_frozen_mask_and_kernel_before_build(rank):
    layer = LAYERS[rank](4, 3)
    with pytest.raises(AttributeError, match="must be built before `frozen_mask`"):
        layer.frozen_mask
    with pytest.raises(AttributeError, match="must be built before `kernel`"):
        layer.kernel


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_assign_kernel_errors(rank):
    layer = LAYERS[rank](4, 3)
    kernel_shape = (3,) * rank + (3, 4)
    with pytest.raises(
        ValueError, match="Build the layer before calling `assign_kernel`"
    ):
        layer.assign_kernel(np.zeros(kernel_shape))
    layer.build((None,) + (6,) * rank + (3,))
    # Channels and filters swapped, and the kernel of a layer one rank up.
    for wrong in ((3,) * rank + (4, 3), (3,) * (rank + 1) + (3, 4)):
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"`kernel` must have shape {kernel_shape}. Received: shape {wrong}"
            ),
        ):
            layer.assign_kernel(np.zeros(wrong))


# --- The sparse implementation refuses non-zero frozen kernels --------------

REFUSAL = (
    r"Layer '{}': {} gives {} of its {} frozen kernels non-zero values: \(input channel, "
    r"filter\) {}{}\. This layer keeps its frozen kernels at zero by construction "
    r"\(store_frozen=False\).*Build it with store_frozen=True"
)
SPARSE_FROZEN = [(0, 1), (1, 3), (2, 0), (2, 2)]


def _sparse_layer(rank, implementation="sparse", **kwargs):
    """A built 3 -> 4 layer with SPARSE_FROZEN frozen, a plan of several blocks."""
    layer = LAYERS[rank](4, 2, frozen=SPARSE_FROZEN, implementation=implementation,
                         name="conv", **kwargs)
    layer.build((None,) + (5,) * rank + (3,))
    return layer


def _nonzero_frozen_kernel(layer, value=1.0):
    kernel = np.random.default_rng(0).normal(size=layer.kernel.shape).astype("float32")
    kernel[..., layer.frozen_mask] = 0.0
    kernel[..., 0, 1] = value  # kernel (0, 1), the first frozen one
    return kernel


@pytest.mark.parametrize("implementation", ["sparse", "auto"])
@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_sparse_refuses_a_nonzero_frozen_initializer(rank, implementation):
    if implementation == "auto":  # stores the frozen kernels and runs fused
        layer = _sparse_layer(rank, "auto", frozen_initializer="ones")
        assert layer.store_frozen and layer.implementation_in_use == "fused"
        return
    with pytest.raises(ValueError, match=(
            r"implementation='sparse' skips the frozen kernels, so they must be zeros by "
            r"construction .* Received: implementation='sparse', store_frozen=True, "
            r"frozen_initializer=Ones\.")):
        _sparse_layer(rank, frozen_initializer="ones")


@pytest.mark.parametrize("source", ["assign_kernel", "set_weights", "load_weights"])
@pytest.mark.parametrize("implementation", ["fused", "sparse"])
@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_zero_frozen_kernels_refuse_nonzero_values_and_keep_the_weights(
    rank, implementation, source, tmp_path, exact_plans
):
    """Each rank's wiring; every way in and every implementation: test_integrity."""
    layer = _sparse_layer(rank, implementation)
    if implementation == "sparse":
        assert layer.implementation_in_use == "sparse" and len(layer.plan.blocks) > 1
    before = [w.copy() for w in layer.get_weights()]
    kernel = _nonzero_frozen_kernel(layer)
    names = {"assign_kernel": "`assign_kernel`", "set_weights": "`set_weights`",
             "load_weights": "loading"}
    pattern = REFUSAL.format("conv", names[source], 1, 4, re.escape("(0, 1)"), "")
    donor = _sparse_layer(rank, "fused", store_frozen=True)
    donor.assign_kernel(kernel)
    with pytest.raises(ValueError, match=pattern):
        if source == "assign_kernel":
            layer.assign_kernel(kernel)
        elif source == "set_weights":
            layer.set_weights(donor.get_weights())
        else:
            path = str(tmp_path / "donor.weights.h5")
            shape = keras.Input((5,) * rank + (3,))
            keras.Sequential([shape, donor]).save_weights(path)
            keras.Sequential([shape, layer]).load_weights(path)
    for got, want in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(got, want)
    # Zero frozen kernels are accepted the same ways.
    kernel[..., 0, 1] = 0.0
    layer.assign_kernel(kernel)
    np.testing.assert_array_equal(to_numpy(layer.kernel), kernel)


@pytest.mark.parametrize("rank", RANKS, ids=RANK_IDS)
def test_loading_a_keras_file_with_nonzero_frozen_kernels_into_zeros(rank, tmp_path):
    """A .keras file whose config says zeros but whose weights hold non-zero frozen kernels."""
    import zipfile

    donor = _sparse_layer(rank, "fused", store_frozen=True)
    donor.assign_kernel(_nonzero_frozen_kernel(donor))
    stored_path, zero_path = tmp_path / "stored.keras", tmp_path / "zero.keras"
    keras.Sequential([keras.Input((5,) * rank + (3,)), donor]).save(stored_path)
    with zipfile.ZipFile(stored_path) as source, zipfile.ZipFile(zero_path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                data = data.replace(b'"store_frozen": true', b'"store_frozen": false')
                assert b'"store_frozen": false' in data
            target.writestr(item, data)
    pattern = REFUSAL.format("conv", "loading", 1, 4, re.escape("(0, 1)"), "")
    with pytest.raises(ValueError, match=pattern):
        keras.saving.load_model(zero_path)
    assert keras.saving.load_model(stored_path).layers[0].implementation_in_use == "fused"


def test_auto_runs_sparse_only_with_frozen_kernels_zero_by_construction():
    layer = _sparse_layer(2, "auto", frozen_initializer="ones")
    assert layer.implementation_in_use == "fused"
    layer.assign_kernel(_nonzero_frozen_kernel(layer, value=2.0))  # stored: accepted
    big = LAYERS[2](64, 3, frozen=grouped_frozen_mask(64, 64, 4), implementation="auto",
                    name="big")
    big.build((None, 8, 8, 64))
    assert big.implementation_in_use == "sparse" and len(big.plan.blocks) == 4
    kernel = _nonzero_frozen_kernel(big)
    with pytest.raises(ValueError, match=REFUSAL.format(
            "big", "`assign_kernel`", 1, 3072, re.escape("(0, 16)"), "")):
        kernel[..., 0, 16] = 1.0
        big.assign_kernel(kernel)


RANDOM_MASK = [
    pytest.param(
        dict(in_channels=0),
        ValueError,
        r"`in_channels` must be a positive integer\. Received: in_channels=0",
        id="in_channels-zero",
    ),
    pytest.param(
        dict(in_channels=3.0),
        TypeError,
        r"`in_channels` must be a positive integer\. Received: in_channels=3\.0 "
        r"of type float",
        id="in_channels-float",
    ),
    pytest.param(
        dict(filters=-1),
        ValueError,
        r"`filters` must be a positive integer\. Received: filters=-1",
        id="filters-negative",
    ),
    pytest.param(
        dict(filters="16"),
        TypeError,
        r"`filters` must be a positive integer\. Received: filters='16'",
        id="filters-str",
    ),
    pytest.param(
        dict(count=49),
        ValueError,
        r"`count` must be between 0 and in_channels \* filters = 48\. "
        r"Received: count=49",
        id="count-too-large",
    ),
    pytest.param(
        dict(count=-1),
        ValueError,
        r"`count` must be between 0 and in_channels \* filters = 48\. "
        r"Received: count=-1",
        id="count-negative",
    ),
    pytest.param(
        dict(count=2.5),
        TypeError,
        r"`count` must be an integer\. Received: count=2\.5 of type float",
        id="count-float",
    ),
    pytest.param(
        dict(count=True),
        TypeError,
        r"`count` must be an integer\. Received: count=True of type bool",
        id="count-bool",
    ),
    pytest.param(
        dict(seed="0"),
        TypeError,
        r"`seed` must be None or a non-negative integer\. "
        r"Received: seed='0' of type str",
        id="seed-str",
    ),
    pytest.param(
        dict(seed=1.0),
        TypeError,
        r"`seed` must be None or a non-negative integer\. "
        r"Received: seed=1\.0 of type float",
        id="seed-float",
    ),
    pytest.param(
        dict(seed=True),
        TypeError,
        r"`seed` must be None or a non-negative integer\. "
        r"Received: seed=True of type bool",
        id="seed-bool",
    ),
    pytest.param(
        dict(seed=-1),
        ValueError,
        r"`seed` must be None or a non-negative integer\. Received: seed=-1\.",
        id="seed-negative",
    ),
    pytest.param(
        dict(seed=np.int64(-5)),
        ValueError,
        r"`seed` must be None or a non-negative integer\. Received: seed=-5\.",
        id="seed-numpy-negative",
    ),
]


@pytest.mark.parametrize("kwargs, error, pattern", RANDOM_MASK)
def test_random_frozen_mask_bad_arguments(kwargs, error, pattern):
    kwargs = dict(dict(in_channels=3, filters=16, count=5, seed=0), **kwargs)
    with pytest.raises(error, match=pattern):
        random_frozen_mask(**kwargs)


def test_the_base_layer_has_no_rank():
    from channelconv.layers import BaseChannelConv

    with pytest.raises(TypeError, match=r"BaseChannelConv has no rank: use ChannelConv1D.*"
                                        r"Received: rank=None\."):
        BaseChannelConv(4, 3)
