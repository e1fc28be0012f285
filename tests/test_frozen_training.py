"""Frozen kernels stay bit-exact through training; trainable ones train.

Every test runs with the layer of each rank (``ChannelConv1D/2D/3D``,
kernel 3, 3x3 or 3x3x3) unless it says otherwise. Most frozen sets are
stored (``store_frozen=True``) and hold some frozen kernels at zero and
some at non-zero values (set with ``assign_kernel``), so that weight decay or
a regularizer that reached a frozen kernel would move it; the others keep
them at zero by construction (no variable: :data:`LAYOUTS` ``zero`` and
``groups``). Equality is checked with ``np.array_equal``. The
table trains each optimizer on the scattered set (5 of 12 kernels) and, with
Adam, the frozen sets that take the other paths of the kernel assembly
(:data:`LAYOUTS`), in 2-D; ranks 1 and 3 run a subset of the rows
(:data:`EVERY_RANK`), for run time: whatever the rank, the frozen kernels
are in no optimizer (checked for each rank by
``test_adam_keeps_state_for_trainable_kernels_only``), so the other
optimizers add nothing rank-specific. In float32 each row also
compares the trained layer with NumPy: the full kernel rebuilt here from the
two variables and the mask, the output, and the gradient of the trainable
kernels. Everything runs on every Keras backend, mixed precision and the
compiled train step included; on PyTorch, where ``jit_compile=True`` means
``torch.compile`` (10 to 20 s per model), and on JAX, where it is the
default, the compiled rows run in 2-D only (:data:`COMPILED`).
"""

import dataclasses
import functools

import keras
import numpy as np
import pytest

from channelconv import grouped_frozen_mask
from channelconv._assembly import KernelAssembly
from harness import (
    BACKEND,
    CONVS,
    LAYERS,
    layer_vjp,
    numpy_conv,
    numpy_conv_gradients,
    to_numpy,
    fresh_torch_compile_cache,
    weights_by_name,
)

RANKS = (1, 2, 3)
IN_CHANNELS, FILTERS, KERNEL = 3, 4, 3
SIZE, OUT_SIZE = 6, 4  # input and ("valid") output size along every spatial axis
FROZEN = [(0, 0), (0, 3), (1, 1), (2, 0), (2, 2)]
NONZERO_FROZEN = [(1, 1), (2, 2)]  # the other three stay at zero


@dataclasses.dataclass(frozen=True)
class Layout:
    """A frozen set: ``frozen`` (channel, filter) pairs, ``nonzero`` of them
    held at non-zero values, in a layer of ``in_channels`` x ``filters``."""

    in_channels: int
    filters: int
    frozen: tuple
    nonzero: tuple

    @property
    def mask(self):
        mask = np.zeros((self.in_channels, self.filters), dtype=bool)
        for channel, filter_ in self.frozen:
            mask[channel, filter_] = True
        return mask

    def input_shape(self, rank):
        """The input shape without the batch, channels_last."""
        return (SIZE,) * rank + (self.in_channels,)


