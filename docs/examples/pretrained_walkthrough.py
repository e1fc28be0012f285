"""Pretrained Conv2D -> freeze 10% of kernels -> fine-tune -> strip -> export.

The runnable companion of ``docs/pretrained.md`` (every code block of the page
is a verbatim excerpt of this file, and ``tests/test_convert.py`` runs it, so
the page cannot rot). Run it from the repository root:

    python docs/examples/pretrained_walkthrough.py /tmp/walkthrough

It writes into the given directory (default: a new temporary directory)
``pretrained.keras``, ``conv2_mask.png``, ``deploy.keras``, the SavedModel
``serving/`` and ``results.json``, and prints the results. It takes about 15
seconds on a 2-core CPU.
"""

import json
import pathlib
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

import channelconv
from channelconv.convert import convert_model, strip
from channelconv.plot import plot_kernel_mask
from channelconv.apps.report import parameter_counts


def stripes(n, seed):
    """Images of horizontal (0), vertical (1) or diagonal (2) stripes, noisy."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    rows, cols = np.mgrid[0:16, 0:16]
    images = rng.normal(0.0, 1.0, (n, 16, 16, 3)).astype("float32")
    for i, label in enumerate(labels):
        phase = rng.uniform(0, 2 * np.pi)
        line = (rows, cols, rows + cols)[label]
        images[i, :, :, rng.integers(0, 3)] += np.sin(line * np.pi / 2 + phase)
    return images, labels


def pretrain(path, x, y):
    """Stands in for a downloaded model: the question's three Conv2D layers."""
    x_in = keras.Input(shape=(None, None, 3))
    h = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(x_in)
    h = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(h)
    h = keras.layers.Conv2D(16, 3, activation="relu", name="conv3")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, name="classes")(h)
    model = keras.Model(x_in, out)
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    model.save(path)


def main(out_dir):
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    x, y = stripes(512, seed=1)
    x_test, y_test = stripes(256, seed=2)
    pretrain(out / "pretrained.keras", x, y)
    results = {}

    # --- 1. Load the pretrained model ---------------------------------------
    pretrained = keras.saving.load_model(out / "pretrained.keras")
    results["pretrained_accuracy"] = pretrained.evaluate(x_test, y_test, verbose=0)[1]

    # --- 2. Freeze 10% of the kernels of every Conv2D, at zero ---------------
    frozen_by_layer = {}
    for i, layer in enumerate(pretrained.layers):
        if isinstance(layer, keras.layers.Conv2D):
            in_channels, filters = layer.kernel.shape[-2:]
            count = round(0.1 * in_channels * filters)
            frozen_by_layer[layer.name] = channelconv.random_frozen_mask(
                in_channels, filters, count, seed=i
            )
    model = convert_model(pretrained, frozen_by_layer, frozen_values="zeros")
    results["pruned_accuracy"] = model.evaluate(x_test, y_test, verbose=0)[1]

    # --- 3. Fine-tune: the frozen kernels stay exactly zero -------------------
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    results["fine_tuned_accuracy"] = model.evaluate(x_test, y_test, verbose=0)[1]
    for name, mask in frozen_by_layer.items():
        kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
        assert np.all(kernel[:, :, mask] == 0), name

    # --- 4. Look at the frozen set of one layer -------------------------------
    plot_kernel_mask(model.get_layer("conv2"), out / "conv2_mask.png")

    # --- 5. Strip for deployment: plain Keras layers, identical outputs -------
    deploy = strip(model)
    assert np.array_equal(deploy.predict(x_test, verbose=0),
                          model.predict(x_test, verbose=0))
    deploy.save(out / "deploy.keras")  # loads without channelconv installed

    # --- 6. Export a SavedModel for serving -----------------------------------
    deploy.export(out / "serving", verbose=False)
    served = tf.saved_model.load(out / "serving")
    assert np.array_equal(served.serve(x_test).numpy(),
                          deploy.predict(x_test, verbose=0))

    results["trainable_params"] = {
        "pretrained": parameter_counts(pretrained).trainable,
        "fine_tuned": parameter_counts(model).trainable,
    }
    results["frozen_kernels"] = {n: int(m.sum()) for n, m in frozen_by_layer.items()}
    results["deploy_layers"] = [type(layer).__name__ for layer in deploy.layers]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
