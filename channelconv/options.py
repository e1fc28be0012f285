"""The values the layers' string options take, without importing Keras.

One definition for the layers, which validate ``reduction`` and
``implementation`` against these tuples, and for the ``channelconv``
command (:mod:`channelconv.apps.cli`), whose ``--reduction`` and
``--implementation`` offer them without importing Keras to print its help.
Nothing here imports Keras or a backend.

Example:

>>> from channelconv.options import IMPLEMENTATIONS, REDUCTIONS
>>> REDUCTIONS
('sum', 'concat')
>>> IMPLEMENTATIONS
('fused', 'per_channel', 'sparse', 'auto')
"""

#: ``reduction``: sum over input channels (``Conv2D``'s output) or keep each
#: (input channel, filter) output (``DepthwiseConv2D``'s layout).
REDUCTIONS = ("sum", "concat")

#: ``implementation``: the two dense ones of :func:`channelconv._ops.convolve`,
#: and the two that run a sparse plan (:mod:`channelconv._sparse`).
IMPLEMENTATIONS = ("fused", "per_channel", "sparse", "auto")
