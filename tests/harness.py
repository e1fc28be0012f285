"""Test helpers of our own: independent references and a layer-test harness.

``keras.src.testing`` is private, so, like keras-hub's ``run_layer_test``,
:func:`run_layer_test` checks what every layer configuration must satisfy:
config round-trip, ``.keras`` save/load, symbolic and eager call, one ``fit``
step. :func:`numpy_conv` is a direct NumPy convolution of any rank and
:func:`keras_reference` the Keras convolution of the layer's rank loaded with
a layer's effective kernel, and :func:`keras_output` runs such a layer on
every CPU; tests compare the layer against them.
"""

import math

import keras
import numpy as np

from channelconv import ChannelConv1D, ChannelConv2D, ChannelConv3D

#: The Keras backend the suite runs on (``KERAS_BACKEND``).
BACKEND = keras.backend.backend()

ACTIVATIONS = {
    None: lambda x: x,
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
}


def to_numpy(tensor):
    """Returns ``tensor`` (a Keras/TF tensor or variable) as a NumPy array."""
    return keras.ops.convert_to_numpy(tensor)


def numpy_conv(
    x,
    kernel,
    reduction="sum",
    strides=None,
    padding="valid",
    dilation_rate=None,
    data_format="channels_last",
    bias=None,
    activation=None,
):
    """A direct N-D convolution in float64 (1-D, 2-D, 3-D), from the definition.

    Output position ``o`` is the kernel applied to the input patch whose
    first corner is ``o * stride - pad_before``, with taps ``dilation``
    apart: for each tap ``t`` of the kernel, the input positions ``o *
    stride + t * dilation`` of every output at once (a strided slice) are
    multiplied with ``kernel[t]`` and added. ``"same"`` padding follows
    TensorFlow (output size ``ceil(size / stride)``, the extra pad at the
    end); ``"causal"`` (1-D) pads ``dilation * (k - 1)`` at the start only.

    Args:
        x: input array, ``(N, *spatial, C)`` or ``(N, C, *spatial)``.
        kernel: full kernel ``kernel_size + (C, F)``.
        reduction: ``"sum"`` (``F`` outputs, as ``ConvND``) or ``"concat"``
            (``C * F`` outputs, output ``c * F + f``, as a depthwise conv).
        strides, dilation_rate: tuples, one int per spatial axis (default 1).
        padding, data_format: as for Keras's convolutions.
        bias: optional bias of the output channels.
        activation: a key of :data:`ACTIVATIONS`.

    Returns:
        The output array in ``data_format``, float64.
    """
    x = _channels_last(np.asarray(x, dtype=np.float64), data_format)
    kernel = np.asarray(kernel, dtype=np.float64)
    rank = kernel.ndim - 2
    strides, dilation_rate = _ones(strides, rank), _ones(dilation_rate, rank)
    n, channels = x.shape[0], x.shape[-1]
    kernel_size, (kc, filters) = kernel.shape[:-2], kernel.shape[-2:]
    assert kc == channels
    x, out_size, _ = _pad_input(x, kernel_size, strides, padding, dilation_rate)
    out_channels = filters if reduction == "sum" else channels * filters
    out = np.zeros((n, *out_size, out_channels))
    for tap in np.ndindex(*kernel_size):
        pixels = x[_window(tap, out_size, strides, dilation_rate)]  # (n, *out, C)
        if reduction == "sum":
            out += pixels @ kernel[tap]
        else:
            per = pixels[..., :, None] * kernel[tap]  # (n, *out, C, F)
            out += per.reshape(per.shape[:-2] + (-1,))
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64)
    out = ACTIVATIONS[activation](out)
    return _from_channels_last(out, data_format)


def _ones(value, rank):
    return (1,) * rank if value is None else tuple(value)


def _window(tap, out_size, strides, dilation_rate):
    """The index of the input positions tap ``tap`` meets, for every output."""
    return (slice(None),) + tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s)
        for t, o, s, d in zip(tap, out_size, strides, dilation_rate)
    ) + (slice(None),)


def _channels_last(x, data_format):
    if data_format == "channels_first":
        return np.moveaxis(x, 1, -1)
    return x


