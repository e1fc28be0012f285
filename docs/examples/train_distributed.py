"""Train a model with ChannelConv2D under tf.distribute; check the frozen kernels.

The runnable companion of ``docs/scaling.md`` (its code blocks are verbatim
excerpts of this file; ``tests/test_distribute.py`` runs it with tiny
settings). From the repository root:

    # One machine: MirroredStrategy over all GPUs, or over 2 logical CPU
    # devices on a machine without GPUs (about 20 s on a 2-core CPU).
    python docs/examples/train_distributed.py

    # Mixed precision, XLA, the other implementation and reduction.
    python docs/examples/train_distributed.py --policy mixed_float16 --jit-compile
    python docs/examples/train_distributed.py --implementation per_channel

    # Several machines: start one process per machine, each with its TF_CONFIG.
    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python docs/examples/train_distributed.py --multi-worker

It writes into ``--out`` (default: a new temporary directory)
``initial_weights.npz`` (every variable before training, by path),
``model.keras`` (written by the chief, worker 0, only) and ``results.json``,
and prints the results: strategy, replicas, seconds per epoch, loss, and
whether every frozen kernel is bit-identical to its initial value. The
first epoch's time includes tracing (and XLA compilation).
"""

import argparse
import json
import os
import pathlib
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import channelconv


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--multi-worker", action="store_true",
                        help="MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG")
    parser.add_argument("--cpu-replicas", type=int, default=2,
                        help="without GPUs, split the CPU into this many logical devices")
    parser.add_argument("--implementation", choices=["fused", "per_channel"], default="fused")
    parser.add_argument("--reduction", choices=["sum", "concat"], default="sum")
    parser.add_argument("--policy", default="float32",
                        choices=["float32", "mixed_float16", "mixed_bfloat16"])
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile each replica's step with XLA (custom loop)")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def make_strategy(multi_worker, cpu_replicas):
    """The strategy; must run before TensorFlow creates any tensor."""
    if multi_worker:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if not tf.config.list_physical_devices("GPU") and cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas
        )
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.MirroredStrategy()  # all GPUs


def make_data(samples, seed=0):
    """Noisy 16x16 images of horizontal, vertical or diagonal stripes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, samples)
    rows, cols = np.mgrid[0:16, 0:16]
    images = rng.normal(0.0, 1.0, (samples, 16, 16, 3)).astype("float32")
    for i, label in enumerate(labels):
        line = (rows, cols, rows + cols)[label]
        images[i, :, :, i % 3] += np.sin(line * np.pi / 2 + rng.uniform(0, 2 * np.pi))
    return images, labels.astype("int32")


def build_model(implementation, reduction):
    """Two ChannelConv2D layers with a quarter of their kernels frozen."""
    inputs = keras.Input(shape=(16, 16, 3))
    h = channelconv.ChannelConv2D(
        16, 3, frozen=channelconv.random_frozen_mask(3, 16, 12, seed=0),
        frozen_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=1),
        implementation=implementation, activation="swish", name="conv1",
    )(inputs)
    h = channelconv.ChannelConv2D(
        8, 3, frozen=channelconv.random_frozen_mask(16, 8, 32, seed=2),
        reduction=reduction, implementation=implementation,
        activation="swish", name="conv2",
    )(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(3, dtype="float32", name="classes")(h)  # float32 logits
    return keras.Model(inputs, outputs)


def fit_epochs(model, x, y, batch_size):
    """model.fit under MirroredStrategy, as for any Keras model; one epoch a call."""
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )

    def epoch():
        history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        return history.history["loss"][0]

    return epoch


def loop_epochs(model, x, y, batch_size, jit_compile, optimizer=None):
    """A custom loop, for MultiWorkerMirroredStrategy and XLA; one epoch a call."""
    strategy = tf.distribute.get_strategy()
    optimizer = optimizer or keras.optimizers.Adam(1e-2)  # as in fit_epochs
    if keras.mixed_precision.global_policy().compute_dtype == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None
    )

    @tf.function(jit_compile=jit_compile)  # XLA compiles one replica's step
    def replica_gradients(xb, yb, global_batch):
        with tf.GradientTape() as tape:
            per_example = loss_fn(yb, model(xb, training=True))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = optimizer.scale_loss(loss)
        return loss, tape.gradient(scaled, model.trainable_variables)

    @tf.function
    def train_step(batch):
        def replica_step(xb, yb):
            # Samples in this step on all replicas: batch_size, or fewer in an
            # epoch's last step.
            context = tf.distribute.get_replica_context()
            global_batch = context.all_reduce("SUM", tf.shape(yb)[0])
            loss, gradients = replica_gradients(xb, yb, global_batch)
            optimizer.apply(gradients, model.trainable_variables)  # all-reduce
            return loss

        losses = strategy.run(replica_step, args=batch)
        return strategy.reduce("SUM", losses, axis=None)

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    distributed = strategy.experimental_distribute_dataset(dataset)

    def epoch():
        losses = [float(train_step(batch)) for batch in distributed]
        return sum(losses) / len(losses)

    return epoch


def variables_by_path(model):
    return {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}


def main(argv=None):
    args = parse_args(argv)
    strategy = make_strategy(args.multi_worker, args.cpu_replicas)
    keras.mixed_precision.set_dtype_policy(args.policy)
    out = pathlib.Path(args.out or tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    chief = task.get("index", 0) == 0
    x, y = make_data(args.samples)

    with strategy.scope():
        model = build_model(args.implementation, args.reduction)
    initial = variables_by_path(model)
    if chief:
        np.savez(out / "initial_weights.npz", **initial)

    with strategy.scope():
        if args.multi_worker or args.jit_compile:
            epoch = loop_epochs(model, x, y, args.batch_size, args.jit_compile)
        else:
            epoch = fit_epochs(model, x, y, args.batch_size)
        losses, seconds = [], []
        for _ in range(args.epochs):
            start = time.perf_counter()
            losses.append(epoch())
            seconds.append(time.perf_counter() - start)

    final = variables_by_path(model)
    frozen = [p for p in final if p.endswith("frozen_kernels")]
    results = {
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "policy": args.policy,
        "implementation": args.implementation,
        "reduction": args.reduction,
        "jit_compile": args.jit_compile,
        "seconds_per_epoch": [round(v, 2) for v in seconds],  # 1st: + tracing
        "loss_per_epoch": [round(v, 4) for v in losses],
        "frozen_kernels_bit_exact": all(np.array_equal(initial[p], final[p]) for p in frozen),
    }
    if chief:
        # A checkpoint of distributed training loads without any strategy.
        model.save(out / "model.keras")
        reloaded = keras.saving.load_model(out / "model.keras")
        results["reloaded_weights_identical"] = all(
            np.array_equal(final[w.path], keras.ops.convert_to_numpy(w))
            for w in reloaded.weights
        )
        (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