def _random_pairs(in_channels, filters, count, seed):
    numbers = np.random.default_rng(seed).choice(in_channels * filters, count, False)
    return tuple((int(n) // filters, int(n) % filters) for n in sorted(numbers))


_LARGE_FROZEN = _random_pairs(64, 64, 410, seed=0)
_LAST_ROW = tuple((IN_CHANNELS - 1, f) for f in range(FILTERS))
_EVERY = tuple((c, f) for c in range(IN_CHANNELS) for f in range(FILTERS))
_GROUPS = tuple((int(c), int(f)) for c, f in zip(*np.nonzero(grouped_frozen_mask(4, 6, 2))))
LAYOUTS = {
    # Kernel numbers c * filters + f scattered: the assembly is a gather.
    "scattered": Layout(IN_CHANNELS, FILTERS, tuple(FROZEN), tuple(NONZERO_FROZEN)),
    # The last kernels of that order: the assembly index is the identity
    # (a concatenation), with frozen kernels.
    "frozen_last": Layout(IN_CHANNELS, FILTERS, _LAST_ROW, _LAST_ROW[1::2]),
    # 3x3x64x64 = 36864 kernel elements, 10% scattered: a gather at the
    # size of a real layer.
    "large": Layout(64, 64, _LARGE_FROZEN, _LARGE_FROZEN[::2]),
    # Nothing to train in the kernels: a (3, 3, 0) trainable variable.
    "all_frozen": Layout(IN_CHANNELS, FILTERS, _EVERY, _EVERY[::3]),
    # Two groups of 2 channels x 3 filters, frozen at zero (the sparse
    # implementation's rule): with exact plans, two convolutions.
    "groups": Layout(4, 6, _GROUPS, ()),
    # The scattered set at zero by construction (the default storage).
    "zero": Layout(IN_CHANNELS, FILTERS, tuple(FROZEN), ()),
}
SCATTERED = LAYOUTS["scattered"]


def _frozen_mask():
    return SCATTERED.mask


def _full_kernel(seed=0, layout=SCATTERED, rank=2):
    """A full kernel whose frozen kernels are 0, except ``layout.nonzero``."""
    rng = np.random.default_rng(seed)
    shape = (KERNEL,) * rank + (layout.in_channels, layout.filters)
    kernel = rng.normal(scale=0.3, size=shape)
    kernel[..., layout.mask] = 0.0
    for channel, filter_ in layout.nonzero:
        kernel[..., channel, filter_] = rng.uniform(0.5, 1.5, size=shape[:-2])
    return kernel.astype("float32")


@functools.lru_cache(maxsize=None)
def _data(layout=SCATTERED, rank=2):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8,) + layout.input_shape(rank)).astype("float32")
    y = rng.normal(size=(8,) + (OUT_SIZE,) * rank + (layout.filters,))
    return x, y.astype("float32")


@pytest.fixture
def dtype_policy():
    """Restores the global dtype policy whatever the test does to it."""
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)


def _model(seed=0, layout=SCATTERED, rank=2, **layer_kwargs):
    """The layer, given :func:`_full_kernel`, in a model with a float32 output.

    Its kernel initializer is ``"zeros"``, as the kernel is assigned anyway
    (a random initializer would cost JAX a compilation per kernel shape).
    """
    inputs = keras.Input(shape=layout.input_shape(rank))
    layer_kwargs.setdefault("store_frozen", bool(layout.nonzero))
    layer = LAYERS[rank](
        layout.filters, KERNEL, frozen=list(layout.frozen),
        kernel_initializer="zeros", **layer_kwargs
    )
    outputs = keras.layers.Activation("linear", dtype="float32")(layer(inputs))
    model = keras.Model(inputs, outputs)
    layer.assign_kernel(_full_kernel(seed, layout, rank))
    return model, layer


def _assert_frozen_exact(layer, kernel, layout=SCATTERED):
    """Frozen kernels equal ``kernel`` there, bit for bit, in both views."""
    mask = layout.mask
    effective = to_numpy(layer.kernel)
    assert effective.shape == kernel.shape
    assert np.array_equal(effective[..., mask], kernel[..., mask])
    for channel, filter_ in layout.frozen:
        if (channel, filter_) in layout.nonzero:
            assert np.all(effective[..., channel, filter_] != 0.0)
        else:
            zeros = np.zeros(kernel.shape[:-2], "float32")
            assert np.array_equal(effective[..., channel, filter_], zeros)
    if not layer.store_frozen:
        assert layer.frozen_kernels is None
        return
    stored = to_numpy(layer.frozen_kernels)
    flat = kernel.reshape(kernel.shape[:-2] + (-1,))[..., mask.reshape(-1)]
    assert np.array_equal(stored, flat)
    assert layer.frozen_kernels.dtype == "float32"


def _assert_trained(layer, kernel, layout=SCATTERED):
    mask = layout.mask
    effective = to_numpy(layer.kernel)
    assert np.all(np.isfinite(effective))
    spatial_axes = tuple(range(kernel.ndim - 2))
    changed = np.any(effective[..., ~mask] != kernel[..., ~mask], axis=spatial_axes)
    assert changed.all(), "every trainable kernel should have moved"


