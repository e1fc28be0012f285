"""Cost of the fused path's kernel assembly alone (forward and gradient).

Run from the repository root::

    python benchmarks/bench_assembly.py

For 10% frozen 3x3 kernels at 64x64 and 256x64 (input channels x filters),
times a compiled function that assembles the kernel from the trainable and
frozen variables and takes the gradient of a scalar of it, against the same
function on an unassembled (reshaped) kernel; prints both medians and their
difference, the assembly's cost per training step.
"""

import time

import numpy as np
import tensorflow as tf

from channelconv import random_frozen_mask
from channelconv.ops import assemble_kernel, assembly_index

REPEATS = 200


def median_ms(fn):
    fn()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn().numpy()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def gradient_fn(variable, make_kernel):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            kernel = make_kernel()
            loss = tf.reduce_sum(kernel * kernel)
        return tape.gradient(loss, variable)

    return step


def main():
    print(f"TensorFlow {tf.__version__}; median of {REPEATS} calls, ms")
    for channels, filters in [(64, 64), (256, 64)]:
        shape = (3, 3, channels, filters)
        mask = random_frozen_mask(channels, filters, round(0.1 * channels * filters), seed=0)
        trainable_pos, frozen_pos, index = assembly_index(mask)
        trainable = tf.Variable(tf.random.normal((3, 3, trainable_pos.size)))
        frozen = tf.zeros((3, 3, frozen_pos.size))
        dense = tf.Variable(tf.random.normal((3, 3, channels * filters)))
        assembled = median_ms(
            gradient_fn(trainable, lambda: assemble_kernel(trainable, frozen, index, shape))
        )
        plain = median_ms(gradient_fn(dense, lambda: tf.reshape(dense, shape)))
        print(
            f"{channels}x{filters}: with assembly {assembled:.3f}, without "
            f"{plain:.3f}, assembly costs {assembled - plain:.3f}"
        )


if __name__ == "__main__":
    main()
