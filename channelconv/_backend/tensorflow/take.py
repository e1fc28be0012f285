"""The last-axis take on TensorFlow: one XLA-compiled gather, the inverse as gradient.

TensorFlow's own CPU gather is slower than XLA's, and its gradient of a
gather is a slower segment sum (``docs/performance.md``, "Where the fused
path's extra time goes"). So every take is the gather of
:func:`channelconv._backend.generic.gather` compiled with XLA as a small
cluster of its own, whatever the caller compiles, and its gradient is the
inverse gather, compiled the same way.

One ``tf.function`` serves every take of the process: the index is an
argument, so a take of the same shapes and dtypes as one compiled before (the
same layer shape again, in a network or in a new model) reuses its trace and
its XLA program. Each signature is traced once, by design; the function is
called through the concrete function of the signature at hand
(:func:`_compiled`), so that TensorFlow's warning about frequent retracing,
which counts the traces of eager calls of a ``tf.function``, is not raised by
layers of many shapes. (What that costs and saves: ``docs/performance.md``,
"Keras and TensorFlow notes".)
"""

import functools

import tensorflow as tf
from keras import ops

from channelconv._backend import generic


def take_last_axis(values, forward, inverses):
    """The gather of ``forward``, whose gradient is the sum of ``inverses``' gathers.

    Arguments as for ``channelconv._backend.take_last_axis``.
    """
    values = [tf.convert_to_tensor(v) for v in values]  # variables read outside

    def apply(parts, index_and_pad):
        index, pad = index_and_pad
        return _compiled(list(parts), ops.convert_to_tensor(index), pad)

    @ops.custom_gradient
    def reorder(*parts):
        def grad(*upstream, **unused):
            grads = []
            for part, part_inverses in zip(parts, inverses):
                terms = [apply([upstream[0]], inverse) for inverse in part_inverses]
                total = functools.reduce(ops.add, terms)
                grads.append(ops.cast(total, part.dtype))
            return grads

        return apply(parts, forward), grad

    return reorder(*values)


def _compiled(parts, index, pad):
    """:func:`generic.gather` of ``parts``, XLA-compiled for their signature.

    The concrete function of the signature comes from the one
    ``tf.function`` (:func:`_gather_function`), which traces each signature
    once and keeps it; calling it directly runs the same XLA program as
    calling the ``tf.function``.
    """
    specs = [tf.TensorSpec(part.shape, part.dtype) for part in parts]
    concrete = _gather_function().get_concrete_function(
        specs, tf.TensorSpec(index.shape, index.dtype), pad)
    return concrete(parts, index, pad)


@functools.lru_cache(maxsize=None)
def _gather_function():
    """The XLA-compiled :func:`generic.gather`, one for the process."""
    return tf.function(generic.gather, jit_compile=True, autograph=False)
