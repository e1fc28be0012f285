"""The rank-generic base of the channel convolutions."""

import keras
import numpy as np
from keras import activations, constraints, initializers, ops, regularizers

from channelconv import _backend
from channelconv import _validation as check
from channelconv.assembly import KernelAssembly
from channelconv.mask import frozen_to_config, parse_frozen, resolve_frozen
from channelconv.ops import REDUCTIONS, add_bias, convolve
from channelconv.plan import make_plan
from channelconv.sparse import SparseConvolution

# Keras's paddings by rank: only 1-D convolutions have "causal".
PADDINGS = {1: ("valid", "same", "causal"), 2: ("valid", "same"), 3: ("valid", "same")}
# ``ops.convolve``'s two, and the two that run a sparse plan.
IMPLEMENTATIONS = ("fused", "per_channel", "sparse", "auto")


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
        mask = resolve_frozen(self._frozen, in_channels, self.filters)
        self.compute_output_shape(input_shape)

        self._frozen = mask
        self._assembly = KernelAssembly(mask, self.kernel_size)
        self._kernel_shape = self._assembly.kernel_shape
        trainable_pos = self._assembly.trainable_positions
        frozen_pos = self._assembly.frozen_positions
        view = _TrainableView(self._assembly)
        self.trainable_kernels = self.add_weight(
            name="trainable_kernels",
            shape=self.kernel_size + (trainable_pos.size,),
            initializer=view.initializer(self.kernel_initializer, trainable_pos),
            regularizer=view.regularizer(self.kernel_regularizer),
            constraint=view.constraint(self.kernel_constraint),
            trainable=True,
        )
        self.frozen_kernels = self.add_weight(
            name="frozen_kernels",
            shape=self.kernel_size + (frozen_pos.size,),
            initializer=view.initializer(self.frozen_initializer, frozen_pos),
            trainable=False,
        )
        if self.prunable:  # 1.0 where a kernel is pruned (channelconv.pruning)
            self.pruned_kernels = self.add_weight(
                name="pruned_kernels",
                shape=mask.shape,
                initializer="zeros",
                trainable=False,
            )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
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

    def _choose_sparse(self):
        """Makes the sparse plan; runs it for ``"sparse"``, or where ``"auto"`` prefers."""
        nonzero = _nonzero_kernels(self.frozen_kernels)
        if self.implementation == "auto" and (nonzero.any() or self.prunable):
            return  # frozen at non-zero values or pruned in training: fused
        if nonzero.any():  # serialize only for the message: Keras may import TensorFlow
            initializer = initializers.serialize(self.frozen_initializer)
            self._refuse_nonzero_frozen(nonzero, f"`frozen_initializer={initializer!r}`")
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
        """The effective full kernel, ``kernel_size + (in_channels, filters)``."""
        if not self.built:
            raise AttributeError("The layer must be built before `kernel` exists.")
        kernel = self._assembly(self.trainable_kernels, self.frozen_kernels)
        if self.prunable:  # pruned kernels are exactly zero
            kernel = kernel * ops.cast(1.0 - self.pruned_kernels, kernel.dtype)
        return kernel

    def assign_kernel(self, kernel):
        """Sets the trainable and the frozen kernels from one full kernel.

        Besides ``set_weights`` and loading, this is the only way a frozen
        kernel changes: use it to freeze kernels at chosen values.

        Args:
            kernel: array of shape ``kernel_size + (in_channels, filters)``.

        Raises:
            ValueError: the layer is not built or the shape differs.
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
        if self._sparse is not None:
            self._refuse_nonzero_frozen(_nonzero_kernels(frozen), "`assign_kernel`")
        self.trainable_kernels.assign(trainable)
        self.frozen_kernels.assign(frozen)

    def set_weights(self, weights):
        self._unless_nonzero_frozen("`set_weights`", super().set_weights, weights)

    def load_own_variables(self, store):
        self._unless_nonzero_frozen("loading", super().load_own_variables, store)

    def _unless_nonzero_frozen(self, source, assign, *args):
        """``assign(*args)``, undone and refused if a frozen kernel becomes non-zero."""
        if self._sparse is None:
            return assign(*args)
        before = [ops.convert_to_numpy(v) for v in self.weights]
        assign(*args)
        nonzero = _nonzero_kernels(self.frozen_kernels)
        if nonzero.any():
            for variable, value in zip(self.weights, before):
                variable.assign(value)
            self._refuse_nonzero_frozen(nonzero, source)

    def _refuse_nonzero_frozen(self, nonzero, source):
        """The sparse implementation's one rule: frozen kernels are zeros."""
        if not nonzero.any():
            return
        numbers = self._assembly.frozen_positions[nonzero]
        pairs = ", ".join(str(divmod(int(n), self.filters)) for n in numbers[:3])
        raise ValueError(
            f"implementation={self.implementation!r} runs the layer with its "
            f"frozen kernels taken as zeros, but {source} gives "
            f"{nonzero.sum()} of its {nonzero.size} frozen kernels non-zero "
            f"values: (input channel, filter) {pairs}"
            f"{', ...' if nonzero.sum() > 3 else ''}. Use implementation="
            "'fused' to freeze kernels at non-zero values."
        )

    def call(self, inputs):
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
            }
        )
        return config


def _nonzero_kernels(frozen):
    """For each compact frozen kernel, whether any of its values is non-zero.

    Reads the values eagerly, also while a ``tf.function`` is being traced
    (a layer first called there is built there).
    """
    if _backend.is_tensorflow():
        import tensorflow as tf

        with tf.init_scope():
            values = np.asarray(ops.convert_to_numpy(frozen))
    else:
        values = np.asarray(ops.convert_to_numpy(frozen))
    return (values != 0).any(axis=tuple(range(values.ndim - 1)))


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
        n_frozen = self.assembly.frozen_positions.size
        zeros = ops.zeros(self.kernel_shape[:-2] + (n_frozen,), dtype=trainable.dtype)
        return self.assembly(trainable, zeros)

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
