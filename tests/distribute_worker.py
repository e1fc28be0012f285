"""Runs the tf.distribute scenarios of ``tests/test_distribute.py`` in a subprocess.

Logical devices can only be configured before TensorFlow initialises them,
and a multi-worker cluster needs one process per worker, so the tests run
this script with ``subprocess`` and compare what it writes. It never checks
anything itself: it trains and records, the test process judges.

Two kinds of training are recorded. ``model.fit`` on a small regression
model (:data:`FIT_SCENARIOS`), and the documented custom loop,
``loop_epochs`` of ``docs/examples/train_distributed.py``, on that
example's own model and data (:data:`EXAMPLE_SCENARIOS`; the example is
imported, not copied, and so is its ``make_strategy``). Each is trained from
the same seeds and on the same global batches once under the strategy and
once without any.

    python tests/distribute_worker.py mirrored OUT_DIR
        Splits the CPU into two logical devices (``make_strategy`` of the
        example) and runs every scenario of both tables. Writes
        ``OUT_DIR/<scenario>.npz``: weights by variable path, ``initial/``,
        ``single/`` (trained without a strategy), ``mirrored/`` and
        ``replica1/`` (the second replica's copies); for the example's
        scenarios also ``single_initial/`` (the single-device model before
        training, built from the same seed) and ``fit/`` (``model.fit``
        without a strategy, the loop's reference); absent when the scenario
        raised. ``OUT_DIR/mirrored.json``: devices, replicas, per scenario
        the dtypes seen and the loop's loss per epoch, or the traceback,
        seconds taken, and ``keras_jit_fit``: what
        ``compile(jit_compile=True)`` + ``fit`` does with ChannelConv2D and
        with Conv2D. From :data:`CHECKPOINT_SCENARIO`, the checkpoints
        ``mirrored.keras``, ``mirrored.weights.h5``, ``tf_ckpt/`` and
        ``probe.npz`` (a probe input and the distributed model's prediction).

    TF_CONFIG=... python tests/distribute_worker.py multiworker OUT_DIR
        One worker of a ``MultiWorkerMirroredStrategy`` cluster (its task
        index comes from ``TF_CONFIG``): trains the example's model with the
        example's loop under the strategy, then a model from the same seed
        with the same loop alone, on the same :data:`MULTIWORKER_SAMPLES`
        samples, and writes ``OUT_DIR/worker<index>.npz`` (``initial/``,
        ``final/`` and ``single/`` weights) and ``OUT_DIR/worker<index>.json``
        (replicas, and what ``fit`` does under the strategy with
        ChannelConv2D and with Conv2D).
"""

import importlib.util
import json
import os
import pathlib
import sys
import time
import traceback

import keras
import numpy as np
import tensorflow as tf

# The model.fit scenarios, their model, data and training: shared with the
# JAX worker (tests/fit_scenarios.py).
from fit_scenarios import (
    CHECKPOINT_SCENARIO,
    EPOCHS,
    FILTERS,
    FIT_SCENARIOS,
    FROZEN,
    GLOBAL_BATCH,
    INPUT_SHAPE,
    build_model,
    compile_model,
    dtypes,
    make_data,
    run_scenario,
    train_fit,
    weights_by_path,
)

EXAMPLE_PATH = (
    pathlib.Path(__file__).resolve().parents[1] / "docs" / "examples" / "train_distributed.py"
)


