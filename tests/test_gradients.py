"""Gradients of ChannelConv1D/2D/3D against independent references.

For every rank (1, 2, 3) x reduction x implementation x data format, with
the options of each rank (strides, equal and unequal, dilation,
``same``/``valid`` padding, 1-D ``causal`` padding, with or without bias),
the gradient of ``loss = sum(layer(x) * g)`` (``g`` random) w.r.t. the
input, ``trainable_kernels``, ``frozen_kernels`` (watched explicitly: it is
not a trainable weight) and ``bias`` is compared, eagerly, in
``tf.function`` and under XLA, with:

- :func:`harness.numpy_conv_gradients`: float64 direct loops, the adjoint of
  :func:`harness.numpy_conv`; the full-kernel gradient is split into the
  trainable and frozen parts here, from the frozen mask.
- Keras's convolution of the layer's rank, chosen by
  :func:`harness.keras_reference` (``Conv1D/2D/3D`` for sum;
  ``DepthwiseConv1D/2D`` for concat, or a grouped ``Conv1D/3D`` where Keras
  has no depthwise layer: 3-D and 1-D ``causal``), run in ``channels_last``
  on transposed tensors, which works on every CPU, except 2-D ``concat``
  with unequal strides without oneDNN: Keras's ``DepthwiseConv2D`` cannot
  run it there, so NumPy alone is the reference.

Both ways of holding frozen kernels are covered: ``per_channel`` rows
store them (``store_frozen=True``), at random values, which reach the input
gradient and get their own (the layer's ``frozen_kernels``, differentiated
through ``stateless_call``); ``fused`` and ``sparse`` rows keep them at zero
by construction (the default), with no variable to differentiate. The
sparse rows run exact plans (``conftest.exact_plans``: several blocks
reading overlapping channels).

The first two tests check the NumPy reference itself, for every rank: it is
the adjoint of ``numpy_conv`` (``<d_input, v> = sum(numpy_conv(v) * g)``
for any ``v``, the convolution being linear) and agrees with Keras wherever
Keras runs.
"""

import functools

import numpy as np
import pytest

from harness import (
    BACKEND,
    LAYERS,
    SPATIAL,
    keras_reference,
    layer_vjp,
    numpy_conv,
    numpy_conv_gradients,
    strict_tensorflow_kernels,
    vjp,
)

pytestmark = pytest.mark.numerics

IN_CHANNELS, FILTERS = 3, 4
# Scattered, so that the kernel assembly is a real permutation.
FROZEN = [(0, 1), (1, 3), (2, 0), (2, 2)]
ATOL = RTOL = 1e-4

