"""Kernel pruning (channelconv.pruning) against its definition.

Schedules against values worked by hand from TF Model Optimization's
semantics; ``KernelPruning`` in ``model.fit``: exact zero counts at every
update step, no revival, exact zeros in the effective kernel, the kernels
chosen against a NumPy ranking of the norms, kernels frozen at non-zero values
untouched; every bad argument; the state saved in ``.keras`` files and resumed
by ``BackupAndRestore`` to exactly the same masks and weights; ``condense``
against the pruned model (outputs, trainable counts, optimizer state) and
``strip`` of the result. Everything runs on every Keras backend; on JAX, where
``fit`` keeps the variables' values out of the variables between steps,
updates in the middle of an epoch are checked against updates at the start of
a ``fit``.
"""

import keras
import numpy as np
import pytest

from channelconv import (
    ConstantSparsity,
    KernelPruning,
    PolynomialDecay,
    condense,
    strip,
)
from harness import BACKEND, LAYERS, fresh_torch_compile_cache, to_numpy

RANKS = (1, 2, 3)
C, F, K = 4, 6, 3
SIZE = 6


# --- schedules --------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule, steps",
    [
        (ConstantSparsity(0.5, begin_step=3, end_step=11, frequency=4), [3, 7, 11]),
        (ConstantSparsity(0.5, begin_step=0, frequency=5), [0, 5, 10, 15, 20, 25]),
        (PolynomialDecay(0.1, 0.6, begin_step=2, end_step=8, frequency=3), [2, 5, 8]),
    ],
    ids=["constant-bounded", "constant-open", "polynomial"],
)
def test_schedule_update_steps(schedule, steps):
    assert [t for t in range(30) if schedule(t)[0]] == steps


# TF Model Optimization's PolynomialDecay, worked by hand: sparsity =
# final + (initial - final) * (1 - p) ** power, p = (step - begin) / (end - begin)
# clipped to [0, 1]; an update where begin <= step <= end and
# (step - begin) % frequency == 0. Exact binary fractions where they can be.
POLYNOMIAL = [
    # 0.2 -> 0.8 over steps 10..30, power 2, every step: 0.8 - 0.6 * (1 - p) ** 2
    (dict(initial_sparsity=0.2, final_sparsity=0.8, begin_step=10, end_step=30,
          power=2, frequency=1),
     [(0, False, 0.2), (10, True, 0.2), (15, True, 0.4625), (20, True, 0.65),
      (25, True, 0.7625), (30, True, 0.8), (31, False, 0.8), (50, False, 0.8)]),
    # 0 -> 0.5 over steps 0..4, power 3 (the default): 0.5 - 0.5 * (1 - p) ** 3
    (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=4),
     [(0, True, 0.0), (1, False, 0.2890625), (2, False, 0.4375),
      (3, False, 0.4921875), (4, False, 0.5)]),
    # updates every 3 steps from 2: 2, 5, 8 (power 1: a straight ramp)
    (dict(initial_sparsity=0.25, final_sparsity=0.75, begin_step=2, end_step=10,
          power=1, frequency=3),
     [(1, False, 0.25), (2, True, 0.25), (4, False, 0.375), (5, True, 0.4375),
      (8, True, 0.625), (10, False, 0.75), (11, False, 0.75)]),
]


@pytest.mark.parametrize("kwargs, expected", POLYNOMIAL,
                         ids=["power2-every-step", "default-power", "every-3-steps"])
def test_polynomial_decay_values_worked_by_hand(kwargs, expected):
    schedule = PolynomialDecay(**kwargs)
    got = [(step,) + tuple(schedule(step)) for step, _, _ in expected]
    assert got == [(step, updates, pytest.approx(value, abs=1e-12))
                   for step, updates, value in expected]


# --- helpers -----------------------------------------------------------------------


def _model(rank=2, frozen=None, frozen_initializer="zeros", seed=0, **kwargs):
    layer = LAYERS[rank](
        F, K, frozen=frozen, prunable=True, name="conv", frozen_initializer=frozen_initializer,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed), **kwargs,
    )
    return keras.Sequential([keras.Input((SIZE,) * rank + (C,)), layer]), layer


def _data(rank=2, n=16):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n,) + (SIZE,) * rank + (C,)).astype("float32")
    y = rng.normal(size=(n,) + (SIZE - K + 1,) * rank + (F,)).astype("float32")
    return x, y


