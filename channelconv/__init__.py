"""channelconv: Keras convolutions with individually frozen kernels."""

from channelconv.layers import ChannelConv2D
from channelconv.mask import random_frozen_mask

__version__ = "0.1.0"

__all__ = ["ChannelConv2D", "random_frozen_mask", "__version__"]