# The options of each rank; each row runs with every reduction,
# implementation and data format (SPATIAL gives the input sizes).
OPTIONS = {
    1: [
        ("k3-valid", dict(kernel_size=(3,))),
        (
            "k3-causal-dil2",
            dict(kernel_size=(3,), padding="causal", dilation_rate=(2,)),
        ),
        (
            "k2-causal-stride2-nobias",
            dict(kernel_size=(2,), padding="causal", strides=(2,), use_bias=False),
        ),
        ("k3-stride2-same", dict(kernel_size=(3,), strides=(2,), padding="same")),
    ],
    2: [
        ("k3-valid", dict(kernel_size=(3, 3))),
        (
            "k2x3-stride2x1-same",
            dict(kernel_size=(2, 3), strides=(2, 1), padding="same"),
        ),
        (
            "k3-dil2-same-nobias",
            dict(
                kernel_size=(3, 3), dilation_rate=(2, 2), padding="same", use_bias=False
            ),
        ),
        ("k3x2-stride2-valid", dict(kernel_size=(3, 2), strides=(2, 2))),
        (
            "k2-stride1x2-valid-nobias",
            dict(kernel_size=(2, 2), strides=(1, 2), use_bias=False),
        ),
    ],
    3: [
        ("k2-valid", dict(kernel_size=(2, 2, 2))),
        (
            "k2x3x2-stride2x1x2-same",
            dict(kernel_size=(2, 3, 2), strides=(2, 1, 2), padding="same"),
        ),
        (
            "k2-dil1x2x2-same-nobias",
            dict(
                kernel_size=(2, 2, 2),
                dilation_rate=(1, 2, 2),
                padding="same",
                use_bias=False,
            ),
        ),
    ],
}
RANKED_OPTIONS = [
    (rank, f"{rank}d-{name}", options)
    for rank, table in OPTIONS.items()
    for name, options in table
]
REDUCTIONS = ["sum", "concat"]
IMPLEMENTATIONS = ["fused", "per_channel", "sparse"]
DATA_FORMATS = ["channels_last", "channels_first"]
# Every (option, reduction, implementation, data format) runs eagerly, on
# every backend; tf.function (TensorFlow) and XLA (TensorFlow's jit_compile,
# jax.jit; PyTorch has none) run them on the options TensorFlow's CPU kernels
# are most particular about, unequal strides (2-D, 3-D), and on causal
# padding (1-D), an explicit pad in front of the convolution.
MODES = {
    "eager": (),
    "function": pytest.mark.tensorflow,
    "xla": pytest.mark.skipif(BACKEND == "torch", reason="PyTorch has no XLA mode"),
}
GRAPH_OPTIONS = (
    "1d-k2-causal-stride2-nobias",
    "2d-k2x3-stride2x1-same",
    "2d-k2-stride1x2-valid-nobias",
    "3d-k2x3x2-stride2x1x2-same",
)

GRID = [
    pytest.param(
        rank, options, reduction, implementation, data_format, mode,
        id=f"{name}-{reduction}-{implementation}-{data_format}-{mode}", marks=marks,
    )
    for mode, marks in MODES.items()
    for rank, name, options in RANKED_OPTIONS
    if mode == "eager" or name in GRAPH_OPTIONS
    for reduction in REDUCTIONS
    for implementation in IMPLEMENTATIONS
    for data_format in DATA_FORMATS
]


def _keras_refuses(rank, options, reduction):
    """Whether Keras's layer cannot run ``options`` on this CPU (module docstring)."""
    strides = options.get("strides", (1,) * rank)
    return (
        rank == 2
        and reduction == "concat"
        and len(set(strides)) > 1
        and strict_tensorflow_kernels()
    )


REFERENCE_GRID = [
    pytest.param(rank, options, reduction, id=f"{name}-{reduction}")
    for rank, name, options in RANKED_OPTIONS
    for reduction in REDUCTIONS
]


def _layer(
    rank, options, reduction, implementation="fused", data_format="channels_last"
):
    """An unbuilt layer of ``rank`` with :data:`FROZEN` frozen and ``options``.

    ``per_channel`` layers store their frozen kernels; the others keep them
    at zero by construction.
    """
    return LAYERS[rank](
        FILTERS,
        frozen=FROZEN,
        reduction=reduction,
        implementation=implementation,
        data_format=data_format,
        store_frozen=implementation == "per_channel",
        **options,
    )


def _conv_args(options, data_format="channels_last"):
    """The geometry arguments of :func:`harness.numpy_conv` for ``options``."""
    return dict(
        strides=options.get("strides"),
        padding=options.get("padding", "valid"),
        dilation_rate=options.get("dilation_rate"),
        data_format=data_format,
    )


def _frozen_mask():
    mask = np.zeros((IN_CHANNELS, FILTERS), dtype=bool)
    for channel, filter_ in FROZEN:
        mask[channel, filter_] = True
    return mask


def _split(full_kernel_gradient):
    """The full-kernel gradient at the trainable and at the frozen kernels.

    Kernel ``(c, f)`` is number ``c * filters + f``; each variable holds its
    kernels in increasing number order.
    """
    flat = full_kernel_gradient.reshape(full_kernel_gradient.shape[:-2] + (-1,))
    frozen = _frozen_mask().reshape(-1)
    return flat[..., ~frozen], flat[..., frozen]


