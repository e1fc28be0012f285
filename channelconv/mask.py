"""The frozen-kernel matrix: parsing, validation and random choice.

A frozen set names the ``(input_channel, filter)`` kernels of a convolution
that never train. It is given to a layer in one of three forms:

- ``None``: nothing is frozen;
- a sequence of ``(input_channel, filter)`` pairs;
- a boolean array of shape ``(in_channels, filters)``, ``True`` = frozen.

:func:`parse_frozen` checks what can be checked before the number of input
channels is known; :func:`resolve_frozen` finishes the check once it is and
returns the boolean matrix.
"""

import numpy as np

from channelconv._validation import is_int, positive_int

_FORMS = (
    "None, a sequence of (input_channel, filter) pairs, or a boolean array "
    "of shape (in_channels, filters)"
)


def parse_frozen(frozen, filters):
    """Validates a frozen set as far as possible without the input.

    Args:
        frozen: ``None``, a sequence of ``(input_channel, filter)`` pairs, or
            a boolean array of shape ``(in_channels, filters)``.
        filters: the layer's number of filters.

    Returns:
        A tuple of ``(channel, filter)`` int pairs, or a read-only boolean
        ``np.ndarray`` of shape ``(in_channels, filters)``.

    Raises:
        TypeError: ``frozen`` is of none of the accepted forms, a pair holds a
            non-integer, or an array is not boolean.
        ValueError: a pair is not of length 2, has a negative entry or a
            filter ``>= filters``, a pair is repeated, or a mask's second
            dimension is not ``filters``.

    Example:

    >>> parse_frozen([(0, 1), (2, 3)], filters=16)
    ((0, 1), (2, 3))
    >>> parse_frozen(np.zeros((3, 16), dtype=bool), filters=16).shape
    (3, 16)
    """
    if frozen is None:
        return ()
    if isinstance(frozen, (str, bytes, dict)) or not hasattr(frozen, "__len__"):
        raise TypeError(
            f"`frozen` must be {_FORMS}. Received: frozen={frozen!r} of type "
            f"{type(frozen).__name__}."
        )
    ragged = not isinstance(frozen, np.ndarray) and _ragged(frozen)
    array = np.asarray(frozen, dtype=object if ragged else None)
    if array.dtype == bool:
        return _parse_mask(array, filters)
    if isinstance(frozen, np.ndarray) and not (
        array.ndim == 2 and array.shape[1] == 2 and np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(
            "`frozen` given as an array must be a boolean mask of shape "
            f"(in_channels, {filters}) or an integer array of pairs of shape "
            f"(n, 2). Received: an array of dtype {array.dtype} and shape "
            f"{array.shape}."
        )
    return _parse_pairs(frozen, filters)


def _ragged(frozen):
    try:
        lengths = {len(item) for item in frozen}
    except TypeError:
        return True
    return len(lengths) > 1


def _parse_mask(mask, filters):
    if mask.ndim != 2 or mask.shape[1] != filters:
        raise ValueError(
            f"`frozen` given as a boolean mask must have shape "
            f"(in_channels, filters={filters}). Received: a mask of shape "
            f"{mask.shape}."
        )
    mask = mask.copy()
    mask.flags.writeable = False
    return mask


def _parse_pairs(frozen, filters):
    pairs = []
    seen = set()
    for item in frozen:
        try:
            pair = tuple(item)
        except TypeError:
            raise TypeError(
                f"`frozen` must be {_FORMS}. Received an entry {item!r} that "
                "is not a pair."
            ) from None
        if len(pair) != 2:
            raise ValueError(
                "Each entry of `frozen` must be an (input_channel, filter) "
                f"pair. Received: {item!r}."
            )
        if not all(is_int(v) for v in pair):
            raise TypeError(
                "Each (input_channel, filter) pair in `frozen` must hold two "
                f"integers. Received: {item!r}."
            )
        channel, filter_ = int(pair[0]), int(pair[1])
        if channel < 0 or filter_ < 0:
            raise ValueError(
                "Indices in `frozen` must be non-negative. Received: "
                f"({channel}, {filter_})."
            )
        if filter_ >= filters:
            raise ValueError(
                f"A pair in `frozen` names filter {filter_}, but the layer has "
                f"filters={filters} (valid filters: 0 to {filters - 1}). "
                f"Received: ({channel}, {filter_})."
            )
        if (channel, filter_) in seen:
            raise ValueError(
                "Each (input_channel, filter) pair may appear in `frozen` only "
                f"once. Received ({channel}, {filter_}) twice."
            )
        seen.add((channel, filter_))
        pairs.append((channel, filter_))
    return tuple(pairs)


def resolve_frozen(parsed, in_channels, filters):
    """Returns the boolean ``(in_channels, filters)`` matrix of a frozen set.

    Args:
        parsed: the result of :func:`parse_frozen`.
        in_channels: the input's channel count.
        filters: the layer's number of filters.

    Raises:
        ValueError: a pair names a channel ``>= in_channels``, or a mask's
            first dimension is not ``in_channels``.

    Example:

    >>> resolve_frozen(((0, 1),), in_channels=2, filters=3).astype(int)
    array([[0, 1, 0],
           [0, 0, 0]])
    """
    if isinstance(parsed, np.ndarray):
        if parsed.shape != (in_channels, filters):
            raise ValueError(
                f"`frozen` is a mask of shape {parsed.shape}, but the input has "
                f"{in_channels} channels, so it must have shape "
                f"({in_channels}, {filters})."
            )
        return parsed
    mask = np.zeros((in_channels, filters), dtype=bool)
    for channel, filter_ in parsed:
        if channel >= in_channels:
            raise ValueError(
                f"A pair in `frozen` names input channel {channel}, but the "
                f"input has {in_channels} channels (valid channels: 0 to "
                f"{in_channels - 1}). Received: ({channel}, {filter_})."
            )
        mask[channel, filter_] = True
    mask.flags.writeable = False
    return mask


def frozen_to_config(parsed):
    """Returns the JSON-friendly form of a parsed frozen set.

    A mask becomes a nested list of booleans (its shape pins the channel
    count), pairs become a list of ``[channel, filter]`` lists. Both are
    accepted by :func:`parse_frozen`.

    Example:

    >>> frozen_to_config(((0, 1),))
    [[0, 1]]
    """
    if isinstance(parsed, np.ndarray):
        return parsed.tolist()
    return [list(pair) for pair in parsed]


def random_frozen_mask(in_channels, filters, count, seed=None):
    """Chooses ``count`` of the ``in_channels * filters`` kernels at random.

    Args:
        in_channels: number of input channels.
        filters: number of filters.
        count: how many kernels to freeze, from 0 to ``in_channels * filters``.
        seed: ``None`` for a fresh choice, or an int for a reproducible one.

    Returns:
        A boolean ``np.ndarray`` of shape ``(in_channels, filters)`` with
        exactly ``count`` entries ``True``; pass it as ``frozen=``.

    Raises:
        TypeError: an argument is not an integer (``seed`` may be ``None``).
        ValueError: ``in_channels`` or ``filters`` is not positive, or
            ``count`` is outside ``[0, in_channels * filters]``.

    Example:

    >>> mask = random_frozen_mask(3, 16, 5, seed=0)
    >>> mask.shape, int(mask.sum())
    ((3, 16), 5)
    >>> bool((mask == random_frozen_mask(3, 16, 5, seed=0)).all())
    True
    """
    in_channels = positive_int(in_channels, "in_channels")
    filters = positive_int(filters, "filters")
    total = in_channels * filters
    if not is_int(count):
        raise TypeError(
            f"`count` must be an integer. Received: count={count!r} of type "
            f"{type(count).__name__}."
        )
    if not 0 <= count <= total:
        raise ValueError(
            f"`count` must be between 0 and in_channels * filters = {total}. "
            f"Received: count={count}."
        )
    if seed is not None and not is_int(seed):
        raise TypeError(
            f"`seed` must be None or an integer. Received: seed={seed!r}."
        )
    chosen = np.random.default_rng(seed).choice(total, size=count, replace=False)
    mask = np.zeros(total, dtype=bool)
    mask[chosen] = True
    return mask.reshape(in_channels, filters)
