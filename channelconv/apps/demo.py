"""``channelconv demo``: train the question's model with frozen kernels.

The StackOverflow question's model is three ``Conv2D(16, k)`` layers with
ReLU between them, on 3-channel images, and it wants 5 of the 48 kernels of
the first layer held at exactly zero. :func:`run` builds that model with
:class:`channelconv.ChannelConv2D`, trains it with ``model.fit`` on a task
that needs no download, then checks and prints what the library promises.

The task: a *teacher* network of the same architecture, with the same
frozen kernels at zero and random weights, maps random images to targets
(scaled to unit variance); the *student* starts from other random weights
and learns to reproduce them. The teacher can be matched exactly, so the
loss keeps going down.

Only the first layer has frozen kernels and takes ``reduction``: with
``"concat"`` it outputs ``3 * 16 = 48`` channels (the answer's layout) and
the second layer reads 48 channels. The second and third layers always sum,
like the question's ``Conv2D`` (a ``"concat"`` second layer would output
768 channels and a third 12288).
"""

import os

import keras
import numpy as np

from channelconv import ChannelConv2D, plot_kernel_mask, random_frozen_mask
from channelconv.apps.answer import ANSWER_FROZEN
from channelconv.apps.defaults import DEMO as DEFAULTS
from channelconv.apps.report import Report, parameter_counts
from channelconv.mask import parse_frozen, resolve_frozen

#: The question's model: 3 input channels, 16 filters per layer.
IN_CHANNELS = 3
FILTERS = 16
#: Held-out images on which the initial and final loss are measured.
EVAL_IMAGES = 256


def first_layer_mask(frozen=None, frozen_count=None, seed=0):
    """The frozen-kernel mask of the demo's first layer.

    Args:
        frozen: ``None`` or a sequence of ``(input_channel, filter)`` pairs.
        frozen_count: ``None`` or the number of kernels to freeze, chosen at
            random with ``seed``. At most one of ``frozen`` and
            ``frozen_count`` may be given; with neither, the answer's five
            kernels ``(0, 0)`` to ``(0, 4)`` are frozen.
        seed: seed of the random choice.

    Returns:
        Boolean array of shape ``(3, 16)``, ``True`` where frozen.

    Raises:
        ValueError: both ``frozen`` and ``frozen_count`` are given, a pair
            does not fit 3 channels and 16 filters, or ``frozen_count`` is
            outside ``[0, 48]``.
        TypeError: as :func:`channelconv.mask.parse_frozen`.

    Example:

    >>> first_layer_mask().nonzero()
    (array([0, 0, 0, 0, 0]), array([0, 1, 2, 3, 4]))
    >>> int(first_layer_mask(frozen_count=7, seed=1).sum())
    7
    """
    if frozen is not None and frozen_count is not None:
        raise ValueError(
            "Give at most one of `frozen` and `frozen_count`. Received: "
            f"frozen={frozen!r}, frozen_count={frozen_count!r}."
        )
    if frozen_count is not None:
        return random_frozen_mask(IN_CHANNELS, FILTERS, frozen_count, seed=seed)
    if frozen is None:
        frozen = ANSWER_FROZEN
    return np.array(
        resolve_frozen(parse_frozen(frozen, FILTERS), IN_CHANNELS, FILTERS)
    )


def build_model(mask, reduction="sum", implementation="fused", kernel_size=3):
    """The question's three-layer model with :class:`ChannelConv2D`.

    Args:
        mask: boolean ``(3, 16)`` frozen mask of the first layer.
        reduction: the first layer's reduction (the others sum).
        implementation: ``"fused"``, ``"per_channel"``, ``"sparse"`` or
            ``"auto"``, for all layers.
        kernel_size: the kernels' height and width.

    Returns:
        A ``keras.Model`` from ``(None, None, None, 3)`` images; its
        convolutions are named ``conv1``, ``conv2``, ``conv3``.

    Example:

    >>> model = build_model(first_layer_mask())
    >>> [layer.name for layer in model.layers[1:]]
    ['conv1', 'relu1', 'conv2', 'relu2', 'conv3']
    >>> model.count_params()  # the 5 frozen kernels are not parameters
    5043
    """
    inputs = keras.Input(shape=(None, None, IN_CHANNELS))
    x = ChannelConv2D(
        FILTERS,
        kernel_size,
        frozen=mask,
        reduction=reduction,
        implementation=implementation,
        name="conv1",
    )(inputs)
    x = keras.layers.ReLU(name="relu1")(x)
    x = ChannelConv2D(
        FILTERS, kernel_size, implementation=implementation, name="conv2"
    )(x)
    x = keras.layers.ReLU(name="relu2")(x)
    outputs = ChannelConv2D(
        FILTERS, kernel_size, implementation=implementation, name="conv3"
    )(x)
    return keras.Model(inputs, outputs, name="question_model")


