"""The frozen-kernel matrix: parsing, validation, config form, random and grouped sets.

A frozen set names the ``(input_channel, filter)`` kernels of a convolution
that never train. It is given to a layer in one of four forms:

- ``None``: nothing is frozen;
- a sequence of ``(input_channel, filter)`` pairs;
- a boolean array of shape ``(in_channels, filters)``, ``True`` = frozen
  (a NumPy array or nested lists of booleans);
- the compact form :func:`frozen_to_config` writes into a layer's config,
  ``{"shape": [in_channels, filters], "rows": [hex, ...]}``.

:func:`parse_frozen` checks what can be checked before the number of input
channels is known; :func:`resolve_frozen` finishes the check once it is and
returns the boolean matrix.
"""

import math
import os

import numpy as np

from channelconv._validation import is_int, positive_int

#: The most kernels (``in_channels * filters``) a layer can have: the index
#: arrays that assemble its kernel hold kernel numbers ``c * filters + f``
#: as int32.
MAX_KERNELS = 2**31 - 1
#: A lower bound of the bytes per kernel that building a layer allocates for
#: its mask and index arrays (int64 positions, slots and gathers; measured
#: peak about 3 times more).
BUILD_BYTES_PER_KERNEL = 64

_FORMS = (
    "None, a sequence of (input_channel, filter) pairs, or a boolean array "
    "of shape (in_channels, filters)"
)
_CONFIG_KEYS = ("rows", "shape")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def parse_frozen(frozen, filters):
    """Validates a frozen set as far as possible without the input.

    A sequence whose entries are rows of booleans is a mask; otherwise its
    entries are pairs. A sequence of rows of length ``filters`` that are not
    booleans (e.g. ``[[0, 1, 0], [1, 0, 0]]``) is refused, not read as a 0/1
    mask: convert it with ``np.asarray(rows, dtype=bool)``. With
    ``filters=2`` a row of two integers is a pair.

    Args:
        frozen: ``None``; a sequence of ``(input_channel, filter)`` pairs; a
            boolean array (or nested lists of booleans) of shape
            ``(in_channels, filters)``; or the dict
            ``{"shape": [in_channels, filters], "rows": [hex, ...]}`` that
            :func:`frozen_to_config` writes.
        filters: the layer's number of filters.

    Returns:
        A tuple of ``(channel, filter)`` int pairs, or a read-only boolean
        ``np.ndarray`` of shape ``(in_channels, filters)``.

    Raises:
        TypeError: ``frozen`` is of none of the accepted forms, a pair holds a
            non-integer, an array or nested-list mask is not boolean, or a
            field of the dict form has the wrong type.
        ValueError: a pair is not of length 2, has a negative entry or a
            filter ``>= filters``, or is repeated; a mask is not 2-D, its
            rows differ in length, or its second dimension is not
            ``filters``; the dict form has other keys than ``"shape"`` and
            ``"rows"``, a shape that is not ``[in_channels, filters]``, a row
            count other than ``in_channels``, a row that is not
            ``2 * ceil(filters / 8)`` hex digits, or bits set past the last
            filter.

    Example:

    >>> parse_frozen([(0, 1), (2, 3)], filters=16)
    ((0, 1), (2, 3))
    >>> parse_frozen(np.zeros((3, 16), dtype=bool), filters=16).shape
    (3, 16)
    >>> parse_frozen({"shape": [2, 4], "rows": ["c0", "10"]}, filters=4).astype(int)
    array([[1, 1, 0, 0],
           [0, 0, 0, 1]])
    >>> parse_frozen([[True, False], [True]], filters=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: ... its rows must all have length filters=2. Received: rows of lengths [2, 1].
    """
    if frozen is None:
        return ()
    if isinstance(frozen, dict):
        return _parse_config(frozen, filters)
    if isinstance(frozen, (str, bytes)) or not hasattr(frozen, "__len__"):
        raise TypeError(
            f"`frozen` must be {_FORMS}. Received: frozen={frozen!r} of type "
            f"{type(frozen).__name__}."
        )
    if isinstance(frozen, np.ndarray):
        return _parse_array(frozen, filters)
    rows = list(frozen)
    if is_boolean_rows(rows):
        return _parse_mask(np.array(rows, dtype=bool), filters)
    if any(_is_bool(v) for row in rows if _is_row(row) for v in row):
        raise _bad_nested_mask(rows, filters)
    if filters != 2 and rows and all(_is_row(r) and len(r) == filters for r in rows):
        raise _not_boolean(rows, filters)
    return _parse_pairs(rows, filters)


