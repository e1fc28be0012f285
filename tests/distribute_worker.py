"""Runs the tf.distribute scenarios of ``tests/test_distribute.py`` in a subprocess.

Logical devices can only be configured before TensorFlow initialises them,
and a multi-worker cluster needs one process per worker, so the tests run
this script with ``subprocess`` and compare what it writes. It never checks
anything itself: it trains and records, the test process judges.

    python tests/distribute_worker.py mirrored OUT_DIR
        Splits the CPU into two logical devices and runs every scenario of
        :data:`MIRRORED_SCENARIOS`: the same model, from the same initial
        weights and on the same global batches, trained once without a
        strategy and once under ``MirroredStrategy``. Writes
        ``OUT_DIR/<scenario>.npz`` (``initial/``, ``single/`` and
        ``mirrored/`` weights by variable path, and ``replica1/``, the second
        replica's copies; absent when the scenario raised);
        ``OUT_DIR/mirrored.json`` (devices, replicas, per scenario the dtypes
        seen or the traceback, seconds taken, and ``keras_jit_fit``: what
        ``compile(jit_compile=True)`` + ``fit`` does with ChannelConv2D and
        with Conv2D); and, from :data:`CHECKPOINT_SCENARIO`, the checkpoints
        ``mirrored.keras``, ``mirrored.weights.h5``, ``tf_ckpt/`` and
        ``probe.npz`` (a probe input and the distributed model's prediction).

    TF_CONFIG=... python tests/distribute_worker.py multiworker OUT_DIR
        One worker of a ``MultiWorkerMirroredStrategy`` cluster (its task
        index comes from ``TF_CONFIG``); trains a two-layer model (both
        implementations, both reductions) on :data:`MULTIWORKER_STEPS`
        global batches per epoch, then trains a copy of the initial model
        alone on the same batches, and writes ``OUT_DIR/worker<index>.npz``
        (``initial/``, ``final/`` and ``single/`` weights) and
        ``OUT_DIR/worker<index>.json`` (replicas, and what ``fit`` does under
        the strategy with ChannelConv2D and with Conv2D).
"""

import functools
import json
import os
import pathlib
import sys
import time
import traceback

import keras
import numpy as np
import tensorflow as tf

from channelconv.layers import ChannelConv2D

GLOBAL_BATCH = 8
SAMPLES = 32
EPOCHS = 2
INPUT_SHAPE = (8, 8, 3)
FILTERS = 4
# Kernels (input channel, filter) frozen in every model: 4 of 12.
FROZEN = [(0, 0), (0, 3), (1, 1), (2, 2)]
LEARNING_RATE = 0.05

# Scenario name -> how to build and train it. Every implementation and
# reduction appears in float32; the mixed-precision and XLA scenarios cover
# both implementations and both reductions between them. "fit" is
# ``model.fit``; "xla_loop" is a custom loop in which each replica's forward
# and backward pass is one XLA computation (see ``train_custom_loop``).
MIRRORED_SCENARIOS = {
    "fused-sum": dict(implementation="fused", reduction="sum"),
    "fused-concat": dict(implementation="fused", reduction="concat"),
    "per_channel-sum": dict(implementation="per_channel", reduction="sum"),
    "per_channel-concat": dict(implementation="per_channel", reduction="concat"),
    "mixed_float16": dict(
        implementation="fused", reduction="sum", policy="mixed_float16"
    ),
    "mixed_bfloat16": dict(
        implementation="per_channel", reduction="concat", policy="mixed_bfloat16"
    ),
    "xla-fused-sum": dict(implementation="fused", reduction="sum", loop="xla_loop"),
    "xla-per_channel-concat": dict(
        implementation="per_channel", reduction="concat", loop="xla_loop"
    ),
}
CHECKPOINT_SCENARIO = "fused-sum"
MULTIWORKER_STEPS = 3


def make_data():
    """Deterministic regression data: ``SAMPLES`` images, 2 targets each."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES,) + INPUT_SHAPE).astype("float32")
    y = rng.normal(size=(SAMPLES, 2)).astype("float32")
    return x, y


def build_model(implementation="fused", reduction="sum", layers=1, seed=1):
    """Input -> ``layers`` x ChannelConv2D -> Flatten -> Dense(2, float32).

    The frozen kernels are drawn from a normal distribution (not zeros), so
    that "unchanged" is a strong check. With ``layers=2`` the second layer
    uses the other implementation and reduction, so one model covers both.
    The last layer computes in float32, as Keras recommends for mixed
    precision.
    """
    other = {"fused": "per_channel", "per_channel": "fused"}
    other_reduction = {"sum": "concat", "concat": "sum"}
    inputs = keras.Input(shape=INPUT_SHAPE)
    h = inputs
    for i in range(layers):
        h = ChannelConv2D(
            FILTERS,
            3,
            frozen=FROZEN if i == 0 else [(0, 1), (2, 0)],
            frozen_initializer=keras.initializers.RandomNormal(seed=seed + 100 + i),
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i),
            implementation=implementation if i == 0 else other[implementation],
            reduction=reduction if i == 0 else other_reduction[reduction],
            padding="same" if i == 0 else "valid",
            name=f"channel_conv{i}",
        )(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(
        2,
        dtype="float32",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 50),
        name="head",
    )(h)
    return keras.Model(inputs, outputs)


def compile_model(model, jit_compile=False):
    """Plain SGD on mean squared error: no state, no randomness."""
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss="mse",
        jit_compile=jit_compile,
    )


def weights_by_path(model, prefix):
    """``{prefix + "/" + variable path: array}`` for all the model's weights."""
    return {
        f"{prefix}/{w.path}": keras.ops.convert_to_numpy(w).copy()
        for w in model.weights
    }


