"""The Python blocks of the README and the docs run as written and do what the
text around them says.

Each block is executed; its check then asserts the page's claims about it in
the namespace the block leaves behind, against references computed here
(Keras's own layers, NumPy's convolution, parameter counts from the shapes).
The blocks of ``docs/pretrained.md`` and ``docs/scaling.md`` are excerpts
of scripts that run in ``test_convert.py`` / ``test_distribute.py``, which
also check that the blocks appear there verbatim.
"""

import contextlib
import io
import math
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from channelconv import ChannelConv2D, to_keras_layer
from harness import numpy_conv, to_numpy

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUESTION_FROZEN = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]
KERNEL_WEIGHTS = 3 * 3  # weights in one 3x3 kernel


def python_blocks(page):
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)


def run_block(page, index):
    """Executes block ``index`` of ``page``; returns (namespace, stdout)."""
    namespace, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(python_blocks(page)[index], str(ROOT / page), "exec"), namespace)
    return namespace, out.getvalue()


def _size(variables):
    return sum(math.prod(v.shape) for v in variables)


def _assert_counts(layer, reference, n_frozen):
    """``reference``'s parameters but ``n_frozen`` kernels: non-trainable where
    stored, no parameters where zero by construction."""
    frozen = n_frozen * KERNEL_WEIGHTS
    stored = frozen if layer.store_frozen else 0
    assert layer.count_params() == reference.count_params() - frozen + stored
    assert _size(layer.non_trainable_weights) == stored
    assert _size(layer.trainable_weights) == reference.count_params() - frozen


def _built(layer, channels=3):
    layer.build((None,) * (layer.rank + 1) + (channels,))
    return layer


def _one_sgd_step(layer, x, rng):
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    target = rng.normal(size=model.output_shape[1:]).astype("float32")
    model.fit(x, np.broadcast_to(target, (len(x),) + target.shape), verbose=0)


def check_readme_quick_start(ns, out):
    """``# 403: 43 kernels x 9 + 16 biases`` and ``# False: still exactly zero``;
    "not Conv2D's 448"."""
    layer = ns["layer"]
    assert out.split() == ["403", "False"]
    dense = _built(keras.layers.Conv2D(16, 3))
    _assert_counts(layer, dense, n_frozen=5)
    assert (layer.count_params(), dense.count_params()) == (403, 448)
    kernel = to_numpy(layer.kernel)
    assert np.array_equal(kernel[:, :, 0, :5], np.zeros((3, 3, 5), "float32"))
    assert np.all(kernel[:, :, 0, 5:] != 0)  # not zero everywhere


def check_semantics_sum_is_conv2d(ns, out):
    """The block asserts sum == Conv2D itself. The text adds: output shape
    (2, 6, 6, 16); 403 parameters (448 = 403 + 45 stored); ``fused`` and
    ``per_channel`` differ by float rounding only, about 1e-6; the reverse,
    ``assign_kernel(dense.kernel)``, gives a layer that stores its frozen
    kernels the values given, and they keep them; a layer keeping them at
    zero refuses."""
    layer, dense, x, y = ns["layer"], ns["dense"], ns["x"], ns["y"]
    assert tuple(y.shape) == (2, 6, 6, 16)
    _assert_counts(layer, dense, n_frozen=2)

    per_channel = ChannelConv2D(
        16, 3, frozen=[(0, 0), (0, 1)], implementation="per_channel"
    )
    per_channel.build(x.shape)
    per_channel.set_weights(layer.get_weights())
    difference = np.abs(to_numpy(per_channel(x)) - to_numpy(y)).max()
    assert difference <= 2e-6

    dense_kernel = to_numpy(dense.kernel)
    dense_kernel[:, :, 0, :2] = np.random.default_rng(0).normal(size=(3, 3, 2))
    with pytest.raises(ValueError, match="store_frozen=True"):
        layer.assign_kernel(dense_kernel)
    layer = ChannelConv2D(16, 3, frozen=[(0, 0), (0, 1)], store_frozen=True)
    layer.build(x.shape)
    _assert_counts(layer, dense, n_frozen=2)
    assert layer.count_params() == dense.count_params()
    layer.assign_kernel(dense_kernel)
    assert np.array_equal(to_numpy(layer.kernel), dense_kernel)
    _one_sgd_step(layer, x, np.random.default_rng(1))
    trained = to_numpy(layer.kernel)
    assert np.array_equal(trained[:, :, 0, :2], dense_kernel[:, :, 0, :2])
    moved = np.any(trained != dense_kernel, axis=(0, 1))
    assert moved.sum() == 3 * 16 - 2 and not moved[0, :2].any()


