"""Keras layers of channelconv."""

from channelconv.layers.base import BaseChannelConv
from channelconv.layers.channel_conv2d import ChannelConv2D

__all__ = ["BaseChannelConv", "ChannelConv2D"]
