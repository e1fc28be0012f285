"""Argument normalisation shared by the layers: one place, one error style.

Every helper raises ``TypeError`` for a value of the wrong type and
``ValueError`` for a value of the right type that is out of range, and the
message names the argument, what was expected and what was received.

String options (:func:`choice`) are case-insensitive, as Keras's
``padding`` and ``data_format`` are, and are returned in lower case, the
form the layers store and ``get_config`` writes. A value of another type is
refused, never converted with ``str()``.
"""

import numbers

import numpy as np


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


def boolean(value, name):
    """Returns ``value`` (a Python or NumPy bool) as a Python ``bool``.

    Example:

    >>> boolean(np.True_, "use_bias")
    True
    >>> boolean(1, "use_bias")
    Traceback (most recent call last):
        ...
    TypeError: `use_bias` must be a bool. Received: use_bias=1 of type int.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"`{name}` must be a bool. "
            f"Received: {name}={value!r} of type {type(value).__name__}."
        )
    return bool(value)


def choice(value, allowed, name):
    """Returns ``value``, lower-cased, after checking it is one of ``allowed``.

    ``allowed`` holds lower-case strings; ``value`` matches case-insensitively.

    Example:

    >>> choice("Channels_First", ("channels_last", "channels_first"), "data_format")
    'channels_first'
    >>> choice(1, ("valid", "same"), "padding")
    Traceback (most recent call last):
        ...
    TypeError: `padding` must be one of ['same', 'valid']. Received: padding=1 of type int.
    >>> choice("causal", ("valid", "same"), "padding")
    Traceback (most recent call last):
        ...
    ValueError: `padding` must be one of ['same', 'valid']. Received: padding='causal'.
    """
    expected = f"`{name}` must be one of {sorted(allowed)}."
    if not isinstance(value, str):
        raise TypeError(
            f"{expected} Received: {name}={value!r} of type {type(value).__name__}."
        )
    if value.lower() not in allowed:
        raise ValueError(f"{expected} Received: {name}={value!r}.")
    return value.lower()
