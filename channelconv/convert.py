"""From and to plain Keras layers: convert a pretrained model in, strip it out.

:func:`from_conv` turns a built Keras convolution (``Conv1D``, ``Conv2D``,
``Conv3D``, grouped or not, ``DepthwiseConv1D``, ``DepthwiseConv2D``) into
the equivalent channel convolution of its rank, with some kernels frozen
(:func:`from_conv2d`, its first name, is deprecated); :func:`convert_model` does it for
chosen layers of a whole Sequential or functional model. :func:`strip` goes
the other way, for deployment: every channel convolution becomes the plain
Keras layer it equals (:func:`to_keras_layer`), so the saved model loads
without channelconv.
"""

import math
import warnings
from collections.abc import Mapping

import keras
import numpy as np

from channelconv import _graph
from channelconv import _validation as check
from channelconv.layers import BaseChannelConv, ChannelConv1D, ChannelConv2D, ChannelConv3D
from channelconv.mask import grouped_frozen_mask, parse_frozen, resolve_frozen

FROZEN_VALUES = ("zeros", "keep")

# The Keras layers that convert in: (rank, reduction) of each.
_SOURCES = {
    keras.layers.Conv1D: (1, "sum"),
    keras.layers.Conv2D: (2, "sum"),
    keras.layers.Conv3D: (3, "sum"),
    keras.layers.DepthwiseConv1D: (1, "concat"),
    keras.layers.DepthwiseConv2D: (2, "concat"),
}
_CHANNEL_CONVS = {1: ChannelConv1D, 2: ChannelConv2D, 3: ChannelConv3D}
_CONVS = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
_DEPTHWISE = {1: keras.layers.DepthwiseConv1D, 2: keras.layers.DepthwiseConv2D}