def _assert_matches_numpy(layer, layout, x):
    """The kernel, output and kernel gradient of ``layer`` against NumPy.

    The full kernel is rebuilt from the variables and the mask (kernel
    ``(c, f)`` is number ``c * filters + f``; each variable holds its kernels
    in increasing number order; frozen kernels not stored are zeros),
    independently of ``channelconv._ops``.
    """
    frozen = layout.mask.reshape(-1)
    spatial = (KERNEL,) * layer.rank
    flat = np.zeros(spatial + (frozen.size,), "float32")
    flat[..., ~frozen] = to_numpy(layer.trainable_kernels)
    if layer.store_frozen:
        flat[..., frozen] = to_numpy(layer.frozen_kernels)
    full = flat.reshape(spatial + (layout.in_channels, layout.filters))
    assert np.array_equal(to_numpy(layer.kernel), full)

    bias = to_numpy(layer.bias) if layer.use_bias else None
    out_shape = (x.shape[0],) + (OUT_SIZE,) * layer.rank + (layout.filters,)
    upstream = np.random.default_rng(2).normal(size=out_shape).astype("float32")
    d_trainable = layer_vjp(layer, x, upstream)["trainable_kernels"]
    np.testing.assert_allclose(
        to_numpy(layer(x)), numpy_conv(x, full, bias=bias), rtol=1e-4, atol=1e-4
    )
    _, d_kernel, _ = numpy_conv_gradients(x, full, upstream)
    expected = d_kernel.reshape(spatial + (-1,))[..., ~frozen]
    np.testing.assert_allclose(d_trainable, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank", RANKS)
def test_layouts_take_the_assembly_paths_they_name(rank):
    """Guards the table: each frozen set still reaches its path of the assembly."""
    kernel_size = (KERNEL,) * rank
    paths = {
        name: "concat" if KernelAssembly(layout.mask, kernel_size).index is None
        else "gather"
        for name, layout in LAYOUTS.items()
    }
    assert paths == {
        "scattered": "gather",
        "frozen_last": "concat",
        "large": "gather",
        "all_frozen": "concat",
        "groups": "gather",
        "zero": "gather",
    }
    assert LAYOUTS["frozen_last"].mask.any() and LAYOUTS["all_frozen"].mask.all()


def _case(name, make_optimizer, layout="scattered", layer_kwargs=None,
          compile_kwargs=None, policy=None):
    """A row: optimizer, frozen set, layer and compile arguments, dtype policy."""
    return pytest.param(
        make_optimizer, LAYOUTS[layout], layer_kwargs or {}, compile_kwargs or {},
        policy, id=name,
    )


def _adam():
    return keras.optimizers.Adam(0.01)


ROWS = [
    _case("sgd-momentum", lambda: keras.optimizers.SGD(0.05, momentum=0.9)),
    _case(
        "sgd-nesterov",
        lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    ),
    _case("adam", _adam),
    _case(
        "adamw-weight_decay", lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5)
    ),
    _case("rmsprop", lambda: keras.optimizers.RMSprop(0.01)),
    _case("adagrad", lambda: keras.optimizers.Adagrad(0.1)),
    _case("lion", lambda: keras.optimizers.Lion(0.001)),
    _case("nadam", lambda: keras.optimizers.Nadam(0.01)),
    _case("adamax", lambda: keras.optimizers.Adamax(0.01)),
    _case("adafactor", lambda: keras.optimizers.Adafactor(0.01)),
    _case("ftrl", lambda: keras.optimizers.Ftrl(0.1)),
    # finalize_variable_values (end of fit) assigns the averages to the
    # model's trainable variables; see test_use_ema_finalizes_trainable_only.
    _case("adam-use_ema", lambda: keras.optimizers.Adam(0.01, use_ema=True)),
    _case(
        "adam-use_ema-overwrite_every_step",
        lambda: keras.optimizers.Adam(0.01, use_ema=True, ema_overwrite_frequency=1),
    ),
    _case(
        "sgd-gradient_accumulation",
        lambda: keras.optimizers.SGD(
            0.05, momentum=0.9, gradient_accumulation_steps=2
        ),
    ),
    _case(
        "adam-gradient_accumulation",
        lambda: keras.optimizers.Adam(0.01, gradient_accumulation_steps=2),
    ),
    _case(
        "l2-kernel_regularizer",
        lambda: keras.optimizers.SGD(0.05),
        layer_kwargs=dict(kernel_regularizer=keras.regularizers.L2(1.0)),
    ),
    _case("clipnorm", lambda: keras.optimizers.SGD(0.05, clipnorm=0.01)),
    _case("mixed_float16", _adam, policy="mixed_float16"),
    _case("mixed_bfloat16", _adam, policy="mixed_bfloat16"),
    # The train step compiled: XLA on TensorFlow (its default on CPU is a
    # tf.function without XLA), jax.jit on JAX (also its default),
    # torch.compile on PyTorch (its default is eager).
    _case("jit_compile", _adam, compile_kwargs=dict(jit_compile=True)),
    # Not compiled: eager TensorFlow and JAX (PyTorch's default).
    _case("run_eagerly", _adam, compile_kwargs=dict(run_eagerly=True)),
    _case("adam-frozen_last-identity_index", _adam, layout="frozen_last"),
    _case(
        "adamw-frozen_last-identity_index",
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
        layout="frozen_last",
    ),
    _case("adam-large", _adam, layout="large"),
    # Frozen at zero by construction, fused: the assembly takes zeros.
    _case("adam-zero", _adam, layout="zero"),
    _case("adamw-zero", lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
          layout="zero"),
    _case("adam-all_frozen", _adam, layout="all_frozen"),
    # The sparse implementation (frozen kernels at zero, two blocks).
    _case("sparse-sgd-momentum", lambda: keras.optimizers.SGD(0.05, momentum=0.9),
          layout="groups", layer_kwargs=dict(implementation="sparse")),
    _case("sparse-adam", _adam, layout="groups", layer_kwargs=dict(implementation="sparse")),
    _case("sparse-adamw-weight_decay",
          lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
          layout="groups", layer_kwargs=dict(implementation="sparse")),
    _case("sparse-jit_compile", _adam, layout="groups",
          layer_kwargs=dict(implementation="sparse"), compile_kwargs=dict(jit_compile=True)),
    _case("sparse-mixed_float16", _adam, layout="groups",
          layer_kwargs=dict(implementation="sparse"), policy="mixed_float16"),
    _case(
        "adam-all_frozen-no_bias",
        _adam,
        layout="all_frozen",
        layer_kwargs=dict(use_bias=False),
    ),
]
# The rows that also run in 1-D and 3-D, the others in 2-D only (see the
# module docstring): SGD with momentum and Adam, decoupled weight decay and
# a regularizer of the full kernel (either would move a frozen kernel it
# reached), XLA, and the identity-index and all-frozen kernel assemblies.
EVERY_RANK = (
    "sgd-momentum",
    "adam",
    "adamw-weight_decay",
    "l2-kernel_regularizer",
    "jit_compile",
    "adam-frozen_last-identity_index",
    "adam-all_frozen",
    "adam-zero",
    "sparse-adam",
    "sparse-jit_compile",
)
assert set(EVERY_RANK) <= {row.id for row in ROWS}, "EVERY_RANK names a missing row"
# The compiled rows run in 2-D only (one per implementation) on PyTorch, where
# torch.compile takes 10 to 20 s per model (XLA and jax.jit: under one), and
# on JAX, where fit compiles with jax.jit anyway: in 1-D and 3-D they would
# repeat the "adam" and "sparse-adam" rows there.
COMPILED = ("jit_compile", "sparse-jit_compile")
assert set(COMPILED) <= set(EVERY_RANK)
_COMPILED_2D_ONLY = pytest.mark.skipif(
    BACKEND in ("torch", "jax"),
    reason={
        "torch": "torch.compile takes 10 to 20 s per model: the compiled rows run in 2-D",
        "jax": "fit compiles with jax.jit by default: this rank's adam row again",
    }.get(BACKEND, ""),
)
CASES = [
    pytest.param(
        rank, *row.values, id=f"{rank}d-{row.id}",
        marks=[_COMPILED_2D_ONLY] if row.id in COMPILED and rank != 2 else [],
    )
    for row in ROWS
    for rank in (RANKS if row.id in EVERY_RANK else (2,))
]


