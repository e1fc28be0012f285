"""What a channel convolution stores, how it is saved, and what may enter it.

A layer's weights are, in ``layer.weights`` order: ``trainable_kernels``,
``bias`` (with ``use_bias``), ``frozen_kernels`` (only with
``store_frozen=True``: kernels frozen at zero are structure, not values,
and are stored nowhere) and ``pruned_kernels`` (with ``prunable``).

Saved weights (``save_weights``, ``.keras``) hold each variable under its
own name and the frozen mask beside them, so that weights never load under
another mask. Files written before 0.2.0 hold the variables by position
(``"0"``, ``"1"``, ...), always with ``frozen_kernels``, and no mask; they
load as before (:func:`saved_values`).

Everything here is NumPy: the layer (``layers/base.py``) calls it, and the
TensorFlow checkpoint entries (``channelconv/_backend/tensorflow/checkpoint.py``) reuse the
same checks.
"""

import numpy as np

TRAINABLE = "trainable_kernels"
FROZEN = "frozen_kernels"
PRUNED = "pruned_kernels"
BIAS = "bias"
#: Names of the saved frozen mask (packed rows, as ``np.packbits``) and its shape.
MASK = "frozen_mask"
MASK_SHAPE = "frozen_mask_shape"


def layout(use_bias, store_frozen, prunable):
    """The names of a layer's weights, in ``layer.weights`` order.

    Keras lists trainable variables first, then the others, each in the
    order they were made.

    Example:

    >>> layout(use_bias=True, store_frozen=False, prunable=True)
    ['trainable_kernels', 'bias', 'pruned_kernels']
    """
    names = [TRAINABLE] + [BIAS] * use_bias + [FROZEN] * store_frozen
    return names + [PRUNED] * prunable


def pack_mask(mask):
    """``{MASK: packed rows, MASK_SHAPE: [in_channels, filters]}`` of a mask.

    One bit per kernel: a 512 x 512 mask takes 32 kB.

    Example:

    >>> entries = pack_mask(np.eye(2, 3, dtype=bool))
    >>> entries[MASK].tolist(), entries[MASK_SHAPE].tolist()
    ([[128], [64]], [2, 3])
    >>> bool((unpack_mask(entries) == np.eye(2, 3, dtype=bool)).all())
    True
    """
    mask = np.asarray(mask, dtype=bool)
    return {MASK: np.packbits(mask, axis=1), MASK_SHAPE: np.array(mask.shape, np.int64)}


def unpack_mask(entries):
    """The boolean mask :func:`pack_mask` wrote."""
    channels, filters = (int(n) for n in np.asarray(entries[MASK_SHAPE]))
    packed = np.asarray(entries[MASK], dtype=np.uint8).reshape(channels, -1)
    return np.unpackbits(packed, axis=1, count=filters).astype(bool)


def check_same_mask(layer_name, mask, saved_mask, source):
    """Refuses weights saved under another frozen mask than ``mask``.

    Raises:
        ValueError: naming the layer and the first pairs that differ.

    Example:

    >>> check_same_mask("conv", np.eye(2, dtype=bool), np.eye(2, dtype=bool), "loading")
    >>> check_same_mask("conv", np.eye(2, dtype=bool), ~np.eye(2, dtype=bool), "loading")
    Traceback (most recent call last):
        ...
    ValueError: Layer 'conv' freezes other kernels than the weights that loading gives were saved with: they would land in the wrong (input channel, filter) places. Frozen here and not in the saved weights: (0, 0), (1, 1); frozen in the saved weights and not here: (0, 1), (1, 0). Build the layer with the mask the weights were saved with.
    """
    saved_mask = np.asarray(saved_mask, dtype=bool)
    if saved_mask.shape != mask.shape:
        raise ValueError(
            f"Layer {layer_name!r} has a frozen mask of shape {mask.shape} "
            f"(in_channels, filters), but the weights that {source} gives were "
            f"saved with one of shape {saved_mask.shape}."
        )
    if np.array_equal(saved_mask, mask):
        return
    here, there = _pairs(mask & ~saved_mask), _pairs(saved_mask & ~mask)
    raise ValueError(
        f"Layer {layer_name!r} freezes other kernels than the weights that "
        f"{source} gives were saved with: they would land in the wrong (input "
        f"channel, filter) places. Frozen here and not in the saved weights: "
        f"{here or 'none'}; frozen in the saved weights and not here: "
        f"{there or 'none'}. Build the layer with the mask the weights were "
        "saved with."
    )


