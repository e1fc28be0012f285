"""A picture of a layer's frozen set: the (input channel x filter) grid.

Needs matplotlib, the optional ``plot`` extra
(``pip install "channelconv[plot]"``); it is imported only when a plot is
drawn, and only through its object-oriented API, so no pyplot state or
global backend is touched.
"""

import keras
import numpy as np

from channelconv.layers import BaseChannelConv

FROZEN_COLOR = "0.85"


def kernel_norms(layer):
    """The L2 norm of each kernel of a built channel convolution.

    Args:
        layer: a built ``ChannelConv1D``, ``ChannelConv2D`` or
            ``ChannelConv3D``.

    Returns:
        A float ``np.ndarray`` of shape ``(in_channels, filters)``; entry
        ``(c, f)`` is the norm of the ``kernel_size`` slice ``kernel[..., c,
        f]``.

    Example:

    >>> import channelconv
    >>> layer = channelconv.ChannelConv2D(2, 3, kernel_initializer="ones")
    >>> layer.build((None, 8, 8, 1))
    >>> kernel_norms(layer).tolist()
    [[3.0, 3.0]]
    """
    _check_layer(layer)
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    flat = kernel.reshape((-1,) + kernel.shape[-2:])
    return np.sqrt(np.einsum("kcf,kcf->cf", flat, flat))


def plot_kernel_mask(layer, path=None):
    """Draws the (input channel x filter) grid of a layer's kernels.

    Row ``c``, column ``f`` is kernel ``(c, f)``. Frozen kernels are grey and
    marked with a black ``x``; trainable kernels are coloured by their L2
    norm (:func:`kernel_norms`), with a colorbar. The title gives the layer
    name and how many kernels are frozen. The figure is a standalone
    ``matplotlib.figure.Figure`` rendered with the Agg backend (it is not
    registered with pyplot, so it never opens a window and needs no
    ``plt.close``; in a notebook, display it with ``display(fig)``).

    Args:
        layer: a built ``ChannelConv1D``, ``ChannelConv2D`` or
            ``ChannelConv3D`` (either reduction).
        path: ``None`` (default) to only return the figure, or a file path
            (``str`` or ``os.PathLike``) to save it to; the format follows
            the extension, PNG when there is none.

    Returns:
        The ``matplotlib.figure.Figure``. Its axes hold one image whose data
        is the masked norm array (mask = the frozen mask).

    Raises:
        ImportError: matplotlib is not installed.
        TypeError: ``layer`` is not a channel convolution.
        ValueError: ``layer`` is not built.

    Example:

    >>> import channelconv
    >>> layer = channelconv.ChannelConv2D(16, 3, frozen=[(0, 0), (2, 7)],
    ...                                   name="conv1")
    >>> layer.build((None, 8, 8, 3))
    >>> fig = plot_kernel_mask(layer)
    >>> fig.axes[0].get_title()
    'conv1: 2 of 48 kernels frozen (x)'
    >>> int(fig.axes[0].images[0].get_array().mask.sum())
    2
    """
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as error:
        raise ImportError(
            "plot_kernel_mask needs matplotlib, which is the optional `plot` "
            'extra: pip install "channelconv[plot]".'
        ) from error

    norms = kernel_norms(layer)
    mask = np.asarray(layer.frozen_mask, dtype=bool)
    in_channels, filters = mask.shape
    values = np.ma.masked_array(norms, mask=mask)

    fig = Figure(
        figsize=(
            float(np.clip(2.5 + 0.4 * filters, 4.0, 14.0)),
            float(np.clip(1.5 + 0.4 * in_channels, 2.5, 10.0)),
        ),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=FROZEN_COLOR)
    trainable = norms[~mask]
    if trainable.size:
        norm = Normalize(vmin=float(trainable.min()), vmax=float(trainable.max()))
    else:
        norm = Normalize(vmin=0.0, vmax=1.0)
    image = ax.imshow(
        values, cmap=cmap, norm=norm, interpolation="nearest", aspect="auto"
    )
    rows, cols = np.nonzero(mask)
    if rows.size:
        ax.scatter(
            cols, rows, marker="x", color="black",
            s=float(np.clip(2000.0 / max(in_channels, filters), 6.0, 120.0)),
            linewidths=1.2,
        )
    fig.colorbar(image, ax=ax, label="L2 norm of trainable kernel")
    ax.set_xlabel("filter")
    ax.set_ylabel("input channel")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(
        f"{layer.name}: {int(mask.sum())} of {mask.size} kernels frozen (x)"
    )
    if path is not None:
        fig.savefig(path)
    return fig


def _check_layer(layer):
    if not isinstance(layer, BaseChannelConv):
        raise TypeError(
            "`layer` must be a ChannelConv1D, ChannelConv2D or ChannelConv3D. Received: "
            f"{getattr(layer, 'name', layer)!r} of type {type(layer).__name__}."
        )
    if not layer.built:
        raise ValueError(
            f"Layer {layer.name!r} is not built, so its kernels do not exist "
            "yet. Build it (or call it on an input) first."
        )