@pytest.mark.parametrize(
    "rank, make_optimizer, layout, layer_kwargs, compile_kwargs, policy", CASES
)
def test_frozen_kernels_exact_after_fit(
    request, dtype_policy, rank, make_optimizer, layout, layer_kwargs, compile_kwargs, policy
):
    if policy is not None:
        dtype_policy(policy)
    sparse = layer_kwargs.get("implementation") == "sparse"
    if sparse:
        request.getfixturevalue("exact_plans")
    model, layer = _model(layout=layout, rank=rank, **layer_kwargs)
    assert layer.rank == rank
    if sparse:
        assert layer.implementation_in_use == "sparse" and len(layer.plan.blocks) == 2
    if policy is not None:
        assert layer.compute_dtype != "float32"
    kernel = _full_kernel(layout=layout, rank=rank)
    _assert_frozen_exact(layer, kernel, layout)
    before = weights_by_name(layer)
    if BACKEND == "torch" and compile_kwargs.get("jit_compile"):
        fresh_torch_compile_cache()
    model.compile(make_optimizer(), "mse", **compile_kwargs)
    for name, value in compile_kwargs.items():  # not silently turned off
        assert getattr(model, name) is value, name
    x, y = _data(layout, rank)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    _assert_frozen_exact(layer, kernel, layout)
    _assert_trained(layer, kernel, layout)
    if layer.use_bias:  # moves in every row, so all_frozen cannot pass idle
        assert not np.array_equal(to_numpy(layer.bias), before["bias"])
    if policy is None:
        _assert_matches_numpy(layer, layout, x)