def from_conv(conv, frozen=None, frozen_values="zeros", implementation="fused"):
    """Returns the channel convolution equivalent to a built Keras convolution.

    The source decides the semantics and the rank: ``keras.layers.Conv1D``,
    ``Conv2D`` and ``Conv3D`` become :class:`~channelconv.ChannelConv1D`,
    ``ChannelConv2D``, ``ChannelConv3D`` with ``reduction="sum"``;
    ``DepthwiseConv1D`` and ``DepthwiseConv2D`` (kernel ``kernel_size +
    (in_channels, depth_multiplier)``, exactly our kernel with ``filters =
    depth_multiplier``) become ``reduction="concat"``. A grouped
    convolution (``groups > 1``) has no kernel for the (input channel,
    filter) pairs across groups: those become frozen zeros (see
    :func:`channelconv.grouped_frozen_mask`), united with ``frozen``.

    The new layer has the source's configuration (filters, kernel size,
    strides, padding, data format, dilation, activation, bias, initializers,
    regularizers, constraints, name, dtype policy, ``trainable``), is built
    for the same number of input channels and holds the same kernel and bias.
    With nothing else frozen it computes exactly what the source computes.
    The source layer is not modified. A LoRA-enabled convolution is
    converted with its LoRA update merged into the kernel. (One exception
    to "exactly", a bug of Keras's with ``channels_first`` biases, dated in
    ``docs/performance.md``, "Keras and TensorFlow notes": there the
    converted layer adds the bias along the channel axis, as it should.)

    Two differences are by design: the kernel regularizer and constraint act
    on the trainable kernels only (frozen kernels are never updated, so they
    cannot drift), and the frozen kernels no longer count as trainable
    parameters.

    Args:
        conv: a built ``keras.layers.Conv1D``, ``Conv2D``, ``Conv3D``,
            ``DepthwiseConv1D`` or ``DepthwiseConv2D``. Subclasses are
            refused, since their ``call`` may compute something else.
        frozen: the kernels to freeze, in any form the layers accept
            (``None``, ``(input_channel, filter)`` pairs, or a boolean mask of
            shape ``(in_channels, filters)``, see
            :func:`channelconv.random_frozen_mask`). For a depthwise layer,
            ``filters`` is its ``depth_multiplier``.
        frozen_values: ``"zeros"`` (default) sets the frozen kernels to
            exactly zero (they are pruned); ``"keep"`` freezes them at their
            pretrained values.
        implementation: the new layer's ``implementation``: ``"fused"``
            (default), ``"per_channel"``, ``"sparse"`` or ``"auto"``. A
            grouped source with ``"auto"`` or ``"sparse"`` runs its groups as
            separate dense convolutions where that is faster (see
            ``docs/performance.md``, "Sparse"). ``"sparse"`` needs frozen
            kernels at zero, so it refuses ``frozen_values="keep"`` with a
            non-zero frozen kernel; ``"auto"`` then runs fused.

    The frozen kernels are zeros by construction (stored nowhere) unless
    ``frozen_values="keep"`` keeps a non-zero one: then the layer stores them
    (``store_frozen=True``). The layer is made by
    :meth:`~channelconv.layers.BaseChannelConv.from_kernel`.

    Returns:
        A built ``ChannelConv1D``, ``ChannelConv2D`` or ``ChannelConv3D``,
        with the same name as ``conv``.

    Raises:
        TypeError: ``conv`` is not one of the layers above (e.g. a
            ``Conv2DTranspose``, a ``SeparableConv2D``, a ``Dense``), or
            ``frozen`` has the wrong type.
        ValueError: ``conv`` is not built, ``frozen_values`` is not one of the
            two choices, or ``frozen`` does not fit the layer. Every message
            names the layer.

    Example:

    >>> import numpy as np, keras
    >>> conv = keras.layers.Conv2D(16, 3, name="conv")
    >>> conv.build((None, 8, 8, 3))
    >>> layer = from_conv(conv, frozen=[(0, 0), (2, 5)])
    >>> type(layer).__name__, layer.reduction, tuple(layer.trainable_kernels.shape)
    ('ChannelConv2D', 'sum', (3, 3, 46))
    >>> layer.store_frozen  # frozen at zero: stored nowhere
    False
    >>> kernel = keras.ops.convert_to_numpy(layer.kernel)
    >>> float(np.abs(kernel[:, :, 0, 0]).max())
    0.0

    A grouped convolution: 2 groups of 2 input channels and 3 filters.

    >>> grouped = keras.layers.Conv1D(6, 3, groups=2)
    >>> grouped.build((None, 10, 4))
    >>> layer = from_conv(grouped)
    >>> layer.frozen_mask.astype(int)
    array([[0, 0, 0, 1, 1, 1],
           [0, 0, 0, 1, 1, 1],
           [1, 1, 1, 0, 0, 0],
           [1, 1, 1, 0, 0, 0]])
    >>> x = np.random.default_rng(0).normal(size=(2, 10, 4)).astype("float32")
    >>> to_numpy = keras.ops.convert_to_numpy
    >>> bool(np.allclose(to_numpy(layer(x)), to_numpy(grouped(x)), atol=1e-6))
    True

    With ``implementation="sparse"`` the layer runs its plan (at this size
    one convolution; at 64 channels and more, one per group):

    >>> sparse = from_conv(grouped, implementation="sparse")
    >>> print(sparse.plan)  # doctest: +ELLIPSIS
    SparsePlan(sum, 4 -> 6: ...
    >>> bool(np.allclose(to_numpy(sparse(x)), to_numpy(grouped(x)), atol=1e-6))
    True
    """
    frozen_values = check.choice(frozen_values, FROZEN_VALUES, "frozen_values")
    rank, kwargs, kernel, groups = _channel_conv_arguments(conv)
    in_channels, filters = kernel.shape[-2:]
    try:
        mask = resolve_frozen(parse_frozen(frozen, filters), in_channels, filters)
        if groups > 1:
            mask = mask | grouped_frozen_mask(in_channels, filters, groups)
        if frozen_values == "zeros":
            kernel[..., mask] = 0
        bias = keras.ops.convert_to_numpy(conv.bias) if conv.use_bias else None
        return _CHANNEL_CONVS[rank].from_kernel(
            kernel, bias, frozen=mask, implementation=implementation, **kwargs)
    except (TypeError, ValueError) as error:
        raise type(error)(f"Cannot convert layer {conv.name!r}: {error}") from error


def from_conv2d(conv, frozen=None, frozen_values="zeros", implementation="fused"):
    """:func:`from_conv` under its first name; deprecated, removed in 1.0.0.

    Warns with a ``DeprecationWarning`` since 0.3.0 (``docs/api.md``,
    "Deprecations"); :func:`from_conv` takes the same arguments and every
    rank.

    Example:

    >>> import warnings, keras
    >>> conv = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    >>> conv.build((None, 8, 8, 3))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     reduction = from_conv2d(conv, frozen=[(0, 1)]).reduction
    >>> reduction, caught[0].category.__name__
    ('concat', 'DeprecationWarning')
    """
    warnings.warn(
        "`from_conv2d` is deprecated since channelconv 0.3.0 and will be removed "
        "in 1.0.0: call `from_conv`, which takes the same arguments.",
        DeprecationWarning,
        stacklevel=2,
    )
    return from_conv(conv, frozen, frozen_values, implementation)