def is_boolean_rows(frozen):
    """Whether ``frozen`` is a mask as nested lists of booleans (0.1.0's config form).

    Such a frozen set is still accepted everywhere; in a layer's config it
    is deprecated (``docs/api.md``, "Deprecations").

    Example:

    >>> is_boolean_rows([[True, False], [False, False]]), is_boolean_rows([[0, 1]])
    (True, False)
    """
    return (
        isinstance(frozen, (list, tuple))
        and len(frozen) > 0
        and _rectangular_dtype(list(frozen)) == bool
    )


def _rectangular_dtype(rows):
    """NumPy's dtype for nested lists ``rows``, or ``None`` if they are ragged."""
    try:
        return np.asarray(rows).dtype
    except (TypeError, ValueError):
        return None


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def _is_row(value):
    """True for a sized non-string, e.g. a list or a 1-D array (not a 0-d one)."""
    if isinstance(value, (str, bytes, dict)):
        return False
    try:
        len(value)
    except TypeError:
        return False
    return True


def _parse_array(array, filters):
    if array.dtype == bool:
        return _parse_mask(array, filters)
    if array.ndim == 2 and array.shape[1] == 2 and np.issubdtype(array.dtype, np.integer):
        return _parse_pairs(array, filters)
    raise TypeError(
        "`frozen` given as an array must be a boolean mask of shape "
        f"(in_channels, {filters}) or an integer array of pairs of shape "
        f"(n, 2). Received: an array of dtype {array.dtype} and shape "
        f"{array.shape}."
    )


def _bad_nested_mask(rows, filters):
    """The error for nested lists holding booleans that are not a 2-D mask."""
    lengths = [len(row) if _is_row(row) else None for row in rows]
    if all(length == filters for length in lengths):
        return _not_boolean(rows, filters)
    shown = [
        length if length is not None else f"{row!r} (not a row)"
        for row, length in zip(rows, lengths)
    ]
    return ValueError(
        "`frozen` given as nested lists of booleans is a mask, and its rows "
        f"must all have length filters={filters}. Received: rows of lengths "
        f"[{', '.join(map(str, shown))}]."
    )


def _not_boolean(rows, filters):
    index, row = next(
        ((i, row) for i, row in enumerate(rows) if not all(map(_is_bool, row))),
        (0, rows[0]),
    )
    kind = next((type(v).__name__ for v in row if not _is_bool(v)), "bool")
    return TypeError(
        f"`frozen` given as nested lists of rows of length filters={filters} is "
        "a mask, and a mask must hold booleans (True = frozen). Received: row "
        f"{index} = {list(row)!r} holding {kind}."
    )


def _parse_mask(mask, filters):
    if mask.ndim != 2 or mask.shape[1] != filters:
        raise ValueError(
            f"`frozen` given as a boolean mask must have shape "
            f"(in_channels, filters={filters}). Received: a mask of shape "
            f"{mask.shape}."
        )
    if not mask.shape[0]:
        raise ValueError(
            "`frozen` given as a boolean mask must have a row per input "
            f"channel, at least one. Received: a mask of shape {mask.shape}."
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


def _parse_config(config, filters):
    """Reads the ``{"shape": ..., "rows": ...}`` form of :func:`frozen_to_config`."""
    if sorted(config, key=str) != list(_CONFIG_KEYS):
        raise ValueError(
            "`frozen` given as a dict must be the form get_config writes, with "
            f"exactly the keys {list(_CONFIG_KEYS)}. Received: keys "
            f"{sorted(config, key=str)}."
        )
    in_channels = _config_shape(config["shape"], filters)
    rows = config["rows"]
    expected = "`frozen['rows']` must be a list of hex strings, one per input channel."
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"{expected} Received: {rows!r} of type {type(rows).__name__}.")
    for index, row in enumerate(rows):
        if not isinstance(row, str):
            raise TypeError(
                f"{expected} Received: row {index} = {row!r} of type "
                f"{type(row).__name__}."
            )
    if len(rows) != in_channels:
        raise ValueError(
            "`frozen['rows']` must hold one row per input channel, "
            f"{in_channels} for shape [{in_channels}, {filters}]. Received: "
            f"{len(rows)} rows."
        )
    mask = np.stack([_unpack_row(i, row, filters) for i, row in enumerate(rows)])
    return _parse_mask(mask, filters)


