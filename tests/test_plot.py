"""Tests of channelconv.plot: the figure and the saved PNG encode the frozen
mask and the kernel norms, computed here independently with NumPy."""

import sys

import keras
import matplotlib
import matplotlib.image
import numpy as np
import pytest

from channelconv.layers import ChannelConv2D
from channelconv.plot import plot_kernel_mask
from harness import LAYERS

FROZEN = [(0, 0), (0, 3), (1, 2), (2, 4), (3, 1)]
GREY = np.array([0.85, 0.85, 0.85])


def make_layer(channels=4, filters=6, frozen=FROZEN, rank=2, **kwargs):
    layer = LAYERS[rank](filters, 3, frozen=frozen, frozen_initializer="ones",
                         name="conv", **kwargs)
    layer.build((None,) + (8,) * rank + (channels,))
    return layer


def expected_mask(channels, filters, pairs):
    mask = np.zeros((channels, filters), dtype=bool)
    for channel, filter_ in pairs:
        mask[channel, filter_] = True
    return mask


def expected_norms(layer):
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    channels, filters = kernel.shape[-2:]
    norms = np.empty((channels, filters))
    for c in range(channels):
        for f in range(filters):
            norms[c, f] = np.sqrt(np.sum(kernel[..., c, f] ** 2))
    return norms


@pytest.fixture(scope="module")
def layer():
    return make_layer()


@pytest.fixture(scope="module")
def saved(layer, tmp_path_factory):
    path = tmp_path_factory.mktemp("plot") / "mask.png"
    fig = plot_kernel_mask(layer, path)
    return fig, path


def test_image_array_is_the_masked_norm_grid(saved, layer):
    fig, _ = saved
    array = fig.axes[0].images[0].get_array()
    mask = expected_mask(4, 6, FROZEN)
    assert np.array_equal(np.ma.getmaskarray(array), mask)
    np.testing.assert_allclose(array.data[~mask], expected_norms(layer)[~mask], rtol=1e-6)


def test_frozen_kernels_are_marked_at_their_cells(saved):
    fig, _ = saved
    (marks,) = fig.axes[0].collections
    positions = {(int(round(y)), int(round(x))) for x, y in marks.get_offsets()}
    assert positions == set(FROZEN)


def test_labels_title_and_colorbar(saved):
    fig, _ = saved
    ax, colorbar = fig.axes
    assert ax.get_xlabel() == "filter" and ax.get_ylabel() == "input channel"
    assert ax.get_title() == "conv: 5 of 24 kernels frozen (x)"
    assert "norm" in colorbar.get_ylabel()


def _pixel(png, ax, x, y):
    """The RGB of the PNG pixel at data coordinates (x, y)."""
    px, py = ax.transData.transform((x, y))
    return png[int(png.shape[0] - py), int(px), :3]


def test_png_pixels_encode_mask_and_norms(saved, layer):
    fig, path = saved
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = matplotlib.image.imread(path)
    ax = fig.axes[0]
    mask = expected_mask(4, 6, FROZEN)
    norms = expected_norms(layer)
    low, high = norms[~mask].min(), norms[~mask].max()
    viridis = matplotlib.colormaps["viridis"]
    for c in range(4):
        for f in range(6):
            beside_centre = _pixel(png, ax, f + 0.4, c)
            if mask[c, f]:
                np.testing.assert_allclose(beside_centre, GREY, atol=0.02)
                assert _pixel(png, ax, f, c).sum() < 0.6  # the black x
            else:
                colour = viridis((norms[c, f] - low) / (high - low))[:3]
                np.testing.assert_allclose(beside_centre, colour, atol=0.02)
                np.testing.assert_allclose(_pixel(png, ax, f, c), colour, atol=0.02)


@pytest.mark.parametrize("rank", [1, 2, 3], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize(
    "frozen, kwargs",
    [(None, {}), (np.ones((4, 6), bool), {}), (FROZEN, {"reduction": "concat"})],
    ids=["nothing_frozen", "all_frozen", "concat"],
)
def test_edge_cases_of_every_rank(rank, frozen, kwargs, tmp_path):
    layer = make_layer(frozen=frozen, rank=rank, **kwargs)
    fig = plot_kernel_mask(layer, tmp_path / "m.png")
    array = fig.axes[0].images[0].get_array()
    mask = layer.frozen_mask
    assert np.array_equal(np.ma.getmaskarray(array), mask)
    np.testing.assert_allclose(array.data[~mask], expected_norms(layer)[~mask], rtol=1e-6)
    assert fig.axes[0].get_title() == f"conv: {int(mask.sum())} of 24 kernels frozen (x)"
    assert len(fig.axes[0].collections) == int(mask.any())
    assert (tmp_path / "m.png").stat().st_size > 0


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: keras.layers.Conv2D(2, 3, name="plain"), TypeError, "'plain' of type Conv2D"),
        (lambda: ChannelConv2D(2, 3, name="lazy"), ValueError, "'lazy' is not built"),
    ],
    ids=["not_channel_conv", "unbuilt"],
)
def test_errors(make, error, match):
    with pytest.raises(error, match=match):
        plot_kernel_mask(make())


def test_missing_matplotlib_names_the_extra(layer, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"channelconv\[plot\]"):
        plot_kernel_mask(layer)