#: Constructor arguments a Keras convolution and a channel convolution share,
#: read from one as the attributes of the same names.
_SHARED = (
    "kernel_size", "strides", "padding", "data_format", "dilation_rate", "activation",
    "use_bias", "bias_initializer", "bias_regularizer", "activity_regularizer",
    "bias_constraint", "name", "trainable",
)


def _shared_arguments(layer):
    """The arguments of :data:`_SHARED` (and the dtype policy) as ``layer`` has them."""
    return {**{name: getattr(layer, name) for name in _SHARED}, "dtype": layer.dtype_policy}


def _channel_conv_arguments(conv):
    """Rank, layer arguments, full kernel and groups of a Keras convolution."""
    kind = type(conv)
    if kind not in _SOURCES:
        names = ", ".join(f"keras.layers.{cls.__name__}" for cls in _SOURCES)
        raise TypeError(
            f"Only built {names} layers (not subclasses) can become a channel "
            f"convolution. Received: layer {getattr(conv, 'name', conv)!r} of "
            f"type {kind.__name__}."
        )
    if not conv.built:
        raise ValueError(
            f"Cannot convert layer {conv.name!r}: it is not built, so it has no "
            "weights. Build it (or call it, or the model, on an input) first."
        )
    rank, reduction = _SOURCES[kind]
    common = dict(_shared_arguments(conv), reduction=reduction)
    kernel = np.array(keras.ops.convert_to_numpy(conv.kernel))
    if reduction == "sum":
        groups = conv.groups
        specific = dict(
            filters=conv.filters,
            kernel_initializer=conv.kernel_initializer,
            kernel_regularizer=conv.kernel_regularizer,
            kernel_constraint=conv.kernel_constraint,
        )
        kernel = _ungrouped(kernel, groups)
    else:
        groups = 1
        specific = dict(
            filters=conv.depth_multiplier,
            kernel_initializer=conv.depthwise_initializer,
            kernel_regularizer=conv.depthwise_regularizer,
            kernel_constraint=conv.depthwise_constraint,
        )
    return rank, {**common, **specific}, kernel, groups


def _ungrouped(kernel, groups):
    """The full kernel (zeros across groups) of a grouped Keras kernel.

    Keras's grouped kernel is ``kernel_size + (in_channels // groups,
    filters)``: filter ``f`` of group ``g = f // (filters // groups)`` reads
    input channels ``g * (in_channels // groups) + i``.
    """
    if groups == 1:
        return kernel
    per_group, filters = kernel.shape[-2:]
    full = np.zeros(kernel.shape[:-2] + (per_group * groups, filters), kernel.dtype)
    width = filters // groups
    for g in range(groups):
        rows, cols = slice(g * per_group, (g + 1) * per_group), slice(g * width, (g + 1) * width)
        full[..., rows, cols] = kernel[..., cols]
    return full


def _grouped(kernel, groups):
    """The inverse of :func:`_ungrouped`: the in-group part of a full kernel."""
    in_channels, filters = kernel.shape[-2:]
    per_group, width = in_channels // groups, filters // groups
    return np.concatenate(
        [kernel[..., g * per_group:(g + 1) * per_group, g * width:(g + 1) * width]
         for g in range(groups)],
        axis=-1,
    )


def _groups_of(layer):
    """The ``groups > 1`` of a layer that is exactly a grouped convolution, or 1.

    That is a ``"sum"`` layer whose frozen set is :func:`grouped_frozen_mask`
    for some ``groups`` and whose frozen kernels are all exactly zero.
    """
    if layer.reduction != "sum" or not layer.frozen_mask.any():
        return 1
    if layer.store_frozen and np.any(keras.ops.convert_to_numpy(layer.frozen_kernels) != 0):
        return 1
    in_channels, filters = layer.frozen_mask.shape
    for groups in range(2, math.gcd(in_channels, filters) + 1):
        if in_channels % groups == 0 and filters % groups == 0 and np.array_equal(
            layer.frozen_mask, grouped_frozen_mask(in_channels, filters, groups)
        ):
            return groups
    return 1