def replica_copies(model, strategy, prefix):
    """``{prefix + "/" + path: array}`` of each variable's copy on replica 1."""
    return {
        f"{prefix}/{w.path}": strategy.experimental_local_results(w.value)[1].numpy()
        for w in model.weights
    }


def train_fit(model, x, y):
    """``model.fit`` on the global batches, in order."""
    compile_model(model)
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0)


def train_custom_loop(model, x, y, jit_compile=False):
    """``strategy.run`` on each global batch, in order; SGD as in ``fit``.

    Used where ``model.fit`` cannot be (Keras 3.15, any model):

    - ``jit_compile=True`` under a ``MirroredStrategy``: Keras puts
      ``strategy.run`` itself inside the XLA-compiled function, so one XLA
      computation would read variables on several devices
      (keras-team/keras#19005; Keras turns ``jit_compile="auto"`` off under
      a strategy for this reason). Here each replica's forward and backward
      pass is compiled by XLA instead, and the optimizer sums the gradients
      across replicas outside XLA.
    - ``MultiWorkerMirroredStrategy``: ``fit`` fails before the first step
      (keras-team/keras#20585).

    The loss is each replica's mean divided by the number of replicas, so
    the summed gradient is that of the global mean, as in ``fit``.
    """
    strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit_compile)
    def replica_gradients(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
            loss = loss / replicas
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def train_step(batch):
        def replica_step(xb, yb):
            gradients = replica_gradients(xb, yb)
            optimizer.apply(gradients, model.trainable_variables)

        strategy.run(replica_step, args=batch)

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    for _ in range(EPOCHS):
        for batch in strategy.experimental_distribute_dataset(dataset):
            train_step(batch)


LOOPS = {
    "fit": train_fit,
    "xla_loop": functools.partial(train_custom_loop, jit_compile=True),
}


def run_mirrored_scenario(name, options, strategy, x, y, out_dir):
    """Trains without and with ``strategy`` from the same weights; records.

    The single-device reference is always trained with ``model.fit`` (no
    XLA), so the XLA scenarios are checked against plain Keras training.
    """
    options = dict(options)
    policy = options.pop("policy", "float32")
    train = LOOPS[options.pop("loop", "fit")]
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        single = build_model(**options)
        with strategy.scope():
            mirrored = build_model(**options)
        mirrored.set_weights(single.get_weights())
        arrays = weights_by_path(mirrored, "initial")
        train_fit(single, x, y)
        with strategy.scope():
            train(mirrored, x, y)
        arrays.update(weights_by_path(single, "single"))
        arrays.update(weights_by_path(mirrored, "mirrored"))
        arrays.update(replica_copies(mirrored, strategy, "replica1"))
        np.savez(out_dir / f"{name}.npz", **arrays)
        conv = mirrored.get_layer("channel_conv0")
        info = {
            "variable_dtype": conv.variable_dtype,
            "compute_dtype": conv.compute_dtype,
            "optimizer": type(getattr(mirrored, "optimizer", None)).__name__,
        }
        if name == CHECKPOINT_SCENARIO:
            save_checkpoints(mirrored, x, out_dir)
        return info
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


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
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    x, y = make_data()
    summary = {
        "devices": devices,
        "num_replicas": strategy.num_replicas_in_sync,
        "scenarios": {},
        "seconds": {},
    }
    for name, options in MIRRORED_SCENARIOS.items():
        start = time.perf_counter()
        try:
            summary["scenarios"][name] = run_mirrored_scenario(
                name, options, strategy, x, y, out_dir
            )
        except Exception:  # recorded; the test reports it
            summary["scenarios"][name] = {"error": traceback.format_exc()}
        summary["seconds"][name] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    summary["keras_jit_fit"] = fit_outcomes(strategy, x, y, jit_compile=True)
    summary["seconds"]["keras_jit_fit"] = round(time.perf_counter() - start, 2)
    (out_dir / "mirrored.json").write_text(json.dumps(summary, indent=1))


def run_multiworker(out_dir):
    """One worker: trains under MultiWorkerMirroredStrategy, then alone."""
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x, y = make_data()
    x, y = x[: GLOBAL_BATCH * MULTIWORKER_STEPS], y[: GLOBAL_BATCH * MULTIWORKER_STEPS]
    summary = {
        "index": index,
        "num_replicas": strategy.num_replicas_in_sync,
        "keras_fit": fit_outcomes(strategy, x, y),
    }
    with strategy.scope():
        model = build_model(layers=2)
    single = build_model(layers=2)
    single.set_weights(model.get_weights())
    arrays = weights_by_path(model, "initial")
    with strategy.scope():
        train_custom_loop(model, x, y)
    arrays.update(weights_by_path(model, "final"))
    train_fit(single, x, y)
    arrays.update(weights_by_path(single, "single"))
    np.savez(out_dir / f"worker{index}.npz", **arrays)
    (out_dir / f"worker{index}.json").write_text(json.dumps(summary))


def main(argv):
    mode, out_dir = argv[1], pathlib.Path(argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    {"mirrored": run_mirrored, "multiworker": run_multiworker}[mode](out_dir)


if __name__ == "__main__":
    main(sys.argv)