def _config_shape(shape, filters):
    expected = (
        "`frozen['shape']` must be a list of two positive integers "
        "[in_channels, filters]."
    )
    if not isinstance(shape, (list, tuple)) or not all(is_int(v) for v in shape):
        raise TypeError(f"{expected} Received: {shape!r} of type {type(shape).__name__}.")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{expected} Received: {list(shape)!r}.")
    if shape[1] != filters:
        raise ValueError(
            f"`frozen['shape']` must be [in_channels, filters={filters}]. "
            f"Received: {list(shape)!r}."
        )
    return int(shape[0])


def _unpack_row(index, row, filters):
    digits = 2 * -(-filters // 8)
    if len(row) != digits or not all(c in _HEX_DIGITS for c in row):
        raise ValueError(
            f"Each row of `frozen['rows']` must be {digits} hex digits for "
            f"filters={filters} (filter 0 is the most significant bit of the "
            f"first digit). Received: row {index} = {row!r}."
        )
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(row), dtype=np.uint8))
    if bits[filters:].any():
        raise ValueError(
            f"Row {index} of `frozen['rows']` sets bits past filter {filters - 1} "
            f"(filters={filters}). Received: {row!r}."
        )
    return bits[:filters].astype(bool)


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


def check_size(in_channels, filters, kernel_size, memory=None):
    """Refuses a layer too large to build, before anything is allocated.

    A layer of ``in_channels * filters`` kernels allocates, when built, its
    kernel (``prod(kernel_size)`` float32 values per kernel) and mask and
    index arrays (:data:`BUILD_BYTES_PER_KERNEL` bytes per kernel at least),
    and numbers its kernels with int32. A size from a tampered or mistyped
    config (``filters=10**9``) would otherwise fail only after a long
    attempt to allocate tens of GiB.

    Args:
        in_channels, filters: the layer's sizes.
        kernel_size: tuple of ints.
        memory: bytes available; default: this machine's physical memory
            (where the OS reports it; otherwise only the int32 limit holds).

    Raises:
        ValueError: more than :data:`MAX_KERNELS` kernels, or more bytes
            than ``memory``.

    Example:

    >>> check_size(512, 512, (3, 3))
    >>> check_size(3, 10**9, (3, 3))
    Traceback (most recent call last):
        ...
    ValueError: A layer of 3 input channels and filters=1000000000 has 3000000000 (input channel, filter) kernels; at most 2147483647 can be numbered (int32). Received: filters=1000000000.
    >>> check_size(2, 10**9, (3, 3), memory=24 * 2**30)
    Traceback (most recent call last):
        ...
    ValueError: A layer of 2 input channels and filters=1000000000 needs at least 186.3 GiB to build (its kernel and index arrays), more than the 24.0 GiB of memory. Received: filters=1000000000.
    """
    kernels = in_channels * filters
    received = f"Received: filters={filters}."
    if kernels > MAX_KERNELS:
        raise ValueError(
            f"A layer of {in_channels} input channels and filters={filters} has "
            f"{kernels} (input channel, filter) kernels; at most {MAX_KERNELS} "
            f"can be numbered (int32). {received}"
        )
    memory = _physical_memory() if memory is None else memory
    needed = kernels * (BUILD_BYTES_PER_KERNEL + 4 * math.prod(kernel_size))
    if memory and needed > memory:
        raise ValueError(
            f"A layer of {in_channels} input channels and filters={filters} needs "
            f"at least {needed / 2**30:.1f} GiB to build (its kernel and index "
            f"arrays), more than the {memory / 2**30:.1f} GiB of memory. {received}"
        )


