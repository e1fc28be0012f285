"""The argument helpers (channelconv._validation), each once, table-driven.

Each helper's accepted inputs with what it returns, and its refused inputs
with the exception class and the whole message pinned: ``TypeError`` for a
value of the wrong type, ``ValueError`` for a value of the right type out of
range, the message naming the argument, what was expected and what was
received. The entry points that call the helpers (each layer class, the
conversions, the pruning schedules) prove their wiring with one row per
argument (``tests/test_errors.py``, ``test_convert.py``, ``test_pruning.py``),
not with these tables again.
"""

import re

import numpy as np
import pytest

from channelconv import _validation as check


def _exactly(message):
    """A ``pytest.raises(match=...)`` pattern for the whole of ``message``."""
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, True), (-3, True), (np.int64(5), True), (np.uint8(1), True),
        (True, False), (np.True_, False), (1.0, False), ("1", False), (None, False),
        (np.array(1), False),
    ],
    ids=repr,
)
def test_is_int(value, expected):
    assert check.is_int(value) is expected


@pytest.mark.parametrize("value", [1, 16, np.int32(3), np.int64(2**40)], ids=repr)
def test_positive_int_accepts(value):
    result = check.positive_int(value, "filters")
    assert result == value and type(result) is int


@pytest.mark.parametrize(
    "value, error, message",
    [
        (0, ValueError, "`filters` must be a positive integer. Received: filters=0."),
        (-3, ValueError, "`filters` must be a positive integer. Received: filters=-3."),
        (np.int64(-1), ValueError,
         "`filters` must be a positive integer. Received: filters=-1."),
        (2.5, TypeError,
         "`filters` must be a positive integer. Received: filters=2.5 of type float."),
        (4.0, TypeError,
         "`filters` must be a positive integer. Received: filters=4.0 of type float."),
        ("16", TypeError,
         "`filters` must be a positive integer. Received: filters='16' of type str."),
        (True, TypeError,
         "`filters` must be a positive integer. Received: filters=True of type bool."),
        (None, TypeError,
         "`filters` must be a positive integer. Received: filters=None of type NoneType."),
    ],
    ids=repr,
)
def test_positive_int_refuses(value, error, message):
    with pytest.raises(error, match=_exactly(message)):
        check.positive_int(value, "filters")


@pytest.mark.parametrize(
    "value, rank, expected",
    [
        (3, 1, (3,)),
        (3, 2, (3, 3)),
        (np.int64(2), 3, (2, 2, 2)),
        ((1, 2), 2, (1, 2)),
        ([4, 5, 6], 3, (4, 5, 6)),
        (np.array([2, 3]), 2, (2, 3)),
        ((np.int32(1),), 1, (1,)),
    ],
    ids=repr,
)
def test_int_tuple_accepts(value, rank, expected):
    result = check.int_tuple(value, rank, "kernel_size")
    assert result == expected
    assert all(type(v) is int for v in result)


def _tuple_message(rank, received):
    return f"`kernel_size` must be an integer or a tuple of {rank} integers. Received: {received}"


@pytest.mark.parametrize(
    "value, rank, error, message",
    [
        # not an int, not iterable
        (3.0, 2, TypeError, _tuple_message(2, "kernel_size=3.0 of type float.")),
        (None, 1, TypeError, _tuple_message(1, "kernel_size=None of type NoneType.")),
        (True, 2, TypeError, _tuple_message(2, "kernel_size=True of type bool.")),
        # iterable with an entry that is not an int (a str is iterable too)
        ("3", 1, TypeError, _tuple_message(1, "kernel_size='3'.")),
        ((3, "3"), 2, TypeError, _tuple_message(2, "kernel_size=(3, '3').")),
        ((1, 2.0), 2, TypeError, _tuple_message(2, "kernel_size=(1, 2.0).")),
        ((1, True), 2, TypeError, _tuple_message(2, "kernel_size=(1, True).")),
        # as many entries as the rank
        ((3, 3, 3), 2, ValueError, _tuple_message(2, "kernel_size=(3, 3, 3) with 3 entries.")),
        ((3,), 3, ValueError, _tuple_message(3, "kernel_size=(3,) with 1 entries.")),
        ((), 1, ValueError, _tuple_message(1, "kernel_size=() with 0 entries.")),
        # positive
        (0, 2, ValueError,
         "`kernel_size` must contain only positive integers. Received: kernel_size=0."),
        ((3, -1), 2, ValueError,
         "`kernel_size` must contain only positive integers. Received: kernel_size=(3, -1)."),
    ],
    ids=repr,
)
def test_int_tuple_refuses(value, rank, error, message):
    with pytest.raises(error, match=_exactly(message)):
        check.int_tuple(value, rank, "kernel_size")


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_], ids=repr)
def test_boolean_accepts(value):
    result = check.boolean(value, "use_bias")
    assert result == bool(value) and type(result) is bool


@pytest.mark.parametrize(
    "value, message",
    [
        (1, "`use_bias` must be a bool. Received: use_bias=1 of type int."),
        (0, "`use_bias` must be a bool. Received: use_bias=0 of type int."),
        ("yes", "`use_bias` must be a bool. Received: use_bias='yes' of type str."),
        (None, "`use_bias` must be a bool. Received: use_bias=None of type NoneType."),
        (np.array([True]),
         "`use_bias` must be a bool. Received: use_bias=array([ True]) of type ndarray."),
    ],
    ids=repr,
)
def test_boolean_refuses(value, message):
    with pytest.raises(TypeError, match=_exactly(message)):
        check.boolean(value, "use_bias")


PADDINGS = ("valid", "same", "causal")


@pytest.mark.parametrize(
    "value, expected",
    [("valid", "valid"), ("SAME", "same"), ("Causal", "causal")],
    ids=repr,
)
def test_choice_accepts_any_case_and_returns_lower_case(value, expected):
    assert check.choice(value, PADDINGS, "padding") == expected


@pytest.mark.parametrize(
    "value, allowed, error, message",
    [
        ("full", PADDINGS, ValueError,
         "`padding` must be one of ['causal', 'same', 'valid']. Received: padding='full'."),
        ("Full", PADDINGS, ValueError,
         "`padding` must be one of ['causal', 'same', 'valid']. Received: padding='Full'."),
        # a choice of one caller is refused by another that does not list it
        ("causal", ("valid", "same"), ValueError,
         "`padding` must be one of ['same', 'valid']. Received: padding='causal'."),
        ("", PADDINGS, ValueError,
         "`padding` must be one of ['causal', 'same', 'valid']. Received: padding=''."),
        # never converted with str()
        (1, PADDINGS, TypeError,
         "`padding` must be one of ['causal', 'same', 'valid']. "
         "Received: padding=1 of type int."),
        (b"same", PADDINGS, TypeError,
         "`padding` must be one of ['causal', 'same', 'valid']. "
         "Received: padding=b'same' of type bytes."),
        (None, PADDINGS, TypeError,
         "`padding` must be one of ['causal', 'same', 'valid']. "
         "Received: padding=None of type NoneType."),
    ],
    ids=repr,
)
def test_choice_refuses(value, allowed, error, message):
    with pytest.raises(error, match=_exactly(message)):
        check.choice(value, allowed, "padding")
