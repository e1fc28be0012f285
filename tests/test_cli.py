"""The ``channelconv`` command: help, usage errors, ``reproduce`` and ``demo``.

Most tests call ``main(argv)`` in-process; one runs the installed entry
point in a subprocess. Demo runs use tiny settings; their claims (frozen
kernels exactly zero in the saved file, loss decreased, the file reloads)
are checked here independently of what the demo printed about them. Every
command but ``reproduce`` runs on every Keras backend; ``reproduce`` runs
the answer's TensorFlow code, and on another backend says so (exit 2).
"""

import argparse
import functools
import os
import pathlib
import re
import shutil
import subprocess

import keras
import numpy as np
import pytest

from channelconv.apps import cli, demo, prune_demo
from channelconv.mask import random_frozen_mask
from harness import BACKEND

TINY = ["--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "8", "--image-size", "10"]


def _usage_error(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.once
def test_installed_entry_point_help():
    exe = shutil.which("channelconv")
    assert exe, "the console script `channelconv` is not installed"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: channelconv")
    assert "reproduce" in result.stdout and "demo" in result.stdout


@pytest.mark.once
def test_installed_entry_point_unwritable_output_is_one_line(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [shutil.which("channelconv") or "channelconv", "demo", "--output", "/nonexistent/dir/m.keras"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    # TensorFlow may log start-up lines of its own before ours; ours is last.
    assert result.stderr.strip().splitlines()[-1] == (
        "channelconv demo: error: argument --output: directory "
        "'/nonexistent/dir' does not exist (see 'channelconv demo --help')"
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["demo", "--help"], ["reproduce", "--help"], ["prune-demo", "--help"]],
    ids=["top", "demo", "reproduce", "prune-demo"],
)
def test_help_exits_zero(capsys, argv):
    code, out, _ = _usage_error(capsys, argv)
    assert code == 0
    assert out.startswith("usage: channelconv")


def test_demo_help_lists_every_option(capsys):
    _, out, _ = _usage_error(capsys, ["demo", "--help"])
    for option in (
        "--frozen", "--frozen-count", "--reduction", "--implementation", "--epochs",
        "--steps-per-epoch", "--batch-size", "--image-size", "--kernel-size",
        "--learning-rate", "--seed", "--output", "--verbose",
    ):
        assert option + " " in out


# --- docs/cli.md against the parser ---------------------------------------------

CLI_DOC = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()


def _subparsers():
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, commands.choices


def _one_line(text):
    return " ".join(text.split())


def test_cli_doc_usage_lines_are_the_parsers():
    """The first text block of docs/cli.md: one usage per command (continued
    on indented lines), each the parser's usage without ``usage: ``."""
    block = re.search(r"```text\n(.*?)```", CLI_DOC, re.S).group(1)
    documented = [_one_line(u) for u in re.split(r"\n(?=\S)", block.strip())]
    parser, commands = _subparsers()
    expected = [_one_line(p.format_usage()).removeprefix("usage: ")
                for p in [parser, *commands.values()]]
    assert documented == expected


@pytest.mark.parametrize("command", ["reproduce", "demo"])
def test_cli_doc_option_tables_are_the_parsers(command):
    """The options table of each command's section in docs/cli.md lists the
    parser's options, each as its usage shows it, with the parser's default
    (where the parser has one)."""
    section = re.search(rf"^## `channelconv {command}`\n(.*?)(?=^## |\Z)", CLI_DOC, re.S | re.M)
    rows = re.findall(r"^\| `(--[^`]+)` \| ([^|]+) \|", section.group(1), re.M)
    _, commands = _subparsers()
    subparser = commands[command]
    actions = {a.option_strings[0]: a for a in subparser._actions
               if a.option_strings and a.option_strings[0] != "-h"}
    assert [option.split()[0] for option, _ in rows] == list(actions)
    usage = _one_line(subparser.format_usage())
    for option, default in rows:
        assert f"[{option}]" in usage or f"[{option} |" in usage or f"| {option}]" in usage, option
        value = actions[option.split()[0]].default
        if value is not None:
            assert default.split()[0].strip("`") == str(value), option


USAGE_ERRORS = [
    ([], r"^channelconv: error: the following arguments are required: "
         r"\{reproduce,demo,prune-demo\}"),
    (["train"], r"^channelconv: error: argument \{reproduce,demo,prune-demo\}: invalid choice: "
                r"'train'"),
    (["reproduce", "--seed", "-1"], r"argument --seed: expected an integer >= 0, received -1"),
    (["demo", "--epochs", "0"], r"argument --epochs: expected an integer >= 1, received 0"),
    (["demo", "--epochs", "two"], r"argument --epochs: expected an integer >= 1, received 'two'"),
    (["demo", "--steps-per-epoch", "0"], r"argument --steps-per-epoch: expected an integer >= 1"),
    (["demo", "--batch-size", "0"], r"argument --batch-size: expected an integer >= 1"),
    (["demo", "--learning-rate", "0"], r"argument --learning-rate: expected a positive number, received '0'"),
    (["demo", "--learning-rate", "nan"], r"argument --learning-rate: expected a positive number"),
    (["demo", "--reduction", "max"], r"argument --reduction: invalid choice: 'max'"),
    (["demo", "--implementation", "loop"], r"argument --implementation: invalid choice: 'loop'"),
    (["demo", "--verbose", "3"], r"argument --verbose: invalid choice: 3"),
    (["demo", "--frozen", "0-1"], r"argument --frozen: expected comma-separated CHANNEL:FILTER pairs such as '0:0,0:1', received '0-1'"),
    (["demo", "--frozen", "3:0"], r"argument --frozen: A pair in `frozen` names input channel 3, but the input has 3 channels"),
    (["demo", "--frozen", "0:16"], r"argument --frozen: A pair in `frozen` names filter 16, but the layer has filters=16"),
    (["demo", "--frozen", "0:1,0:1"], r"argument --frozen: .*\(0, 1\) twice"),
    (["demo", "--frozen-count", "49"], r"argument --frozen-count: `count` must be between 0 and in_channels \* filters = 48\. Received: count=49"),
    (["demo", "--frozen", "0:1", "--frozen-count", "2"], r"argument --frozen-count: not allowed with argument --frozen"),
    (["demo", "--image-size", "6"], r"argument --image-size: three 3x3 valid convolutions need images of at least 7x7, received 6"),
    (["demo", "--output", "/nonexistent/dir/m.keras"], r"argument --output: directory '/nonexistent/dir' does not exist"),
    (["demo", "--output", "model.h5"], r"argument --output: the file name must end in \.keras, received 'model\.h5'"),
]


@pytest.mark.parametrize(
    "argv, message", USAGE_ERRORS, ids=[" ".join(a) or "no-command" for a, _ in USAGE_ERRORS]
)
def test_usage_errors_are_one_line_exit_2(capsys, argv, message):
    code, out, err = _usage_error(capsys, argv)
    assert code == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert re.search(message, err), err
    prog = "channelconv demo" if argv[:1] == ["demo"] else (
        "channelconv reproduce" if argv[:1] == ["reproduce"] else "channelconv")
    assert err.startswith(f"{prog}: error: ")
    assert err.rstrip().endswith(f"(see '{prog} --help')")


@pytest.mark.parametrize("kind", ["a directory", "parent is a file"])
def test_output_paths_that_cannot_be_written(capsys, tmp_path, kind):
    if kind == "a directory":
        path = tmp_path / "dir.keras"
        path.mkdir()
        message = "is a directory"
    else:
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "m.keras"
        message = "is not a directory"
    code, _, err = _usage_error(capsys, ["demo", "--output", str(path)])
    assert code == 2 and err.count("\n") == 1
    assert "argument --output: " in err and message in err


# --- reproduce ---------------------------------------------------------------


@pytest.mark.tensorflow
def test_reproduce_agrees_and_shows_the_defects(capsys):
    assert cli.main(["reproduce"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "TypeError: Missing required positional argument" in out
    # Both summaries, side by side, with the answer's counts.
    summary_rows = [line for line in out.splitlines() if "Total params: 432" in line]
    assert len(summary_rows) == 1 and summary_rows[0].count("Total params: 432") == 2
    assert "(AnswerConv2D)" in out and "(ChannelConv2D)" in out
    for name in ("the answer's published summary", "AnswerConv2D", "ChannelConv2D (concat)"):
        assert re.search(rf"{re.escape(name)}\s+432\s+387\s+45$", out, re.M)
    assert re.search(r"c1_2\s+\(0,5\)-\(0,15\)\s+11\s+None -> never trains", out)
    assert "non-zero gradient for 43/43 kernels" in out
    for reduction, shape in (("sum", "(2, 6, 6, 16)"), ("concat", "(2, 6, 6, 48)")):
        for implementation in ("fused", "per_channel"):
            assert re.search(
                rf"^\s+{reduction}\s+{implementation}\s+{re.escape(shape)}.*ok$", out, re.M
            )
    assert "FAILED" not in out
    assert out.rstrip().endswith("All 15 checks agree.")


@pytest.mark.tensorflow
def test_reproduce_exits_1_when_a_finding_does_not_hold(capsys, monkeypatch):
    from channelconv.apps import reference

    # As if a TensorFlow version gave tf.nn.conv2d a default for `strides`.
    monkeypatch.setattr(reference, "run_answer_as_written", lambda: None)
    assert cli.main(["reproduce"]) == 1
    out, err = capsys.readouterr()
    assert "it ran without error" in out
    assert err == (
        "channelconv reproduce: 1 of 15 checks failed: the answer as written "
        "raises TypeError (tf.nn.conv2d needs strides)\n"
    )


@pytest.mark.skipif(BACKEND == "tensorflow", reason="about the other Keras backends")
def test_reproduce_on_another_backend_is_a_one_line_usage_error(capsys):
    assert cli.main(["reproduce"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "channelconv reproduce: channelconv.apps.reference (the answer's code, written "
        f"with tf.nn.conv2d) runs on the TensorFlow backend only; Keras runs on '{BACKEND}' "
        "(KERAS_BACKEND). Set KERAS_BACKEND=tensorflow to use it. The channelconv "
        "layers, conversions and pruning run on every backend.\n"
    )


# --- demo ------------------------------------------------------------------


def _losses(out):
    match = re.search(r"initial (\d+\.\d+) -> final (\d+\.\d+)", out)
    assert match, out
    return float(match.group(1)), float(match.group(2))


DEMO_CASES = [
    ([], [(0, f) for f in range(5)], "sum", 48 - 5),
    (
        ["--frozen", "1:2,2:15,0:0", "--reduction", "concat"],
        [(0, 0), (1, 2), (2, 15)],
        "concat",
        48 - 3,
    ),
    (["--frozen-count", "7", "--seed", "3", "--implementation", "per_channel"], None, "sum", 48 - 7),
    (["--implementation", "sparse", "--reduction", "concat"], [(0, f) for f in range(5)],
     "concat", 48 - 5),
]


@pytest.mark.parametrize(
    "extra, pairs, reduction, n_trainable",
    DEMO_CASES,
    ids=["default-frozen", "explicit-pairs-concat", "random-count-per-channel",
         "sparse-concat"],
)
def test_demo_trains_saves_and_keeps_frozen_kernels_zero(
    capsys, tmp_path, extra, pairs, reduction, n_trainable
):
    path = tmp_path / "m.keras"
    assert cli.main(["demo", *TINY, "--verbose", "0", "--output", str(path), *extra]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    initial, final = _losses(out)
    assert final < initial
    assert "All checks passed." in out
    plot = tmp_path / "m_conv1_mask.png"
    assert f"Kernel-mask plot of conv1 saved to {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = keras.saving.load_model(path)
    conv1 = model.get_layer("conv1")
    mask = conv1.frozen_mask
    if pairs is None:
        expected = random_frozen_mask(3, 16, 7, seed=3)
    else:
        expected = np.zeros((3, 16), bool)
        expected[tuple(zip(*pairs))] = True
    assert np.array_equal(mask, expected)
    assert conv1.reduction == reduction
    kernel = keras.ops.convert_to_numpy(conv1.kernel)
    assert np.array_equal(kernel[:, :, mask], np.zeros((3, 3, int(mask.sum())), "float32"))
    assert kernel[:, :, ~mask].reshape(9, -1).any(axis=0).all()  # every trainable kernel non-zero
    assert conv1.trainable_kernels.shape == (3, 3, n_trainable)
    out_channels = 48 if reduction == "concat" else 16
    row = re.search(rf"^\s+conv1 \({reduction}\)\s+3 -> {out_channels}\s+48\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", out, re.M)
    assert row, out
    trainable = n_trainable * 9 + out_channels  # frozen at zero: no parameters
    assert [int(v) for v in row.groups()] == [48 - n_trainable, trainable, 0, trainable]


def test_demo_shows_the_progress_bar(capsys, tmp_path):
    argv = ["demo", *TINY, "--epochs", "2", "--output", str(tmp_path / "m.keras")]
    assert cli.main(argv) == 0
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert re.search(r"3/3 ━+ .*loss: \d", out)


def test_demo_exits_1_when_a_check_fails(capsys, tmp_path, monkeypatch):
    # As if an optimizer had moved a frozen kernel.
    monkeypatch.setattr(demo, "frozen_values", lambda layer: np.ones((3, 3, 5), "float32"))
    assert cli.main(["demo", *TINY, "--verbose", "0", "--output", str(tmp_path / "m.keras")]) == 1
    out, err = capsys.readouterr()
    assert "all 5 exactly zero (np.array_equal): NO" in out
    assert err == (
        "channelconv demo: 2 of 6 checks failed: a frozen kernel is not zero after "
        "training; a frozen kernel is not zero in the reloaded model\n"
    )


def test_demo_save_failure_is_one_line_exit_1(capsys, tmp_path, monkeypatch):
    def refuse(self, filepath, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(filepath))

    monkeypatch.setattr(keras.Model, "save", refuse)
    path = tmp_path / "m.keras"
    assert cli.main(["demo", *TINY, "--verbose", "0", "--output", str(path)]) == 1
    _, err = capsys.readouterr()
    assert err == (
        f"channelconv demo: error: cannot save the model to '{path}': "
        f"[Errno 13] Permission denied: '{path}'\n"
    )


# --- prune-demo ----------------------------------------------------------------------


@pytest.mark.skipif(
    BACKEND == "jax",
    reason="CI time: it compiles 10 models on JAX (44 s); pruning and condense on JAX "
    "are tested in test_pruning.py and test_distribute.py",
)
def test_prune_demo_reduced_runs_its_checks_and_plots(capsys, tmp_path, monkeypatch):
    """The reduced study: one seed, one epoch each; the checks hold, the table
    has every case with the condensed trainable weights of c2 and c3 (16 x 32
    and 32 x 32 kernels of 3 x 3: 13,824 dense), and the plot is written."""
    # One round of the inference timing instead of 30 (unchecked here; half
    # the run's time on JAX and PyTorch).
    monkeypatch.setattr(prune_demo, "_inference_ms",
                        functools.partial(prune_demo._inference_ms, rounds=1))
    plot = tmp_path / "p.png"
    argv = ["prune-demo", "--seeds", "1", "--dense-epochs", "1", "--finetune-epochs", "1",
            "--verbose", "0", "--plot", str(plot)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "%" in line]
    assert len(rows) == 1 + 4 * 2 + 1
    weights = {50: 13824 // 2, 75: 13824 // 4}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        sparsity = int(cells[1].rstrip("%"))
        assert int(cells[3]) == weights.get(sparsity, 13824), row
    assert out.count(": ok") == 3 and out.rstrip().endswith("All checks passed.")
    assert plot.stat().st_size > 0