class _Recorder(keras.callbacks.Callback):
    """Before each batch: the step, the pruned mask and the effective kernel.

    On JAX, ``self.model`` puts the training state back in the variables
    (Keras's ``Callback.model``), so the values read are the current ones,
    and the next step reads its state from the variables.
    """

    def __init__(self, layer):
        super().__init__()
        self.layer, self.steps = layer, []

    def on_train_batch_begin(self, batch, logs=None):
        step = int(to_numpy(self.model.optimizer.iterations))
        self.steps.append((step, to_numpy(self.layer.pruned_kernels) > 0,
                           to_numpy(self.layer.kernel).copy()))


def _fit(model, pruning, rank=2, epochs=2, optimizer=None, **fit_kwargs):
    layer = model.get_layer("conv")
    recorder = _Recorder(layer)
    model.compile(optimizer or keras.optimizers.Adam(0.01), "mse")
    x, y = _data(rank)
    model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[pruning, recorder], **fit_kwargs)
    return recorder.steps


# --- KernelPruning in fit -------------------------------------------------------


@pytest.mark.parametrize("rank", RANKS)
def test_exact_counts_no_revival_and_exact_zeros(rank):
    schedule = PolynomialDecay(0.0, 0.75, begin_step=1, end_step=7, frequency=2)
    model, layer = _model(rank)
    steps = _fit(model, KernelPruning(schedule), rank)
    previous = np.zeros((C, F), bool)
    for step, pruned, kernel in steps:
        expected = round(schedule(step)[1] * C * F) if step >= 1 else 0
        last_update = max([t for t in range(1, step + 1) if schedule(t)[0]], default=None)
        if last_update is not None:
            expected = round(schedule(last_update)[1] * C * F)
        assert pruned.sum() == expected, step
        assert (pruned | ~previous).all(), "a pruned kernel came back"
        np.testing.assert_array_equal(kernel[..., pruned], np.zeros_like(kernel[..., pruned]))
        previous = pruned
    assert previous.sum() == round(0.75 * C * F)


