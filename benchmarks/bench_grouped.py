"""Is a stripped grouped convolution faster than the dense one on this CPU?

Run from the repository root, once per oneDNN setting::

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_grouped.py   # about 30 s
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/bench_grouped.py

``strip`` gives a layer whose frozen set is exactly a grouped one back as
Keras's grouped ``Conv2D(groups=g)``: smaller, but on TensorFlow's CPU Keras
runs grouped convolutions under XLA. This times its inference against the
dense ``Conv2D`` of the same shape (16 x 32 x 32 x 64 inputs, 64 filters,
3x3), 30 interleaved calls, median of the per-call ratios, and prints them.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchlib.environment import environment, onednn_text  # noqa: E402
from benchlib.timing import interleaved, summary  # noqa: E402

CALLS, SHAPE, FILTERS = 30, (16, 32, 32, 64), 64


def ratio(groups, x):
    """Median ms of grouped and dense inference, and the median per-call ratio."""
    layers = {"grouped": keras.layers.Conv2D(FILTERS, 3, groups=groups),
              "dense": keras.layers.Conv2D(FILTERS, 3)}
    fns = {name: _inference(layer, x) for name, layer in layers.items()}
    times = summary(interleaved(fns, CALLS, warmup=2), "dense")
    return {name: t["ms"] for name, t in times.items()}, times["grouped"]["ratio"]


def _inference(layer, x):
    """The compiled inference of ``layer`` on ``x``, as a callable that waits for it."""
    layer.build(x.shape)
    fn = tf.function(layer.__call__)
    return lambda: fn(x).numpy()


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    env = environment()
    print(f"TensorFlow {env['tensorflow']}, Keras {env['keras']}; {onednn_text(env)}; "
          f"CPU {env['cpu']}, {env['cores']} cores; {env['date']}")
    x = tf.constant(np.random.default_rng(0).normal(size=SHAPE).astype("float32"))
    for groups in (4, 8):
        ms, r = ratio(groups, x)
        print(f"groups={groups}: grouped {ms['grouped']:.1f} ms, dense {ms['dense']:.1f} ms, "
              f"grouped / dense {r:.2f}")


if __name__ == "__main__":
    main()
