"""From and to plain Keras layers: convert a pretrained model in, strip it out.

:func:`from_conv2d` turns a built ``keras.layers.Conv2D`` or
``DepthwiseConv2D`` into an equivalent :class:`~channelconv.ChannelConv2D`
with some kernels frozen; :func:`convert_model` does it for chosen layers of
a whole Sequential or functional model. :func:`strip` goes the other way, for
deployment: every ``ChannelConv2D`` becomes the plain Keras layer it equals,
so the saved model loads without channelconv.
"""

from collections.abc import Mapping

import keras
import numpy as np
from keras.src.models.functional import Functional  # no public name exists

from channelconv import _validation as check
from channelconv.layers import BaseChannelConv, ChannelConv2D

FROZEN_VALUES = ("zeros", "keep")

# The plain Keras layer each reduction equals, by rank.
_PLAIN_LAYERS = {
    ("sum", 2): keras.layers.Conv2D,
    ("concat", 2): keras.layers.DepthwiseConv2D,
}


def from_conv2d(conv, frozen, frozen_values="zeros"):
    """Returns a ``ChannelConv2D`` equivalent to a built Keras 2-D convolution.

    One entry point serves both source layers because the source decides the
    semantics: a ``keras.layers.Conv2D`` becomes ``ChannelConv2D(reduction=
    "sum")`` and a ``keras.layers.DepthwiseConv2D`` (kernel ``kernel_size +
    (in_channels, depth_multiplier)``, exactly our kernel with ``filters =
    depth_multiplier``) becomes ``ChannelConv2D(reduction="concat")``. A
    second function would only repeat this one.

    The new layer has the source's configuration (filters, kernel size,
    strides, padding, data format, dilation, activation, bias, initializers,
    regularizers, constraints, name, dtype policy, ``trainable``), is built
    for the same number of input channels and holds the same kernel and bias.
    With nothing frozen it computes exactly what the source computes. The
    source layer is not modified. A LoRA-enabled ``Conv2D`` is converted with
    its LoRA update merged into the kernel. (One exception to "exactly", a
    Keras 3.15 bug: with ``channels_first``, Keras's ``Conv2D`` and
    ``DepthwiseConv2D`` add the bias along the last spatial axis when that
    axis of the output has as many entries as there are output channels;
    the converted layer adds it along the channel axis.)

    Two differences are by design: the kernel regularizer and constraint act
    on the trainable kernels only (frozen kernels are never updated, so they
    cannot drift), and the frozen kernels no longer count as trainable
    parameters.

    Args:
        conv: a built ``keras.layers.Conv2D`` (``groups=1``) or
            ``keras.layers.DepthwiseConv2D``. Subclasses are refused, since
            their ``call`` may compute something else.
        frozen: the kernels to freeze, in any form ``ChannelConv2D`` accepts
            (``None``, ``(input_channel, filter)`` pairs, or a boolean mask of
            shape ``(in_channels, filters)``, see
            :func:`channelconv.random_frozen_mask`). For a
            ``DepthwiseConv2D``, ``filters`` is its ``depth_multiplier``.
        frozen_values: ``"zeros"`` (default) sets the frozen kernels to
            exactly zero (they are pruned); ``"keep"`` freezes them at their
            pretrained values.

    Returns:
        A built ``ChannelConv2D``, with the same name as ``conv``.

    Raises:
        TypeError: ``conv`` is not a ``Conv2D`` or ``DepthwiseConv2D`` (e.g. a
            ``Conv2DTranspose``, a ``SeparableConv2D``, a ``Dense``), or
            ``frozen`` has the wrong type.
        ValueError: ``conv`` is not built or is a grouped convolution,
            ``frozen_values`` is not one of the two choices, or ``frozen``
            does not fit the layer. Every message names the layer.

    Example:

    >>> import numpy as np, keras
    >>> conv = keras.layers.Conv2D(16, 3, name="conv")
    >>> conv.build((None, 8, 8, 3))
    >>> layer = from_conv2d(conv, frozen=[(0, 0), (2, 5)])
    >>> layer.reduction, tuple(layer.trainable_kernels.shape), layer.name
    ('sum', (3, 3, 46), 'conv')
    >>> kernel = keras.ops.convert_to_numpy(layer.kernel)
    >>> float(np.abs(kernel[:, :, 0, 0]).max())
    0.0
    >>> kept = from_conv2d(conv, frozen=[(0, 0)], frozen_values="keep")
    >>> bool(np.array_equal(keras.ops.convert_to_numpy(kept.kernel),
    ...                     keras.ops.convert_to_numpy(conv.kernel)))
    True
    """
    frozen_values = check.choice(frozen_values, FROZEN_VALUES, "frozen_values")
    kwargs, kernel, in_channels = _channel_conv_arguments(conv)
    try:
        layer = ChannelConv2D(frozen=frozen, **kwargs)
        if layer.data_format == "channels_last":
            layer.build((None, None, None, in_channels))
        else:
            layer.build((None, in_channels, None, None))
    except (TypeError, ValueError) as error:
        raise type(error)(f"Cannot convert layer {conv.name!r}: {error}") from error
    if frozen_values == "zeros":
        kernel[..., layer.frozen_mask] = 0
    layer.assign_kernel(kernel)
    if layer.use_bias:
        layer.bias.assign(keras.ops.convert_to_numpy(conv.bias))
    return layer