def test_mid_epoch_updates_match_updates_at_the_start_of_fit():
    """Updates between an epoch's batches act as at the start of a ``fit``.

    On JAX, Keras's ``fit`` keeps the variables' values in a state of its own
    between the steps of an epoch: the callback has to put them back before
    it reads the step and the kernels, and the mask it assigns has to reach
    the next step. The reference is the same training, one ``fit`` per batch,
    where every update falls at the start of a ``fit`` (the state is in the
    variables there on every backend). No other callback runs: one reading
    the model would put the state back itself.
    """
    # Updates at steps 1, 3, 5, 7; 4 batches per epoch: none at an epoch's start.
    schedule = PolynomialDecay(0.0, 0.75, begin_step=1, end_step=7, frequency=2)
    x, y = _data()

    def train(batches):
        model, layer = _model(seed=3)
        model.compile(keras.optimizers.SGD(0.05), "mse")
        pruning = KernelPruning(schedule)
        for xs, ys, epochs in batches:
            model.fit(xs, ys, batch_size=4, epochs=epochs, verbose=0, shuffle=False,
                      callbacks=[pruning])
        return model, layer

    whole, layer = train([(x, y, 2)])
    per_batch, reference = train(
        [(x[i : i + 4], y[i : i + 4], 1) for _ in range(2) for i in range(0, len(x), 4)]
    )
    pruned = to_numpy(reference.pruned_kernels)
    assert pruned.sum() == round(0.75 * C * F)  # step 7's sparsity
    np.testing.assert_array_equal(to_numpy(layer.pruned_kernels), pruned)
    for got, want in zip(whole.get_weights(), per_batch.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_prunes_the_smallest_norms_and_never_frozen_nonzero():
    frozen = [(0, 0), (1, 1), (2, 2)]
    model, layer = _model(frozen=frozen, frozen_initializer="ones")
    kernel = np.random.default_rng(3).normal(size=(K, K, C, F)).astype("float32")
    kernel[..., 0, 0] = kernel[..., 1, 1] = kernel[..., 2, 2] = 0.001  # tiny but frozen
    layer.assign_kernel(kernel)
    pruning = KernelPruning(ConstantSparsity(0.5), criterion="l2")
    pruning.set_model(model)
    pruning.on_train_begin()
    pruning.prune(layer, 0.5)
    pruned = to_numpy(layer.pruned_kernels) > 0
    norms = np.sqrt((kernel.astype(np.float64) ** 2).sum(axis=(0, 1)))
    norms[layer.frozen_mask] = np.inf  # never candidates
    expected = np.zeros(C * F, bool)
    expected[np.argsort(norms.reshape(-1), kind="stable")[:12]] = True
    np.testing.assert_array_equal(pruned, expected.reshape(C, F))
    assert not pruned[layer.frozen_mask].any()


@pytest.mark.parametrize(
    "granularity, groups",
    [("input_channel", None), ("filter", None), ("group", 2), ("group", 3)],
)
def test_coarse_granularities_prune_whole_units(granularity, groups):
    model, layer = _model()
    kernel = np.random.default_rng(4).normal(size=(K, K, C, F)).astype("float32")
    layer.assign_kernel(kernel)
    pruning = KernelPruning(ConstantSparsity(0.5), granularity=granularity, groups=groups)
    pruning.set_model(model)
    pruning.on_train_begin()
    pruning.prune(layer, 0.5)
    pruned = to_numpy(layer.pruned_kernels) > 0
    scores = np.abs(kernel).sum(axis=(0, 1))
    if granularity == "input_channel":
        expected_rows = np.argsort(scores.sum(axis=1), kind="stable")[:2]
        assert sorted(np.flatnonzero(pruned.all(axis=1))) == sorted(expected_rows)
        assert pruned.sum() == 2 * F
    elif granularity == "filter":
        expected_cols = np.argsort(scores.sum(axis=0), kind="stable")[:3]
        assert sorted(np.flatnonzero(pruned.all(axis=0))) == sorted(expected_cols)
        assert pruned.sum() == 3 * C
    else:
        for g, block in enumerate(np.split(np.arange(F), groups)):
            rows = np.argsort(scores[:, block].sum(axis=1), kind="stable")[:2]
            assert sorted(np.flatnonzero(pruned[:, block].all(axis=1))) == sorted(rows), g
            assert pruned[:, block].sum() == 2 * block.size


def test_callable_criterion_decides():
    model, layer = _model()
    pruning = KernelPruning(ConstantSparsity(0.25),
                            criterion=lambda kernel: -np.arange(C * F).reshape(C, F))
    pruning.set_model(model)
    pruning.on_train_begin()
    pruning.prune(layer, 0.25)
    pruned = to_numpy(layer.pruned_kernels) > 0
    assert np.flatnonzero(pruned.reshape(-1)).tolist() == list(range(C * F - 6, C * F))


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: ConstantSparsity(1.0), ValueError,
         r"`target_sparsity` must be in \[0, 1\)\. Received: target_sparsity=1\.0"),
        (lambda: ConstantSparsity(-0.1), ValueError, r"Received: target_sparsity=-0\.1"),
        (lambda: ConstantSparsity("0.5"), TypeError, r"of type str"),
        (lambda: ConstantSparsity(0.5, begin_step=10, end_step=5), ValueError,
         r"`end_step` must be -1 \(no end\) or at least `begin_step`\. Received: "
         r"begin_step=10, end_step=5"),
        (lambda: PolynomialDecay(0.0, 0.5, begin_step=5, end_step=5), ValueError,
         r"`end_step` must be larger than `begin_step`"),
        (lambda: ConstantSparsity(0.5, frequency=0), ValueError, r"Received: frequency=0"),
        (lambda: KernelPruning(ConstantSparsity(0.5), criterion="l3"), ValueError,
         r"`criterion` must be one of \['l1', 'l2'\]\. Received: criterion='l3'"),
        (lambda: KernelPruning(ConstantSparsity(0.5), granularity="row"), ValueError,
         r"`granularity` must be one of"),
        (lambda: KernelPruning(ConstantSparsity(0.5), granularity="group"), ValueError,
         r"`groups` is required with granularity='group'"),
        (lambda: KernelPruning(ConstantSparsity(0.5), groups=2), ValueError,
         r"`groups` applies to granularity='group' only"),
        (lambda: KernelPruning(0.5), TypeError, r"`schedule` must be a channelconv"),
        (lambda: KernelPruning(ConstantSparsity(0.5), layers="conv"), TypeError,
         r"`layers` must be a list of layer names\. Received: layers='conv'"),
        (lambda: KernelPruning(ConstantSparsity(0.5), layers=3), TypeError,
         r"`layers` must be a list of layer names\. Received: layers=3"),
    ],
)
def test_bad_arguments(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize(
    "kwargs, model_kwargs, pattern",
    [
        (dict(layers=["nope"]), {}, r"`layers` names layers that model .* does not have: \['nope'\]"),
        (dict(layers=["relu"]), {}, r"must name channel convolutions\. Received: layer 'relu' of "
                                    r"type ReLU"),
        (dict(layers=["plain"]), {}, r"Layer 'plain' was not built with prunable=True"),
        (dict(granularity="group", groups=4), {}, r"`groups` must divide the filters of every "
                                                  r"pruned layer\. Received: groups=4, layer "
                                                  r"'conv' with 6 filters"),
        ({}, dict(frozen=[(c, f) for c in range(C) for f in range(3)],
                  frozen_initializer="ones"),
         r"Layer 'conv' cannot reach sparsity 0\.75 with granularity='kernel': 18 of its 24 "
         r"units would have to be zero, but only 12 hold no kernel frozen"),
    ],
    ids=["unknown", "not_channel_conv", "not_prunable", "groups", "unreachable"],
)
def test_bad_layers_fail_before_training(kwargs, model_kwargs, pattern):
    _, layer = _model(**model_kwargs)
    plain = LAYERS[2](F, 1, name="plain")
    model = keras.Sequential([keras.Input((SIZE, SIZE, C)), layer, keras.layers.ReLU(name="relu"),
                              plain])
    model.compile("sgd", "mse")
    before = [w.copy() for w in model.get_weights()]
    x = np.zeros((4, SIZE, SIZE, C), "float32")
    with pytest.raises(ValueError, match=pattern):
        model.fit(x, np.zeros((4, SIZE - 2, SIZE - 2, F)), verbose=0,
                  callbacks=[KernelPruning(ConstantSparsity(0.75), **kwargs)])
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_sparse_implementation_cannot_be_prunable():
    with pytest.raises(ValueError, match=r"Received: implementation='sparse', prunable=True"):
        LAYERS[2](4, 3, prunable=True, implementation="sparse")


# --- state: save, load, resume -------------------------------------------------------


def test_keras_file_mid_schedule_keeps_masks_and_continues(tmp_path):
    """A model saved between updates, loaded and trained on, prunes as the original does."""
    # Updates at steps 0 (sparsity 0), 3 (16 kernels) and 6 (18 kernels).
    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=3)
    model, layer = _model()
    _fit(model, KernelPruning(schedule), epochs=1)
    assert to_numpy(layer.pruned_kernels).sum() == 16
    path = str(tmp_path / "pruned.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    new = loaded.get_layer("conv")
    np.testing.assert_array_equal(to_numpy(new.pruned_kernels), to_numpy(layer.pruned_kernels))
    np.testing.assert_array_equal(to_numpy(new.kernel), to_numpy(layer.kernel))
    assert int(to_numpy(loaded.optimizer.iterations)) == 4
    x, y = _data()
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
    # Steps 4 to 7, step 6 updating: the original and the loaded model alike.
    for m in (model, loaded):
        m.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False,
              callbacks=[KernelPruning(schedule)])
    assert to_numpy(new.pruned_kernels).sum() == 18
    np.testing.assert_array_equal(to_numpy(new.pruned_kernels), to_numpy(layer.pruned_kernels))
    for got, want in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_backup_and_restore_resumes_to_the_same_masks_and_weights(tmp_path):
    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=10, frequency=2)

    def run(callbacks, epochs=4):
        keras.utils.set_random_seed(0)
        model, _ = _model(seed=7)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
        x, y = _data()
        model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, shuffle=False,
                  callbacks=[KernelPruning(schedule)] + callbacks)
        return model

    uninterrupted = run([])

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        run([backup, Interrupt()])
    resumed = run([keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    for got, want in zip(resumed.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert to_numpy(resumed.get_layer("conv").pruned_kernels).sum() == round(0.75 * C * F)


@pytest.mark.parametrize("compile_kwargs, policy", [
    (dict(jit_compile=True), None), ({}, "mixed_float16")], ids=["xla", "mixed_float16"])
def test_pruning_under_xla_and_mixed_precision(compile_kwargs, policy):
    previous = keras.config.dtype_policy()
    if policy:
        keras.config.set_dtype_policy(policy)
    if BACKEND == "torch" and compile_kwargs.get("jit_compile"):
        fresh_torch_compile_cache()
    try:
        model, layer = _model()
        model.compile(keras.optimizers.Adam(0.01), "mse", **compile_kwargs)
        for name, value in compile_kwargs.items():  # not silently turned off
            assert getattr(model, name) is value, name
        x, y = _data()
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False,
                  callbacks=[KernelPruning(ConstantSparsity(0.5, frequency=2))])
    finally:
        keras.config.set_dtype_policy(previous)
    pruned = to_numpy(layer.pruned_kernels) > 0
    assert pruned.sum() == 12
    kernel = to_numpy(layer.kernel)
    np.testing.assert_array_equal(kernel[..., pruned], np.zeros_like(kernel[..., pruned]))


@pytest.mark.skipif(BACKEND == "torch",
                    reason="Keras: steps_per_execution must be 1 with the PyTorch backend")
def test_steps_per_execution_makes_due_updates_at_the_start():
    model, layer = _model()
    model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=3)
    x, y = _data()  # 4 batches of 4: executions start at steps 0 and 3
    schedule = PolynomialDecay(0.0, 0.5, begin_step=1, end_step=2, frequency=1)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False,
              callbacks=[KernelPruning(schedule)])
    assert to_numpy(layer.pruned_kernels).sum() == round(0.5 * C * F)  # step 2's, made at 0