def to_keras_layer(layer):
    """Returns the plain Keras layer a built channel convolution equals.

    ``reduction="sum"`` gives a ``keras.layers.Conv1D`` / ``Conv2D`` /
    ``Conv3D``, and, when the frozen set is exactly a grouped one
    (:func:`channelconv.grouped_frozen_mask`) with every frozen kernel zero,
    the grouped Keras layer (``groups=...``), which holds and computes only
    the live kernels. ``"concat"`` gives a ``DepthwiseConv1D`` /
    ``DepthwiseConv2D(depth_multiplier=filters)``, and where Keras has no
    depthwise layer (rank 3, or 1-D ``padding="causal"``, which
    ``DepthwiseConv1D`` refuses) ``ConvND(in_channels * filters,
    groups=in_channels)``, the same function. The new layer has the layer's configuration, name
    and dtype policy, is built and holds the effective kernel (frozen kernels
    included) and the bias. Irreversible in one sense: the new layer does not
    know which kernels were frozen, so training it moves them (see
    :func:`strip`).

    Args:
        layer: a built ``ChannelConv1D``, ``ChannelConv2D`` or
            ``ChannelConv3D``.

    Returns:
        A built Keras convolution.

    Raises:
        TypeError: ``layer`` is not a channel convolution.
        ValueError: ``layer`` is not built.

    Example:

    >>> import channelconv
    >>> layer = channelconv.ChannelConv2D(4, 3, frozen=[(0, 1)],
    ...                                   reduction="concat", name="dw")
    >>> layer.build((None, 8, 8, 2))
    >>> plain = to_keras_layer(layer)
    >>> type(plain).__name__, plain.depth_multiplier, plain.name
    ('DepthwiseConv2D', 4, 'dw')
    >>> grouped = channelconv.ChannelConv1D(
    ...     6, 3, frozen=channelconv.grouped_frozen_mask(4, 6, 2))
    >>> grouped.build((None, 10, 4))
    >>> plain = to_keras_layer(grouped)
    >>> type(plain).__name__, plain.groups, tuple(plain.kernel.shape)
    ('Conv1D', 2, (3, 2, 6))
    """
    if not isinstance(layer, BaseChannelConv):
        raise TypeError(
            "`layer` must be a ChannelConv1D, ChannelConv2D or ChannelConv3D. "
            f"Received: layer {getattr(layer, 'name', layer)!r} of type "
            f"{type(layer).__name__}."
        )
    if not layer.built:
        raise ValueError(
            f"Cannot strip layer {layer.name!r}: it is not built, so it has no "
            "kernel yet."
        )
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    in_channels, filters = kernel.shape[-2:]
    kernel_args = dict(
        initializer=layer.kernel_initializer,
        regularizer=layer.kernel_regularizer,
        constraint=layer.kernel_constraint,
    )
    if layer.reduction == "concat" and layer.rank in _DEPTHWISE and layer.padding != "causal":
        cls = _DEPTHWISE[layer.rank]
        specific = {"depth_multiplier": filters}
        specific.update({f"depthwise_{k}": v for k, v in kernel_args.items()})
    else:
        cls = _CONVS[layer.rank]
        if layer.reduction == "concat":  # 3-D or causal: one group per input channel
            groups, kernel = in_channels, kernel.reshape(kernel.shape[:-2] + (1, -1))
        else:
            groups = _groups_of(layer)
            kernel = _grouped(kernel, groups) if groups > 1 else kernel
        specific = {"filters": kernel.shape[-1], "groups": groups}
        specific.update({f"kernel_{k}": v for k, v in kernel_args.items()})
    plain = cls(**_shared_arguments(layer), **specific)
    plain.build(layer._input_shape_for(in_channels))
    weights = [kernel]
    if layer.use_bias:
        weights.append(keras.ops.convert_to_numpy(layer.bias))
    plain.set_weights(weights)
    return plain


