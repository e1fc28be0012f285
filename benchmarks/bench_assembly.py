"""Where a converted network's extra time goes: the kernel assembly, op by op.

Run from the repository root::

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_assembly.py   # about 1 min

It converts ResNet50 and MobileNetV2 as ``bench_networks.py`` does (10% of
each ``Conv2D``'s kernels frozen) and times, in one compiled function per
row, the kernels of all their layers made at once, interleaved, median of
15 rounds, in milliseconds and nanoseconds per kernel element:

- ``layer.kernel``: the assembly as the layers run it (XLA-compiled gather,
  concatenation where nothing is frozen before a trainable kernel);
- the same gathers with TensorFlow's own gather (what the assembly used
  before: ``tf.gather`` along the last axis, or, for kernels of 32,768
  elements and more, a gather of whole kernels between two transposes);
- the gradient of ``sum(kernel * upstream)`` with respect to the trainable
  kernels (the second gather of a training step);
- what a cache of the assembled kernel would cost per call if it were to
  check, by content, that the compact kernels have not changed since it was
  made (writes can bypass any hook a layer has: see ``docs/performance.md``);
- floors: reading the full kernels from variables, and a copy of them
  (``+ 1``), which any per-call assembly costs at least.

It prints a Markdown table (``--out`` writes it to a file as well).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchlib.environment import environment, onednn_text  # noqa: E402
from benchlib.report import table  # noqa: E402
from benchlib.timing import interleaved, medians  # noqa: E402
import bench_networks  # noqa: E402
from channelconv.layers import BaseChannelConv  # noqa: E402

ROUNDS = 15


def frozen_kernels(layer):
    """The layer's frozen kernels: its variable, or zeros where it keeps them at
    zero by construction (no variable; its assembly then takes zeros)."""
    if layer.frozen_kernels is not None:
        return layer.frozen_kernels
    return tf.zeros(layer.kernel_size + (layer._assembly.frozen_positions.size,))


def tensorflow_gather(layer):
    """The assembly before XLA: TensorFlow's own gather (rows for large kernels)."""
    assembly = layer._assembly
    stacked = tf.concat([layer.trainable_kernels, frozen_kernels(layer)], axis=-1)
    if assembly.index is None:
        return tf.reshape(stacked, assembly.kernel_shape)
    if np.prod(assembly.kernel_shape) < 32768:
        return tf.reshape(tf.gather(stacked, assembly.index, axis=-1), assembly.kernel_shape)
    rows = tf.transpose(tf.reshape(stacked, (-1, stacked.shape[-1])))
    taken = tf.transpose(tf.gather(rows, assembly.index, axis=0))
    return tf.reshape(taken, assembly.kernel_shape)


def rows_for(model):
    layers = [layer for layer in model.layers if isinstance(layer, BaseChannelConv)]
    fulls = [tf.Variable(tf.zeros(layer._kernel_shape)) for layer in layers]
    # What a cache of the assembled kernel would have to check on every call
    # to never serve a stale kernel, since writes can bypass every hook: that
    # the compact kernels still equal the copy it was made from.
    copies = [(tf.Variable(layer.trainable_kernels), tf.Variable(frozen_kernels(layer)))
              for layer in layers]
    upstreams = [tf.random.stateless_normal(layer._kernel_shape, seed=(0, i))
                 for i, layer in enumerate(layers)]

    def gradients():
        with tf.GradientTape() as tape:
            loss = sum(tf.reduce_sum(layer.kernel * u) for layer, u in zip(layers, upstreams))
        return tape.gradient(loss, [layer.trainable_kernels for layer in layers])

    fns = {
        "layer.kernel (XLA gather)": lambda: [layer.kernel for layer in layers],
        "TensorFlow's gather": lambda: [tensorflow_gather(layer) for layer in layers],
        "layer.kernel + its gradient": lambda: ([layer.kernel for layer in layers],
                                                gradients()),
        "cache freshness check": lambda: tf.reduce_all([
            tf.reduce_all(tf.equal(layer.trainable_kernels, t))
            & tf.reduce_all(tf.equal(frozen_kernels(layer), f))
            for layer, (t, f) in zip(layers, copies)]),
        "read the full kernels": lambda: [tf.identity(f) for f in fulls],
        "copy the full kernels": lambda: [f + 1.0 for f in fulls],
    }
    elements = sum(int(np.prod(layer._kernel_shape)) for layer in layers)
    return {name: tf.function(fn) for name, fn in fns.items()}, elements, len(layers)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    env = environment()
    lines = [
        "# Kernel assembly of whole converted networks", "",
        f"TensorFlow {env['tensorflow']}, Keras {env['keras']}; {onednn_text(env)}; "
        f"CPU {env['cpu']}, {env['cores']} cores; {env['date']}; median of {ROUNDS} rounds",
        "",
    ]
    rows = []
    for name, size, _ in bench_networks.FULL["cases"][::2]:  # each network at 10%
        models = bench_networks.variants(name, size, 0.1)
        fns, elements, n_layers = rows_for(models["converted"])
        for what, seconds in medians(interleaved(fns, ROUNDS, warmup=1)).items():
            rows.append([f"{name} ({n_layers} layers, {elements / 1e6:.1f}M elements)", what,
                         f"{seconds * 1e3:.1f}", f"{seconds * 1e9 / elements:.2f}"])
    lines += table(["network", "what", "ms", "ns / element"], rows, "llrr")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
