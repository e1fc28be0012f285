"""The backend facade: every choice channelconv makes per Keras backend.

channelconv's layers, conversions and pruning are written with
``keras.ops`` and run on every Keras 3 backend (TensorFlow, JAX, PyTorch).
What differs per backend sits behind the functions of this module, as
Keras's ``keras.ops`` hand off to ``keras.src.backend.<name>``: the
implementation is chosen once, when channelconv is imported, from
``keras.backend.backend()``:

- :mod:`channelconv._backend.tensorflow` (imports TensorFlow; never imported
  on another backend): the workarounds for TensorFlow's CPU kernels, the
  bias add with an explicit data format, the XLA-compiled take, the
  ``tf.train.Checkpoint`` entries and the oneDNN probe;
- :mod:`channelconv._backend.generic`: ``keras.ops`` as they are, for JAX,
  PyTorch and any other backend.

No module outside this package asks which backend runs. The functions:

- :func:`conv`, :func:`depthwise_conv`: convolutions of channels-last data
  (``channelconv._routing`` transposes and validates, then calls these);
- :func:`bias_add`: a per-channel bias along the channel axis;
- :func:`take_last_axis`: the gather of :class:`channelconv._take.LastAxisTake`;
- :func:`track_checkpoint`: a layer's own checkpoint entries;
- :func:`native_unequal_strides`: whether the depthwise kernels take unequal
  strides;
- :func:`onednn_setting`: whether TensorFlow runs oneDNN, shared by the tests
  and the benchmarks.

A few features are TensorFlow's own and stay so: the transcribed
StackOverflow answer (:mod:`channelconv.apps.reference`, written with
``tf.nn.conv2d``) and the ``channelconv reproduce`` command built on it. They
call :func:`require_tensorflow`, which says so clearly on another backend
instead of failing somewhere inside TensorFlow or importing it.
"""

import keras

if keras.backend.backend() == "tensorflow":
    from channelconv._backend import tensorflow as _implementation
else:
    from channelconv._backend import generic as _implementation

#: The values of ``depthwise_conv``'s ``unequal_strides``.
UNEQUAL_STRIDES = ("auto", "native", "rewrite")


def conv(inputs, kernel, strides, padding, dilation_rate):
    """This backend's ``keras.ops.conv`` of channels-last data.

    On TensorFlow, right for a batch of no examples on every CPU kernel set.
    ``channelconv._routing.conv`` validates the arguments and calls this.

    Args:
        inputs: ``(batch, *spatial, channels)``.
        kernel: ``kernel_size + (channels, filters)``.
        strides, dilation_rate: tuples of ints, one per spatial axis.
        padding: ``"valid"`` or ``"same"``.

    Returns:
        ``(batch, *out_spatial, filters)``.

    Example:

    >>> import numpy as np
    >>> y = conv(np.ones((1, 5, 5, 2), "float32"), np.ones((3, 3, 2, 4), "float32"),
    ...          (2, 1), "valid", (1, 1))
    >>> tuple(y.shape)
    (1, 2, 3, 4)
    """
    return _implementation.conv(inputs, kernel, strides, padding, dilation_rate)


def depthwise_conv(inputs, kernel, strides, padding, dilation_rate, unequal_strides="auto"):
    """This backend's depthwise convolution of channels-last data, any rank and strides.

    Keras's depthwise op takes 1-D and 2-D inputs; a 3-D one is computed
    here too (a grouped convolution, or on TensorFlow a sum of 2-D ones).
    TensorFlow's own CPU kernels refuse unequal strides: there they run as
    one convolution with equal strides (an exact rewrite).

    Args:
        inputs: ``(batch, *spatial, channels)``.
        kernel: ``kernel_size + (channels, multiplier)``.
        strides, dilation_rate: tuples of ints, one per spatial axis.
        padding: ``"valid"`` or ``"same"``.
        unequal_strides: how unequal strides run: ``"auto"`` (default), the
            backend's kernel where it takes them (:func:`native_unequal_strides`),
            the rewrite otherwise; ``"native"``, the backend's kernel;
            ``"rewrite"``, TensorFlow's rewrite (TensorFlow only).

    Returns:
        ``(batch, *out_spatial, channels * multiplier)``, channel ``c *
        multiplier + f`` from kernel ``(c, f)``.

    Raises:
        ValueError: ``unequal_strides`` is not one of :data:`UNEQUAL_STRIDES`,
            or is ``"rewrite"`` for unequal strides on another backend.

    Example:

    >>> import numpy as np
    >>> y = depthwise_conv(np.ones((1, 5, 4, 2), "float32"),
    ...                    np.ones((3, 3, 2, 3), "float32"), (2, 1), "same", (1, 1))
    >>> tuple(y.shape)
    (1, 3, 4, 6)
    """
    if unequal_strides not in UNEQUAL_STRIDES:
        raise ValueError(
            f"`unequal_strides` must be one of {UNEQUAL_STRIDES}. "
            f"Received: unequal_strides={unequal_strides!r}."
        )
    return _implementation.depthwise_conv(
        inputs, kernel, strides, padding, dilation_rate, unequal_strides)


