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
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchlib.environment import environment, onednn_text  # noqa: E402

CALLS, SHAPE, FILTERS = 30, (16, 32, 32, 64), 64


def ratio(groups, x):
    """Median ms of grouped and dense inference, and the median per-call ratio."""
    grouped = keras.layers.Conv2D(FILTERS, 3, groups=groups)
    dense = keras.layers.Conv2D(FILTERS, 3)
    fns = {}
    for name, layer in (("grouped", grouped), ("dense", dense)):
        layer.build(x.shape)
        fns[name] = tf.function(layer.__call__)
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn(x)
        fn(x)
    for _ in range(CALLS):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x).numpy()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
    return ms, float(np.median(np.array(times["grouped"]) / np.array(times["dense"])))


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