@pytest.mark.parametrize("rank", RANKS)
def test_use_ema_finalizes_trainable_only(rank):
    """At the end of fit, Keras assigns each trainable variable its average.

    ``finalize_variable_values`` overwrites ``model.trainable_weights`` with
    the optimizer's moving averages; the frozen kernels are not among them
    and have no average, so they keep their values (bit-exact).
    """
    model, layer = _model(rank=rank)
    model.compile(keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.5), "mse")
    model.fit(*_data(rank=rank), batch_size=4, epochs=2, verbose=0)
    averages = {
        v.name: to_numpy(v)
        for v in model.optimizer.variables
        if v.name.endswith("_average")
    }
    assert sorted(averages) == sorted(
        f"{layer.name}_{name}_average" for name in ("trainable_kernels", "bias")
    )
    for name in ("trainable_kernels", "bias"):
        average = averages[f"{layer.name}_{name}_average"]
        assert np.array_equal(to_numpy(getattr(layer, name)), average), name
    _assert_frozen_exact(layer, _full_kernel(rank=rank))
    _assert_trained(layer, _full_kernel(rank=rank))


@pytest.mark.parametrize("rank", RANKS)
def test_frozen_kernels_exact_after_set_weights_and_fit(rank):
    model, layer = _model(seed=0, rank=rank)
    other, _ = _model(seed=1, rank=rank)
    model.set_weights(other.get_weights())
    new_kernel = _full_kernel(seed=1, rank=rank)
    _assert_frozen_exact(layer, new_kernel)
    assert not np.array_equal(new_kernel, _full_kernel(seed=0, rank=rank))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(*_data(rank=rank), batch_size=4, epochs=1, verbose=0)
    _assert_frozen_exact(layer, new_kernel)
    _assert_trained(layer, new_kernel)