def check_reproduction_answer_done_right(ns, out):
    """storing its frozen zeros, "it reports the same counts" (432 / 387 / 45,
    a bias-free ``DepthwiseConv2D(3, depth_multiplier=16)``); by default
    "387 parameters, all trainable"; "every one of its 43
    trainable kernels receives a gradient and moves, and the 5 frozen ones
    stay exactly zero"."""
    layer = _built(ns["layer"])
    reference = _built(
        keras.layers.DepthwiseConv2D(3, depth_multiplier=16, use_bias=False)
    )
    _assert_counts(layer, reference, n_frozen=5)
    assert (layer.count_params(), _size(layer.trainable_weights)) == (432, 387)
    default = _built(ChannelConv2D(16, 3, frozen=QUESTION_FROZEN, reduction="concat",
                                   use_bias=False))
    assert (default.count_params(), _size(default.trainable_weights)) == (387, 387)
    rng = np.random.default_rng(0)
    _one_sgd_step(layer, rng.normal(size=(4, 8, 8, 3)).astype("float32"), rng)
    kernel = to_numpy(layer.kernel)
    moved = np.any(kernel != 0, axis=(0, 1))  # it starts at zero
    expected = np.ones((3, 16), bool)
    expected[0, :5] = False
    assert np.array_equal(moved, expected)


def check_reproduction_question_model(ns, out):
    """"The first layer has 403 parameters, all trainable: the 448 of
    Conv2D(16, 3) on 3 channels less the 45 of the 5 kernels frozen at zero";
    "its output equals Conv2D(16, 3) with kernel layer.kernel"."""
    first = ns["model"].layers[1]
    dense = _built(keras.layers.Conv2D(16, 3))
    _assert_counts(first, dense, n_frozen=5)
    assert (first.count_params(), _size(first.trainable_weights)) == (403, 403)
    assert dense.count_params() == 448 and first.frozen_kernels is None
    dense.set_weights([to_numpy(first.kernel), to_numpy(first.bias)])
    x = np.random.default_rng(0).normal(size=(2, 9, 7, 3)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(first(x)), to_numpy(dense(x)), rtol=1e-5, atol=1e-5
    )
    assert np.array_equal(
        to_numpy(first.kernel)[:, :, 0, :5], np.zeros((3, 3, 5), "float32")
    )


def check_ranks_causal_conv1d(ns, out):
    """"(2, 16, 8): as long as the input"; output step t depends on input
    steps up to t; "Of the 80 parameters of Conv1D(8, 3) on 3 channels the
    layer holds 74, all trainable; the two frozen kernels of 3 taps are
    exactly zero"."""
    layer, x, y = ns["layer"], ns["x"], ns["y"]
    assert out == "(2, 16, 8)\n"
    assert _built(keras.layers.Conv1D(8, 3)).count_params() == 80
    assert layer.count_params() == _size(layer.trainable_weights) == 74
    kernel = to_numpy(layer.kernel)
    assert not kernel[:, 0, 0].any() and not kernel[:, 1, 5].any()
    # NumPy's causal convolution (zeros padded at the start only) ...
    bias = to_numpy(layer.bias)
    expected = numpy_conv(x, kernel, padding="causal", dilation_rate=(2,), bias=bias)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # ... so a change at one step moves outputs from that step on only.
    for step in (0, 7, 15):
        changed = x.copy()
        changed[:, step] += 1.0
        moved = np.any(to_numpy(layer(changed)) != y, axis=(0, 2))
        assert not moved[:step].any() and moved[step]


def check_ranks_concat3d_is_grouped_conv3d(ns, out):
    """"(1, 4, 5, 6, 6)", "Conv3D 6 3"; "Output channel c * 2 + f is input
    channel c convolved with kernel (c, f); channel 1 ... is the bias
    alone"; the Conv3D holds "layer.kernel reshaped to (3, 3, 3, 1, 6)"."""
    layer, x, y, plain = ns["layer"], ns["x"], ns["y"], ns["plain"]
    assert out.splitlines() == ["(1, 4, 5, 6, 6)", "Conv3D 6 3"]
    kernel, bias = to_numpy(layer.kernel), to_numpy(layer.bias)
    np.testing.assert_allclose(
        y, numpy_conv(x, kernel, "concat", bias=bias), rtol=1e-5, atol=1e-5
    )
    assert np.array_equal(y[..., 1], np.full(y.shape[:-1], bias[1]))
    assert plain.kernel_size == (3, 3, 3)
    assert np.array_equal(to_numpy(plain.kernel), kernel.reshape(3, 3, 3, 1, 6))