def _to_last(array, data_format):
    return array if data_format == "channels_last" else np.moveaxis(array, 1, -1)


def _from_last(array, data_format):
    return array if data_format == "channels_last" else np.moveaxis(array, -1, 1)


def _problem(rank, options, reduction, data_format, seed=0, zero_frozen=False):
    """Input, full kernel, bias and upstream gradient, in ``data_format``.

    With ``zero_frozen`` (the sparse implementation's rule), the frozen
    kernels are zeros; otherwise they are as random as the others.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, *SPATIAL[rank], IN_CHANNELS)).astype("float32")
    kernel = rng.normal(size=options["kernel_size"] + (IN_CHANNELS, FILTERS))
    if zero_frozen:
        kernel[..., _frozen_mask()] = 0.0
    out_channels = FILTERS if reduction == "sum" else IN_CHANNELS * FILTERS
    bias = rng.normal(size=(out_channels,))
    y = numpy_conv(x, kernel, reduction, **_conv_args(options))
    upstream = rng.normal(size=y.shape).astype("float32")
    return (
        _from_last(x, data_format),
        kernel.astype("float32"),
        bias.astype("float32"),
        _from_last(upstream, data_format),
    )


def _keras_gradients(rank, options, reduction, data_format, zero_frozen=False):
    """Gradients of Keras's convolution of ``rank`` on :func:`_problem`.

    :func:`harness.keras_reference` picks the Keras layer for ``options``
    (from a channels_last layer built here for that purpose only); it is
    loaded with the problem's kernel and bias, not with a layer's values,
    and run in channels_last on transposed tensors.

    Returns:
        ``(d_input, d_kernel, d_bias)`` with ``d_input`` in ``data_format``,
        ``d_kernel`` of the full kernel's shape and ``d_bias`` ``None``
        without a bias.
    """
    # The problem is a function of these arguments: every implementation
    # and mode of a row shares one Keras run (grouped convolutions compile
    # with XLA on each eager call).
    key = tuple(sorted(options.items()))
    return _cached_keras_gradients(rank, key, reduction, data_format, zero_frozen)


@functools.lru_cache(maxsize=None)
def _cached_keras_gradients(rank, option_items, reduction, data_format, zero_frozen):
    options = dict(option_items)
    x, kernel, bias, upstream = _problem(rank, options, reduction, data_format,
                                         zero_frozen=zero_frozen)
    x_last = _to_last(x, data_format)
    template = _layer(rank, options, reduction)  # only carries the options
    template.build(x_last.shape)
    ref = keras_reference(template, x_last.shape)
    weights = [kernel.reshape(ref.kernel.shape)]
    if ref.use_bias:
        weights.append(bias)
    ref.set_weights(weights)
    grads = layer_vjp(ref, x_last, _to_last(upstream, data_format))
    return (
        _from_last(grads["input"], data_format),
        grads["kernel"].reshape(kernel.shape),
        grads.get("bias"),
    )


def _layer_gradients(layer, x, upstream, mode):
    """``{"input", "trainable_kernels", "bias"[, "frozen_kernels"]}`` gradients."""
    return layer_vjp(layer, x, upstream, mode)


def _assert_close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=what)


@pytest.mark.parametrize("rank, options, reduction", REFERENCE_GRID)
@pytest.mark.parametrize("data_format", DATA_FORMATS)
def test_numpy_reference_is_the_adjoint_of_numpy_conv(
    rank, options, reduction, data_format
):
    x, kernel, _, upstream = _problem(rank, options, reduction, data_format)
    conv_args = _conv_args(options, data_format)
    d_input, d_kernel, d_bias = numpy_conv_gradients(
        x, kernel, upstream, reduction, **conv_args
    )
    rng = np.random.default_rng(1)
    v, w = rng.normal(size=x.shape), rng.normal(size=kernel.shape)
    np.testing.assert_allclose(
        np.sum(d_input * v),
        np.sum(numpy_conv(v, kernel, reduction, **conv_args) * upstream),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        np.sum(d_kernel * w),
        np.sum(numpy_conv(x, w, reduction, **conv_args) * upstream),
        rtol=1e-10,
    )
    b = rng.normal(size=d_bias.shape)
    with_bias = numpy_conv(x, kernel, reduction, bias=b, **conv_args)
    without = numpy_conv(x, kernel, reduction, **conv_args)
    np.testing.assert_allclose(
        np.sum(d_bias * b), np.sum((with_bias - without) * upstream), rtol=1e-10
    )


@pytest.mark.parametrize(
    "rank, options, reduction",
    [p for p in REFERENCE_GRID if not _keras_refuses(*p.values)],
)
def test_numpy_reference_matches_keras(rank, options, reduction):
    x, kernel, _, upstream = _problem(rank, options, reduction, "channels_last")
    expected = numpy_conv_gradients(
        x, kernel, upstream, reduction, **_conv_args(options)
    )
    keras_grads = _keras_gradients(rank, options, reduction, "channels_last")
    use_bias = options.get("use_bias", True)
    assert (keras_grads[2] is not None) == use_bias
    for what, got, want in zip(("input", "kernel", "bias"), keras_grads, expected):
        if got is not None:
            _assert_close(got, want, what)


@pytest.mark.parametrize(
    "rank, options, reduction, implementation, data_format, mode", GRID
)
def test_gradients_match_references(
    request, rank, options, reduction, implementation, data_format, mode
):
    # With exact plans the sparse implementation's 3 blocks read overlapping
    # channels (see conftest.exact_plans).
    sparse = implementation == "sparse"
    stored = implementation == "per_channel"
    if sparse:
        request.getfixturevalue("exact_plans")
    x, kernel, bias, upstream = _problem(rank, options, reduction, data_format,
                                         zero_frozen=not stored)
    layer = _layer(rank, options, reduction, implementation, data_format)
    layer.build(x.shape)
    if sparse:
        assert len(layer.plan.blocks) == (3 if reduction == "sum" else 1)
    layer.assign_kernel(kernel)  # stored frozen kernels non-zero: they reach d_input
    use_bias = options.get("use_bias", True)
    if use_bias:
        layer.bias.assign(bias)
    assert [w.name for w in layer.trainable_weights] == ["trainable_kernels"] + (
        ["bias"] if use_bias else []
    )
    assert [w.name for w in layer.non_trainable_weights] == ["frozen_kernels"] * stored

    got = _layer_gradients(layer, x, upstream, mode)
    conv_args = _conv_args(options, data_format)
    d_input, d_kernel, d_bias = numpy_conv_gradients(
        x, kernel, upstream, reduction, **conv_args
    )
    d_trainable, d_frozen = _split(d_kernel)
    _assert_close(got["input"], d_input, "input vs NumPy")
    _assert_close(got["trainable_kernels"], d_trainable, "trainable_kernels vs NumPy")
    if stored:
        _assert_close(got["frozen_kernels"], d_frozen, "frozen_kernels vs NumPy")
    if use_bias:
        _assert_close(got["bias"], d_bias, "bias vs NumPy")

    if _keras_refuses(rank, options, reduction):
        return  # NumPy alone is the reference (see the module docstring)
    k_input, k_kernel, k_bias = _keras_gradients(rank, options, reduction, data_format,
                                                 zero_frozen=not stored)
    _assert_close(got["input"], k_input, "input vs Keras")
    _assert_close(got["trainable_kernels"], _split(k_kernel)[0], "kernels vs Keras")
    if use_bias:
        _assert_close(got["bias"], k_bias, "bias vs Keras")