def _import_example():
    spec = importlib.util.spec_from_file_location("train_distributed", EXAMPLE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: ``docs/examples/train_distributed.py``, imported: its data, model,
#: strategy and training loop are what the example scenarios run.
example = _import_example()


# Scenario name -> an example scenario: the example's model, trained by its
# ``loop_epochs`` with and without the strategy (and by ``model.fit`` without
# one). SGD by default: its steps are proportional to the gradient, so a
# wrongly scaled loss changes the weights (Adam's steps divide the gradient
# by its own scale and hide a constant factor); "adam" is the script's own
# optimizer. "jit_compile" compiles each replica's step with XLA. The
# example's own layers (fused sum) run with Adam and in mixed_float16 with
# SGD; the loop's loss scaling in float32 with SGD, on the per-channel rows.
EXAMPLE_SCENARIOS = {
    "example-per_channel-concat": dict(implementation="per_channel", reduction="concat"),
    "example-xla-fused-concat": dict(
        implementation="fused", reduction="concat", jit_compile=True
    ),
    "example-xla-per_channel-sum": dict(
        implementation="per_channel", reduction="sum", jit_compile=True
    ),
    "example-mixed_float16": dict(
        implementation="fused", reduction="sum", policy="mixed_float16"
    ),
    "example-adam": dict(implementation="fused", reduction="sum", optimizer="adam"),
}
# 4 global batches of 16, then one of 5 (split 3 + 2 over two replicas): the
# loop must average each step over the samples it really has.
EXAMPLE_SAMPLES = 69
EXAMPLE_BATCH = 16
EXAMPLE_LEARNING_RATE = 0.1
EXAMPLE_SEED = 3
# The cluster's data: 3 global batches of GLOBAL_BATCH (8) and one of 5; its
# model: the example's (implementation, reduction), both reductions in it.
MULTIWORKER_SAMPLES = 29
MULTIWORKER_MODEL = ("fused", "concat")


def replica_copies(model, strategy, prefix):
    """``{prefix + "/" + path: array}`` of each variable's copy on replica 1."""
    return {
        f"{prefix}/{w.path}": strategy.experimental_local_results(w.value)[1].numpy()
        for w in model.weights
    }


def example_optimizer(name="sgd"):
    """A fresh optimizer of an example scenario."""
    if name == "adam":
        return keras.optimizers.Adam(1e-2)  # the script's own
    return keras.optimizers.SGD(EXAMPLE_LEARNING_RATE)


def seeded_example_model(implementation, reduction):
    """The example's model, built after seeding Keras with EXAMPLE_SEED."""
    keras.utils.set_random_seed(EXAMPLE_SEED)
    return example.build_model(implementation, reduction)


def train_example_loop(model, x, y, batch_size, options):
    """Trains with the example's ``loop_epochs``; returns its loss per epoch.

    Runs under the strategy whose scope is active, or under none.
    """
    epoch = example.loop_epochs(
        model,
        x,
        y,
        batch_size,
        options.get("jit_compile", False),
        example_optimizer(options.get("optimizer", "sgd")),
    )
    return [epoch() for _ in range(EPOCHS)]


def run_fit_scenario(name, options, strategy, out_dir):
    """``model.fit`` without and with ``strategy``, from the same weights."""
    x, y = make_data()
    single = build_model(**options)
    with strategy.scope():
        mirrored = build_model(**options)
    mirrored.set_weights(single.get_weights())
    arrays = weights_by_path(mirrored, "initial")
    train_fit(single, x, y, options.get("pruning", False))
    with strategy.scope():
        train_fit(mirrored, x, y, options.get("pruning", False))
    arrays.update(weights_by_path(single, "single"))
    arrays.update(weights_by_path(mirrored, "mirrored"))
    arrays.update(replica_copies(mirrored, strategy, "replica1"))
    np.savez(out_dir / f"{name}.npz", **arrays)
    if name == CHECKPOINT_SCENARIO:
        save_checkpoints(mirrored, x, out_dir)
    return dtypes(mirrored.get_layer("channel_conv0"), mirrored.optimizer)


def run_example_scenario(name, options, strategy, out_dir):
    """The example's loop without and with ``strategy``, from the same seed.

    A third model from the same weights is trained by ``model.fit`` without
    a strategy, with the same optimizer: the reference of the loop itself.
    """
    x, y = example.make_data(EXAMPLE_SAMPLES)
    layers = options["implementation"], options["reduction"]
    with strategy.scope():
        mirrored = seeded_example_model(*layers)
    single = seeded_example_model(*layers)
    fit = seeded_example_model(*layers)
    fit.set_weights(single.get_weights())
    arrays = weights_by_path(mirrored, "initial")
    arrays.update(weights_by_path(single, "single_initial"))
    with strategy.scope():
        mirrored_losses = train_example_loop(mirrored, x, y, EXAMPLE_BATCH, options)
    single_losses = train_example_loop(single, x, y, EXAMPLE_BATCH, options)
    fit.compile(
        optimizer=example_optimizer(options.get("optimizer", "sgd")),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    fit.fit(x, y, batch_size=EXAMPLE_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    arrays.update(weights_by_path(single, "single"))
    arrays.update(weights_by_path(mirrored, "mirrored"))
    arrays.update(replica_copies(mirrored, strategy, "replica1"))
    arrays.update(weights_by_path(fit, "fit"))
    np.savez(out_dir / f"{name}.npz", **arrays)
    info = dtypes(mirrored.get_layer("conv1"), fit.optimizer)
    info["loop_loss"] = {"mirrored": mirrored_losses, "single": single_losses}
    return info


def fit_outcome(make_model, strategy, x, y, jit_compile=False):
    """What ``compile`` + ``fit`` does with a fresh model under ``strategy``.

    Returns ``{"error": None, "frozen_unchanged": ...}`` on success, else the
    error's type and its most telling line.
    """
    with strategy.scope():
        model = make_model()
        compile_model(model, jit_compile=jit_compile)
    before = weights_by_path(model, "w")
    try:
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, verbose=0)
    except Exception as error:  # the outcome is the result
        lines = str(error).strip().splitlines() or [""]
        telling = [
            line
            for line in lines
            if "Trying to access resource" in line or "Attempt to convert" in line
        ]
        return {"error": type(error).__name__, "message": (telling or lines)[0]}
    after = weights_by_path(model, "w")
    frozen = [k for k in before if k.endswith("frozen_kernels")]
    return {
        "error": None,
        "frozen_unchanged": all(np.array_equal(before[k], after[k]) for k in frozen),
    }


def fit_outcomes(strategy, x, y, jit_compile=False):
    """:func:`fit_outcome` for ChannelConv2D and for the same model with Conv2D."""
    return {
        "ChannelConv2D": fit_outcome(build_model, strategy, x, y, jit_compile),
        "Conv2D": fit_outcome(conv2d_model, strategy, x, y, jit_compile),
    }


def conv2d_model():
    """``build_model()`` with a Keras ``Conv2D`` in place of ChannelConv2D."""
    inputs = keras.Input(shape=INPUT_SHAPE)
    h = keras.layers.Conv2D(FILTERS, 3, padding="same")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(h))
    return keras.Model(inputs, outputs)


def save_checkpoints(model, x, out_dir):
    """Saves a distributed model three ways, with its prediction on a probe."""
    model.save(out_dir / "mirrored.keras")
    model.save_weights(out_dir / "mirrored.weights.h5")
    tf.train.Checkpoint(model=model).write(str(out_dir / "tf_ckpt" / "ckpt"))
    probe = x[:GLOBAL_BATCH]
    prediction = model.predict(probe, batch_size=GLOBAL_BATCH, verbose=0)
    np.savez(out_dir / "probe.npz", x=probe, prediction=prediction)


def run_mirrored(out_dir):
    strategy = example.make_strategy(multi_worker=False, cpu_replicas=2)
    summary = {
        "devices": [d.name for d in tf.config.list_logical_devices("CPU")],
        "num_replicas": strategy.num_replicas_in_sync,
        "scenarios": {},
        "seconds": {},
    }
    scenarios = [(run_fit_scenario, FIT_SCENARIOS), (run_example_scenario, EXAMPLE_SCENARIOS)]
    for run, table in scenarios:
        for name, options in table.items():
            start = time.perf_counter()
            try:
                summary["scenarios"][name] = run_scenario(run, name, options, strategy, out_dir)
            except Exception:  # recorded; the test reports it
                summary["scenarios"][name] = {"error": traceback.format_exc()}
            summary["seconds"][name] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    x, y = make_data()
    summary["keras_jit_fit"] = fit_outcomes(strategy, x, y, jit_compile=True)
    summary["seconds"]["keras_jit_fit"] = round(time.perf_counter() - start, 2)
    (out_dir / "mirrored.json").write_text(json.dumps(summary, indent=1))


def run_multiworker(out_dir):
    """One worker: the example's loop under MultiWorkerMirroredStrategy, then alone."""
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = example.make_strategy(multi_worker=True, cpu_replicas=1)
    x, y = make_data()
    summary = {
        "index": index,
        "num_replicas": strategy.num_replicas_in_sync,
        "keras_fit": fit_outcomes(strategy, x, y),
    }
    x, y = example.make_data(MULTIWORKER_SAMPLES)
    with strategy.scope():
        model = seeded_example_model(*MULTIWORKER_MODEL)
    single = seeded_example_model(*MULTIWORKER_MODEL)
    arrays = weights_by_path(model, "initial")
    arrays.update(weights_by_path(single, "single_initial"))
    with strategy.scope():
        train_example_loop(model, x, y, GLOBAL_BATCH, {})
    arrays.update(weights_by_path(model, "final"))
    train_example_loop(single, x, y, GLOBAL_BATCH, {})
    arrays.update(weights_by_path(single, "single"))
    np.savez(out_dir / f"worker{index}.npz", **arrays)
    (out_dir / f"worker{index}.json").write_text(json.dumps(summary))


def main(argv):
    mode, out_dir = argv[1], pathlib.Path(argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    {"mirrored": run_mirrored, "multiworker": run_multiworker}[mode](out_dir)


if __name__ == "__main__":
    main(sys.argv)
