"""Kernel pruning in training: schedules, the ``KernelPruning`` callback, ``condense``.

A layer built with ``prunable=True`` has a non-trainable variable
``pruned_kernels`` ``(in_channels, filters)``, 1.0 where an (input channel,
filter) kernel is pruned; its effective kernel (``layer.kernel``, what every
call convolves with) is exactly zero there. :class:`KernelPruning` sets it
during ``model.fit``, at the steps its schedule names, by the kernels'
norms; pruned kernels never come back. The state is in variables: the masks
in the layers, the step in the optimizer (``optimizer.iterations``), so
``.keras`` files, checkpoints and ``BackupAndRestore`` keep it.
:func:`condense` then makes every pruned kernel a frozen zero in compact
storage, with ``implementation="auto"``.

The schedules have TF Model Optimization's semantics: the mask changes only
at steps ``begin_step + k * frequency`` within ``[begin_step, end_step]``
(``end_step=-1``: no end).
"""

import numbers

import keras
import numpy as np

from channelconv import _graph
from channelconv import _validation as check
from channelconv.layers import BaseChannelConv

CRITERIA = ("l1", "l2")
GRANULARITIES = ("kernel", "input_channel", "filter", "group")
# What a granularity prunes, for the messages.
_UNITS = {"kernel": "kernels", "input_channel": "input channels", "filter": "filters",
          "group": "input channels in each group"}


class _Schedule:
    """The steps at which the mask changes; subclasses give the sparsity."""

    def __init__(self, begin_step, end_step, frequency):
        self.begin_step = _non_negative_int(begin_step, "begin_step")
        if not check.is_int(end_step):
            raise TypeError(
                f"`end_step` must be an integer (-1 for no end). Received: "
                f"end_step={end_step!r} of type {type(end_step).__name__}."
            )
        self.end_step = int(end_step)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(
                "`end_step` must be -1 (no end) or at least `begin_step`. "
                f"Received: begin_step={self.begin_step}, end_step={self.end_step}."
            )
        self.frequency = check.positive_int(frequency, "frequency")

    def updates_at(self, step):
        """Whether the mask changes at ``step`` (an optimizer iteration)."""
        if step < self.begin_step or (self.end_step != -1 and step > self.end_step):
            return False
        return (step - self.begin_step) % self.frequency == 0

    def __call__(self, step):
        """``(updates, sparsity)`` at ``step``, as TF Model Optimization's schedules."""
        return self.updates_at(step), self.sparsity(step)

    @property
    def max_sparsity(self):
        """The largest sparsity the schedule asks for."""
        raise NotImplementedError


class ConstantSparsity(_Schedule):
    """The same sparsity at every update step.

    Args:
        target_sparsity: float in ``[0, 1)``, the fraction of each layer's
            kernels that are zero after an update.
        begin_step: first step (optimizer iteration) of an update.
        end_step: last step of an update, ``-1`` for no end.
        frequency: updates every ``frequency`` steps from ``begin_step``.

    Example:

    >>> schedule = ConstantSparsity(0.5, begin_step=10, frequency=5)
    >>> [step for step in range(30) if schedule(step)[0]]
    [10, 15, 20, 25]
    >>> schedule(12)
    (False, 0.5)
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
        super().__init__(begin_step, end_step, frequency)
        self.target_sparsity = _sparsity(target_sparsity, "target_sparsity")

    def sparsity(self, step):
        return self.target_sparsity

    @property
    def max_sparsity(self):
        return self.target_sparsity


class PolynomialDecay(_Schedule):
    """Sparsity rising from ``initial_sparsity`` to ``final_sparsity``.

    At step ``t`` the sparsity is ``final + (initial - final) * (1 - p) **
    power`` with ``p = (t - begin_step) / (end_step - begin_step)`` clipped
    to ``[0, 1]``: TF Model Optimization's ``PolynomialDecay``.

    Args:
        initial_sparsity, final_sparsity: floats in ``[0, 1)``.
        begin_step, end_step: the ramp (``end_step > begin_step``).
        power: exponent of the ramp.
        frequency: updates every ``frequency`` steps from ``begin_step``.

    Example:

    >>> schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=100, frequency=50)
    >>> [(step, round(schedule(step)[1], 4)) for step in (0, 50, 100)]
    [(0, 0.0), (50, 0.6562), (100, 0.75)]
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3,
                 frequency=100):
        super().__init__(begin_step, end_step, frequency)
        if self.end_step <= self.begin_step:
            raise ValueError(
                "`end_step` must be larger than `begin_step` for a "
                f"PolynomialDecay. Received: begin_step={self.begin_step}, "
                f"end_step={self.end_step}."
            )
        self.initial_sparsity = _sparsity(initial_sparsity, "initial_sparsity")
        self.final_sparsity = _sparsity(final_sparsity, "final_sparsity")
        if not isinstance(power, numbers.Real) or isinstance(power, bool) or power <= 0:
            raise ValueError(f"`power` must be a positive number. Received: power={power!r}.")
        self.power = float(power)

    def sparsity(self, step):
        p = (step - self.begin_step) / (self.end_step - self.begin_step)
        p = min(max(p, 0.0), 1.0)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            1.0 - p
        ) ** self.power

    @property
    def max_sparsity(self):
        return max(self.initial_sparsity, self.final_sparsity)