def convert_model(model, frozen_by_layer, frozen_values="zeros", implementation="fused"):
    """Rebuilds a model with chosen convolutions replaced by channel convolutions.

    Each layer named in ``frozen_by_layer`` goes through
    :func:`from_conv`; every other layer is cloned and gets a copy of its
    weights, so the original model is left untouched and shares no variable
    with the new one. With nothing frozen, the new model's outputs are
    identical to the original's. Layers of nested Sequential or functional
    models are found by name too; shared layers stay shared and models with
    several inputs or outputs keep them. A compiled model's compile
    configuration is reapplied with a fresh optimizer (Keras's
    ``clone_model`` does it); compile again to choose another.

    Args:
        model: a built ``keras.Sequential`` or functional ``keras.Model``.
            Subclassed models are refused: their layers' wiring is code, so
            use :func:`from_conv` in the model's own ``__init__``.
        frozen_by_layer: dict from layer name to the frozen set of that
            layer, in any form the layers accept (``None`` converts
            the layer with nothing frozen).
        frozen_values: ``"zeros"`` (default) or ``"keep"``, as in
            :func:`from_conv`, for every converted layer.
        implementation: as in :func:`from_conv`, for every converted layer.

    Returns:
        A new model of the same kind, with the same name.

    Raises:
        TypeError: ``model`` is not a Sequential or functional model,
            ``frozen_by_layer`` is not a dict, or a named layer is not one
            :func:`from_conv` takes (``Conv1D``, ``Conv2D``, ``Conv3D``,
            ``DepthwiseConv1D``, ``DepthwiseConv2D``).
        ValueError: a name is not a layer of the model (all unknown names are
            listed), or a named layer cannot be converted (see
            :func:`from_conv`).

    Example:

    >>> import numpy as np, keras
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(16, 3, name="c1"),
    ...     keras.layers.ReLU(),
    ...     keras.layers.Conv2D(16, 3, name="c2"),
    ... ])
    >>> new = convert_model(model, {"c1": [(0, 0), (1, 3)], "c2": None})
    >>> [type(layer).__name__ for layer in new.layers]
    ['ChannelConv2D', 'ReLU', 'ChannelConv2D']
    >>> int(new.get_layer("c1").frozen_mask.sum()), new.count_params()
    (2, 2750)
    """
    _graph.check_graph_model(model, "convert_model")
    if not isinstance(frozen_by_layer, Mapping):
        raise TypeError(
            "`frozen_by_layer` must be a dict from layer name to frozen set. "
            f"Received: frozen_by_layer={frozen_by_layer!r} of type "
            f"{type(frozen_by_layer).__name__}."
        )
    frozen_values = check.choice(frozen_values, FROZEN_VALUES, "frozen_values")
    names = {layer.name for layer in _graph.all_layers(model)}
    unknown = sorted(set(frozen_by_layer) - names, key=str)
    if unknown:
        raise ValueError(
            f"`frozen_by_layer` names layers that model {model.name!r} does "
            f"not have: {unknown}. Its layers are: {sorted(names)}."
        )

    def replace(layer):
        if layer.name not in frozen_by_layer:
            return None
        return from_conv(layer, frozen_by_layer[layer.name], frozen_values, implementation)

    return _graph.rebuild(model, replace)


def strip(model):
    """Returns a plain Keras copy of a model, each channel convolution replaced.

    Every channel convolution becomes the plain Keras layer it equals (see
    :func:`to_keras_layer`): ``reduction="sum"`` a ``keras.layers.Conv1D``
    / ``Conv2D`` / ``Conv3D`` (grouped where the frozen set is exactly a
    grouped one of zeros), ``"concat"`` a ``DepthwiseConv1D`` /
    ``DepthwiseConv2D`` (a grouped ``Conv3D`` at rank 3), holding the
    effective kernel (frozen kernels included, zero or not) and the bias.
    Every other layer is cloned with a copy of its weights. Outputs are
    identical to the original's (equal to float tolerance with
    ``implementation="per_channel"`` and for 3-D ``"concat"``, which compute
    another way, and for a grouped layer, whose Keras op sums fewer zeros),
    and the model,
    saved as ``.keras``, loads without importing channelconv. The original
    model is not modified. (Exception: the bug of Keras's with
    ``channels_first`` biases, see :func:`from_conv`.)

    This is irreversible: the stripped model does not know which kernels were
    frozen. Nothing enforces the frozen set any more; training the stripped
    model moves the formerly frozen kernels away from their values (zero
    included), and its kernel regularizer and constraint now act on them.
    Strip for deployment, after training.

    Args:
        model: a built ``keras.Sequential`` or functional ``keras.Model``.

    Returns:
        A new model of the same kind, with the same name and layer names.

    Raises:
        TypeError: ``model`` is not a Sequential or functional model.
        ValueError: a channel convolution in it is not built.

    Example:

    >>> import numpy as np, keras, channelconv
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     channelconv.ChannelConv2D(16, 3, frozen=[(0, 0)], name="c1"),
    ... ])
    >>> plain = strip(model)
    >>> type(plain.get_layer("c1")).__name__
    'Conv2D'
    >>> x = np.random.default_rng(0).random((2, 8, 8, 3), "float32")
    >>> to_numpy = keras.ops.convert_to_numpy
    >>> bool(np.array_equal(to_numpy(model(x)), to_numpy(plain(x))))
    True
    """
    _graph.check_graph_model(model, "strip")

    def replace(layer):
        if isinstance(layer, BaseChannelConv):
            return to_keras_layer(layer)
        return None

    return _graph.rebuild(model, replace)