def _channel_conv_arguments(conv):
    """``ChannelConv2D`` arguments, the kernel and the channel count of ``conv``."""
    kind = type(conv)
    if kind not in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D):
        raise TypeError(
            "Only built keras.layers.Conv2D and keras.layers.DepthwiseConv2D "
            "layers (not subclasses) can become a ChannelConv2D. Received: "
            f"layer {getattr(conv, 'name', conv)!r} of type {kind.__name__}."
        )
    if not conv.built:
        raise ValueError(
            f"Cannot convert layer {conv.name!r}: it is not built, so it has no "
            "weights. Build it (or call it, or the model, on an input) first."
        )
    common = dict(
        kernel_size=conv.kernel_size,
        strides=conv.strides,
        padding=conv.padding,
        data_format=conv.data_format,
        dilation_rate=conv.dilation_rate,
        activation=conv.activation,
        use_bias=conv.use_bias,
        bias_initializer=conv.bias_initializer,
        bias_regularizer=conv.bias_regularizer,
        activity_regularizer=conv.activity_regularizer,
        bias_constraint=conv.bias_constraint,
        name=conv.name,
        dtype=conv.dtype_policy,
        trainable=conv.trainable,
    )
    if kind is keras.layers.Conv2D:
        if conv.groups != 1:
            raise ValueError(
                f"Cannot convert layer {conv.name!r}: a grouped Conv2D has no "
                "kernel for the (input channel, filter) pairs across groups. "
                f"Expected groups=1. Received: groups={conv.groups}."
            )
        specific = dict(
            filters=conv.filters,
            reduction="sum",
            kernel_initializer=conv.kernel_initializer,
            kernel_regularizer=conv.kernel_regularizer,
            kernel_constraint=conv.kernel_constraint,
        )
    else:
        specific = dict(
            filters=conv.depth_multiplier,
            reduction="concat",
            kernel_initializer=conv.depthwise_initializer,
            kernel_regularizer=conv.depthwise_regularizer,
            kernel_constraint=conv.depthwise_constraint,
        )
    kernel = np.array(keras.ops.convert_to_numpy(conv.kernel))
    return {**common, **specific}, kernel, kernel.shape[-2]


