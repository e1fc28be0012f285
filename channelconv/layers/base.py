"""The rank-generic base of the channel convolutions."""

import warnings

import keras
import numpy as np
from keras import activations, constraints, initializers, ops, regularizers

from channelconv import _backend
from channelconv import _validation as check
from channelconv._assembly import KernelAssembly
from channelconv import _storage as storage
from channelconv.mask import (
    check_size, frozen_to_config, is_boolean_rows, parse_frozen, resolve_frozen,
)
from channelconv._ops import add_bias, convolve
from channelconv.options import IMPLEMENTATIONS, REDUCTIONS
from channelconv.plan import make_plan
from channelconv._sparse import SparseConvolution

# Keras's paddings by rank: only 1-D convolutions have "causal".
PADDINGS = {1: ("valid", "same", "causal"), 2: ("valid", "same"), 3: ("valid", "same")}


class BaseChannelConv(keras.layers.Layer):
    """A convolution whose individual (input channel, filter) kernels may be frozen.

    The public layers (:class:`channelconv.ChannelConv1D`,
    :class:`~channelconv.ChannelConv2D`, :class:`~channelconv.ChannelConv3D`)
    document the arguments. Each is this base with its class attribute
    ``rank``, the number of spatial dimensions, set: unlike Keras's
    ``BaseConv``, which takes ``rank`` as an argument and whose subclasses
    repeat its twenty arguments, one signature serves every rank here.
    """

    rank = None  # set by each public layer

    def __init__(
        self,
        filters,
        kernel_size,
        frozen=None,
        frozen_initializer="zeros",
        reduction="sum",
        implementation="fused",
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        prunable=False,
        store_frozen=None,
        **kwargs,
    ):
        if self.rank not in PADDINGS:
            raise TypeError(
                f"{type(self).__name__} has no rank: use ChannelConv1D, "
                "ChannelConv2D or ChannelConv3D, or set the class attribute "
                f"`rank` to 1, 2 or 3. Received: rank={self.rank!r}."
            )
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        rank = self.rank
        self.filters = check.positive_int(filters, "filters")
        self.kernel_size = check.int_tuple(kernel_size, rank, "kernel_size")
        self.strides = check.int_tuple(strides, rank, "strides")
        self.dilation_rate = check.int_tuple(dilation_rate, rank, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides > 1` is not supported together with "
                f"`dilation_rate > 1`. Received: strides={self.strides} and "
                f"dilation_rate={self.dilation_rate}."
            )
        self.padding = check.choice(padding, PADDINGS[rank], "padding")
        self.data_format = check.choice(
            keras.config.image_data_format() if data_format is None else data_format,
            ("channels_last", "channels_first"),
            "data_format",
        )
        self.reduction = check.choice(reduction, REDUCTIONS, "reduction")
        self.implementation = check.choice(
            implementation, IMPLEMENTATIONS, "implementation"
        )
        self._frozen = parse_frozen(frozen, self.filters)
        self._plan = None
        self._sparse = None
        self.frozen_initializer = initializers.get(frozen_initializer)
        self.activation = activations.get(activation)
        self.use_bias = check.boolean(use_bias, "use_bias")
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.prunable = check.boolean(prunable, "prunable")
        self.store_frozen = _store_frozen(store_frozen, self.frozen_initializer)
        if self.store_frozen and self.implementation == "sparse":
            raise ValueError(
                "implementation='sparse' skips the frozen kernels, so they must be "
                "zeros by construction (store_frozen=False, frozen_initializer="
                "'zeros'); use implementation='fused' (or 'auto', which then "
                "runs fused) to freeze kernels at other values. Received: "
                f"implementation='sparse', store_frozen=True, frozen_initializer="
                f"{_initializer_name(self.frozen_initializer)}."
            )
        if self.prunable and self.implementation == "sparse":
            raise ValueError(
                "implementation='sparse' runs a plan made from the frozen set "
                "when the layer is built, so it cannot follow kernels pruned "
                "during training: use implementation='fused' (or 'auto', which "
                "runs fused) with prunable=True, then `channelconv.condense`. "
                "Received: implementation='sparse', prunable=True."
            )

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != self.rank + 2:
            spatial = f"{self.rank} spatial dimension{'s' * (self.rank > 1)}"
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank {self.rank + 2} "
                f"(batch, {spatial}, channels). Received input_shape={input_shape}."
            )
        in_channels = input_shape[self._channel_axis]
        if in_channels is None:
            raise ValueError(
                "The channel dimension of the input must be known, but it is "
                f"None (data_format={self.data_format!r}). Received "
                f"input_shape={input_shape}."
            )
        check_size(in_channels, self.filters, self.kernel_size)
        mask = resolve_frozen(self._frozen, in_channels, self.filters)
        self.compute_output_shape(input_shape)

        self._frozen = mask
        if self.store_frozen is None:  # a config written before 0.2.0
            self.store_frozen = self._stored_before_0_2_0(mask)
        self._assembly = KernelAssembly(mask, self.kernel_size)
        self._kernel_shape = self._assembly.kernel_shape
        trainable_pos = self._assembly.trainable_positions
        frozen_pos = self._assembly.frozen_positions
        # The backend's own checkpoint entries, restored before the variables.
        _backend.track_checkpoint(self, self.kernel_size, frozen_pos.size)
        view = _TrainableView(self._assembly)
        self.trainable_kernels = self.add_weight(
            name=storage.TRAINABLE,
            shape=self.kernel_size + (trainable_pos.size,),
            initializer=view.initializer(self.kernel_initializer, trainable_pos),
            regularizer=view.regularizer(self.kernel_regularizer),
            constraint=view.constraint(self.kernel_constraint),
            trainable=True,
        )
        self.frozen_kernels = None
        if self.store_frozen:
            self.frozen_kernels = self.add_weight(
                name=storage.FROZEN,
                shape=self.kernel_size + (frozen_pos.size,),
                initializer=view.initializer(self.frozen_initializer, frozen_pos),
                trainable=False,
            )
        if self.prunable:  # 1.0 where a kernel is pruned (channelconv.pruning)
            self.pruned_kernels = self.add_weight(
                name=storage.PRUNED,
                shape=mask.shape,
                initializer="zeros",
                trainable=False,
            )
        if self.use_bias:
            self.bias = self.add_weight(
                name=storage.BIAS,
                shape=(self._output_channels(in_channels),),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
            )
        else:
            self.bias = None
        self.input_spec = keras.InputSpec(
            ndim=self.rank + 2, axes={self._channel_axis: in_channels}
        )
        if self.implementation in ("sparse", "auto"):
            self._choose_sparse()

    def _stored_before_0_2_0(self, mask):
        """Whether a layer configured before 0.2.0 may hold non-zero frozen kernels.

        Until 0.2.0 every layer stored its frozen kernels, and only those
        running the sparse plan kept them at zero: ``"sparse"``, and
        ``"auto"`` where the plan was preferred (decided then from the
        initializer's zeros). Those keep them at zero by construction now;
        every other layer stores them, as it did.
        """
        if not _is_zeros(self.frozen_initializer) or self.prunable:
            return True
        if self.implementation == "sparse":
            return False
        if self.implementation == "auto":
            return not make_plan(mask, self.kernel_size, self.reduction).prefer_sparse
        return True

    def _choose_sparse(self):
        """Makes the sparse plan; runs it for ``"sparse"``, or where ``"auto"`` prefers.

        Only a layer whose frozen kernels are zeros by construction (not
        stored, not pruned in training) may skip them, so ``"auto"`` runs
        fused otherwise.
        """
        if self.store_frozen or self.prunable:
            return
        self._plan = plan = make_plan(self._frozen, self.kernel_size, self.reduction)
        if self.implementation == "sparse" or plan.prefer_sparse:
            self._sparse = SparseConvolution(plan, self.kernel_size)
            self._block_kernels = self._assembly.taker(plan.kernel_numbers, frozen=False)

    @property
    def plan(self):
        """The :class:`~channelconv.plan.SparsePlan` of the frozen kernels.

        The dense convolutions that compute the layer with its frozen
        kernels taken as zeros (what ``implementation="sparse"`` runs,
        and ``"auto"`` when the plan is expected to be faster); made from
        the frozen mask, on first use, for any implementation.
        """
        if not self.built:
            raise AttributeError("The layer must be built before `plan` exists.")
        if self._plan is None:
            self._plan = make_plan(self._frozen, self.kernel_size, self.reduction)
        return self._plan

    @property
    def implementation_in_use(self):
        """``"fused"``, ``"per_channel"`` or ``"sparse"``: what ``call`` runs.

        ``implementation`` itself unless it is ``"auto"``, which is resolved
        when the layer is built.
        """
        if not self.built:
            raise AttributeError(
                "The layer must be built before `implementation_in_use` is known."
            )
        if self._sparse is not None:
            return "sparse"
        return "per_channel" if self.implementation == "per_channel" else "fused"

    @property
    def frozen_mask(self):
        """Boolean array ``(in_channels, filters)``: ``True`` where frozen."""
        if not self.built:
            raise AttributeError(
                "The layer must be built before `frozen_mask` is known."
            )
        return self._frozen

    @property
    def kernel(self):
        """The effective full kernel, ``kernel_size + (in_channels, filters)``.

        What every implementation computes with: the trainable kernels, the
        frozen ones (zeros unless ``store_frozen``), and zeros where a kernel
        is pruned.
        """
        if not self.built:
            raise AttributeError("The layer must be built before `kernel` exists.")
        kernel = self._assembly(self.trainable_kernels, self.frozen_kernels)
        if self.prunable:  # exactly zero where pruned, whatever the kernel holds
            pruned = ops.not_equal(self.pruned_kernels, 0)
            kernel = ops.where(pruned, ops.zeros((), kernel.dtype), kernel)
        return kernel

    @classmethod
    def from_kernel(cls, kernel, bias=None, **config):
        """A built layer holding a full ``kernel`` (and ``bias``).

        The one way a layer is made from values (``from_conv``, ``condense``
        use it). ``filters`` and ``kernel_size`` come from the kernel's
        shape and the input channels from its second-to-last axis. Unless
        ``store_frozen`` is given, the frozen kernels are stored exactly
        when one of them is non-zero in ``kernel``; zeros are structure.

        Args:
            kernel: array ``kernel_size + (in_channels, filters)``.
            bias: ``None``, or the bias (required with ``use_bias=True``,
                the default).
            **config: any other constructor argument (``frozen``,
                ``reduction``, ``implementation``, ...).

        Raises:
            ValueError: ``filters`` or ``kernel_size`` given and not the
                kernel's, a bias missing or given without ``use_bias``, or
                what the constructor, ``build`` and :meth:`assign_kernel`
                raise (e.g. ``implementation="sparse"`` with non-zero
                frozen kernels).

        Example:

        >>> import numpy as np, channelconv
        >>> kernel = np.ones((3, 3, 2, 4), "float32")
        >>> layer = channelconv.ChannelConv2D.from_kernel(
        ...     kernel, np.zeros(4, "float32"), frozen=[(0, 1)])
        >>> layer.store_frozen, int(layer.frozen_kernels.shape[-1])  # (0, 1) holds ones
        (True, 1)
        >>> kernel[:, :, 0, 1] = 0
        >>> zero = channelconv.ChannelConv2D.from_kernel(
        ...     kernel, frozen=[(0, 1)], use_bias=False, implementation="sparse")
        >>> zero.store_frozen, zero.frozen_kernels, zero.implementation_in_use
        (False, None, 'sparse')
        """
        kernel = np.asarray(kernel)
        if kernel.ndim != cls.rank + 2:
            raise ValueError(
                f"`kernel` must have shape kernel_size + (in_channels, filters), "
                f"{cls.rank + 2} axes for {cls.__name__}. Received: shape {kernel.shape}."
            )
        shape_args = {"kernel_size": tuple(kernel.shape[:-2]), "filters": kernel.shape[-1]}
        given = {
            "kernel_size": lambda v: check.int_tuple(v, cls.rank, "kernel_size"),
            "filters": lambda v: check.positive_int(v, "filters"),
        }
        for name, value in shape_args.items():
            if name in config and given[name](config[name]) != value:
                raise ValueError(
                    f"`{name}` is the kernel's when a layer is made from it, "
                    f"{value}. Received: {name}={config[name]!r}."
                )
        config.update(shape_args)
        in_channels, filters = kernel.shape[-2:]
        if config.get("store_frozen") is None and _is_zeros(
            initializers.get(config.get("frozen_initializer", "zeros"))
        ):
            mask = resolve_frozen(parse_frozen(config.get("frozen"), filters), in_channels, filters)
            nonzero = storage.nonzero_kernels(kernel[..., mask])
            config["store_frozen"] = bool(nonzero.any())
            if nonzero.any() and config.get("implementation") == "sparse":
                raise storage.nonzero_frozen_error(
                    config.get("name", cls.__name__), np.flatnonzero(mask), filters,
                    nonzero, "`kernel`", _SPARSE_NEEDS_ZEROS)
        layer = cls(**config)
        if layer.use_bias != (bias is not None):
            raise ValueError(
                f"`bias` must be given exactly when use_bias=True. Received: "
                f"use_bias={layer.use_bias}, bias={'None' if bias is None else 'an array'}."
            )
        layer.build(layer._input_shape_for(in_channels))
        layer.assign_kernel(kernel)
        if bias is not None:
            layer._write({storage.BIAS: np.asarray(bias)}, "`bias`", partial=True)
        return layer

    def _input_shape_for(self, in_channels):
        """A build shape with ``in_channels`` channels and unknown sizes."""
        if self.data_format == "channels_last":
            return (None,) * (self.rank + 1) + (in_channels,)
        return (None, in_channels) + (None,) * self.rank

    def assign_kernel(self, kernel):
        """Sets the trainable and the frozen kernels from one full kernel.

        Besides ``set_weights`` and loading, the way a stored frozen kernel
        (``store_frozen=True``) changes. A layer that keeps its frozen
        kernels at zero by construction refuses non-zero values for them.
        Nothing is assigned unless everything is accepted.

        Args:
            kernel: array of shape ``kernel_size + (in_channels, filters)``.

        Raises:
            ValueError: the layer is not built, the shape differs, or a
                frozen kernel that must stay zero is given a non-zero value.
        """
        if not self.built:
            raise ValueError("Build the layer before calling `assign_kernel`.")
        kernel = np.asarray(kernel)
        if kernel.shape != self._kernel_shape:
            raise ValueError(
                f"`kernel` must have shape {self._kernel_shape}. Received: "
                f"shape {kernel.shape}."
            )
        trainable, frozen = self._assembly.split(kernel)
        values = {storage.TRAINABLE: trainable, storage.FROZEN: frozen}
        self._write(values, "`assign_kernel`", partial=True)

    def set_weights(self, weights):
        """Sets the weights from a list of arrays, as ``get_weights`` gives them.

        Also takes the list of a twin layer of the same frozen mask that
        differs in ``store_frozen`` (frozen kernels in the list or not)
        where the values allow it: frozen kernels missing from the list are
        zeros; frozen kernels in the list must be zeros unless this layer
        stores them. Every value is checked before any is assigned.
        """
        weights = list(weights)
        names = [v.name for v in self.weights]
        if self.built and len(weights) != len(names):
            twin = storage.layout(self.use_bias, not self.store_frozen, self.prunable)
            names = twin if len(weights) == len(twin) else names
        if len(weights) != len(names):
            raise ValueError(
                f"You called `set_weights(weights)` on layer {self.name!r} with a "
                f"weight list of length {len(weights)}, but the layer was expecting "
                f"{len(names)} weights ({', '.join(names)})."
            )
        self._write(dict(zip(names, weights)), "`set_weights`")

    def save_own_variables(self, store):
        for variable in self.weights:
            store[variable.name] = variable
        for key, value in storage.pack_mask(self._frozen).items():
            store[key] = value

    def load_own_variables(self, store):
        legacy = storage.layout(self.use_bias, True, self.prunable)
        values, mask = storage.saved_values(store, self.name, legacy)
        if mask is not None:
            storage.check_same_mask(self.name, self._frozen, mask, "loading")
        self._write(values, "loading")

    def _write(self, values, source, partial=False):
        """The one place weights are written from outside: check all, then assign.

        Args:
            values: dict from weight name to array.
            source: what gives them, for the messages.
            partial: whether weights missing from ``values`` keep their
                values (otherwise every weight must be given, except frozen
                kernels, which are then zeros).
        """
        variables = {v.name: v for v in self.weights}
        values = {name: np.asarray(value) for name, value in values.items()}
        unknown = sorted(set(values) - set(variables) - {storage.FROZEN})
        if unknown:
            raise ValueError(
                f"Layer {self.name!r} has no weights {unknown}, which {source} "
                f"gives. Its weights: {list(variables)}."
            )
        if storage.FROZEN in values and not self.store_frozen:
            frozen = values.pop(storage.FROZEN)
            if frozen.shape == self.kernel_size + (self._assembly.frozen_positions.size,):
                self._refuse_nonzero_frozen(storage.nonzero_kernels(frozen), source)
            elif frozen.any():
                raise ValueError(
                    f"Layer {self.name!r} keeps its frozen kernels at zero by "
                    f"construction, but {source} gives non-zero frozen kernels of "
                    f"shape {frozen.shape}."
                )
        if not partial:
            if storage.FROZEN in variables and storage.FROZEN not in values:
                values[storage.FROZEN] = np.zeros(variables[storage.FROZEN].shape)
            missing = [name for name in variables if name not in values]
            if missing:
                raise ValueError(
                    f"Layer {self.name!r} needs the weights {missing}, which "
                    f"{source} does not give."
                )
        for name, value in values.items():
            if tuple(value.shape) != tuple(variables[name].shape):
                raise ValueError(
                    f"Layer {self.name!r}: weight {name!r} has shape "
                    f"{tuple(variables[name].shape)}, but {source} gives shape "
                    f"{value.shape}."
                )
        if storage.PRUNED in values:
            storage.check_pruned(self.name, values[storage.PRUNED], source)
        for name, value in values.items():
            variables[name].assign(value)

    def _refuse_nonzero_frozen(self, nonzero, source):
        """Refuses non-zero values for frozen kernels that are zeros by construction."""
        if np.any(nonzero):
            raise storage.nonzero_frozen_error(
                self.name, self._assembly.frozen_positions, self.filters, nonzero,
                source, _ZEROS_BY_CONSTRUCTION)

    def call(self, inputs):
        inputs = self._checked_inputs(inputs)
        conv_args = dict(
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self._sparse is not None:
            kernels = ops.cast(self._block_kernels(self.trainable_kernels), self.compute_dtype)
            outputs = self._sparse(inputs, kernels, self.bias, **conv_args)
        else:
            outputs = self._dense_call(inputs, conv_args)
            if self.use_bias:
                outputs = add_bias(outputs, self.bias, self.data_format)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def _checked_inputs(self, inputs):
        """``inputs`` in the compute dtype, after the checks ``build`` made for its shape.

        ``build`` checks the shape it is given; a later call (eagerly, or
        traced with known sizes) may bring a smaller input, which the
        backends' kernels answer with garbage or a raw error: the same
        ``ValueError`` is raised here. Integer and boolean inputs are cast
        to the compute dtype (Keras's autocast casts floating inputs only).
        """
        self.compute_output_shape(tuple(inputs.shape))
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if "float" in dtype:
            return inputs
        if dtype == "bool" or "int" in dtype:
            return ops.cast(inputs, self.compute_dtype)
        raise TypeError(
            f"{type(self).__name__} takes real-valued inputs (floating, integer or "
            f"boolean, computed in {self.compute_dtype}). Received: inputs of dtype "
            f"{dtype}; convert them first, e.g. keras.ops.real(x) for a complex x."
        )

    def _dense_call(self, inputs, conv_args):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        return convolve(
            inputs,
            kernel,
            reduction=self.reduction,
            implementation=self.implementation_in_use,
            **conv_args,
        )

    def _output_channels(self, in_channels):
        if self.reduction == "sum":
            return self.filters
        return in_channels * self.filters

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.data_format == "channels_last":
            spatial = input_shape[1:-1]
        else:
            spatial = input_shape[2:]
        out = []
        for size, k, s, d in zip(
            spatial, self.kernel_size, self.strides, self.dilation_rate
        ):
            if size is None:
                out.append(None)
                continue
            if self.padding == "valid":  # "same" and "causal" keep the size
                size = size - d * (k - 1)
            length = (size + s - 1) // s
            if length < 1:
                raise ValueError(
                    "The input is too small for the kernel: an output "
                    f"dimension would be {length}. Received input_shape="
                    f"{input_shape}, kernel_size={self.kernel_size}, "
                    f"dilation_rate={self.dilation_rate}, "
                    f"padding={self.padding!r}."
                )
            out.append(length)
        in_channels = input_shape[self._channel_axis]
        channels = None if in_channels is None else self._output_channels(in_channels)
        if self.data_format == "channels_last":
            return (input_shape[0], *out, channels)
        return (input_shape[0], channels, *out)

    @classmethod
    def from_config(cls, config):
        if is_boolean_rows(config.get("frozen")):  # the form 0.1.0 wrote
            warnings.warn(
                f"Layer {config.get('name')!r} was saved by channelconv 0.1.0, with "
                "its frozen set as nested lists of booleans: that form is read "
                "until 1.0.0 (docs/api.md, \"Deprecations\"). Save the model again "
                "to write the compact form.",
                DeprecationWarning,
                stacklevel=2,
            )
        layer = super().from_config(config)
        if config.get("store_frozen") is None:  # written before 0.2.0: decided at build
            layer.store_frozen = None
        return layer

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "frozen": frozen_to_config(self._frozen),
                "frozen_initializer": initializers.serialize(self.frozen_initializer),
                "reduction": self.reduction,
                "implementation": self.implementation,
                "strides": self.strides,
                "padding": self.padding,
                "data_format": self.data_format,
                "dilation_rate": self.dilation_rate,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": regularizers.serialize(
                    self.activity_regularizer
                ),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
                "prunable": self.prunable,
                "store_frozen": self.store_frozen,
            }
        )
        return config


_ZEROS_BY_CONSTRUCTION = (
    "This layer keeps its frozen kernels at zero by construction "
    "(store_frozen=False): nothing stores them, so nothing can change them. "
    "Build it with store_frozen=True (it then runs fused) to freeze kernels "
    "at other values."
)
_SPARSE_NEEDS_ZEROS = (
    "implementation='sparse' skips the frozen kernels, so they must be zeros; "
    "use implementation='fused' or 'auto' (which then runs fused) to freeze "
    "kernels at other values."
)


def _is_zeros(initializer):
    """Whether ``initializer`` draws zeros only (``Zeros``, or ``Constant(0)``)."""
    if isinstance(initializer, initializers.Zeros):
        return True
    return isinstance(initializer, initializers.Constant) and np.all(
        np.asarray(initializer.value) == 0
    )


def _initializer_name(initializer):
    return type(initializer).__name__


def _store_frozen(store_frozen, frozen_initializer):
    """The ``store_frozen`` of a layer: given, or whether its frozen initializer is not zeros."""
    if store_frozen is None:
        return not _is_zeros(frozen_initializer)
    store_frozen = check.boolean(store_frozen, "store_frozen")
    if not store_frozen and not _is_zeros(frozen_initializer):
        raise ValueError(
            "store_frozen=False keeps the frozen kernels at zero by construction, "
            "but `frozen_initializer` gives them other values. Use "
            "frozen_initializer='zeros', or store_frozen=True (or leave it out) "
            "to keep the initializer's values. Received: store_frozen=False, "
            f"frozen_initializer={_initializer_name(frozen_initializer)}."
        )
    return store_frozen


class _TrainableView:
    """Lets kernel initializers, regularizers and constraints see a full kernel.

    They are written for a kernel of shape ``kernel_size + (in_channels,
    filters)`` (fan-in and fan-out, ``MaxNorm(axis=...)``), while the
    variables hold compact slices of it. This view gives them the full kernel,
    with the frozen kernels at zero, and keeps only the part they may touch.
    """

    def __init__(self, assembly):
        self.assembly = assembly
        self.kernel_shape = assembly.kernel_shape

    def initializer(self, initializer, positions):
        """Draws a full kernel with ``initializer``; keeps ``positions``."""

        def init(shape, dtype=None):
            full = initializer(self.kernel_shape, dtype=dtype)
            return ops.take(self._flat(full), positions, axis=-1)

        return init

    def regularizer(self, regularizer):
        """``regularizer`` of the full kernel, as a regularizer of the trainable one."""
        return None if regularizer is None else _FullKernelRegularizer(self, regularizer)

    def constraint(self, constraint):
        """``constraint`` of the full kernel, as a constraint of the trainable one."""
        return None if constraint is None else _FullKernelConstraint(self, constraint)

    def full(self, trainable):
        """The full kernel made from ``trainable``, frozen kernels at zero."""
        return self.assembly(trainable)

    def trainable_part(self, kernel):
        """The trainable kernels of a full ``kernel``."""
        positions = self.assembly.trainable_positions
        return ops.take(self._flat(kernel), positions, axis=-1)

    def _flat(self, kernel):
        return ops.reshape(kernel, self.kernel_shape[:-2] + (-1,))


# Keras (before 3.5) accepts only Regularizer and Constraint instances as a
# variable's regularizer and constraint, not plain functions.
class _FullKernelRegularizer(regularizers.Regularizer):
    """A kernel regularizer applied to the full kernel (see ``_TrainableView``)."""

    def __init__(self, view, regularizer):
        self.view = view
        self.regularizer = regularizer

    def __call__(self, trainable):
        return self.regularizer(self.view.full(trainable))


class _FullKernelConstraint(constraints.Constraint):
    """A kernel constraint applied to the full kernel (see ``_TrainableView``)."""

    def __init__(self, view, constraint):
        self.view = view
        self.constraint = constraint

    def __call__(self, trainable):
        return self.view.trainable_part(self.constraint(self.view.full(trainable)))
