"""``ChannelConv2D``: a 2-D convolution with individually frozen kernels."""

import keras

from channelconv.layers.base import BaseChannelConv


@keras.saving.register_keras_serializable(package="channelconv")
class ChannelConv2D(BaseChannelConv):
    """2-D convolution in which chosen (input channel, filter) kernels are frozen.

    A ``Conv2D(filters, kernel_size)`` on ``C`` input channels has ``C *
    filters`` kernels of size ``kernel_size``, one per (input channel, filter)
    pair. This layer freezes any subset of them, exactly zero by default or at
    the values ``frozen_initializer`` (or :meth:`assign_kernel`) gives, while
    the others train. The trainable kernels are one variable,
    ``trainable_kernels`` of shape ``kernel_size + (n_trainable,)``. Kernels
    frozen at zero are structure, stored nowhere: nothing can change them
    and they are not parameters. Kernels frozen at other values are the
    non-trainable variable ``frozen_kernels``, ``kernel_size +
    (n_frozen,)`` (``store_frozen``). Optimizers keep state only for
    trainable kernels, and no optimizer, weight decay, regularizer or
    constraint can move a frozen kernel. Saved weights carry the frozen
    mask and never load under another (``docs/guarantees.md``).

    Args:
        filters: int, the number of filters.
        kernel_size: int or tuple of 2 ints, the kernel's height and width.
        frozen: which kernels are frozen: ``None`` (none), a sequence of
            ``(input_channel, filter)`` pairs, or a boolean array (or nested
            lists of booleans) of shape ``(in_channels, filters)`` (see
            :func:`channelconv.random_frozen_mask`). Channels are checked
            against the input when the layer is built. ``get_config`` writes
            a mask in a compact form, ``{"shape": [in_channels, filters],
            "rows": [hex, ...]}``, which is accepted here too (see
            :func:`channelconv.mask.frozen_to_config`); pairs given before
            the layer is built stay pairs in the config.
        frozen_initializer: initializer of the frozen kernels, drawn for the
            full kernel shape; defaults to ``"zeros"``. Any other
            initializer makes the layer store its frozen kernels
            (``store_frozen``).
        reduction: ``"sum"`` (default): the output has ``filters`` channels
            and equals ``keras.layers.Conv2D(filters, ...)`` with kernel
            :attr:`kernel`. ``"concat"``: the output has ``in_channels *
            filters`` channels; channel ``c * filters + f`` is input channel
            ``c`` convolved with kernel ``(c, f)``; this equals
            ``keras.layers.DepthwiseConv2D(depth_multiplier=filters)``.
        implementation: ``"fused"`` (default): one convolution on the
            assembled kernel, as fast as the dense layer. ``"per_channel"``:
            one convolution per input channel, then the reduction (the
            StackOverflow answer's computation; slower, kept as a reference).
            ``"sparse"``: skips the frozen kernels, which must be zeros: it
            runs the layer's :attr:`plan`, a few dense convolutions that
            read only the input channels and compute only the filters (or,
            for ``"concat"``, the kernels) that have a live kernel, at a
            fraction of the dense cost when the zeros have structure (whole
            groups, input channels or filters; ``docs/performance.md``);
            only for frozen kernels that are zeros by construction
            (``store_frozen=False``). ``"auto"``: ``"sparse"`` where the
            plan is expected to be faster (:attr:`plan` ``.prefer_sparse``)
            and the frozen kernels are zeros by construction, ``"fused"``
            otherwise, decided when the layer is built
            (:attr:`implementation_in_use`). All give the same result to
            float tolerance.
        strides: int or tuple of 2 ints; ``strides > 1`` is incompatible with
            ``dilation_rate > 1``.
        padding: ``"valid"`` or ``"same"``.
        data_format: ``"channels_last"`` or ``"channels_first"``; defaults to
            ``keras.config.image_data_format()``.
        dilation_rate: int or tuple of 2 ints.
        activation: activation function, or ``None``.
        use_bias: bool (Python or NumPy, stored as a Python ``bool``); the
            bias has ``filters`` entries (``"sum"``) or ``in_channels *
            filters`` (``"concat"``).
        kernel_initializer: initializer of the trainable kernels; it is drawn
            for the full kernel shape, so fan-in and fan-out are those of the
            equivalent ``Conv2D``.
        bias_initializer: initializer of the bias.
        kernel_regularizer: regularizer; it sees the full kernel with the
            frozen kernels at zero, i.e. it acts on the trainable kernels only.
        bias_regularizer: regularizer of the bias.
        activity_regularizer: regularizer of the output.
        kernel_constraint: constraint; it sees the full kernel with the frozen
            kernels at zero (so ``MaxNorm(axis=[0, 1, 2])`` means what it
            means for ``Conv2D``) and only the trainable kernels are updated.
        bias_constraint: constraint of the bias.
        prunable: bool, default ``False``. If ``True`` the layer has a
            non-trainable variable ``pruned_kernels`` ``(in_channels,
            filters)``, 1.0 where a kernel is pruned, and its effective
            kernel is zero there: :class:`channelconv.KernelPruning` sets it
            during training, :func:`channelconv.condense` turns the pruned
            kernels into frozen zeros. Runs the fused (or per-channel) path.
        store_frozen: whether the frozen kernels hold values. ``False``:
            they are exactly zero by construction; no variable holds them,
            so no assignment, ``set_weights``, loading or checkpoint can
            change them (non-zero values offered are refused with a
            ``ValueError``), and they are not parameters. ``True``: they are
            the non-trainable variable ``frozen_kernels``, drawn by
            ``frozen_initializer`` and set by :meth:`assign_kernel`,
            ``set_weights`` or loading; the layer then runs ``"fused"`` or
            ``"per_channel"`` (``"sparse"`` is refused, ``"auto"`` runs
            fused). Default ``None``: ``True`` exactly when
            ``frozen_initializer`` is not zeros.
        **kwargs: base layer arguments (``name``, ``dtype``, ``trainable``).

    The string options ``reduction``, ``implementation``, ``padding`` and
    ``data_format`` are case-insensitive, as Keras's ``padding`` and
    ``data_format`` are, and are stored (and written by ``get_config``) in
    lower case.

    Input shape:
        4-D tensor ``(batch, rows, cols, channels)`` with
        ``channels_last``, ``(batch, channels, rows, cols)`` with
        ``channels_first``. The channel dimension must be known.

    Output shape:
        4-D tensor with ``filters`` channels (``"sum"``) or ``channels *
        filters`` channels (``"concat"``); rows and cols as for ``Conv2D``.

    Raises:
        TypeError: an argument has the wrong type (e.g. a float
            ``kernel_size``, a string option given as a non-string such as
            ``padding=1``, a ``use_bias`` that is not a bool, a mask that is
            not boolean); see :func:`channelconv.mask.parse_frozen` for the
            frozen set.
        ValueError: an argument has a bad value (non-positive ``filters``,
            unknown ``reduction``, a repeated or negative pair, a mask of the
            wrong shape or with rows of different lengths, ...); at build
            time, an input of the wrong rank or unknown channel count, or a
            frozen set that does not fit the input's channels.

    Example:

    >>> import numpy as np, keras, channelconv
    >>> layer = channelconv.ChannelConv2D(
    ...     16, 3, frozen=[(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)])
    >>> y = layer(np.ones((1, 8, 8, 3), "float32"))
    >>> tuple(y.shape)
    (1, 6, 6, 16)
    >>> int(layer.frozen_mask.sum()), tuple(layer.trainable_kernels.shape)
    (5, (3, 3, 43))
    >>> layer.frozen_kernels is None, layer.count_params()  # zeros: stored nowhere
    (True, 403)
    >>> bool((keras.ops.convert_to_numpy(layer.kernel)[:, :, 0, :5] == 0).all())
    True

    The config holds the frozen set compactly, one hex string per input
    channel (filter 0 is the first digit's most significant bit):

    >>> layer.get_config()["frozen"]
    {'shape': [3, 16], 'rows': ['f800', '0000', '0000']}
    >>> clone = channelconv.ChannelConv2D.from_config(layer.get_config())
    >>> clone.build((None, 8, 8, 3))
    >>> bool((clone.frozen_mask == layer.frozen_mask).all())
    True

    String options are case-insensitive; wrong types are refused:

    >>> channelconv.ChannelConv2D(4, 3, data_format="Channels_First").data_format
    'channels_first'
    >>> channelconv.ChannelConv2D(4, 3, padding=1)
    Traceback (most recent call last):
        ...
    TypeError: `padding` must be one of ['same', 'valid']. Received: padding=1 of type int.
    """

    rank = 2