@pytest.mark.parametrize("rank", RANKS)
def test_frozen_kernels_exact_after_load_and_fit(rank, tmp_path):
    model, _ = _model(rank=rank)
    data = _data(rank=rank)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(*data, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "trained.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.layers[1]
    assert type(layer) is LAYERS[rank]
    kernel = _full_kernel(rank=rank)
    _assert_frozen_exact(layer, kernel)
    before = to_numpy(layer.kernel)
    loaded.fit(*data, batch_size=4, epochs=1, verbose=0)
    _assert_frozen_exact(layer, kernel)
    _assert_trained(layer, before)


@pytest.mark.parametrize("rank", RANKS)
def test_adam_keeps_state_for_trainable_kernels_only(rank):
    model, layer = _model(rank=rank)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(*_data(rank=rank), batch_size=8, epochs=1, verbose=0)
    n_trainable = IN_CHANNELS * FILTERS - len(FROZEN)
    slots = [v for v in model.optimizer.variables if len(v.shape) > 0]
    assert sum(int(np.prod(v.shape)) for v in slots) == 2 * (
        KERNEL**rank * n_trainable + FILTERS
    )
    assert sorted(tuple(v.shape) for v in slots) == sorted(
        2 * [(KERNEL,) * rank + (n_trainable,), (FILTERS,)]
    )
    assert not [v for v in model.optimizer.variables if "frozen" in v.path]


def _size(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.mark.parametrize("store_frozen", [True, False], ids=["stored", "zero"])
@pytest.mark.parametrize("reduction", ["sum", "concat"])
@pytest.mark.parametrize("rank", RANKS)
def test_parameter_counts(rank, reduction, store_frozen):
    """Keras's convolution's parameters, less the frozen ones unless stored.

    Keras's ``ConvND`` of the same rank, grouped per input channel for
    ``concat`` (the same parameters as a depthwise layer), counts them.
    Stored frozen kernels are non-trainable parameters; kernels frozen at
    zero by construction are none (as a grouped convolution's zeros).
    """
    layout = SCATTERED if store_frozen else LAYOUTS["zero"]
    model, layer = _model(layout=layout, rank=rank, reduction=reduction)
    assert layer.store_frozen is store_frozen
    zeros = dict(kernel_initializer="zeros")  # no random draw for JAX to compile
    if reduction == "sum":
        conv = CONVS[rank](FILTERS, KERNEL, **zeros)
    else:
        conv = CONVS[rank](IN_CHANNELS * FILTERS, KERNEL, groups=IN_CHANNELS, **zeros)
    conv.build((None,) + SCATTERED.input_shape(rank))
    n_frozen = len(FROZEN) * KERNEL**rank
    stored = n_frozen if store_frozen else 0
    assert layer.count_params() == model.count_params() == conv.count_params() - n_frozen + stored
    assert _size(layer.non_trainable_weights) == stored
    assert _size(model.trainable_weights) == conv.count_params() - n_frozen


@pytest.mark.parametrize("rank", RANKS)
def test_gradient_reaches_trainable_kernels_only(rank):
    """Gradients equal ConvND's kernel gradient at the trainable kernels."""
    x, _ = _data(rank=rank)
    _, layer = _model(rank=rank)
    conv = CONVS[rank](FILTERS, KERNEL)
    conv.build((None,) + SCATTERED.input_shape(rank))
    conv.set_weights([to_numpy(layer.kernel), to_numpy(layer.bias)])
    upstream = np.random.default_rng(3).normal(
        size=(x.shape[0],) + (OUT_SIZE,) * rank + (FILTERS,)
    ).astype("float32")
    grads = layer_vjp(layer, x, upstream)
    reference = layer_vjp(conv, x, upstream)
    assert [w.name for w in layer.trainable_weights] == ["trainable_kernels", "bias"]
    mask = _frozen_mask()
    kernel = reference["kernel"]
    expected = kernel.reshape(kernel.shape[:-2] + (-1,))[..., ~mask.reshape(-1)]
    np.testing.assert_allclose(grads["trainable_kernels"], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["bias"], reference["bias"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rank", RANKS)
def test_kernel_regularizer_sees_trainable_kernels_only(rank):
    _, layer = _model(rank=rank, kernel_regularizer=keras.regularizers.L2(0.1))
    kernel = _full_kernel(rank=rank)
    trainable_part = kernel[..., ~_frozen_mask()]
    expected = 0.1 * np.sum(trainable_part.astype(np.float64) ** 2)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(to_numpy(layer.losses[0])), expected, rtol=1e-5)
    # The frozen kernels are non-zero, so including them would change it.
    assert 0.1 * np.sum(kernel.astype(np.float64) ** 2) > expected * 1.01


def _maxnorm_by_hand(full, max_value):
    """MaxNorm of each filter: the norm over every axis but the last."""
    axes = tuple(range(full.ndim - 1))
    norms = np.sqrt(np.sum(np.square(full), axis=axes, keepdims=True))
    desired = np.clip(norms, 0, max_value)
    return full * (desired / (keras.config.epsilon() + norms))


# (constraint of a rank, the same by hand on a full kernel)
CONSTRAINTS = [
    pytest.param(
        lambda rank: keras.constraints.NonNeg(),
        lambda k: np.maximum(k, 0.0),
        id="nonneg",
    ),
    pytest.param(
        lambda rank: keras.constraints.MaxNorm(0.5, axis=list(range(rank + 1))),
        lambda k: _maxnorm_by_hand(k, 0.5),
        id="maxnorm-per_filter",
    ),
]


def _negative_frozen_kernel(rank):
    """:func:`_full_kernel` with one non-zero frozen kernel negative."""
    kernel = _full_kernel(rank=rank)
    kernel[..., NONZERO_FROZEN[0][0], NONZERO_FROZEN[0][1]] *= -1.0
    return kernel


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("make_constraint, by_hand", CONSTRAINTS)
def test_kernel_constraint_acts_on_trainable_kernels_only(
    make_constraint, by_hand, rank
):
    """The optimizer's constraint step equals the constraint applied by hand.

    By hand: to the full kernel with zeros in the frozen places, keeping the
    trainable places. Zero gradients isolate the constraint from the update.
    """
    _, layer = _model(rank=rank, kernel_constraint=make_constraint(rank))
    kernel = _negative_frozen_kernel(rank)
    layer.assign_kernel(kernel)
    mask = _frozen_mask()
    zeroed = np.where(mask, 0.0, kernel).astype("float32")
    expected = by_hand(zeroed)
    assert not np.allclose(expected[..., ~mask], kernel[..., ~mask])  # it acts
    optimizer = keras.optimizers.SGD(0.1)
    variables = layer.trainable_weights
    optimizer.apply_gradients([(keras.ops.zeros(v.shape, v.dtype), v) for v in variables])
    effective = to_numpy(layer.kernel)
    np.testing.assert_allclose(
        effective[..., ~mask], expected[..., ~mask], rtol=1e-6, atol=1e-7
    )
    assert np.array_equal(effective[..., mask], kernel[..., mask])


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("make_constraint, by_hand", CONSTRAINTS)
def test_kernel_constraint_in_fit_leaves_frozen_kernels(
    make_constraint, by_hand, rank
):
    model, layer = _model(rank=rank, kernel_constraint=make_constraint(rank))
    kernel = _negative_frozen_kernel(rank)
    layer.assign_kernel(kernel)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(*_data(rank=rank), batch_size=4, epochs=1, verbose=0)
    _assert_frozen_exact(layer, kernel)
    mask = _frozen_mask()
    trained = np.where(mask, 0.0, to_numpy(layer.kernel)).astype("float32")
    # A trained kernel satisfies the constraint: applying it again is a no-op.
    np.testing.assert_allclose(by_hand(trained), trained, rtol=1e-5, atol=1e-6)
    _assert_trained(layer, kernel)


@pytest.mark.parametrize("rank", RANKS)
def test_trainable_toggle_does_not_unfreeze(rank):
    model, layer = _model(rank=rank)
    layer.trainable = False
    assert model.trainable_weights == []
    layer.trainable = True
    assert [w.name for w in layer.trainable_weights] == ["trainable_kernels", "bias"]
    assert [w.name for w in layer.non_trainable_weights] == ["frozen_kernels"]
    assert not layer.frozen_kernels.trainable
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(*_data(rank=rank), batch_size=4, epochs=1, verbose=0)
    kernel = _full_kernel(rank=rank)
    _assert_frozen_exact(layer, kernel)
    _assert_trained(layer, kernel)


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_frozen_layer_does_not_train(rank):
    """``trainable=False`` freezes everything, the usual Keras meaning."""
    model, layer = _model(rank=rank)
    layer.trainable = False
    before = weights_by_name(layer)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(*_data(rank=rank), batch_size=4, epochs=1, verbose=0)
    for name, value in weights_by_name(layer).items():
        assert np.array_equal(value, before[name]), name
