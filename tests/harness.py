"""Test helpers of our own: independent references and a layer-test harness.

``keras.src.testing`` is private, so, like keras-hub's ``run_layer_test``,
:func:`run_layer_test` checks what every layer configuration must satisfy:
config round-trip, ``.keras`` save/load, symbolic and eager call, one ``fit``
step. :func:`numpy_conv` is a direct-loop NumPy convolution and
:func:`keras_reference` a Keras ``Conv2D`` / ``DepthwiseConv2D`` loaded with a
layer's effective kernel, and :func:`keras_output` runs such a layer on every
CPU; tests compare the layer against them.
"""

import math

import keras
import numpy as np

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
    strides=(1, 1),
    padding="valid",
    dilation_rate=(1, 1),
    data_format="channels_last",
    bias=None,
    activation=None,
):
    """A direct-loop 2-D convolution in float64, written from the definition.

    Output pixel ``(i, j)`` is the kernel applied to the input patch whose
    top-left corner is ``(i * stride - pad_top, j * stride - pad_left)``,
    with taps ``dilation`` apart; ``"same"`` padding follows TensorFlow
    (output size ``ceil(size / stride)``, the extra pad at the bottom/right).

    Args:
        x: input array, ``(N, H, W, C)`` or ``(N, C, H, W)``.
        kernel: full kernel ``(kh, kw, C, F)``.
        reduction: ``"sum"`` (``F`` outputs, as ``Conv2D``) or ``"concat"``
            (``C * F`` outputs, output ``c * F + f``, as ``DepthwiseConv2D``).
        strides, padding, dilation_rate, data_format: as for ``Conv2D``.
        bias: optional bias of the output channels.
        activation: a key of :data:`ACTIVATIONS`.

    Returns:
        The output array in ``data_format``, float64.
    """
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if data_format == "channels_first":
        x = x.transpose(0, 2, 3, 1)
    n, _, _, channels = x.shape
    kh, kw, kc, filters = kernel.shape
    assert kc == channels
    (sh, sw), (dh, dw) = strides, dilation_rate
    x, (out_h, out_w), _ = _pad_input(x, (kh, kw), strides, padding, dilation_rate)
    out_channels = filters if reduction == "sum" else channels * filters
    out = np.zeros((n, out_h, out_w, out_channels))
    for i in range(out_h):
        for j in range(out_w):
            for a in range(kh):
                for b in range(kw):
                    pixel = x[:, i * sh + a * dh, j * sw + b * dw, :]  # (n, C)
                    tap = kernel[a, b]  # (C, F)
                    if reduction == "sum":
                        out[:, i, j, :] += pixel @ tap
                    else:
                        per = pixel[:, :, None] * tap[None]  # (n, C, F)
                        out[:, i, j, :] += per.reshape(n, -1)
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64)
    out = ACTIVATIONS[activation](out)
    if data_format == "channels_first":
        out = out.transpose(0, 3, 1, 2)
    return out


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN CPU kernels in this process.

    TensorFlow turns oneDNN on by default on CPUs with AVX-512 and off on
    others; ``TF_ENABLE_ONEDNN_OPTS`` overrides it. The answer comes from
    TensorFlow itself (a private function, the only one that knows), with
    the environment variable as the fallback.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - private API moved
        import os

        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") == "1"
    return bool(_pywrap_util_port.IsMklEnabled())


def keras_can_run(conv):
    """Whether a Keras convolution layer can compute on this CPU at all.

    ``DepthwiseConv2D`` with unequal strides needs oneDNN
    (``DepthwiseConv2dNative`` refuses it otherwise). The channels-first
    limit is avoided by :func:`keras_output`, which computes channels-last.
    """
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    return not depthwise or len(set(conv.strides)) == 1 or onednn_enabled()


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
    channels = conv.kernel.shape[-2]
    clone.build((None,) * (len(conv.kernel.shape) - 1) + (channels,))
    clone.set_weights(conv.get_weights())
    rank = len(x.shape) - 2
    y = to_numpy(clone(np.transpose(x, (0, *range(2, rank + 2), 1))))
    return np.transpose(y, (0, rank + 1, *range(1, rank + 1)))


