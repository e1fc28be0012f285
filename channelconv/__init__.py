"""channelconv: Keras convolutions with individually frozen kernels."""

from channelconv.convert import convert_model, from_conv, from_conv2d, strip, to_keras_layer
from channelconv.layers import ChannelConv1D, ChannelConv2D, ChannelConv3D
from channelconv.mask import grouped_frozen_mask, random_frozen_mask
from channelconv.plot import plot_kernel_mask
from channelconv.pruning import ConstantSparsity, KernelPruning, PolynomialDecay, condense

__version__ = "0.2.0"

__all__ = [
    "ChannelConv1D",
    "ChannelConv2D",
    "ChannelConv3D",
    "ConstantSparsity",
    "KernelPruning",
    "PolynomialDecay",
    "condense",
    "convert_model",
    "from_conv",
    "from_conv2d",
    "grouped_frozen_mask",
    "plot_kernel_mask",
    "random_frozen_mask",
    "strip",
    "to_keras_layer",
    "__version__",
]
