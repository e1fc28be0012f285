"""The facade's implementation for TensorFlow (imported on that backend only).

Everything channelconv does differently on TensorFlow, each in a module of
its own:

- :mod:`.convolution`: convolutions of channels-last data that every CPU
  kernel accepts (oneDNN on or off), and the bias add;
- :mod:`.phased`: the rewrite of a depthwise convolution with unequal
  strides into one with equal strides, for TensorFlow's own CPU kernels;
- :mod:`.take`: the last-axis gather, compiled with XLA, with the inverse
  gather as its gradient;
- :mod:`.onednn`: whether TensorFlow runs its oneDNN CPU kernels;
- :mod:`.checkpoint`: a layer's own ``tf.train.Checkpoint`` entries (the
  frozen mask, and zeros for frozen kernels that have no variable).

Why each exists, and what it was measured to cost, is in
``docs/platforms.md`` and ``docs/performance.md`` ("Keras and TensorFlow notes").
"""

from channelconv._backend.tensorflow.checkpoint import track as track_checkpoint
from channelconv._backend.tensorflow.convolution import (
    bias_add,
    conv,
    depthwise_conv,
    native_unequal_strides,
)
from channelconv._backend.tensorflow.onednn import onednn_setting
from channelconv._backend.tensorflow.take import take_last_axis

__all__ = [
    "bias_add",
    "conv",
    "depthwise_conv",
    "native_unequal_strides",
    "onednn_setting",
    "take_last_axis",
    "track_checkpoint",
]