def to_keras_layer(layer):
    """Returns the plain Keras layer a built ``ChannelConv2D`` equals.

    ``reduction="sum"`` gives a ``keras.layers.Conv2D``, ``"concat"`` a
    ``keras.layers.DepthwiseConv2D(depth_multiplier=filters)``, with the
    layer's configuration, name and dtype policy, built, holding the
    effective kernel (frozen kernels included) and the bias. Irreversible in
    one sense: the new layer does not know which kernels were frozen, so
    training it moves them (see :func:`strip`).

    Args:
        layer: a built ``ChannelConv2D``.

    Returns:
        A built ``Conv2D`` or ``DepthwiseConv2D``.

    Raises:
        TypeError: ``layer`` is not a ``ChannelConv2D``.
        ValueError: ``layer`` is not built.

    Example:

    >>> import channelconv
    >>> layer = channelconv.ChannelConv2D(4, 3, frozen=[(0, 1)],
    ...                                   reduction="concat", name="dw")
    >>> layer.build((None, 8, 8, 2))
    >>> plain = to_keras_layer(layer)
    >>> type(plain).__name__, plain.depth_multiplier, plain.name
    ('DepthwiseConv2D', 4, 'dw')
    """
    if not isinstance(layer, BaseChannelConv):
        raise TypeError(
            "`layer` must be a ChannelConv2D. Received: layer "
            f"{getattr(layer, 'name', layer)!r} of type {type(layer).__name__}."
        )
    if not layer.built:
        raise ValueError(
            f"Cannot strip layer {layer.name!r}: it is not built, so it has no "
            "kernel yet."
        )
    cls = _PLAIN_LAYERS.get((layer.reduction, layer.rank))
    if cls is None:
        raise ValueError(
            f"Cannot strip layer {layer.name!r}: Keras has no plain layer for "
            f"reduction={layer.reduction!r} at rank {layer.rank}."
        )
    kernel_args = dict(
        initializer=layer.kernel_initializer,
        regularizer=layer.kernel_regularizer,
        constraint=layer.kernel_constraint,
    )
    if layer.reduction == "sum":
        specific = {"filters": layer.filters}
        specific.update({f"kernel_{k}": v for k, v in kernel_args.items()})
    else:
        specific = {"depth_multiplier": layer.filters}
        specific.update({f"depthwise_{k}": v for k, v in kernel_args.items()})
    plain = cls(
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
        activation=layer.activation,
        use_bias=layer.use_bias,
        bias_initializer=layer.bias_initializer,
        bias_regularizer=layer.bias_regularizer,
        activity_regularizer=layer.activity_regularizer,
        bias_constraint=layer.bias_constraint,
        name=layer.name,
        dtype=layer.dtype_policy,
        trainable=layer.trainable,
        **specific,
    )
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    in_channels = kernel.shape[-2]
    if layer.data_format == "channels_last":
        plain.build((None,) * (layer.rank + 1) + (in_channels,))
    else:
        plain.build((None, in_channels) + (None,) * layer.rank)
    weights = [kernel]
    if layer.use_bias:
        weights.append(keras.ops.convert_to_numpy(layer.bias))
    plain.set_weights(weights)
    return plain


def convert_model(model, frozen_by_layer, frozen_values="zeros"):
    """Rebuilds a model with chosen convolutions replaced by ``ChannelConv2D``.

    Each layer named in ``frozen_by_layer`` goes through
    :func:`from_conv2d`; every other layer is cloned and gets a copy of its
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
            use :func:`from_conv2d` in the model's own ``__init__``.
        frozen_by_layer: dict from layer name to the frozen set of that
            layer, in any form ``ChannelConv2D`` accepts (``None`` converts
            the layer with nothing frozen).
        frozen_values: ``"zeros"`` (default) or ``"keep"``, as in
            :func:`from_conv2d`, for every converted layer.

    Returns:
        A new model of the same kind, with the same name.

    Raises:
        TypeError: ``model`` is not a Sequential or functional model,
            ``frozen_by_layer`` is not a dict, or a named layer is not a
            ``Conv2D`` / ``DepthwiseConv2D``.
        ValueError: a name is not a layer of the model (all unknown names are
            listed), or a named layer cannot be converted (see
            :func:`from_conv2d`).

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
    (2, 2768)
    """
    _check_graph_model(model, "convert_model")
    if not isinstance(frozen_by_layer, Mapping):
        raise TypeError(
            "`frozen_by_layer` must be a dict from layer name to frozen set. "
            f"Received: frozen_by_layer={frozen_by_layer!r} of type "
            f"{type(frozen_by_layer).__name__}."
        )
    frozen_values = check.choice(frozen_values, FROZEN_VALUES, "frozen_values")
    names = {layer.name for layer in _all_layers(model)}
    unknown = sorted(set(frozen_by_layer) - names, key=str)
    if unknown:
        raise ValueError(
            f"`frozen_by_layer` names layers that model {model.name!r} does "
            f"not have: {unknown}. Its layers are: {sorted(names)}."
        )

    def replace(layer):
        if layer.name not in frozen_by_layer:
            return None
        return from_conv2d(layer, frozen_by_layer[layer.name], frozen_values)

    return _rebuild(model, replace)


