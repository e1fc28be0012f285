"""Data-parallel training on JAX with Keras's own keras.distribution (docs/scaling.md).

Run from the repository root, with two host CPU devices::

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \
        python docs/examples/train_jax_data_parallel.py [OUT_DIR]

With ``OUT_DIR`` it saves the trained model there (``model.keras``) and the
number of devices the distribution used (``devices.txt``):
``tests/test_distribute.py`` runs it and checks both.
"""

import pathlib
import sys

import jax
import keras
import numpy as np
from channelconv import ChannelConv2D

distribution = keras.distribution.DataParallel(devices=jax.devices())
with distribution.scope():  # variables created here are replicated
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        ChannelConv2D(4, 3, frozen=[(0, 0), (1, 1)], padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(2),
    ])
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(np.random.rand(32, 8, 8, 3), np.random.rand(32, 2),
              batch_size=8, verbose=0)  # each device takes 4 of every 8

if len(sys.argv) > 1:
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    (out / "devices.txt").write_text(str(len(distribution.device_mesh.devices.flatten())))
