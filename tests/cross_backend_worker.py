"""Saves the models of ``tests/test_cross_backend.py`` on one Keras backend.

    KERAS_BACKEND=jax python tests/cross_backend_worker.py OUT_DIR

For each case of :data:`CASES` it builds a one-layer model, sets kernels
(frozen ones stored at non-zero values, except in the sparse and the 3-D
cases, which keep them at zero by construction), prunes kernels of the
prunable case, and writes
``OUT_DIR/<case>.keras`` and ``OUT_DIR/<case>.npz`` (the input ``x``, this
backend's output ``y``). ``OUT_DIR/backend.txt`` names the backend. The test,
on another backend, loads and judges; this script checks nothing.
"""

import pathlib
import sys

import keras
import numpy as np

from channelconv import ChannelConv1D, ChannelConv2D, ChannelConv3D

LAYERS = {1: ChannelConv1D, 2: ChannelConv2D, 3: ChannelConv3D}
SPATIAL = {1: (9,), 2: (6, 7), 3: (4, 5, 6)}
FROZEN = [(0, 1), (1, 3), (2, 0)]
# case -> (rank, layer arguments); every rank, reduction and implementation
# appears, plus channels_first, causal padding and a pruned kernel set.
CASES = {
    "2d-sum-fused": (2, dict(kernel_size=3, padding="same", activation="relu",
                             store_frozen=True)),
    "2d-concat-per_channel-cf": (
        2, dict(kernel_size=(2, 3), strides=(2, 1), reduction="concat",
                implementation="per_channel", data_format="channels_first",
                store_frozen=True),
    ),
    "1d-sum-sparse-causal": (
        1, dict(kernel_size=3, padding="causal", dilation_rate=2, implementation="sparse"),
    ),
    "3d-concat-fused": (3, dict(kernel_size=2, reduction="concat")),
    "2d-sum-fused-pruned": (2, dict(kernel_size=3, prunable=True, store_frozen=True)),
}
IN_CHANNELS, FILTERS = 3, 4


def build(rank, options):
    """The case's model and input; weights drawn from a fixed seed."""
    layer = LAYERS[rank](FILTERS, frozen=FROZEN, name="conv", **options)
    shape = SPATIAL[rank] + (IN_CHANNELS,)
    if layer.data_format == "channels_first":
        shape = (IN_CHANNELS,) + SPATIAL[rank]
    model = keras.Sequential([keras.Input(shape), layer])
    rng = np.random.default_rng(rank)
    kernel = rng.normal(size=layer.kernel_size + (IN_CHANNELS, FILTERS)).astype("float32")
    if not layer.store_frozen:
        kernel[..., np.array(FROZEN)[:, 0], np.array(FROZEN)[:, 1]] = 0.0
    layer.assign_kernel(kernel)
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    if layer.prunable:
        pruned = np.zeros((IN_CHANNELS, FILTERS), "float32")
        pruned[1, 0] = pruned[2, 2] = 1.0
        layer.pruned_kernels.assign(pruned)
    x = rng.normal(size=(2,) + shape).astype("float32")
    return model, x


def main(argv):
    out = pathlib.Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, (rank, options) in CASES.items():
        model, x = build(rank, options)
        model.save(out / f"{name}.keras")
        np.savez(out / f"{name}.npz", x=x, y=keras.ops.convert_to_numpy(model(x)))
    (out / "backend.txt").write_text(keras.backend.backend())  # last: the files are complete


if __name__ == "__main__":
    main(sys.argv)
