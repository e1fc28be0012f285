"""Argument normalisation shared by the layers: one place, one error style.

Every helper raises ``TypeError`` for a value of the wrong type and
``ValueError`` for a value of the right type that is out of range, and the
message names the argument, what was expected and what was received.
"""

import numbers


def is_int(value):
    """True for Python and NumPy integers, False for ``bool``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value, name):
    """Returns ``value`` as an ``int`` after checking that it is >= 1."""
    if not is_int(value):
        raise TypeError(
            f"`{name}` must be a positive integer. "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    if value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value}."
        )
    return int(value)


def int_tuple(value, rank, name):
    """Returns ``value`` (an int or ``rank`` ints) as a tuple of positive ints."""
    items = (value,) * rank if is_int(value) else value
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(
            f"`{name}` must be an integer or a tuple of {rank} integers. "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        ) from None
    if not all(is_int(v) for v in items):
        raise TypeError(
            f"`{name}` must be an integer or a tuple of {rank} integers. "
            f"Received: {name}={value!r}."
        )
    if len(items) != rank:
        raise ValueError(
            f"`{name}` must be an integer or a tuple of {rank} integers. "
            f"Received: {name}={value!r} with {len(items)} entries."
        )
    if any(v < 1 for v in items):
        raise ValueError(
            f"`{name}` must contain only positive integers. "
            f"Received: {name}={value!r}."
        )
    return tuple(int(v) for v in items)


def choice(value, allowed, name):
    """Returns ``value`` after checking that it is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(
            f"`{name}` must be one of {sorted(allowed)}. "
            f"Received: {name}={value!r}."
        )
    return value