def keras_reference(layer, input_shape):
    """A Keras ``Conv2D`` (sum) or ``DepthwiseConv2D`` (concat) equal in intent.

    It gets the same options as ``layer`` and is loaded with ``layer.kernel``
    (reshaped to Keras's depthwise layout for concat) and ``layer.bias``.
    Compute its output with :func:`keras_output`, which runs on every CPU.
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
    if layer.reduction == "sum":
        ref = keras.layers.Conv2D(layer.filters, **common)
    else:
        ref = keras.layers.DepthwiseConv2D(depth_multiplier=layer.filters, **common)
    ref.build(input_shape)
    weights = [kernel.reshape(ref.kernel.shape)]
    if layer.use_bias:
        weights.append(to_numpy(layer.bias))
    ref.set_weights(weights)
    return ref


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
       kernels bit-identical.

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
        model.compile(keras.optimizers.SGD(0.1), "mse")
        target = rng.normal(size=y.shape).astype("float32")
        model.fit(x, target, batch_size=input_shape[0], epochs=1, verbose=0)
        after = weights_by_name(layer)
        np.testing.assert_array_equal(after["frozen_kernels"], before["frozen_kernels"])
        if before["trainable_kernels"].size:
            assert not np.array_equal(
                after["trainable_kernels"], before["trainable_kernels"]
            )
    return model


def _pad_input(x, kernel_size, strides, padding, dilation_rate):
    """Pads an ``(N, H, W, C)`` input as TensorFlow does for ``padding``.

    Returns:
        ``(padded, (out_h, out_w), (pad_top, pad_left))``; ``"same"`` gives
        ``ceil(size / stride)`` outputs with the extra pad at the bottom/right.
    """
    height, width = x.shape[1:3]
    spans = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation_rate)]
    if padding == "valid":
        out = tuple(
            (size - span) // s + 1
            for size, span, s in zip((height, width), spans, strides)
        )
        return x, out, (0, 0)
    out = (math.ceil(height / strides[0]), math.ceil(width / strides[1]))
    pads = [
        max((o - 1) * s + span - size, 0)
        for o, s, span, size in zip(out, strides, spans, (height, width))
    ]
    widths = ((0, 0),) + tuple((p // 2, p - p // 2) for p in pads) + ((0, 0),)
    padded = np.pad(x, widths)
    return padded, out, (pads[0] // 2, pads[1] // 2)


def numpy_conv_gradients(
    x,
    kernel,
    upstream,
    reduction="sum",
    strides=(1, 1),
    padding="valid",
    dilation_rate=(1, 1),
    data_format="channels_last",
):
    """Gradients of ``sum(numpy_conv(x, kernel, ...) * upstream)``, in float64.

    The adjoint of :func:`numpy_conv`'s loop, written from the same
    definition: where the convolution adds ``pixel @ tap`` to output pixel
    ``(i, j)``, the kernel gradient gets ``pixel.T @ g[i, j]`` and the
    (padded) input gradient ``g[i, j] @ tap.T``; for ``"concat"`` output
    ``c * F + f`` only input channel ``c`` and kernel ``(c, f)`` meet. The
    padded input gradient is cropped back to the input. The bias gradient is
    ``upstream`` summed over all but the channel axis.

    Args:
        x: input array, ``(N, H, W, C)`` or ``(N, C, H, W)``.
        kernel: full kernel ``(kh, kw, C, F)``.
        upstream: the gradient of the loss w.r.t. the output, in
            ``data_format``.
        reduction, strides, padding, dilation_rate, data_format: as for
            :func:`numpy_conv`.

    Returns:
        ``(d_input, d_kernel, d_bias)``: ``d_input`` in ``data_format``,
        ``d_kernel`` of the full kernel's shape, ``d_bias`` one entry per
        output channel.
    """
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    g = np.asarray(upstream, dtype=np.float64)
    if data_format == "channels_first":
        x, g = x.transpose(0, 2, 3, 1), g.transpose(0, 2, 3, 1)
    n, height, width, channels = x.shape
    kh, kw, _, filters = kernel.shape
    (sh, sw), (dh, dw) = strides, dilation_rate
    padded, (out_h, out_w), (top, left) = _pad_input(
        x, (kh, kw), strides, padding, dilation_rate
    )
    assert g.shape[1:3] == (out_h, out_w)
    d_padded = np.zeros_like(padded)
    d_kernel = np.zeros_like(kernel)
    for i in range(out_h):
        for j in range(out_w):
            for a in range(kh):
                for b in range(kw):
                    r, s = i * sh + a * dh, j * sw + b * dw
                    pixel = padded[:, r, s, :]  # (n, C)
                    tap = kernel[a, b]  # (C, F)
                    if reduction == "sum":
                        g_ij = g[:, i, j, :]  # (n, F)
                        d_kernel[a, b] += pixel.T @ g_ij
                        d_padded[:, r, s, :] += g_ij @ tap.T
                    else:
                        g_ij = g[:, i, j, :].reshape(n, channels, filters)
                        d_kernel[a, b] += np.einsum("nc,ncf->cf", pixel, g_ij)
                        d_padded[:, r, s, :] += np.einsum("ncf,cf->nc", g_ij, tap)
    d_input = d_padded[:, top : top + height, left : left + width, :]
    d_bias = g.sum(axis=(0, 1, 2))
    if data_format == "channels_first":
        d_input = d_input.transpose(0, 3, 1, 2)
    return d_input, d_kernel, d_bias