class KernelPruning(keras.callbacks.Callback):
    """Prunes (input channel, filter) kernels of channel convolutions during ``fit``.

    At each update step of ``schedule`` (checked before each training batch
    against ``model.optimizer.iterations``), each pruned layer's live
    kernels with the smallest norm are pruned until the fraction of the
    layer's kernels that are zero (pruned, or frozen at zero) reaches the
    schedule's sparsity. Pruned kernels are exactly zero in ``layer.kernel``
    from that step on and are never revived; kernels frozen at non-zero
    values are never pruned.

    How many, by granularity, for a layer of ``C`` input channels and ``F``
    filters at sparsity ``s``:

    - ``"kernel"``: any kernels, ``round(s * C * F)`` zero kernels in all.
    - ``"input_channel"`` / ``"filter"``: whole input channels (rows) or
      filters (columns), ``round(s * C)`` / ``round(s * F)`` of them zero in
      all, chosen by the summed norm of their kernels.
    - ``"group"``: the filters in ``groups`` consecutive groups; in each
      group the same number of input channels, ``round(s * C)``, is zero,
      chosen per group by the norm summed over the group's filters
      (CondenseNet's criterion). The zeros are then blocks, which
      ``implementation="sparse"`` skips.

    Args:
        schedule: a :class:`ConstantSparsity` or :class:`PolynomialDecay`.
        criterion: ``"l1"`` or ``"l2"`` norm of each kernel, or a callable
            ``criterion(kernel) -> scores``: ``kernel`` is the effective
            kernel (NumPy, ``kernel_size + (C, F)``) and ``scores`` a
            ``(C, F)`` array; the lowest scores are pruned first (the
            extension point for other criteria).
        granularity: ``"kernel"`` (default), ``"input_channel"``,
            ``"filter"`` or ``"group"``.
        groups: the number of filter groups, for ``"group"`` only; it must
            divide every pruned layer's filters.
        layers: names of the layers to prune (each built with
            ``prunable=True``); default: every prunable channel convolution
            of the model.

    Raises:
        TypeError, ValueError: at construction for bad arguments, and when
            training begins for layers that do not exist, are not prunable
            channel convolutions, a ``groups`` that does not divide their
            filters, or a sparsity the schedule asks for that a layer
            cannot reach because too many of its kernels are frozen at
            non-zero values, or that rounds to every unit of a layer (for
            example 0.999 of 24 kernels: ``round(23.98) = 24``; a layer left
            with no kernel is refused as sparsity 1.0 is).

    Example:

    >>> import numpy as np, keras, channelconv
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 4)),
    ...     channelconv.ChannelConv2D(8, 3, prunable=True, name="conv"),
    ... ])
    >>> model.compile("sgd", "mse")
    >>> pruning = channelconv.KernelPruning(
    ...     channelconv.ConstantSparsity(0.5, begin_step=0, frequency=1))
    >>> x = np.random.default_rng(0).normal(size=(4, 8, 8, 4)).astype("float32")
    >>> _ = model.fit(x, np.zeros((4, 6, 6, 8)), epochs=1, verbose=0, callbacks=[pruning])
    >>> layer = model.get_layer("conv")
    >>> int(layer.pruned_kernels.numpy().sum())  # 50% of the 32 kernels
    16
    >>> kernel = keras.ops.convert_to_numpy(layer.kernel)
    >>> bool((kernel[..., layer.pruned_kernels.numpy() == 1] == 0).all())
    True
    """

    def __init__(self, schedule, criterion="l1", granularity="kernel", groups=None,
                 layers=None):
        super().__init__()
        if not isinstance(schedule, _Schedule):
            raise TypeError(
                "`schedule` must be a channelconv.ConstantSparsity or "
                f"PolynomialDecay. Received: schedule={schedule!r} of type "
                f"{type(schedule).__name__}."
            )
        self.schedule = schedule
        if not callable(criterion):
            criterion = check.choice(criterion, CRITERIA, "criterion")
        self.criterion = criterion
        self.granularity = check.choice(granularity, GRANULARITIES, "granularity")
        if self.granularity == "group":
            if groups is None:
                raise ValueError("`groups` is required with granularity='group'. Received: "
                                 "groups=None.")
            groups = check.positive_int(groups, "groups")
        elif groups is not None:
            raise ValueError(
                "`groups` applies to granularity='group' only. Received: "
                f"groups={groups!r}, granularity={self.granularity!r}."
            )
        self.groups = groups
        if layers is not None:
            if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not all(
                isinstance(n, str) for n in layers
            ):
                raise TypeError(
                    "`layers` must be a list of layer names. Received: "
                    f"layers={layers!r}."
                )
            layers = list(layers)
        self.layer_names = layers
        self._layers = []

    def on_train_begin(self, logs=None):
        self._layers = _pruned_layers(self.model, self.layer_names)
        for layer in self._layers:
            self._check_reachable(layer)

    def on_train_batch_begin(self, batch, logs=None):
        model = _attach_state(self.model)
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        # With steps_per_execution = k, Keras calls this once per k steps: an
        # update falling within them is made at their start.
        k = int(getattr(model, "steps_per_execution", 1) or 1)
        due = [t for t in range(step, step + k) if self.schedule.updates_at(t)]
        if due:
            for layer in self._layers:
                self.prune(layer, self.schedule.sparsity(due[-1]))

    def prune(self, layer, sparsity):
        """Prunes ``layer`` to ``sparsity`` now (what an update step does)."""
        if self._model is not None:
            _attach_state(self._model)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        pruned = _pruned_mask(layer)
        fixed = _frozen_nonzero(layer, kernel)
        dead = pruned | (layer.frozen_mask & ~fixed)
        scores = self._scores(kernel)
        new = _prune_mask(dead, fixed, scores, sparsity, self.granularity, self.groups)
        layer.pruned_kernels.assign((pruned | (new & ~dead)).astype("float32"))

    def _scores(self, kernel):
        axes = tuple(range(kernel.ndim - 2))
        if callable(self.criterion):
            scores = np.asarray(self.criterion(kernel), dtype=np.float64)
            if scores.shape != kernel.shape[-2:]:
                raise ValueError(
                    f"`criterion` must return one score per kernel, shape "
                    f"{kernel.shape[-2:]}. Received: shape {scores.shape}."
                )
            return scores
        if self.criterion == "l1":
            return np.abs(kernel).sum(axis=axes)
        return np.sqrt(np.square(kernel.astype(np.float64)).sum(axis=axes))

    def _check_reachable(self, layer):
        channels, filters = layer.frozen_mask.shape
        if self.granularity == "group" and filters % self.groups:
            raise ValueError(
                f"`groups` must divide the filters of every pruned layer. "
                f"Received: groups={self.groups}, layer {layer.name!r} with "
                f"{filters} filters."
            )
        fixed = _frozen_nonzero(layer, keras.ops.convert_to_numpy(layer.kernel))
        target = self.schedule.max_sparsity
        units = {"kernel": ~fixed, "input_channel": ~fixed.any(axis=1),
                 "filter": ~fixed.any(axis=0)}
        if self.granularity == "group":
            per_group = np.split(fixed, self.groups, axis=1)
            prunable = min(int((~g.any(axis=1)).sum()) for g in per_group)
            needed, total = round(target * channels), channels
        else:
            candidates = units[self.granularity]
            prunable, total = int(candidates.sum()), candidates.size
            needed = round(target * total)
        if needed >= total:
            raise ValueError(
                f"Layer {layer.name!r} would have all {total} of its "
                f"{_UNITS[self.granularity]} zero at sparsity {target} "
                f"(round({target} * {total}) = {needed}): a layer that computes "
                "nothing but its bias. Ask for a sparsity below "
                f"{(total - 0.5) / total:.4g} (sparsity 1.0 is refused likewise)."
            )
        if needed > prunable:
            raise ValueError(
                f"Layer {layer.name!r} cannot reach sparsity {target} with "
                f"granularity={self.granularity!r}: {needed} of its {total} "
                f"units would have to be zero, but only {prunable} hold no "
                "kernel frozen at a non-zero value (pruning never changes "
                "those)."
            )


