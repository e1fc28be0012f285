"""Keras layers of channelconv: one file per rank on a shared base."""

from channelconv.layers.base import BaseChannelConv
from channelconv.layers.channel_conv1d import ChannelConv1D
from channelconv.layers.channel_conv2d import ChannelConv2D
from channelconv.layers.channel_conv3d import ChannelConv3D

__all__ = ["BaseChannelConv", "ChannelConv1D", "ChannelConv2D", "ChannelConv3D"]