def bias_add(outputs, bias, data_format):
    """``outputs`` plus a per-channel ``bias`` along the channel axis of ``data_format``.

    On TensorFlow ``tf.nn.bias_add`` with the data format stated (``keras.ops.add``
    there guesses the channel axis from the sizes); elsewhere the bias is
    reshaped to broadcast along the channel axis and added.

    Args:
        outputs: tensor of rank >= 3 in ``data_format``.
        bias: vector with one entry per channel, of ``outputs``' dtype.
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
        The sum, shaped like ``outputs``.

    Example:

    >>> from keras import ops
    >>> y = bias_add(ops.zeros((1, 2, 2)), ops.convert_to_tensor([1.0, 2.0]),
    ...              "channels_first")
    >>> ops.convert_to_numpy(y).tolist()
    [[[1.0, 1.0], [2.0, 2.0]]]
    """
    return _implementation.bias_add(outputs, bias, data_format)


def take_last_axis(values, forward, inverses):
    """``concat(values, -1)[..., index]``, differentiable, for ``LastAxisTake``.

    ``forward`` and each entry of ``inverses`` are ``(index, pad)`` pairs
    of :func:`channelconv._backend.generic.gather`. On TensorFlow the gather
    is compiled with XLA and its gradient for ``values[j]`` is the sum of
    the gathers of the incoming gradient by ``inverses[j]`` (exact; one
    gather per repetition of a source entry); elsewhere the gradient is
    ``keras.ops.take``'s own and ``inverses`` is not used.

    Args:
        values: tensors with the same leading shape.
        forward: ``(index, pad)``: int32 NumPy index into the concatenation
            (its length stands for a zero when ``pad``) and whether any does.
        inverses: one list of ``(index, pad)`` per entry of ``values``.

    Returns:
        ``values[0].shape[:-1] + (len(index),)``.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> x = np.array([[1.0, 2.0, 3.0]], "float32")
    >>> forward = (np.array([2, 3, 0], "int32"), True)
    >>> inverses = [[(np.array([2, 3, 0], "int32"), True)]]
    >>> ops.convert_to_numpy(take_last_axis([x], forward, inverses)).tolist()
    [[3.0, 0.0, 1.0]]
    """
    return _implementation.take_last_axis(values, forward, inverses)


def track_checkpoint(layer, kernel_size, n_frozen):
    """Adds a layer's own checkpoint entries, where the backend has any.

    On TensorFlow, the entries of :mod:`channelconv._backend.tensorflow.checkpoint`
    in ``tf.train.Checkpoint`` (the frozen mask, and zeros for frozen
    kernels without a variable); elsewhere nothing (Keras saves the
    variables). Call in ``build``, before the layer's ``add_weight``.

    Args:
        layer: a built channel convolution.
        kernel_size: tuple of ints.
        n_frozen: the number of frozen kernels.

    Example:

    >>> import channelconv
    >>> layer = channelconv.ChannelConv2D(2, 3, frozen=[(0, 0)])
    >>> layer.build((None, 8, 8, 1))  # build calls track_checkpoint
    """
    _implementation.track_checkpoint(layer, kernel_size, n_frozen)


def native_unequal_strides(dtype="float32"):
    """Whether the backend's depthwise kernels for ``dtype`` take unequal strides.

    ``True`` on JAX and PyTorch. TensorFlow's do with oneDNN, and not
    without (nor for every dtype with it): they are asked once per process
    and dtype.

    Args:
        dtype: a dtype name, e.g. ``"float32"``.

    Returns:
        A bool.

    Example:

    >>> native_unequal_strides("float32") in (True, False)
    True
    """
    return _implementation.native_unequal_strides(dtype)


def onednn_setting(probe=None):
    """Whether TensorFlow runs its oneDNN CPU kernels, and where that was read.

    The one probe for the tests and the benchmarks. On TensorFlow it asks
    TensorFlow's private ``_pywrap_util_port.IsMklEnabled()`` and falls
    back on ``TF_ENABLE_ONEDNN_OPTS`` when that is missing; on other
    backends TensorFlow's setting does not apply (and TensorFlow is not
    imported): ``"onednn"`` is ``None``.

    Args:
        probe: a function of no arguments returning whether oneDNN is on, in
            place of TensorFlow's private one (an ``ImportError`` or
            ``AttributeError`` from it means it is missing); TensorFlow only.

    Returns:
        ``{"onednn": True, False or None, "onednn_env": the value of
        TF_ENABLE_ONEDNN_OPTS or None, "onednn_source": what "onednn" was
        read from}``.

    Example:

    >>> sorted(onednn_setting())
    ['onednn', 'onednn_env', 'onednn_source']
    """
    return _implementation.onednn_setting(probe)


def name():
    """The name of the Keras backend in use: ``"tensorflow"``, ``"jax"``, ...

    Example:

    >>> name() in ("tensorflow", "jax", "torch", "numpy", "openvino")
    True
    """
    return keras.backend.backend()


def is_tensorflow():
    """Whether Keras runs on TensorFlow (the default backend).

    Example:

    >>> is_tensorflow() == (name() == "tensorflow")
    True
    """
    return name() == "tensorflow"


class BackendError(ImportError):
    """A TensorFlow-only feature of channelconv was used on another backend.

    A subclass of ``ImportError``: what is missing is the backend the feature
    is written for.
    """


def require_tensorflow(feature):
    """Raises :class:`BackendError` unless Keras runs on TensorFlow.

    Args:
        feature: what needs TensorFlow, for the message.

    Raises:
        BackendError: Keras runs on another backend.

    Example:

    >>> require_tensorflow("a feature") if is_tensorflow() else None
    """
    if not is_tensorflow():
        raise BackendError(
            f"{feature} runs on the TensorFlow backend only; Keras runs on "
            f"{name()!r} (KERAS_BACKEND). Set KERAS_BACKEND=tensorflow to use it. "
            "The channelconv layers, conversions and pruning run on every backend."
        )