def _make_task(teacher, n_train, n_eval, image_size, seed):
    """Random images and the teacher's outputs on them, scaled to unit variance.

    Returns:
        ``(x_train, y_train, x_eval, y_eval)``, float32 NumPy arrays.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_eval, image_size, image_size, IN_CHANNELS))
    x = x.astype("float32")
    y = keras.ops.convert_to_numpy(teacher.predict(x, batch_size=256, verbose=0))
    y = y / y[:n_train].std()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def frozen_values(layer):
    """The frozen kernels of ``layer``, read from its effective kernel.

    Args:
        layer: a built :class:`channelconv.ChannelConv2D`.

    Returns:
        NumPy array ``kernel_size + (n_frozen,)``: ``layer.kernel[..., c, f]``
        for every frozen ``(c, f)``.

    Example:

    >>> layer = ChannelConv2D(16, 3, frozen=[(0, 0), (2, 5)])
    >>> layer.build((None, 8, 8, 3))
    >>> values = frozen_values(layer)
    >>> values.shape, bool((values == 0).all())
    ((3, 3, 2), True)
    """
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    return kernel[..., layer.frozen_mask]


def _parameter_rows(model):
    """One row per convolution: name, in/out channels, kernels, parameters.

    Returns:
        A list of dicts with keys ``name``, ``channels`` (text ``"in ->
        out"``), ``out_channels``, ``kernels``, ``frozen``, ``trainable``,
        ``non_trainable``, ``total``.
    """
    rows = []
    for layer in model.layers:
        if not isinstance(layer, ChannelConv2D):
            continue
        in_channels, filters = layer.frozen_mask.shape
        out_channels = layer.compute_output_shape((None, None, None, in_channels))[-1]
        rows.append(
            dict(
                name=f"{layer.name} ({layer.reduction})",
                channels=f"{in_channels} -> {out_channels}",
                out_channels=out_channels,
                kernels=in_channels * filters,
                frozen=int(layer.frozen_mask.sum()),
                **parameter_counts(layer)._asdict(),
            )
        )
    return rows


def _format_table(rows):
    """Formats :func:`_parameter_rows` as a text table with a total line."""
    header = ("layer", "channels", "kernels", "frozen", "trainable", "non-trainable", "total")
    keys = ("name", "channels", "kernels", "frozen", "trainable", "non_trainable", "total")
    total = {k: sum(r[k] for r in rows) for k in keys[2:]}
    total.update(name="total", channels="")
    lines = [header] + [tuple(str(r[k]) for k in keys) for r in rows + [total]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line):
        cells = [line[0].ljust(widths[0]), line[1].ljust(widths[1])]
        cells += [cell.rjust(w) for cell, w in zip(line[2:], widths[2:])]
        return "  " + "  ".join(cells).rstrip()

    rule = "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [fmt(lines[0]), rule] + [fmt(line) for line in lines[1:-1]]
    return "\n".join(out + [rule, fmt(lines[-1])])


def run(
    mask,
    reduction="sum",
    implementation="fused",
    epochs=DEFAULTS["epochs"],
    steps_per_epoch=DEFAULTS["steps_per_epoch"],
    batch_size=DEFAULTS["batch_size"],
    image_size=DEFAULTS["image_size"],
    kernel_size=DEFAULTS["kernel_size"],
    learning_rate=DEFAULTS["learning_rate"],
    seed=DEFAULTS["seed"],
    output=DEFAULTS["output"],
    verbose=DEFAULTS["verbose"],
    out=None,
):
    """Trains, checks, saves and reloads the question's model; prints all.

    ``channelconv demo`` calls it (``tests/test_cli.py`` runs it with tiny
    settings). It sets Keras's global random seeds
    (``keras.utils.set_random_seed(seed)``), so that a seed gives the same
    run.

    Args:
        mask: boolean ``(3, 16)`` frozen mask of the first layer (see
            :func:`first_layer_mask`).
        reduction: the first layer's reduction, ``"sum"`` or ``"concat"``.
        implementation: ``"fused"``, ``"per_channel"``, ``"sparse"`` or ``"auto"``.
        epochs: passes over the training images.
        steps_per_epoch: batches per epoch; there are ``steps_per_epoch *
            batch_size`` training images.
        batch_size: images per batch.
        image_size: height and width of the generated images.
        kernel_size: the kernels' height and width.
        learning_rate: Adam's learning rate.
        seed: seeds the weights, the images and the shuffling.
        output: path of the ``.keras`` file to write.
        verbose: ``model.fit`` verbosity (1 = progress bar).
        out: text stream for the report; ``sys.stdout`` by default.

    Returns:
        ``0`` if every check holds (frozen kernels exactly zero after
        training and after reloading, counts as expected, loss decreased,
        reloaded outputs match); ``1`` otherwise, after printing which
        checks failed to ``sys.stderr``.

    Raises:
        OSError: the model cannot be written to ``output``.
    """
    report = Report("channelconv demo", out, marks=("yes", "NO"))
    keras.utils.set_random_seed(seed)
    teacher = build_model(mask, reduction, implementation, kernel_size)
    student = build_model(mask, reduction, implementation, kernel_size)
    n_train = steps_per_epoch * batch_size
    x_train, y_train, x_eval, y_eval = _make_task(
        teacher, n_train, EVAL_IMAGES, image_size, seed
    )
    _say_setup(report, mask, reduction, implementation, kernel_size, image_size, n_train)
    student.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    initial_loss = _loss(student, x_eval, y_eval)
    student.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    final_loss = _loss(student, x_eval, y_eval)

    conv1 = student.get_layer("conv1")
    _check_frozen_after_training(report, conv1)
    _check_parameters(report, student, kernel_size)
    _check_loss(report, initial_loss, final_loss)
    _check_reload(report, student, output, x_eval[:8])
    plot_path = os.path.splitext(output)[0] + "_conv1_mask.png"
    report.say("", _save_mask_plot(conv1, plot_path), "")
    return report.verdict("All checks passed.")


def _say_setup(report, mask, reduction, implementation, kernel_size, image_size, n_train):
    """Prints the model, the frozen kernels and the task."""
    pairs = " ".join(f"({c},{f})" for c, f in np.argwhere(mask)) or "none"
    report.say(
        "The question's model: 3 x ChannelConv2D(16, "
        f"{kernel_size}) with ReLU between, on 3-channel images.",
        f"Frozen at zero in conv1: {int(mask.sum())} of {mask.size} kernels "
        f"(input channel, filter): {pairs}",
        f"conv1 reduction: {reduction}; implementation: {implementation}.",
        f"Task: recover a random teacher network with the same frozen kernels "
        f"from {n_train} random {image_size}x{image_size} images "
        f"(loss: mean squared error; {EVAL_IMAGES} held-out images).",
        "",
    )


def _loss(model, x, y):
    """The compiled loss of ``model`` on ``(x, y)``, as a Python float."""
    return float(model.evaluate(x, y, batch_size=256, verbose=0))


def _all_zero(values):
    return np.array_equal(values, np.zeros_like(values))


def _check_frozen_after_training(report, layer):
    values = frozen_values(layer)
    mark = report.check(_all_zero(values), "a frozen kernel is not zero after training")
    report.say(
        "",
        "Frozen kernels after training:",
        f"  all {values.shape[-1]} exactly zero (np.array_equal): {mark}",
    )


def _check_parameters(report, model, kernel_size):
    """Prints the parameter table; checks it against the layer shapes."""
    rows = _parameter_rows(model)
    k2 = kernel_size * kernel_size
    as_expected = all(
        r["trainable"] == (r["kernels"] - r["frozen"]) * k2 + r["out_channels"]
        and r["non_trainable"] == 0  # frozen at zero: structure, no parameters
        for r in rows
    )
    total = model.count_params()
    mark = report.check(
        as_expected and sum(r["total"] for r in rows) == total,
        "the parameter counts are not the expected ones",
    )
    report.say(
        "",
        "Parameters (trainable = trainable kernels x k x k + bias; the frozen "
        "kernels are zeros by construction, stored nowhere, no parameters):",
        _format_table(rows),
        f"  counts as expected and equal to model.count_params() = {total}: {mark}",
    )


def _check_loss(report, initial, final):
    mark = report.check(final < initial, "the loss did not decrease")
    report.say(
        "",
        f"Loss on the held-out images: initial {initial:.4f} -> final "
        f"{final:.4f} ({final / initial:.1%} of initial); decreased: {mark}",
    )


def _check_reload(report, model, path, probe):
    """Saves ``model`` to ``path``, reloads it, compares weights and outputs."""
    model.save(path)
    reloaded = keras.saving.load_model(path)
    zero = _all_zero(frozen_values(reloaded.get_layer("conv1")))
    same_weights = all(
        np.array_equal(a, b) for a, b in zip(model.get_weights(), reloaded.get_weights())
    )
    before = keras.ops.convert_to_numpy(model(probe))
    after = keras.ops.convert_to_numpy(reloaded(probe))
    diff = float(np.max(np.abs(before - after)))
    close = np.allclose(before, after, rtol=1e-6, atol=1e-6)
    report.say(
        "",
        f"Saved to {path} ({os.path.getsize(path) / 1024:.0f} KiB) and reloaded:",
        "  frozen kernels exactly zero: "
        + report.check(zero, "a frozen kernel is not zero in the reloaded model"),
        "  weights identical: " + report.check(same_weights, "the reloaded weights differ"),
        f"  outputs match (max |diff| {diff:.1e}): "
        + report.check(close, "the reloaded model's outputs differ"),
    )


def _save_mask_plot(layer, path):
    """Saves the layer's kernel-mask plot; says where, or why it could not."""
    try:
        plot_kernel_mask(layer, path)
    except ImportError:
        return "Kernel-mask plot skipped: install channelconv[plot] for matplotlib."
    return f"Kernel-mask plot of conv1 saved to {path}"
