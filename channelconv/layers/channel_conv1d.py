"""``ChannelConv1D``: a 1-D convolution with individually frozen kernels."""

import keras

from channelconv.layers.base import BaseChannelConv


@keras.saving.register_keras_serializable(package="channelconv")
class ChannelConv1D(BaseChannelConv):
    """1-D convolution in which chosen (input channel, filter) kernels are frozen.

    :class:`~channelconv.ChannelConv2D` for sequences (audio, text, time
    series): the same arguments and behaviour, with ``kernel_size``,
    ``strides`` and ``dilation_rate`` an int or a tuple of 1 int, and, as
    Keras's ``Conv1D``, ``padding="causal"`` as well as ``"valid"`` and
    ``"same"`` (output ``t`` sees inputs up to ``t`` only: the input is
    padded with ``dilation_rate * (kernel_size - 1)`` zeros at the start).

    ``reduction="sum"`` equals ``keras.layers.Conv1D(filters, ...)`` with
    kernel :attr:`kernel` (``(kernel_size, in_channels, filters)``);
    ``"concat"`` equals ``keras.layers.DepthwiseConv1D(depth_multiplier=
    filters, ...)`` with that kernel (with ``padding="causal"``, which
    ``DepthwiseConv1D`` refuses, ``Conv1D(in_channels * filters, ...,
    groups=in_channels)`` with the kernel reshaped to ``(kernel_size, 1,
    in_channels * filters)``).

    Input shape:
        3-D tensor ``(batch, steps, channels)`` with ``channels_last``,
        ``(batch, channels, steps)`` with ``channels_first``.

    Output shape:
        3-D tensor with ``filters`` (``"sum"``) or ``channels * filters``
        (``"concat"``) channels; steps as for ``Conv1D``.

    Example:

    >>> import numpy as np, keras, channelconv
    >>> layer = channelconv.ChannelConv1D(4, 3, frozen=[(0, 1), (1, 3)],
    ...                                   padding="causal")
    >>> x = np.random.default_rng(0).normal(size=(2, 10, 2)).astype("float32")
    >>> y = layer(x)
    >>> tuple(y.shape), tuple(layer.trainable_kernels.shape)
    ((2, 10, 4), (3, 6))
    >>> conv = keras.layers.Conv1D(4, 3, padding="causal")
    >>> conv.build((None, 10, 2))
    >>> conv.set_weights([keras.ops.convert_to_numpy(layer.kernel),
    ...                   keras.ops.convert_to_numpy(layer.bias)])
    >>> to_numpy = keras.ops.convert_to_numpy
    >>> bool(np.allclose(to_numpy(y), to_numpy(conv(x)), atol=1e-6))
    True
    """

    rank = 1