def _attach_state(model):
    """``model``, its variables holding the training state (JAX), for reading and writing.

    Keras's JAX ``fit`` keeps the variables' values in a state of its own
    between steps and empties the variables (reading one fails);
    ``jax_state_sync()`` puts the values back and makes the next
    step take its state from the variables again, so that a mask assigned
    now is the one that step uses (every supported Keras, 3.8 on, has the
    method on JAX). Other backends keep the values in the variables and
    have no such method.
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()
    return model


def _pruned_layers(model, names):
    """The prunable channel convolutions of ``model`` that ``names`` selects."""
    everything = list(_graph.all_layers(model))
    by_name = {layer.name: layer for layer in everything}
    if names is None:
        layers = [la for la in everything if isinstance(la, BaseChannelConv) and la.prunable]
        if not layers:
            raise ValueError(
                f"Model {model.name!r} has no channel convolution built with "
                "prunable=True: there is nothing to prune."
            )
        return layers
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(
            f"`layers` names layers that model {model.name!r} does not have: "
            f"{unknown}."
        )
    for name in names:
        layer = by_name[name]
        if not isinstance(layer, BaseChannelConv):
            raise ValueError(
                f"`layers` must name channel convolutions. Received: layer "
                f"{name!r} of type {type(layer).__name__}."
            )
        if not layer.prunable:
            raise ValueError(
                f"Layer {name!r} was not built with prunable=True: it has no "
                "`pruned_kernels` to set."
            )
    return [by_name[n] for n in names]


def _pruned_mask(layer):
    """``(C, F)``: the pruned kernels of a prunable layer.

    A kernel is pruned where ``pruned_kernels`` is not zero, the rule
    ``layer.kernel`` applies (``KernelPruning`` writes 1.0 there, and
    ``set_weights`` and loading refuse anything but 0 and 1).
    """
    return keras.ops.convert_to_numpy(layer.pruned_kernels) != 0


def _frozen_nonzero(layer, kernel):
    """``(C, F)``: frozen kernels with a non-zero value (never pruned)."""
    axes = tuple(range(kernel.ndim - 2))
    return layer.frozen_mask & (kernel != 0).any(axis=axes)


def _prune_mask(dead, fixed, scores, sparsity, granularity, groups):
    """The zero kernels after pruning to ``sparsity`` (a superset of ``dead``).

    ``dead``: zero kernels now (pruned, or frozen at zero); ``fixed``:
    kernels never pruned; ``scores``: lower is pruned first. Ties go to the
    lower kernel number (a stable sort).
    """
    channels, filters = dead.shape
    if granularity == "kernel":
        return _prune_units(dead.reshape(-1), fixed.reshape(-1), scores.reshape(-1),
                            sparsity).reshape(dead.shape)
    if granularity == "input_channel":
        rows = _prune_units(dead.all(axis=1), fixed.any(axis=1), scores.sum(axis=1), sparsity)
        return dead | rows[:, None] & ~fixed
    if granularity == "filter":
        cols = _prune_units(dead.all(axis=0), fixed.any(axis=0), scores.sum(axis=0), sparsity)
        return dead | cols[None, :] & ~fixed
    out = dead.copy()
    size = filters // groups
    for g in range(groups):
        block = slice(g * size, (g + 1) * size)
        rows = _prune_units(dead[:, block].all(axis=1), fixed[:, block].any(axis=1),
                            scores[:, block].sum(axis=1), sparsity)
        out[:, block] |= rows[:, None] & ~fixed[:, block]
    return out


def _prune_units(dead, fixed, scores, sparsity):
    """Units (kernels, rows or columns) zero after pruning to ``sparsity``.

    Adds the live, non-fixed units with the lowest scores to ``dead`` until
    ``round(sparsity * n)`` units are zero (never fewer than are zero now).
    """
    target = int(round(sparsity * dead.size))
    missing = target - int(dead.sum())
    out = dead.copy()
    if missing <= 0:
        return out
    candidates = np.flatnonzero(~dead & ~fixed)
    order = candidates[np.argsort(scores[candidates], kind="stable")]
    out[order[:missing]] = True
    return out


def condense(model):
    """A copy of ``model`` whose pruned kernels are frozen zeros in compact storage.

    Every prunable channel convolution becomes the same layer, not
    prunable, with its pruned kernels added to its frozen set (at zero,
    by construction: stored nowhere, unless another frozen kernel holds a
    non-zero value, which the layer then stores) and
    ``implementation="auto"`` (the sparse plan where it is faster and the
    frozen kernels are zeros by construction): its parameters, and an
    optimizer's state, cover the live kernels only. The outputs equal the pruned model's (to float tolerance, where
    ``"auto"`` runs the sparse plan). Other layers are cloned with their
    weights. The model is not modified.

    Args:
        model: a built Sequential or functional model.

    Returns:
        The condensed model.

    Example:

    >>> import numpy as np, keras, channelconv
    >>> model = keras.Sequential([keras.Input((6, 6, 2)),
    ...     channelconv.ChannelConv2D(4, 3, prunable=True, name="conv")])
    >>> _ = model.get_layer("conv").pruned_kernels.assign(np.eye(2, 4, dtype="float32"))
    >>> small = condense(model)
    >>> layer = small.get_layer("conv")
    >>> layer.prunable, int(layer.frozen_mask.sum()), tuple(layer.trainable_kernels.shape)
    (False, 2, (3, 3, 6))
    >>> x = np.ones((1, 6, 6, 2), "float32")
    >>> outputs = [keras.ops.convert_to_numpy(m(x)) for m in (small, model)]
    >>> bool(np.allclose(*outputs, atol=1e-6))
    True
    """
    _graph.check_graph_model(model, "condense")

    def replace(layer):
        if not (isinstance(layer, BaseChannelConv) and layer.prunable):
            return None
        frozen = layer.frozen_mask | _pruned_mask(layer)
        config = layer.get_config()
        for name in ("filters", "kernel_size", "frozen_initializer", "store_frozen"):
            del config[name]
        bias = keras.ops.convert_to_numpy(layer.bias) if layer.use_bias else None
        config.update(prunable=False, frozen=frozen, implementation="auto")
        return type(layer).from_kernel(keras.ops.convert_to_numpy(layer.kernel), bias, **config)

    return _graph.rebuild(model, replace)


def _sparsity(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a number in [0, 1). Received: {name}={value!r} of "
            f"type {type(value).__name__}."
        )
    if not 0 <= value < 1:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}.")
    return float(value)


def _non_negative_int(value, name):
    if not check.is_int(value):
        raise TypeError(
            f"`{name}` must be a non-negative integer. Received: {name}={value!r} "
            f"of type {type(value).__name__}."
        )
    if value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value}.")
    return int(value)
