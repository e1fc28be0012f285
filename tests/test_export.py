"""Serving export and training checkpoints of models holding ChannelConv2D.

Training is made deterministic (fixed data, no shuffling, SGD with momentum,
fixed initial weights), so an interrupted-and-resumed run is compared with an
uninterrupted one by exact equality; momentum makes the comparison sensitive
to the optimizer state being restored, which a control run shows.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from channelconv.layers import ChannelConv2D

RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 8, 8, 3)).astype("float32")
Y = RNG.standard_normal((16, 2)).astype("float32")
BATCH, EPOCHS, STOP_AFTER = 4, 3, 2  # 4 steps per epoch, interrupted after 8


def np_(tensor):
    return keras.ops.convert_to_numpy(tensor)


def make_model():
    inputs = keras.Input((8, 8, 3))
    h = ChannelConv2D(
        4, 3, frozen=[(0, 0), (1, 2), (2, 3)], frozen_initializer="glorot_uniform",
        activation="relu", name="sum_layer",
    )(inputs)
    h = ChannelConv2D(2, 3, reduction="concat", frozen=[(0, 1), (3, 0)],
                      frozen_initializer="ones", padding="same", name="concat_layer")(h)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    return model


@pytest.fixture(scope="module")
def initial_weights():
    return make_model().get_weights()


def fresh_model(weights):
    model = make_model()
    model.set_weights(weights)
    return model


def frozen_kernels(model):
    return [np_(model.get_layer(n).frozen_kernels) for n in ("sum_layer", "concat_layer")]


def fit(model, epochs, callbacks=()):
    return model.fit(X, Y, batch_size=BATCH, epochs=epochs, shuffle=False,
                     verbose=0, callbacks=list(callbacks))


@pytest.fixture(scope="module")
def uninterrupted(initial_weights):
    model = fresh_model(initial_weights)
    fit(model, EPOCHS)
    return model


def assert_same_training_state(model, reference, initial_weights):
    assert int(model.optimizer.iterations) == int(reference.optimizer.iterations) == 12
    for got, want in zip(model.weights, reference.weights):
        assert np.array_equal(np_(got), np_(want)), got.path
    start = fresh_model(initial_weights)
    for got, want in zip(frozen_kernels(model), frozen_kernels(start)):
        assert np.array_equal(got, want)
    # The check has teeth: the trainable weights did move during training.
    assert not np.array_equal(
        np_(model.get_layer("sum_layer").trainable_kernels),
        np_(start.get_layer("sum_layer").trainable_kernels),
    )


# --- serving export ------------------------------------------------------------


def test_export_reloads_with_identical_outputs(uninterrupted, tmp_path):
    path = str(tmp_path / "served")
    uninterrupted.export(path, verbose=False)
    expected = np_(uninterrupted(X))
    artifact = tf.saved_model.load(path)
    assert np.array_equal(artifact.serve(tf.constant(X)).numpy(), expected)
    layer = keras.layers.TFSMLayer(path, call_endpoint="serve")
    assert np.array_equal(np_(layer(X)), expected)


# --- checkpoints ---------------------------------------------------------------


def test_tf_train_checkpoint_resumes_exactly(uninterrupted, initial_weights, tmp_path):
    first = fresh_model(initial_weights)
    fit(first, STOP_AFTER)
    path = tf.train.Checkpoint(model=first, optimizer=first.optimizer).write(
        str(tmp_path / "ckpt")
    )

    resumed = make_model()  # different random weights, overwritten by the restore
    resumed.optimizer.build(resumed.trainable_variables)
    status = tf.train.Checkpoint(model=resumed, optimizer=resumed.optimizer).read(path)
    status.assert_existing_objects_matched()
    fit(resumed, EPOCHS - STOP_AFTER)
    assert_same_training_state(resumed, uninterrupted, initial_weights)

    # Control: the same weights with a fresh optimizer (no momentum) diverge.
    # (A compiled model tracks its optimizer, so it is recompiled after the
    # restore to drop the restored optimizer state.)
    control = make_model()
    tf.train.Checkpoint(model=control).read(path).expect_partial()
    control.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    fit(control, EPOCHS - STOP_AFTER)
    assert not np.array_equal(
        np_(control.get_layer("sum_layer").trainable_kernels),
        np_(uninterrupted.get_layer("sum_layer").trainable_kernels),
    )


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == STOP_AFTER:
            raise RuntimeError("simulated preemption")


def test_backup_and_restore_resumes_exactly(uninterrupted, initial_weights, tmp_path):
    backup = str(tmp_path / "backup")
    first = fresh_model(initial_weights)
    with pytest.raises(RuntimeError, match="simulated preemption"):
        fit(first, EPOCHS, [keras.callbacks.BackupAndRestore(backup), _Interrupt()])

    resumed = make_model()
    history = fit(resumed, EPOCHS, [keras.callbacks.BackupAndRestore(backup)])
    assert history.epoch == list(range(STOP_AFTER, EPOCHS))  # only the rest ran
    assert_same_training_state(resumed, uninterrupted, initial_weights)
