"""``ChannelConv3D``: a 3-D convolution with individually frozen kernels."""

import keras

from channelconv.layers.base import BaseChannelConv


@keras.saving.register_keras_serializable(package="channelconv")
class ChannelConv3D(BaseChannelConv):
    """3-D convolution in which chosen (input channel, filter) kernels are frozen.

    :class:`~channelconv.ChannelConv2D` for volumes and video: the same
    arguments and behaviour, with ``kernel_size``, ``strides`` and
    ``dilation_rate`` an int or a tuple of 3 ints.

    ``reduction="sum"`` equals ``keras.layers.Conv3D(filters, ...)`` with
    kernel :attr:`kernel` (``kernel_size + (in_channels, filters)``).
    Keras has no ``DepthwiseConv3D``; ``"concat"`` (output channel ``c *
    filters + f`` is input channel ``c`` convolved with kernel ``(c, f)``)
    equals ``keras.layers.Conv3D(in_channels * filters, ...,
    groups=in_channels)`` with kernel ``layer.kernel`` reshaped to
    ``kernel_size + (1, in_channels * filters)`` (what
    :func:`channelconv.to_keras_layer` makes). On TensorFlow the fused path computes it as a
    sum, over the kernel's depth taps, of 2-D depthwise convolutions, which
    TensorFlow's CPU kernels run natively (Keras's grouped ``Conv3D`` needs
    XLA there and is slower; see ``docs/ranks.md``).

    Input shape:
        5-D tensor ``(batch, depth, rows, cols, channels)`` with
        ``channels_last``, ``(batch, channels, depth, rows, cols)`` with
        ``channels_first``.

    Output shape:
        5-D tensor with ``filters`` (``"sum"``) or ``channels * filters``
        (``"concat"``) channels; spatial sizes as for ``Conv3D``.

    Example:

    >>> import numpy as np, keras, channelconv
    >>> layer = channelconv.ChannelConv3D(2, 3, frozen=[(0, 1)], reduction="concat")
    >>> x = np.random.default_rng(0).normal(size=(1, 5, 6, 7, 3)).astype("float32")
    >>> y = layer(x)
    >>> tuple(y.shape), tuple(layer.trainable_kernels.shape)
    ((1, 3, 4, 5, 6), (3, 3, 3, 5))
    >>> grouped = keras.layers.Conv3D(6, 3, groups=3)
    >>> grouped.build((None, 5, 6, 7, 3))
    >>> kernel = keras.ops.convert_to_numpy(layer.kernel).reshape(3, 3, 3, 1, 6)
    >>> grouped.set_weights([kernel, keras.ops.convert_to_numpy(layer.bias)])
    >>> to_numpy = keras.ops.convert_to_numpy
    >>> bool(np.allclose(to_numpy(y), to_numpy(grouped(x)), atol=1e-5))
    True
    """

    rank = 3
