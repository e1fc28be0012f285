"""A layer's own entries in a ``tf.train.Checkpoint`` (TensorFlow only).

``tf.train.Checkpoint`` saves and restores a Keras layer's variables by
attribute name, writing straight into them: it never calls the layer. Two
entries, made when a layer is built on TensorFlow and tracked before its
variables (so that they are restored, and can refuse, before any of them):

- ``frozen_mask``: the layer's frozen mask. Restoring a checkpoint saved
  under another mask raises the error of :func:`storage.check_same_mask`.
- ``frozen_kernels``, for a layer whose frozen kernels are zeros by
  construction (``store_frozen=False``), in place of the variable it does
  not have: it saves zeros, so that a twin that stores its frozen kernels
  restores them as zeros, and it refuses to restore a checkpoint (of such a
  twin, or written before 0.2.0) whose frozen kernels are not all zero,
  instead of dropping them.

These use ``_serialize_to_tensors`` / ``_restore_from_tensors``, the
interface TensorFlow's own variables and Keras's TensorFlow variables
implement for checkpointing.
"""

import weakref

import numpy as np
import tensorflow as tf

from channelconv import _storage as storage


def track(layer, kernel_size, n_frozen):
    """Adds the two entries to ``layer`` (call in ``build``, before ``add_weight``)."""
    layer._track_trackable(_MaskSeal(layer), name=storage.MASK, overwrite=True)
    if not layer.store_frozen:
        zero = _ZeroFrozenKernels(layer, tuple(kernel_size) + (n_frozen,))
        layer._track_trackable(zero, name=storage.FROZEN, overwrite=True)


class _LayerEntry(tf.__internal__.tracking.Trackable):
    def __init__(self, layer):
        self._layer = weakref.ref(layer)

    @property
    def layer(self):
        return self._layer()


class _MaskSeal(_LayerEntry):
    """Saves the frozen mask; refuses to restore another one."""

    def _serialize_to_tensors(self):
        entries = storage.pack_mask(self.layer.frozen_mask)
        return {key: tf.constant(value) for key, value in entries.items()}

    def _restore_from_tensors(self, restored_tensors):
        layer = self.layer
        if tf.executing_eagerly():
            saved = storage.unpack_mask({k: v.numpy() for k, v in restored_tensors.items()})
            storage.check_same_mask(
                layer.name, layer.frozen_mask, saved, "a tf.train.Checkpoint restore")
        return tf.no_op()


class _ZeroFrozenKernels(_LayerEntry):
    """The frozen kernels of a layer that keeps them at zero by construction."""

    def __init__(self, layer, shape):
        super().__init__(layer)
        self._shape = shape

    def _serialize_to_tensors(self):
        return {"VARIABLE_VALUE": tf.zeros(self._shape, self.layer.variable_dtype)}

    def _restore_from_tensors(self, restored_tensors):
        if tf.executing_eagerly():
            values = restored_tensors["VARIABLE_VALUE"].numpy()
            if values.shape == self._shape:
                self.layer._refuse_nonzero_frozen(
                    storage.nonzero_kernels(values), "a tf.train.Checkpoint restore")
            elif np.any(values != 0):
                raise ValueError(
                    f"Layer {self.layer.name!r} keeps its frozen kernels at zero "
                    "by construction, but a tf.train.Checkpoint restore gives "
                    f"non-zero frozen kernels of shape {values.shape} (this layer's "
                    f"would have shape {self._shape})."
                )
        return tf.no_op()