def _from_channels_last(x, data_format):
    if data_format == "channels_first":
        return np.moveaxis(x, -1, 1)
    return x


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN CPU kernels in this process.

    TensorFlow turns oneDNN on by default on CPUs with AVX-512 and off on
    others; ``TF_ENABLE_ONEDNN_OPTS`` overrides it. The answer is the
    backend facade's (:func:`channelconv._backend.onednn_setting`, shared
    with the benchmarks): TensorFlow's own, the environment variable where
    TensorFlow cannot say, and ``False`` on other backends.
    """
    from channelconv import _backend

    return bool(_backend.onednn_setting()["onednn"])


def keras_can_run(conv):
    """Whether a Keras convolution layer can compute on this CPU at all.

    ``DepthwiseConv2D`` with unequal strides needs oneDNN
    (``DepthwiseConv2dNative`` refuses it otherwise). The channels-first
    limit is avoided by :func:`keras_output`, which computes channels-last.
    """
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    return not depthwise or len(set(conv.strides)) == 1 or not strict_tensorflow_kernels()


def strict_tensorflow_kernels():
    """Whether TensorFlow's own CPU kernels (oneDNN off) run the convolutions.

    Those refuse ``DepthwiseConv2D`` with unequal strides; oneDNN's kernels
    and the other backends accept it.
    """
    return BACKEND == "tensorflow" and not onednn_enabled()


def vjp(fn, args, upstream, mode="eager"):
    """``fn(*args)`` and the gradients of ``sum(fn(*args) * upstream)``, any backend.

    Args:
        fn: a function of tensors, written with ``keras.ops`` (or a layer's
            ``stateless_call``).
        args: NumPy arrays, the points at which to differentiate.
        upstream: NumPy array shaped like the output.
        mode: ``"eager"``; ``"function"`` (TensorFlow's ``tf.function``);
            ``"xla"`` (``tf.function(jit_compile=True)`` or ``jax.jit``).

    Returns:
        ``(output, gradients)`` as NumPy arrays, one gradient per argument;
        ``None`` where ``fn`` does not depend on an argument (TensorFlow and
        PyTorch say so; JAX gives zeros).
    """
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def run(*tensors):
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                y = fn(*tensors)
                loss = tf.reduce_sum(y * tf.cast(upstream, y.dtype))
            return y, tape.gradient(loss, tensors)

        if mode != "eager":
            run = tf.function(run, jit_compile=mode == "xla")
        y, grads = run(*[tf.constant(a) for a in args])
    elif BACKEND == "jax":
        import jax

        def run(*tensors):
            y, pullback = jax.vjp(fn, *tensors)
            return y, pullback(jax.numpy.asarray(upstream, y.dtype))

        if mode == "xla":
            run = jax.jit(run)
        elif mode != "eager":
            raise ValueError(f"JAX has no mode {mode!r}.")
        y, grads = run(*[jax.numpy.asarray(a) for a in args])
    else:
        import torch

        if mode != "eager":
            raise ValueError(f"{BACKEND} has no mode {mode!r}.")
        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        y = fn(*tensors)
        grads = torch.autograd.grad(
            y, tensors, grad_outputs=torch.as_tensor(upstream, dtype=y.dtype),
            allow_unused=True,
        )
        y = y.detach()
    return to_numpy(y), [None if g is None else to_numpy(g) for g in grads]


def fresh_torch_compile_cache():
    """Empties torch.compile's caches, as in a new process.

    Keras compiles the train step with ``torch.compile`` when
    ``jit_compile=True``; its caches outlive a test, so what a later model
    recompiles (with dynamic shapes) would depend on the tests run before.
    """
    import torch

    torch._dynamo.reset()


def layer_vjp(layer, x, upstream, mode="eager"):
    """Gradients of ``sum(layer(x) * upstream)`` w.r.t. ``x`` and every weight.

    Runs ``layer.stateless_call`` with the weights' values as arguments, so
    that non-trainable weights (``frozen_kernels``) are differentiated too.

    Returns:
        ``{"input": ..., <weight name>: ...}`` of NumPy arrays or ``None``
        (see :func:`vjp`).
    """
    trainable = [to_numpy(w) for w in layer.trainable_weights]
    non_trainable = [to_numpy(w) for w in layer.non_trainable_weights]
    n = len(trainable)

    def fn(x, *values):
        return layer.stateless_call(list(values[:n]), list(values[n:]), x)[0]

    _, grads = vjp(fn, [x, *trainable, *non_trainable], upstream, mode)
    names = ["input"] + [w.name for w in layer.trainable_weights + layer.non_trainable_weights]
    return dict(zip(names, grads))


def layer_input(layer_or_format, spatial, channels, seed=0, batch=2):
    """A float32 normal input ``(batch, *spatial, channels)`` in the data format.

    ``layer_or_format``: a layer (its ``data_format``) or the format itself.
    """
    data_format = getattr(layer_or_format, "data_format", layer_or_format)
    shape = (batch, *spatial, channels)
    if data_format == "channels_first":
        shape = (batch, channels, *spatial)
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def keras_output(conv, x):
    """The output of a built Keras ``Conv2D`` / ``DepthwiseConv2D`` on ``x``.

    Computed channels-last (TensorFlow's CPU kernels without oneDNN take
    nothing else): a ``channels_first`` layer is cloned with
    ``data_format="channels_last"`` and the same weights, and ``x`` and the
    output are transposed around it.

    Returns:
        A NumPy array, or ``None`` where Keras's layer cannot compute the
        configuration on this CPU (see :func:`keras_can_run`): NumPy is then
        the only reference.
    """
    if not keras_can_run(conv):
        return None
    if conv.data_format == "channels_last":
        return to_numpy(conv(x))
    clone = type(conv).from_config(dict(conv.get_config(), data_format="channels_last"))
    channels = x.shape[1]  # channels_first input
    clone.build((None,) * (len(conv.kernel.shape) - 1) + (channels,))
    clone.set_weights(conv.get_weights())
    rank = len(x.shape) - 2
    y = to_numpy(clone(np.transpose(x, (0, *range(2, rank + 2), 1))))
    return np.transpose(y, (0, rank + 1, *range(1, rank + 1)))


LAYERS = {1: ChannelConv1D, 2: ChannelConv2D, 3: ChannelConv3D}
# The layer of each rank and a small input size for it (widths differ from
# the output channel counts the tests use, see test_numerics).
SPATIAL = {1: (11,), 2: (7, 9), 3: (4, 5, 9)}
CONVS = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
DEPTHWISE = {1: keras.layers.DepthwiseConv1D, 2: keras.layers.DepthwiseConv2D}


def keras_reference(layer, input_shape):
    """The Keras layer a channel convolution equals in intent, of its rank.

    ``"sum"``: ``Conv1D`` / ``Conv2D`` / ``Conv3D``. ``"concat"``:
    ``DepthwiseConv1D`` / ``DepthwiseConv2D(depth_multiplier=filters)``, and
    where Keras has none (3-D, or 1-D ``"causal"``), ``ConvND(channels *
    filters, groups=channels)``, the same function. It gets the same options
    as ``layer`` and is loaded with ``layer.kernel`` (reshaped to the Keras
    layout) and ``layer.bias``. Compute its output with
    :func:`keras_output`, which runs on every CPU.
    """
    common = dict(
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
        activation=layer.activation,
        use_bias=layer.use_bias,
    )
    kernel = to_numpy(layer.kernel)
    channels = kernel.shape[-2]
    if layer.reduction == "sum":
        ref = CONVS[layer.rank](layer.filters, **common)
    elif layer.rank in DEPTHWISE and layer.padding != "causal":
        ref = DEPTHWISE[layer.rank](depth_multiplier=layer.filters, **common)
    else:
        ref = CONVS[layer.rank](channels * layer.filters, groups=channels, **common)
    ref.build(input_shape)
    weights = [kernel.reshape(ref.kernel.shape)]
    if layer.use_bias:
        weights.append(to_numpy(layer.bias))
    ref.set_weights(weights)
    return ref


def frozen_structures(channels, filters):
    """Name -> frozen mask ``(channels, filters)``: the structures sparse plans meet.

    The degenerate ones (nothing frozen, everything, one live kernel), the
    structured ones (block-diagonal, whole input channels, whole filters,
    both) and random kernels; seeded.
    """
    from channelconv import grouped_frozen_mask, random_frozen_mask

    rng = np.random.default_rng(0)
    rows = np.zeros((channels, filters), bool)
    rows[rng.choice(channels, channels // 2, replace=False)] = True
    columns = np.zeros((channels, filters), bool)
    columns[:, rng.choice(filters, max(1, filters // 4), replace=False)] = True
    one = np.ones((channels, filters), bool)
    one[channels - 1, 1] = False
    groups = grouped_frozen_mask(channels, filters, 2)
    return {
        "nothing": np.zeros((channels, filters), bool),
        "everything": np.ones((channels, filters), bool),
        "one_live": one,
        "block_diagonal": groups,
        "input_channels": rows,
        "filters": columns,
        "groups_and_filters": groups | columns,
        "random": random_frozen_mask(channels, filters, channels * filters * 2 // 3, seed=1),
    }


def weights_by_name(layer):
    """``{"trainable_kernels": array, "frozen_kernels": array, ...}``."""
    return {w.name: to_numpy(w).copy() for w in layer.weights}


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    tmp_path,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    run_fit=True,
    seed=0,
):
    """Checks what every configuration of a layer must satisfy.

    1. ``from_config(get_config())`` reproduces the config, before build.
    2. A symbolic call on ``keras.Input`` gives ``expected_output_shape``
       (batch ``None``), as does ``compute_output_shape``.
    3. An eager call on a random batch gives ``expected_output_shape``.
    4. After build, a layer made from the config and given the same weights
       has the same config and gives bit-identical outputs.
    5. A ``.keras`` save + ``keras.saving.load_model`` (default
       ``safe_mode=True``) gives identical outputs, weights and frozen mask.
    6. One ``fit`` step changes the trainable kernels and leaves the frozen
       kernels bit-identical (stored ones in their variable; zeros by
       construction in ``layer.kernel``).

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_shape: full input shape including the batch dimension.
        expected_output_shape: full output shape including the batch.
        tmp_path: a directory for the saved model.
        expected_num_trainable_weights: number of trainable variables.
        expected_num_non_trainable_weights: number of non-trainable variables.
        run_fit: whether to run step 6.
        seed: seed of the random inputs.

    Returns:
        The built functional model (input -> layer).
    """
    rng = np.random.default_rng(seed)

    # 1. Config round trip before build.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config

    # 2. Symbolic call.
    inputs = keras.Input(shape=input_shape[1:])
    outputs = layer(inputs)
    assert tuple(outputs.shape) == (None,) + tuple(expected_output_shape[1:])
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(
        expected_output_shape
    )
    model = keras.Model(inputs, outputs)
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights

    # 3. Eager call.
    x = rng.normal(size=input_shape).astype("float32")
    y = to_numpy(layer(x))
    assert y.shape == tuple(expected_output_shape)

    # 4. Config round trip after build, with the weights copied over.
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    clone.build(input_shape)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == config
    np.testing.assert_array_equal(clone.frozen_mask, layer.frozen_mask)
    np.testing.assert_array_equal(to_numpy(clone(x)), y)

    # 5. .keras save and load with the default safe_mode.
    path = str(tmp_path / f"{layer.name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    loaded_layer = loaded.layers[-1]
    assert type(loaded_layer) is layer_cls
    np.testing.assert_array_equal(loaded_layer.frozen_mask, layer.frozen_mask)
    saved_weights = weights_by_name(layer)
    for name, value in weights_by_name(loaded_layer).items():
        np.testing.assert_array_equal(value, saved_weights[name])
    np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))

    # 6. One fit step.
    if run_fit:
        before = weights_by_name(layer)
        frozen_before = to_numpy(layer.kernel)[..., layer.frozen_mask]
        model.compile(keras.optimizers.SGD(0.1), "mse")
        target = rng.normal(size=y.shape).astype("float32")
        model.fit(x, target, batch_size=input_shape[0], epochs=1, verbose=0)
        after = weights_by_name(layer)
        assert ("frozen_kernels" in after) == layer.store_frozen
        if layer.store_frozen:
            np.testing.assert_array_equal(after["frozen_kernels"], before["frozen_kernels"])
        else:
            np.testing.assert_array_equal(frozen_before, 0.0)
        np.testing.assert_array_equal(
            to_numpy(layer.kernel)[..., layer.frozen_mask], frozen_before)
        if before["trainable_kernels"].size:
            assert not np.array_equal(
                after["trainable_kernels"], before["trainable_kernels"]
            )
    return model


def _pad_input(x, kernel_size, strides, padding, dilation_rate):
    """Pads an ``(N, *spatial, C)`` input as TensorFlow does for ``padding``.

    Returns:
        ``(padded, out_size, pads_before)``; ``"same"`` gives ``ceil(size /
        stride)`` outputs with the extra pad at the end, ``"causal"`` pads
        the whole span at the start.
    """
    sizes = x.shape[1:-1]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation_rate)]
    if padding == "valid":
        out = tuple((size - span) // s + 1 for size, span, s in zip(sizes, spans, strides))
        return x, out, (0,) * len(sizes)
    if padding == "causal":
        widths = [(span - 1, 0) for span in spans]
    else:
        out = tuple(math.ceil(size / s) for size, s in zip(sizes, strides))
        pads = [
            max((o - 1) * s + span - size, 0)
            for o, s, span, size in zip(out, strides, spans, sizes)
        ]
        widths = [(p // 2, p - p // 2) for p in pads]
    padded = np.pad(x, [(0, 0), *widths, (0, 0)])
    out = tuple(
        (size - span) // s + 1 for size, span, s in zip(padded.shape[1:-1], spans, strides)
    )
    return padded, out, tuple(before for before, _ in widths)


def numpy_conv_gradients(
    x,
    kernel,
    upstream,
    reduction="sum",
    strides=None,
    padding="valid",
    dilation_rate=None,
    data_format="channels_last",
):
    """Gradients of ``sum(numpy_conv(x, kernel, ...) * upstream)``, in float64.

    The adjoint of :func:`numpy_conv`, written from the same definition:
    where the convolution adds ``pixels @ kernel[t]`` to the outputs, the
    kernel gradient gets ``pixels.T @ g`` and the (padded) input gradient
    ``g @ kernel[t].T`` at the same window; for ``"concat"`` output ``c * F
    + f`` only input channel ``c`` and kernel ``(c, f)`` meet. The padded
    input gradient is cropped back to the input. The bias gradient is
    ``upstream`` summed over all but the channel axis.

    Args:
        x: input array, ``(N, *spatial, C)`` or ``(N, C, *spatial)``.
        kernel: full kernel ``kernel_size + (C, F)``.
        upstream: the gradient of the loss w.r.t. the output, in
            ``data_format``.
        reduction, strides, padding, dilation_rate, data_format: as for
            :func:`numpy_conv`.

    Returns:
        ``(d_input, d_kernel, d_bias)``: ``d_input`` in ``data_format``,
        ``d_kernel`` of the full kernel's shape, ``d_bias`` one entry per
        output channel.
    """
    x = _channels_last(np.asarray(x, dtype=np.float64), data_format)
    g = _channels_last(np.asarray(upstream, dtype=np.float64), data_format)
    kernel = np.asarray(kernel, dtype=np.float64)
    rank = kernel.ndim - 2
    strides, dilation_rate = _ones(strides, rank), _ones(dilation_rate, rank)
    sizes, channels = x.shape[1:-1], x.shape[-1]
    kernel_size, filters = kernel.shape[:-2], kernel.shape[-1]
    padded, out_size, before = _pad_input(x, kernel_size, strides, padding, dilation_rate)
    assert g.shape[1:-1] == out_size
    d_padded = np.zeros_like(padded)
    d_kernel = np.zeros_like(kernel)
    outputs = tuple(range(rank + 1))  # batch and spatial axes of g
    if reduction == "concat":
        g = g.reshape(g.shape[:-1] + (channels, filters))
    for tap in np.ndindex(*kernel_size):
        window = _window(tap, out_size, strides, dilation_rate)
        pixels = padded[window]  # (n, *out, C)
        if reduction == "sum":
            d_kernel[tap] += np.tensordot(pixels, g, axes=(outputs, outputs))
            d_padded[window] += g @ kernel[tap].T
        else:
            flat = pixels.reshape(-1, channels)
            d_kernel[tap] += np.einsum("mc,mcf->cf", flat, g.reshape(len(flat), channels, -1))
            d_padded[window] += np.einsum("...cf,cf->...c", g, kernel[tap])
    crop = (slice(None),) + tuple(slice(b, b + size) for b, size in zip(before, sizes))
    d_input = d_padded[crop]
    d_bias = g.reshape(-1, g.shape[-1] if reduction == "sum" else channels * filters).sum(0)
    return _from_channels_last(d_input, data_format), d_kernel, d_bias
