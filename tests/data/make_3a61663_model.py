"""Writes ``3a61663_model.keras`` and ``3a61663_model.npz``: the format before 0.2.0.

Up to commit 3a61663 (still versioned 0.1.0) every channel convolution
stored its frozen kernels in a variable ``frozen_kernels``, zero or not,
and the frozen mask lived only in the config. 0.2.0 keeps kernels frozen at
zero out of the weights and seals the mask into them; this file is what
``tests/test_integrity.py`` loads to show that older files still load
unchanged: same weights, same outputs, the same implementation running.

Run once, at commit 3a61663, from the root of a copy of that commit (with
this script copied into it), with TensorFlow 2.21 and Keras 3.12.4 (a file
every supported Keras, 3.8 and later, can read; see ``make_v010_model.py``):

    git archive 3a61663 | tar -x -C /tmp/head
    cp tests/data/make_3a61663_model.py /tmp/head/tests/data/
    cd /tmp/head && PYTHONPATH=. python tests/data/make_3a61663_model.py

The model holds one layer of every kind such files have: frozen kernels at
pretrained values (``from_conv(..., frozen_values="keep")``, fused), at a
non-zero initializer, assigned on an ``"auto"`` layer that runs fused, and at
zero under ``"sparse"`` and under an ``"auto"`` layer that runs sparse; a
pruned layer; ``per_channel``; and the 1-D and 3-D layers. The ``.npz``
holds the inputs, the output, each layer's weights and implementation in
use. Do not re-run it with a later version: the point is the old format.
"""

import json
import pathlib

import keras
import numpy as np

import channelconv
from channelconv import ChannelConv1D, ChannelConv2D, ChannelConv3D

HERE = pathlib.Path(__file__).resolve().parent


def main():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    image = keras.Input((9, 9, 4), name="image")
    conv = keras.layers.Conv2D(6, 3, padding="same", name="kept")
    conv.build((None, 9, 9, 4))
    kept = channelconv.from_conv(conv, frozen=[(0, 0), (1, 2), (3, 5)], frozen_values="keep")
    x = kept(image)
    x = ChannelConv2D(
        6, 3, padding="same", frozen=channelconv.grouped_frozen_mask(6, 6, 2),
        implementation="sparse", name="sparse")(x)
    x = ChannelConv2D(
        2, 1, frozen=[(1, 0), (4, 1)], reduction="concat",
        frozen_initializer="ones", name="ones")(x)
    assigned = ChannelConv2D(32, 3, padding="same", frozen=[(0, 0), (2, 3)],
                             implementation="auto", name="auto_fused")
    x = assigned(x)
    wide = ChannelConv2D(32, 3, padding="same", frozen=channelconv.grouped_frozen_mask(32, 32, 4),
                         implementation="auto", name="auto_sparse")
    x = wide(keras.layers.ReLU()(x))
    pruned = ChannelConv2D(4, 3, prunable=True, name="pruned")
    x = pruned(x)
    x = ChannelConv2D(3, 3, frozen=[(2, 1)], implementation="per_channel",
                      name="per_channel")(x)
    image_out = keras.layers.GlobalAveragePooling2D()(x)

    sequence = keras.Input((12, 3), name="sequence")
    y = ChannelConv1D(4, 3, frozen=[(0, 1), (2, 3)], padding="causal",
                      implementation="sparse", name="conv1d")(sequence)
    sequence_out = keras.layers.GlobalAveragePooling1D()(y)
    volume = keras.Input((5, 5, 5, 2), name="volume")
    z = ChannelConv3D(3, 2, frozen=[(1, 1)], reduction="concat",
                      frozen_initializer=keras.initializers.RandomNormal(seed=5),
                      name="conv3d")(volume)
    volume_out = keras.layers.GlobalAveragePooling3D()(z)
    outputs = keras.layers.Concatenate()([image_out, sequence_out, volume_out])
    model = keras.Model([image, sequence, volume], outputs, name="before_020")

    kernel = keras.ops.convert_to_numpy(assigned.kernel)
    kernel[:, :, 0, 0] = rng.normal(size=(3, 3))
    kernel[:, :, 2, 3] = rng.normal(size=(3, 3))
    assigned.assign_kernel(kernel)  # allowed: "auto" runs fused at this size
    pruned.pruned_kernels.assign(np.eye(32, 4, dtype="float32"))
    layers = [kept, assigned, wide, pruned] + [
        model.get_layer(n) for n in ("sparse", "ones", "per_channel", "conv1d", "conv3d")
    ]
    assert assigned.implementation_in_use == "fused"
    assert wide.implementation_in_use == "sparse"

    inputs = {
        "image": rng.normal(size=(2, 9, 9, 4)).astype("float32"),
        "sequence": rng.normal(size=(2, 12, 3)).astype("float32"),
        "volume": rng.normal(size=(2, 5, 5, 5, 2)).astype("float32"),
    }
    out = keras.ops.convert_to_numpy(model([inputs["image"], inputs["sequence"],
                                            inputs["volume"]]))
    model.save(HERE / "3a61663_model.keras")
    arrays = {f"input_{k}": v for k, v in inputs.items()}
    arrays["output"] = out
    for layer in layers:
        arrays[f"kernel_{layer.name}"] = keras.ops.convert_to_numpy(layer.kernel)
        for variable in layer.weights:
            arrays[f"weight_{layer.name}_{variable.path.split('/')[-1]}"] = (
                keras.ops.convert_to_numpy(variable))
    arrays["implementations"] = np.array(json.dumps(
        {layer.name: layer.implementation_in_use for layer in layers}))
    np.savez(HERE / "3a61663_model.npz", **arrays)


if __name__ == "__main__":
    main()
