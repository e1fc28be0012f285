"""The sparse implementation: a :class:`~channelconv.plan.SparsePlan`, run.

Made once when a layer is built, from the plan; called with the inputs and
the blocks' kernels (taken from the compact variables by
:meth:`channelconv._assembly.KernelAssembly.taker`, never the full kernel).
One gather picks the channels the blocks read (none when they read every
channel in order), one convolution runs per block, and one gather puts their
outputs in the layer's order with zeros for what no block computes (none
when the concatenation is already in order). Both gathers and their
gradients are :class:`~channelconv._take.LastAxisTake` s.
"""

import numpy as np
from keras import ops

from channelconv import _routing as routing
from channelconv._ops import add_bias, channels_last
from channelconv._take import LastAxisTake


class SparseConvolution:
    """Runs a sparse plan: the convolution of the layer, frozen zeros skipped.

    Args:
        plan: a :class:`~channelconv.plan.SparsePlan`.
        kernel_size: tuple of ints.

    Example: a grouped convolution's kernels, as two blocks.

    >>> import numpy as np
    >>> from keras import ops
    >>> from channelconv.plan import make_plan
    >>> zero = np.kron(1 - np.eye(2), np.ones((2, 3))).astype(bool)  # 4 -> 6
    >>> plan = make_plan(zero, (1, 1))
    >>> run = SparseConvolution(plan, (1, 1))
    >>> kernel = np.arange(24, dtype="float32").reshape(1, 1, 4, 6) * ~zero
    >>> blocks = kernel.reshape(1, 1, -1)[..., plan.kernel_numbers]
    >>> x = np.ones((1, 2, 2, 4), "float32")
    >>> expected = np.einsum("bhwc,cf->bhwf", x, kernel[0, 0])  # the dense 1x1 convolution
    >>> y = run(x, blocks, strides=1, padding="valid", dilation_rate=1,
    ...         data_format="channels_last")
    >>> np.array_equal(ops.convert_to_numpy(y), expected)
    True
    >>> bias = np.arange(6, dtype="float32")
    >>> y = run(x.transpose(0, 3, 1, 2), blocks, bias, strides=1, padding="valid",
    ...         dilation_rate=1, data_format="channels_first")
    >>> y = ops.convert_to_numpy(y)
    >>> y.shape, np.array_equal(y[0, :, 0, 0], expected[0, 0, 0] + bias)
    ((1, 6, 2, 2), True)
    """

    def __init__(self, plan, kernel_size):
        self.plan = plan
        self.kernel_size = tuple(kernel_size)
        blocks = plan.blocks
        self._depthwise = plan.reduction == "concat"
        self._reads = [len(b.channels) for b in blocks]
        self._kernels = [len(b.channels) * b.width for b in blocks]
        self._select = LastAxisTake(plan.input_index, plan.in_channels)
        widths = [len(b.channels) * b.width if self._depthwise else b.width for b in blocks]
        self._place = LastAxisTake(plan.output_index, widths or [1])
        # With every output computed by a block, each block adds its own
        # part of the bias right after its convolution, where a backend can
        # fuse the two (TensorFlow's CPU kernels do, as for a dense Conv2D);
        # otherwise the bias is added once, after the placement.
        self._bias_per_block = not self._depthwise and bool(blocks) and bool(
            (plan.output_index >= 0).all()
        )

    def __call__(self, inputs, kernels, bias=None, *, strides, padding, dilation_rate,
                 data_format):
        """The layer's convolution plus ``bias`` (no activation).

        Args:
            inputs: the layer's input, in ``data_format``.
            kernels: ``kernel_size + (len(plan.kernel_numbers),)``, the
                blocks' kernels, concatenated.
            bias: ``None``, or one value per output channel.
            strides, padding, dilation_rate, data_format: as for
                :func:`channelconv._ops.convolve`.
        """
        x, conv_args = channels_last(
            inputs, self.kernel_size, strides, padding, dilation_rate, data_format
        )
        if not self.plan.blocks:  # nothing live: zeros of the output's shape
            zero = ops.zeros(self.kernel_size + (1, 1), dtype=x.dtype)
            outputs = [routing.conv(x[..., :1], zero, **conv_args)]
        else:
            parts = _split(self._select(x), self._reads)
            weights = _split(kernels, self._kernels)
            outputs = [
                self._convolve(part, weight, block, conv_args)
                for part, weight, block in zip(parts, weights, self.plan.blocks)
            ]
        if bias is not None and self._bias_per_block:
            outputs = [
                add_bias(y, ops.take(bias, list(block.filters)))
                for y, block in zip(outputs, self.plan.blocks)
            ]
        outputs = self._place(*outputs)
        if bias is not None and not self._bias_per_block:
            outputs = add_bias(outputs, bias)
        return routing.from_channels_last(outputs, data_format)

    def _convolve(self, x, kernel, block, conv_args):
        kernel = ops.reshape(kernel, self.kernel_size + (len(block.channels), block.width))
        if self._depthwise:
            return routing.depthwise_conv(x, kernel, **conv_args)
        return routing.conv(x, kernel, **conv_args)


def _split(values, sizes):
    """``values`` split along the last axis into parts of ``sizes``."""
    if len(sizes) == 1:
        return [values]
    return ops.split(values, np.cumsum(sizes)[:-1].tolist(), axis=-1)