def nonzero_frozen_error(layer_name, frozen_positions, filters, nonzero, source, why):
    """The error for non-zero values given to kernels that must stay zero.

    Args:
        layer_name: for the message.
        frozen_positions: the kernel numbers ``c * filters + f`` of the
            frozen kernels, in storage order.
        filters: the layer's filters.
        nonzero: boolean per frozen kernel.
        source: what gave the values (``"`set_weights`"``, ``"loading"``).
        why: why they must be zero, and the fix.

    Example:

    >>> print(nonzero_frozen_error("conv", np.array([1, 4]), 3, np.array([False, True]),
    ...                            "`assign_kernel`", "Reason."))
    Layer 'conv': `assign_kernel` gives 1 of its 2 frozen kernels non-zero values: (input channel, filter) (1, 1). Reason.
    """
    numbers = np.asarray(frozen_positions)[np.asarray(nonzero, dtype=bool)]
    shown = ", ".join(str(divmod(int(n), filters)) for n in numbers[:3])
    more = ", ..." if numbers.size > 3 else ""
    return ValueError(
        f"Layer {layer_name!r}: {source} gives {numbers.size} of its "
        f"{np.size(nonzero)} frozen kernels non-zero values: (input channel, "
        f"filter) {shown}{more}. {why}"
    )


def nonzero_kernels(values):
    """For each kernel of compact ``values`` (``kernel_size + (n,)``), whether any entry is non-zero."""
    values = np.asarray(values)
    return (values != 0).any(axis=tuple(range(values.ndim - 1)))


def saved_values(store, layer_name, legacy_layout):
    """The arrays a weights store holds for a layer, by weight name.

    Args:
        store: the store Keras gives ``load_own_variables``.
        layer_name: for the messages.
        legacy_layout: the names, in order, of what a file written before
            0.2.0 holds by position for this layer's configuration.

    Returns:
        ``(values, mask)``: a dict from weight name to array, and the saved
        frozen mask, or ``None`` (files before 0.2.0).

    Raises:
        ValueError: a positional store with another number of entries.
    """
    keys = list(store.keys())
    if keys and all(key.isdigit() for key in keys):  # before 0.2.0: by position
        if len(keys) != len(legacy_layout):
            raise ValueError(
                f"Layer {layer_name!r} expected {len(legacy_layout)} variables "
                f"({', '.join(legacy_layout)}), but the file holds {len(keys)}."
            )
        return {name: np.asarray(store[str(i)]) for i, name in enumerate(legacy_layout)}, None
    values = {key: np.asarray(store[key]) for key in keys if key not in (MASK, MASK_SHAPE)}
    mask = None
    if MASK in keys and MASK_SHAPE in keys:
        mask = unpack_mask({MASK: store[MASK], MASK_SHAPE: store[MASK_SHAPE]})
    return values, mask


def check_pruned(layer_name, values, source):
    """Refuses a ``pruned_kernels`` holding anything but 0 and 1."""
    values = np.asarray(values)
    bad = ~np.isin(values, (0, 1))
    if bad.any():
        channel, filter_ = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"Layer {layer_name!r}: `pruned_kernels` holds 1.0 where a kernel is "
            f"pruned and 0.0 elsewhere, but {source} gives {int(bad.sum())} other "
            f"values, e.g. {float(values[channel, filter_])} at (input channel, "
            f"filter) ({channel}, {filter_})."
        )


def _pairs(mask, limit=3):
    pairs = [f"({c}, {f})" for c, f in np.argwhere(mask)[: limit + 1]]
    return ", ".join(pairs[:limit]) + (", ..." if len(pairs) > limit else "")
