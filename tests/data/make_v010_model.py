"""Writes ``v010_model.keras`` and ``v010_model.npz``: a model saved by channelconv 0.1.0.

Run once, at commit cf9684c (channelconv 0.1.0), from the root of a copy of
that commit (with this script copied into it), with Python 3.10,
TensorFlow 2.16.2 and Keras 3.12.4:

    git archive cf9684c | tar -x -C /tmp/v010
    cp tests/data/make_v010_model.py /tmp/v010/tests/data/
    cd /tmp/v010 && PYTHONPATH=. python tests/data/make_v010_model.py

Keras 3.12.4 writes a file that every Keras the project supports (3.8 and
later) can read: Keras 3.15 adds initializer arguments (``input_axes``) that
older versions refuse, and Keras 3.9 and older store a single input as a
nested list, which Keras 3.15 loads as a list input.

0.1.0 stored a built layer's frozen set in its config as a full nested list
of booleans; ``tests/test_serialization.py`` checks that later versions still
load such a file. The ``.npz`` holds the input and the 0.1.0 output, so that
the test can also pin the output across versions. Do not re-run it with a
later version: the point of the file is the old format.
"""

import pathlib

import keras
import numpy as np

import channelconv
from channelconv import ChannelConv2D

HERE = pathlib.Path(__file__).resolve().parent

MASK_SUM = np.zeros((3, 8), dtype=bool)
MASK_SUM[0, :5] = True
MASK_SUM[2, 7] = True
MASK_CONCAT = np.zeros((8, 2), dtype=bool)
MASK_CONCAT[1, 0] = MASK_CONCAT[5, 1] = MASK_CONCAT[7, 0] = True


def main():
    assert channelconv.__version__ == "0.1.0", channelconv.__version__
    keras.utils.set_random_seed(0)
    inputs = keras.Input((9, 9, 3))
    x = ChannelConv2D(
        8, 3, frozen=MASK_SUM, frozen_initializer="zeros",
        bias_initializer="random_normal", padding="same", name="sum_layer",
    )(inputs)
    x = keras.layers.ReLU()(x)
    outputs = ChannelConv2D(
        2, (2, 3), frozen=MASK_CONCAT, reduction="concat",
        frozen_initializer=keras.initializers.RandomNormal(seed=4),
        bias_initializer="random_normal", name="concat_layer",
    )(x)
    model = keras.Model(inputs, outputs, name="v010")
    x = np.random.default_rng(1).normal(size=(2, 9, 9, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x))
    model.save(HERE / "v010_model.keras")
    np.savez(HERE / "v010_model.npz", x=x, y=y)


if __name__ == "__main__":
    main()