# --- condense --------------------------------------------------------------------------


@pytest.mark.parametrize("rank", RANKS)
def test_condense_keeps_outputs_and_drops_trainable_counts(rank):
    model, layer = _model(rank, frozen=[(0, 0)])
    _fit(model, KernelPruning(ConstantSparsity(0.5, frequency=1)), rank, epochs=1)
    pruned = to_numpy(layer.pruned_kernels) > 0
    small = condense(model)
    new = small.get_layer("conv")
    assert (new.prunable, new.implementation) == (False, "auto")
    np.testing.assert_array_equal(new.frozen_mask, layer.frozen_mask | pruned)
    taps = K ** rank
    live = int((~(layer.frozen_mask | pruned)).sum())
    assert int(np.prod(new.trainable_kernels.shape)) == live * taps
    np.testing.assert_array_equal(to_numpy(new.kernel), to_numpy(layer.kernel))
    x, y = _data(rank)
    np.testing.assert_allclose(to_numpy(small(x)), to_numpy(model(x)), rtol=1e-5, atol=1e-5)
    small.compile(keras.optimizers.Adam(), "mse")
    small.fit(x, y, epochs=1, verbose=0)
    state = sum(int(np.prod(v.shape)) for v in small.optimizer.variables
                if len(v.shape) and v.shape[-1] == live)
    assert state == 2 * live * taps  # Adam's two moments, live kernels only
    plain = strip(small)
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(small(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frozen_initializer, store_frozen, in_use",
                         [("zeros", False, "sparse"), ("ones", True, "fused")],
                         ids=["frozen_zero", "frozen_nonzero"])
def test_condense_runs_sparse_unless_a_frozen_kernel_is_nonzero(
    frozen_initializer, store_frozen, in_use
):
    """At 64 channels, group-pruned to 75%, the condensed layer runs the plan,
    unless a frozen kernel holds a non-zero value (then it stores its frozen
    kernels and runs fused, not refused)."""
    layer = LAYERS[2](64, 3, frozen=[(0, 0)], frozen_initializer=frozen_initializer,
                      prunable=True, name="conv")
    model = keras.Sequential([keras.Input((8, 8, 64)), layer])
    pruning = KernelPruning(ConstantSparsity(0.75), granularity="group", groups=4)
    pruning.set_model(model)
    pruning.on_train_begin()
    pruning.prune(layer, 0.75)
    new = condense(model).get_layer("conv")
    assert (new.implementation, new.store_frozen, new.implementation_in_use) == (
        "auto", store_frozen, in_use)
    np.testing.assert_array_equal(to_numpy(new.kernel), to_numpy(layer.kernel))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 64)).astype("float32")
    np.testing.assert_allclose(to_numpy(new(x)), to_numpy(layer(x)), rtol=1e-4, atol=1e-4)