def _physical_memory():
    """This machine's physical memory in bytes, or ``None`` where unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def frozen_to_config(parsed):
    """Returns the JSON-friendly form of a parsed frozen set.

    Pairs become a list of ``[channel, filter]`` lists. A mask becomes
    ``{"shape": [in_channels, filters], "rows": [...]}``: row ``c`` is
    ``mask[c]`` as bits, filter 0 first, padded with zeros to whole bytes
    (``np.packbits``, big-endian) and written as lower-case hex, so each hex
    digit covers four filters. A 512 x 512 mask takes about 68 kB of JSON,
    where nested lists of booleans (the form 0.1.0 wrote, still accepted)
    take about 1.8 MB. :func:`parse_frozen` accepts both results.

    Args:
        parsed: the result of :func:`parse_frozen` or :func:`resolve_frozen`.

    Returns:
        A list of ``[channel, filter]`` lists, or the dict above.

    Example:

    >>> frozen_to_config(((0, 1),))
    [[0, 1]]
    >>> mask = np.zeros((3, 16), dtype=bool)
    >>> mask[0, :5] = True          # kernels (0, 0) .. (0, 4)
    >>> frozen_to_config(mask)
    {'shape': [3, 16], 'rows': ['f800', '0000', '0000']}
    >>> bool((parse_frozen(frozen_to_config(mask), filters=16) == mask).all())
    True
    """
    if isinstance(parsed, np.ndarray):
        packed = np.packbits(parsed, axis=1)
        return {
            "shape": [int(n) for n in parsed.shape],
            "rows": [row.tobytes().hex() for row in packed],
        }
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
        ValueError: ``in_channels`` or ``filters`` is not positive,
            ``count`` is outside ``[0, in_channels * filters]``, or ``seed``
            is negative.

    Example:

    >>> mask = random_frozen_mask(3, 16, 5, seed=0)
    >>> mask.shape, int(mask.sum())
    ((3, 16), 5)
    >>> bool((mask == random_frozen_mask(3, 16, 5, seed=0)).all())
    True
    >>> random_frozen_mask(3, 16, 5, seed=-1)
    Traceback (most recent call last):
        ...
    ValueError: `seed` must be None or a non-negative integer. Received: seed=-1.
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
    if seed is not None:
        expected = "`seed` must be None or a non-negative integer."
        if not is_int(seed):
            raise TypeError(
                f"{expected} Received: seed={seed!r} of type {type(seed).__name__}."
            )
        if seed < 0:
            raise ValueError(f"{expected} Received: seed={seed}.")
    chosen = np.random.default_rng(seed).choice(total, size=count, replace=False)
    mask = np.zeros(total, dtype=bool)
    mask[chosen] = True
    return mask.reshape(in_channels, filters)


def grouped_frozen_mask(in_channels, filters, groups):
    """The frozen set that makes a ``"sum"`` layer a grouped convolution.

    Keras's ``Conv*D(filters, ..., groups=groups)`` splits the input channels
    and the filters, in order, into ``groups`` equal groups, and filter ``f``
    sees only the input channels of its own group. As a frozen-zero set:
    kernel ``(c, f)`` is live iff ``c // (in_channels // groups) == f //
    (filters // groups)``, and every other kernel is frozen (at zero, the
    default ``frozen_initializer``). Unite it with other frozen kernels with
    ``|``.

    Args:
        in_channels: number of input channels.
        filters: number of filters.
        groups: number of groups; must divide both.

    Returns:
        A boolean ``np.ndarray`` of shape ``(in_channels, filters)``, ``True``
        off the block diagonal; pass it as ``frozen=``.

    Raises:
        TypeError: an argument is not an integer.
        ValueError: an argument is not positive, or ``groups`` does not
            divide ``in_channels`` and ``filters``.

    Example:

    >>> grouped_frozen_mask(4, 6, 2).astype(int)
    array([[0, 0, 0, 1, 1, 1],
           [0, 0, 0, 1, 1, 1],
           [1, 1, 1, 0, 0, 0],
           [1, 1, 1, 0, 0, 0]])
    >>> grouped_frozen_mask(4, 6, 4)
    Traceback (most recent call last):
        ...
    ValueError: `groups` must divide both in_channels and filters. Received: groups=4 with in_channels=4 and filters=6.
    """
    in_channels = positive_int(in_channels, "in_channels")
    filters = positive_int(filters, "filters")
    groups = positive_int(groups, "groups")
    if in_channels % groups or filters % groups:
        raise ValueError(
            "`groups` must divide both in_channels and filters. Received: "
            f"groups={groups} with in_channels={in_channels} and filters={filters}."
        )
    channel_group = np.arange(in_channels) // (in_channels // groups)
    filter_group = np.arange(filters) // (filters // groups)
    return channel_group[:, None] != filter_group[None, :]
