"""The ``model.fit`` scenarios of distributed training, on any Keras backend.

One table, :data:`FIT_SCENARIOS`, and the model, data and training every
scenario uses: ``tests/distribute_worker.py`` runs them under TensorFlow's
``MirroredStrategy``, ``tests/jax_distribution_worker.py`` under Keras's
own ``keras.distribution.DataParallel`` on JAX, and ``tests/test_distribute.py``
judges both with the same checks. Nothing here imports a backend.
"""

import keras
import numpy as np

from channelconv.layers import ChannelConv2D
from channelconv.pruning import ConstantSparsity, KernelPruning

GLOBAL_BATCH = 8
SAMPLES = 32
EPOCHS = 2
INPUT_SHAPE = (8, 8, 3)
FILTERS = 4
# Kernels (input channel, filter) frozen in every model: 4 of 12.
FROZEN = [(0, 0), (0, 3), (1, 1), (2, 2)]
LEARNING_RATE = 0.05

# Scenario name -> the model.fit scenario: the worker's model, SGD, trained
# with ``model.fit`` with and without the strategy. Every implementation and
# every reduction appears in float32, and each implementation with each
# reduction once at least (fused concat and per-channel concat in mixed
# precision: each scenario costs a trace under the strategy and one without).
# The fused and per-channel sums are the example script's
# (``tests/distribute_worker.py``).
FIT_SCENARIOS = {
    "fused-sum": dict(implementation="fused", reduction="sum"),
    "per_channel-concat": dict(implementation="per_channel", reduction="concat"),
    "sparse-sum": dict(implementation="sparse", reduction="sum"),
    "sparse-concat": dict(implementation="sparse", reduction="concat"),
    # KernelPruning in fit: half of the 12 kernels zero from step 1 on.
    "pruned-fused-sum": dict(implementation="fused", reduction="sum", pruning=True),
    "mixed_float16": dict(
        implementation="fused", reduction="concat", policy="mixed_float16"
    ),
    "mixed_bfloat16": dict(
        implementation="per_channel", reduction="concat", policy="mixed_bfloat16"
    ),
}
CHECKPOINT_SCENARIO = "fused-sum"


def make_data():
    """Deterministic regression data: ``SAMPLES`` images, 2 targets each."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(SAMPLES,) + INPUT_SHAPE).astype("float32")
    y = rng.normal(size=(SAMPLES, 2)).astype("float32")
    return x, y


def build_model(implementation="fused", reduction="sum", seed=1, pruning=False):
    """Input -> ChannelConv2D -> Flatten -> Dense(2, float32).

    The frozen kernels are drawn from a normal distribution (not zeros), so
    that "unchanged" is a strong check, except for the sparse implementation,
    whose rule is that they are zeros. The last layer computes in float32,
    as Keras recommends for mixed precision.
    """
    frozen_initializer = (
        "zeros" if implementation == "sparse"
        else keras.initializers.RandomNormal(seed=seed + 100)
    )
    inputs = keras.Input(shape=INPUT_SHAPE)
    h = ChannelConv2D(
        FILTERS,
        3,
        frozen=FROZEN,
        frozen_initializer=frozen_initializer,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        implementation=implementation,
        reduction=reduction,
        padding="same",
        prunable=pruning,
        name="channel_conv0",
    )(inputs)
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


def train_fit(model, x, y, pruning=False):
    """``model.fit`` on the global batches, in order (pruning half the kernels)."""
    compile_model(model)
    callbacks = [KernelPruning(ConstantSparsity(0.5, begin_step=1, frequency=2))] if pruning else []
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=callbacks)


def dtypes(layer, optimizer):
    """The layer's variable and compute dtypes; the optimizer's class name."""
    return {
        "variable_dtype": layer.variable_dtype,
        "compute_dtype": layer.compute_dtype,
        "optimizer": type(optimizer).__name__,
    }


def run_scenario(run, name, options, strategy, out_dir):
    """``run(name, options, strategy, out_dir)`` under the scenario's policy."""
    options = dict(options)
    keras.mixed_precision.set_dtype_policy(options.pop("policy", "float32"))
    try:
        return run(name, options, strategy, out_dir)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