def strip(model):
    """Returns a plain Keras copy of a model, each ``ChannelConv2D`` replaced.

    Every ``ChannelConv2D`` becomes the plain Keras layer it equals (see
    :func:`to_keras_layer`): ``reduction="sum"`` a ``keras.layers.Conv2D``,
    ``"concat"`` a ``keras.layers.DepthwiseConv2D``, holding the effective
    kernel (frozen kernels included, zero or not) and the bias. Every other
    layer is cloned with a copy of its weights. Outputs are identical to the
    original's (with ``implementation="per_channel"``, equal to float
    tolerance, since the plain layer computes the fused way), and the model,
    saved as ``.keras``, loads without importing channelconv. The original
    model is not modified. (Exception, a Keras 3.15 bug: with
    ``channels_first``, the plain layers add the bias along the wrong axis
    when the output's last spatial axis has as many entries as there are
    output channels; see :func:`from_conv2d`.)

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
        ValueError: a ``ChannelConv2D`` in it is not built.

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
    >>> bool(np.array_equal(model(x), plain(x)))
    True
    """
    _check_graph_model(model, "strip")

    def replace(layer):
        if isinstance(layer, BaseChannelConv):
            return to_keras_layer(layer)
        return None

    return _rebuild(model, replace)


def _check_graph_model(model, function):
    if not _is_graph_model(model):
        raise TypeError(
            f"`{function}` rebuilds Sequential and functional Keras models "
            "only; a subclassed model's wiring is code, so replace its layers "
            "in that code (with `from_conv2d` or `to_keras_layer`). Received: "
            f"model {getattr(model, 'name', model)!r} of type "
            f"{type(model).__name__}."
        )


def _is_graph_model(layer):
    return isinstance(layer, (keras.Sequential, Functional))


def _all_layers(model):
    """The layers of ``model``, those of nested graph models included."""
    for layer in model.layers:
        yield layer
        if _is_graph_model(layer):
            yield from _all_layers(layer)


def _rebuild(model, replace):
    """Clones ``model``, with ``replace(layer)`` where it is not ``None``.

    Layers that ``replace`` leaves alone are cloned from their config and get
    a copy of the original's weights afterwards (``clone_model`` itself does
    not copy weights).
    """
    replaced = set()  # ids of the new layers made by `replace`

    def clone(layer):
        new = replace(layer)
        if new is None:
            return layer.__class__.from_config(layer.get_config())
        replaced.add(id(new))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    _copy_weights(model, new_model, replaced)
    if model.compiled and not new_model.compiled:  # Keras < 3.9's clone_model
        new_model.compile_from_config(model.get_compile_config())
    return new_model


def _copy_weights(source, target, replaced):
    """Copies weights layer by layer (by name) except into replaced layers."""
    for layer in source.layers:
        if not layer.weights:  # e.g. an InputLayer, which the clone renames
            continue
        new = target.get_layer(layer.name)
        if id(new) in replaced:
            continue
        if _is_graph_model(layer):
            _copy_weights(layer, new, replaced)
        else:
            new.set_weights(layer.get_weights())