def _block_diagonal(in_channels, filters, groups):
    """True where input channel and filter are in the same group."""
    return np.array([
        [c * groups // in_channels == f * groups // filters for f in range(filters)]
        for c in range(in_channels)
    ])


def check_ranks_grouped_frozen_mask(ns, out):
    """The printed mask is the one shown, and it is every kernel across
    groups of Keras's groups=2 (channels 0-1 with filters 0-2, channels 2-3
    with filters 3-5); the layer with it frozen is a convolution with those
    kernels at zero; Keras's grouped kernel is (3, 2, 6)."""
    block = python_blocks("docs/ranks.md")[2]
    shown = [line[2:] for line in block.splitlines() if re.match(r"# +\[", line)]
    assert out.splitlines() == shown
    live = _block_diagonal(4, 6, 2)
    assert out == f"{(~live).astype(int)}\n"
    layer, x, y = ns["layer"], ns["x"], ns["y"]
    kernel = to_numpy(layer.kernel)
    assert not kernel[..., ~live].any() and np.all(np.any(kernel != 0, axis=0)[live])
    expected = numpy_conv(x, kernel, bias=to_numpy(layer.bias))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert tuple(ns["grouped"].kernel.shape) == (3, 2, 6)


def check_ranks_grouped_conv2d_and_back(ns, out):
    """"152 152 152"; "Conv2D 4 (3, 3, 2, 8)"; "1"; the channel layer
    computes with the full kernels (those of Conv2D(8, 3)'s 584 parameters)
    and holds 152 parameters, all trainable, "exactly the grouped layer's";
    "the 48 kernels across groups (432 values) are frozen at zero by
    construction", still zero after fine-tuning; strip gives the grouped
    layer "with the trained values"."""
    assert out.splitlines() == ["152 152 152", "Conv2D 4 (3, 3, 2, 8)", "1"]
    layer, grouped, plain, x = ns["layer"], ns["grouped"], ns["plain"], ns["x"]
    assert _built(keras.layers.Conv2D(8, 3), 8).count_params() == 584
    assert layer.count_params() == _size(layer.trainable_weights) == grouped.count_params()
    live = _block_diagonal(8, 8, 4)
    kernel = to_numpy(layer.kernel)
    assert kernel.shape == (3, 3, 8, 8) and layer.frozen_kernels is None
    assert (~live).sum() * KERNEL_WEIGHTS == 432
    assert not kernel[..., ~live].any()
    # Keras's grouped kernel: for filter f, its group's two input channels.
    expected = np.stack(
        [kernel[..., 2 * (f // 2):2 * (f // 2) + 2, f] for f in range(8)], axis=-1
    )
    assert np.array_equal(to_numpy(plain.kernel), expected)
    assert not np.array_equal(to_numpy(plain.kernel), to_numpy(grouped.kernel))  # trained
    np.testing.assert_allclose(
        to_numpy(ns["deploy"](x)), numpy_conv(x, kernel, bias=to_numpy(layer.bias)),
        rtol=1e-4, atol=1e-4,
    )
    pruned = to_keras_layer(ns["pruned"])
    assert type(pruned) is keras.layers.Conv2D and tuple(pruned.kernel.shape) == (3, 3, 8, 8)


def check_performance_sparse(ns, out):
    """"sparse"; the plan printed is 4 convolutions over the 4 groups, a
    quarter of the dense multiply-adds; the output is the convolution with
    the layer's kernel (Keras's Conv2D), whose kernels across groups are 0."""
    lines = out.splitlines()
    assert lines[0] == "sparse"
    assert lines[1].startswith("SparsePlan(sum, 256 -> 256: 4 convolutions, 0.250 of the dense")
    assert lines[2:] == [f"  conv channels {64 * g}-{64 * g + 63} -> filters {64 * g}-{64 * g + 63}"
                         for g in range(4)]
    layer, x, y = ns["layer"], ns["x"], ns["y"]
    kernel = to_numpy(layer.kernel)
    assert not kernel[..., ~_block_diagonal(256, 256, 4)].any()
    conv = _built(keras.layers.Conv2D(256, 3, padding="same"), 256)
    conv.set_weights([kernel, to_numpy(layer.bias)])
    np.testing.assert_allclose(to_numpy(y), to_numpy(conv(x)), rtol=1e-4, atol=1e-4)


def check_pruning_workflow(ns, out):
    """The printed counts; the pruned kernels are zero in the effective
    kernels; condense and strip compute what the pruned model computes."""
    assert out.splitlines() == [
        "c1 96 of 128 kernels pruned; 288 trainable kernel weights",
        "c2 192 of 256 kernels pruned; 576 trainable kernel weights",
    ]
    model, small, plain, x = ns["model"], ns["small"], ns["plain"], ns["x"]
    for name in ("c1", "c2"):
        layer = model.get_layer(name)
        pruned = to_numpy(layer.pruned_kernels) > 0
        assert not to_numpy(layer.kernel)[..., pruned].any()
        np.testing.assert_array_equal(small.get_layer(name).frozen_mask, pruned)
    expected = to_numpy(model(x))
    np.testing.assert_allclose(to_numpy(small(x)), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(plain(x)), expected, rtol=1e-4, atol=1e-4)


def check_readme_pruning(ns, out):
    """"0.75": a quarter of the kernels live, as 4 groups each keeping the
    same number of input channels; condense and strip compute the same."""
    assert out == "0.75\n"
    model, small, plain = ns["model"], ns["small"], ns["plain"]
    mask = small.get_layer("conv").frozen_mask
    for block in np.split(~mask, 4, axis=1):  # each group: 2 of 8 channels live
        assert (block.all(axis=1) | ~block.any(axis=1)).all() and block.any(axis=1).sum() == 2
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 8)).astype("float32")
    np.testing.assert_allclose(to_numpy(small(x)), to_numpy(model(x)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(to_numpy(plain(x)), to_numpy(model(x)), rtol=1e-4, atol=1e-4)


BLOCKS = [
    ("README.md", 0, check_readme_quick_start),
    ("README.md", 1, check_readme_pruning),
    ("docs/pruning.md", 0, check_pruning_workflow),
    ("docs/performance.md", 0, check_performance_sparse),
    ("docs/semantics.md", 0, check_semantics_sum_is_conv2d),
    ("docs/reproduction.md", 0, check_reproduction_answer_done_right),
    ("docs/reproduction.md", 1, check_reproduction_question_model),
    ("docs/ranks.md", 0, check_ranks_causal_conv1d),
    ("docs/ranks.md", 1, check_ranks_concat3d_is_grouped_conv3d),
    ("docs/ranks.md", 2, check_ranks_grouped_frozen_mask),
    ("docs/ranks.md", 3, check_ranks_grouped_conv2d_and_back),
]


@pytest.mark.parametrize(
    "page, index, check",
    [
        pytest.param(page, index, check, id=f"{page}[{index}]")
        for page, index, check in BLOCKS
    ],
)
def test_doc_block_runs_and_does_what_the_text_says(page, index, check):
    namespace, out = run_block(page, index)
    check(namespace, out)


def test_every_executable_doc_block_has_a_check():
    """New blocks on these pages need a row in ``BLOCKS``."""
    pages = {page for page, _, _ in BLOCKS}
    for page in pages:
        checked = sorted(index for p, index, _ in BLOCKS if p == page)
        assert checked == list(range(len(python_blocks(page)))), page
    assert len(python_blocks("docs/cli.md")) == 1  # run by the test below


@pytest.mark.once
def test_cli_doc_block_loads_a_saved_model_in_a_fresh_process(tmp_path):
    """docs/cli.md: the saved model "loads anywhere channelconv is importable
    (importing it registers ChannelConv2D with Keras)"."""
    inputs = keras.Input((8, 8, 3))
    layer = ChannelConv2D(4, 3, frozen=[(0, 1), (2, 3)], name="conv1")
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "channelconv_demo.keras")
    (block,) = python_blocks("docs/cli.md")
    script = block + (
        "conv1 = model.get_layer('conv1')\n"
        "print(type(conv1).__name__, conv1.frozen_mask.nonzero())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split(maxsplit=1) == [
        "ChannelConv2D", f"{layer.frozen_mask.nonzero()}\n"
    ]
