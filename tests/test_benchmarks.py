"""Smoke tests of the scripts in ``benchmarks/``, on every Keras backend.

``bench_conv.py --smoke`` (every rank on TensorFlow, 2-D on the others) and
``bench_sparse.py --smoke`` run on the backend of the pass, with TensorFlow
made unimportable on JAX and PyTorch (``import tensorflow`` raises
ImportError: they must not need it);
the tests check the files they write, the records (the optimizer-state
figures against sizes computed here from the layer shapes and the frozen
mask) and the steps of ``benchlib.steps`` against NumPy. Tests of the
TensorFlow-only scripts (routing, networks) and of TensorFlow's oneDNN
record carry the marker ``tensorflow``; the ``--help`` run of every script
is marked ``once`` (tests/conftest.py).
"""

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import os
import pathlib
import subprocess
import sys

import keras
import matplotlib.image
import numpy as np
import pytest

from channelconv.mask import random_frozen_mask

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # benchlib, as the scripts import it

import benchlib.environment  # noqa: E402
from benchlib import cases  # noqa: E402
from benchlib.environment import backend_title, setting_name, versions_text  # noqa: E402
from benchlib.report import per_channel_scaling, target_checks  # noqa: E402
from benchlib.steps import jit_settings, make_step, tensor  # noqa: E402

BACKEND = keras.backend.backend()
#: The one ``jit`` setting the smoke runs take here: TensorFlow's off (the
#: quicker), JAX's on, PyTorch's off.
JIT = jit_settings((False, True))[0]
K, C, F = 3, 3, 16  # the smoke configuration: 3x3 kernels, 3 channels, 16 filters
N_FROZEN = round(0.1 * C * F)  # the script freezes 10%, seed 0
FLOAT32 = 4
VERSIONS = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


def load(name):
    """The script ``benchmarks/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def without_tensorflow():
    """On JAX and PyTorch, ``import tensorflow`` raises ImportError inside."""
    with pytest.MonkeyPatch.context() as patch:
        if BACKEND != "tensorflow":
            patch.setitem(sys.modules, "tensorflow", None)
        yield


@pytest.fixture(scope="module")
def bench():
    return load("bench_conv")


#: The ranks of the smoke runs: every rank on TensorFlow; on JAX and PyTorch,
#: whose step classes (benchlib.steps) are the same at every rank and whose
#: layers are tested at every rank by the rest of the suite, 2-D alone.
SMOKE_RANKS = [1, 2, 3] if BACKEND == "tensorflow" else [2]


@pytest.fixture(scope="module", params=SMOKE_RANKS, ids=[f"{r}d" for r in SMOKE_RANKS])
def tiny_run(bench, tmp_path_factory, request):
    """``bench_conv.py --smoke`` at each rank of :data:`SMOKE_RANKS`, at the
    backend's one ``--jit``: its output directory, result (the JSON),
    progress bar and stdout."""
    out = tmp_path_factory.mktemp("bench")
    progress, stdout = io.StringIO(), io.StringIO()
    argv = ["--smoke", "--rank", str(request.param), "--jit", "on" if JIT else "off",
            "--out", str(out)]
    bar = bench.Progress
    with without_tensorflow(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "Progress", lambda total, stream: bar(total, progress))
        with contextlib.redirect_stdout(stdout):
            bench.main(argv)
    result = json.loads((out / f"{stem_of(request.param)}.json").read_text())
    return out, result, progress.getvalue(), stdout.getvalue()


def stem_of(rank):
    """The file stem of ``bench_conv.py --smoke --rank <rank>`` on this backend."""
    name = "bench_conv" if rank == 2 else f"bench_conv{rank}d"
    return f"{name}_smoke" + ("" if BACKEND == "tensorflow" else f"_{BACKEND}")


def rank_of(result):
    return result["plan"]["rank"]


def names(rank):
    """The variant names of a run at ``rank``, by reduction (baseline first)."""
    return {
        "sum": [f"Conv{rank}D", f"ChannelConv{rank}D fused", f"ChannelConv{rank}D per_channel",
                f"Conv{rank}D + mask constraint"],
        "concat": [f"DepthwiseConv{rank}D" if rank < 3 else "Conv3D groups=C",
                   f"ChannelConv{rank}D fused", f"ChannelConv{rank}D per_channel"],
    }


def records(result, **where):
    return [r for r in result["records"] if all(r[k] == v for k, v in where.items())]


# --- the files ------------------------------------------------------------------


def test_writes_json_markdown_and_png(tiny_run):
    out, result, _, _ = tiny_run
    stem = stem_of(rank_of(result))
    assert sorted(p.name for p in out.iterdir()) == [stem + e for e in (".json", ".md", ".png")]
    markdown = (out / f"{stem}.md").read_text()
    assert markdown.startswith(f"# ChannelConv{rank_of(result)}D benchmark{backend_title(result['environment'])}\n")
    image = matplotlib.image.imread(out / f"{stem}.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_outputs_name_backend_versions_cpu_cores_and_date(tiny_run):
    out, result, _, stdout = tiny_run
    with open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    markdown = (out / f"{stem_of(rank_of(result))}.md").read_text()
    env = result["environment"]
    versions = {p: importlib.metadata.version(p) for p in VERSIONS[BACKEND]}
    assert env["backend"] == BACKEND and env["keras"] == keras.__version__
    assert {p: env[p].split("+")[0] for p in versions} == {
        p: v.split("+")[0] for p, v in versions.items()}
    assert env["cpu"] == cpu
    for text in (versions_text(env), cpu, f"{env['cores']} cores", env["date"][:10]):
        assert text in markdown
    assert stdout.startswith(versions_text(env))
    assert env["cores"] >= 1 and len(result["load_before"]) == 3
    if BACKEND != "tensorflow":  # TensorFlow's own records, and the answer's layer
        assert "tensorflow" not in env and "onednn" not in env
        assert "is TensorFlow-only: not timed" in markdown
    if BACKEND == "torch":
        assert isinstance(env["torch_mkldnn"], bool) and env["torch_threads"] >= 1


@pytest.mark.tensorflow
def test_outputs_record_the_onednn_setting(tiny_run):
    from harness import onednn_enabled

    out, result, _, _ = tiny_run
    env = result["environment"]
    assert env["onednn"] is onednn_enabled()
    assert env["onednn_env"] == os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    state = "on" if env["onednn"] else "off"
    assert f"- oneDNN: {state} (" in (out / f"{stem_of(rank_of(result))}.md").read_text()


@pytest.mark.tensorflow
def test_onednn_setting_falls_back_to_the_environment(monkeypatch):
    def missing():
        raise ImportError("private API moved")

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    setting = benchlib.environment.onednn_setting(probe=missing)
    assert setting["onednn"] is False
    assert "TF_ENABLE_ONEDNN_OPTS only" in setting["onednn_source"]


def test_one_record_per_variant_mode_and_jit(tiny_run):
    """One record per variant and step; the answer's layer (TensorFlow code,
    2-D) on TensorFlow only; JAX's steps jit-compiled and traced once,
    PyTorch's eager."""
    _, result, progress, _ = tiny_run
    answer = cases.AnswerConv2D is not None and rank_of(result) == 2
    expected = names(rank_of(result))
    expected["concat"] += ["AnswerConv2D"] if answer else []
    for reduction, variants in expected.items():
        for mode in ("train", "infer"):
            got = records(result, reduction=reduction, mode=mode)
            assert sorted(r["variant"] for r in got) == sorted(variants)
            for r in got:
                assert r["jit_compile"] is JIT
                assert r["rounds"] == 2 and r["traces"] == (None if BACKEND == "torch" else 1)
                assert all(t > 0 for t in r["times_ms"])
    checks = {(c["reduction"], c["mode"]) for c in result["targets"]}
    assert len(result["targets"]) == 4 and checks == {
        (r, m) for r in ("sum", "concat") for m in ("train", "infer")}
    assert progress.rstrip().splitlines()[-1].startswith("[" + "#" * 24 + "]")


def test_ratios_pair_each_variant_with_its_baseline_round_by_round(tiny_run):
    """``ratio`` / ``extra_ms``: median over rounds of time / baseline time and
    time - baseline time, pairing round ``i`` with round ``i`` of the same
    group's baseline; recomputed here from the recorded ``times_ms``."""
    _, result, _, _ = tiny_run
    groups = {}
    for r in result["records"]:
        key = tuple(r[k] for k in ("reduction", "in_channels", "filters", "mode",
                                   "jit_compile"))
        groups.setdefault(key, []).append(r)
    assert len(groups) == 4  # {sum, concat} x {train, infer}
    for records_ in groups.values():
        baseline = names(rank_of(result))[records_[0]["reduction"]][0]
        (base,) = [r for r in records_ if r["variant"] == baseline]
        assert len(records_) >= 3
        for r in records_:
            assert r["baseline"] == base["variant"]
            n = min(len(r["times_ms"]), len(base["times_ms"]))
            times, base_times = np.array(r["times_ms"][:n]), np.array(base["times_ms"][:n])
            # times_ms is rounded to 1e-4 ms; ratio and extra_ms are not.
            rel = 1e-4 / min(times.min(), base_times.min())
            assert r["ratio"] == pytest.approx(np.median(times / base_times), rel=rel)
            assert r["extra_ms"] == pytest.approx(np.median(times - base_times), abs=2e-4)
            assert r["ratio_of_medians"] == pytest.approx(
                np.median(times) / np.median(base_times), rel=rel)


def test_times_the_kernel_assembly_of_each_shape(tiny_run):
    _, result, _, _ = tiny_run
    (assembly,) = result["assembly"]
    assert (assembly["in_channels"], assembly["filters"]) == (C, F)
    assert assembly["kernel_elements"] == K ** rank_of(result) * C * F
    assert np.isfinite([assembly["forward_ms"], assembly["forward_backward_ms"]]).all()


# --- optimizer state: computed here from the shapes and the mask ------------------

MASK = random_frozen_mask(C, F, N_FROZEN, seed=0)
STATE = [  # reduction, variant (names(rank) index, or the answer), trainable parameters
    ("sum", 0, lambda k: k * C * F + F),  # Conv{r}D
    ("sum", 1, lambda k: k * int((~MASK).sum()) + F),  # fused
    ("sum", 2, lambda k: k * int((~MASK).sum()) + F),  # per_channel
    ("sum", 3, lambda k: k * C * F + F),  # mask constraint: the full kernel
    ("concat", 0, lambda k: k * C * F + C * F),  # DepthwiseConv{r}D / grouped Conv3D
    ("concat", 1, lambda k: k * int((~MASK).sum()) + C * F),
    ("concat", 2, lambda k: k * int((~MASK).sum()) + C * F),
    # the answer (2-D only): 11 + 16 + 16 "trainable" 3x3 filters, no bias
    ("concat", "AnswerConv2D", lambda k: k * (11 + 16 + 16)),
]


@pytest.mark.parametrize("reduction,variant,params", STATE,
                         ids=[f"{r}-{v}" for r, v, _ in STATE])
def test_adam_state_is_two_float32_per_trainable_parameter(tiny_run, reduction, variant,
                                                           params):
    _, result, _, _ = tiny_run
    rank = rank_of(result)
    if variant == "AnswerConv2D" and (cases.AnswerConv2D is None or rank != 2):
        pytest.skip("channelconv.apps.reference.AnswerConv2D is 2-D and optional")
    name = variant if isinstance(variant, str) else names(rank)[reduction][variant]
    params = params(K**rank)  # kernel elements per (channel, filter) kernel
    assert MASK.sum() == N_FROZEN
    got = records(result, reduction=reduction, variant=name)
    assert len(got) == 2  # train and infer
    for r in got:
        assert r["n_frozen"] == N_FROZEN
        assert r["trainable_params"] == params
        assert r["optimizer_state_bytes"] == 2 * FLOAT32 * params


def test_mask_constraint_zeroes_exactly_the_frozen_kernels():
    kernel = np.random.default_rng(0).standard_normal((K, K, C, F)).astype("float32")
    constrained = keras.ops.convert_to_numpy(cases.KernelMask(~MASK)(kernel))
    assert np.array_equal(constrained[:, :, MASK], np.zeros((K, K, N_FROZEN), "float32"))
    assert np.array_equal(constrained[:, :, ~MASK], kernel[:, :, ~MASK])


# --- summaries --------------------------------------------------------------------

TARGETS = [  # reduction, mode, ratio, met
    ("sum", "train", 1.049, True),
    ("sum", "train", 1.051, False),
    ("sum", "infer", 1.029, True),
    ("sum", "infer", 1.031, False),
    ("concat", "train", 1.049, True),
    ("concat", "infer", 1.051, False),
]


@pytest.mark.parametrize("reduction,mode,ratio,met", TARGETS,
                         ids=[f"{r}-{m}-{x}" for r, m, x, _ in TARGETS])
def test_target_check(reduction, mode, ratio, met):
    record = dict(reduction=reduction, in_channels=3, filters=16, batch=2, mode=mode,
                  jit_compile=False, ratio=ratio, extra_ms=0.1, variant="ChannelConv2D fused")
    other = dict(record, variant="Conv2D", ratio=2.0)
    (check,) = target_checks([record, other])
    assert check["met"] is met


@pytest.mark.parametrize("exponent", [1.0, 2.0], ids=["linear", "quadratic"])
def test_per_channel_scaling_slope(exponent):
    rows = []
    for c in (3, 16, 64):
        for variant, scale in (("ChannelConv2D fused", 1.0), ("ChannelConv2D per_channel", 5.0)):
            ms = scale * c**exponent
            rows.append(dict(reduction="sum", filters=16, mode="train", jit_compile=False,
                             variant=variant, in_channels=c, ms_per_image=ms,
                             median_ms=ms, times_ms=[ms, ms]))
    (item,) = per_channel_scaling(rows)
    assert item["slope_per_channel"] == pytest.approx(exponent)
    assert item["per_channel_over_fused"] == pytest.approx([5.0, 5.0, 5.0])


def test_report_rewrites_the_markdown_and_png_of_a_run(tiny_run, bench, tmp_path):
    out, result, _, _ = tiny_run
    stem = stem_of(rank_of(result))
    (tmp_path / f"{stem}.json").write_text((out / f"{stem}.json").read_text())
    bench.main(["--report", str(tmp_path / f"{stem}.json")])
    assert (tmp_path / f"{stem}.md").read_text() == (out / f"{stem}.md").read_text()
    assert (tmp_path / f"{stem}.png").exists()


# --- benchmarks/bench_routing.py ---------------------------------------------------


@pytest.mark.tensorflow
@pytest.mark.parametrize("forced", [False, True], ids=["as-routed", "rewrite-forced"])
def test_routing_benchmark_times_the_path_it_names(forced):
    """The "rewrite forced" variant really traces the equal-stride rewrite."""
    import tensorflow as tf

    from channelconv import _backend

    bench_routing = load("bench_routing")
    layer = bench_routing._ours("concat", 3, 2, strides=(2, 1), padding="same")
    x = tf.zeros((1, 8, 8, 3))
    fn = tf.function(lambda x: layer(x))
    with bench_routing._rewrite_forced() if forced else contextlib.nullcontext():
        graph = fn.get_concrete_function(x).graph
    strides = [
        tuple(op.get_attr("strides"))
        for op in graph.get_operations()
        if op.type == "DepthwiseConv2dNative"
    ]
    native = _backend.native_unequal_strides() and not forced
    assert strides == ([(1, 2, 1, 1)] if native else [(1, 2, 2, 1)])


def test_cells_plan_cuts_the_full_plan(bench):
    plan = bench.cells_plan(["concat:64:64", "sum:3:16"], (False,), 121, 8.0)
    assert [(s.reduction, s.in_channels, s.filters) for s in plan.sizes] == [
        ("concat", 64, 64), ("sum", 3, 16)
    ]
    full = {(s.reduction, s.in_channels, s.filters): s for s in cases.FULL.sizes}
    assert plan.sizes[0] == full[("concat", 64, 64)]  # the full run's batch sizes
    assert (plan.jit, plan.max_rounds, plan.group_seconds) == ((False,), 121, 8.0)
    with pytest.raises(ValueError, match=r"Received: \['sum:5:16'\]"):
        bench.cells_plan(["sum:5:16"], (False,), 10, 1.0)


# --- benchmarks/bench_networks.py --------------------------------------------------


def _tiny_network(weights=None, input_shape=None, classes=10):
    """A stand-in for a keras.applications constructor: Conv2D and DepthwiseConv2D."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2D(4, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x))


@pytest.fixture()
def bench_networks(monkeypatch):
    module = load("bench_networks")
    monkeypatch.setitem(module.NETWORKS, "tiny", _tiny_network)
    return module


@pytest.mark.tensorflow
def test_network_benchmark_freezes_the_fraction_it_names(bench_networks):
    models = bench_networks.variants("tiny", 8, 0.5)
    keras_model, converted, stripped = models["Keras"], models["converted"], models["stripped"]
    # 3x3x3x6 and 1x1x6x4 kernels, half of each layer's (channel, filter) pairs frozen
    frozen = round(0.5 * 3 * 6) * 9 + round(0.5 * 6 * 4) * 1
    trainable = sum(int(np.prod(w.shape)) for w in keras_model.trainable_weights)
    assert sum(int(np.prod(w.shape)) for w in converted.trainable_weights) == trainable - frozen
    # Frozen at zero: structure, not parameters.
    assert converted.count_params() == keras_model.count_params() - frozen
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(stripped.predict_on_batch(x), converted.predict_on_batch(x))


@pytest.mark.tensorflow
def test_network_benchmark_writes_one_file_pair_per_setting(bench_networks, tmp_path, monkeypatch):
    from harness import onednn_enabled

    monkeypatch.setattr(bench_networks, "QUICK", dict(cases=[("tiny", 8, 0.1)], rounds=1, calls=1))
    bench_networks.main(["--quick", "--out", str(tmp_path)])
    state = "on" if onednn_enabled() else "off"
    stem = f"bench_networks_quick_onednn-{state}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [stem + ".json", stem + ".md"]
    (case,) = json.loads((tmp_path / (stem + ".json")).read_text())["cases"]
    for step in ("train", "infer"):
        assert set(case["steps"][step]) == {"Keras", "converted", "stripped"}
        assert all(v["ms"] > 0 and v["ratio"] > 0 for v in case["steps"][step].values())
    assert "| tiny, 8x8 | 10% |" in (tmp_path / (stem + ".md")).read_text()


# --- benchmarks/bench_sparse.py ----------------------------------------------------


@pytest.fixture(scope="module")
def bench_sparse():
    return load("bench_sparse")


@pytest.mark.parametrize(
    "structure, parameter, rows, columns, fraction",
    [("block-diagonal", 4, None, None, 0.75), ("input channels", 0.5, 4, None, 0.5),
     ("filters", 0.25, None, 2, 0.25), ("random", 0.5, None, None, 0.5)],
)
def test_sparse_benchmark_freezes_the_structure_it_names(
    bench_sparse, structure, parameter, rows, columns, fraction
):
    mask = bench_sparse.frozen_zero("sum", structure, parameter, 8, 8)
    assert mask.shape == (8, 8) and mask.mean() == fraction
    if rows is not None:  # whole input channels
        assert mask.all(axis=1).sum() == rows and not mask[~mask.all(axis=1)].any()
    if columns is not None:  # whole filters
        assert mask.all(axis=0).sum() == columns and not mask[:, ~mask.all(axis=0)].any()
    if structure == "block-diagonal":
        assert [int(b.sum()) for b in np.split(~mask, 4)] == [4, 4, 4, 4]


def test_sparse_smoke_run_writes_its_reports(bench_sparse, tmp_path, capsys):
    """``bench_sparse.py --smoke`` on this backend: every row, both profiles."""
    with without_tensorflow():
        bench_sparse.main(["--smoke", "--out", str(tmp_path)])
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    stem = f"bench_sparse_smoke_{setting_name(result['environment'])}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [stem + e for e in (".json", ".md", ".png")]
    assert result["environment"]["backend"] == BACKEND
    assert capsys.readouterr().out.startswith(versions_text(result["environment"]))
    records = result["records"]
    assert [(r["reduction"], r["structure"], r["filters"]) for r in records] == [
        ("sum", "block-diagonal", 8), ("concat", "random", 2)]
    for r in records:
        # "auto" is timed only where it does not run the plan; "limit" where there are blocks.
        assert ("auto" in r["train"]) == (r["auto"] == "fused")
        for mode in ("train", "infer"):
            assert set(r[mode]) >= {"keras", "sparse", "limit"}
            assert all(v["ms"] > 0 for v in r[mode].values())
    markdown = (tmp_path / (stem + ".md")).read_text()
    assert markdown.startswith("# Sparse implementation against the dense Keras layer"
                               f"{backend_title(result['environment'])}\n")
    assert "| sum block-diagonal 2 groups | 0.500 |" in markdown
    assert set(result["concat_profile"]["ms"]) == set(PROFILE_STEPS)
    assert len(result["copy_profile"]["ms"]) == 3


#: The steps of bench_sparse's profile of the sparse concat layer.
PROFILE_STEPS = ["DepthwiseConv2D", "sparse layer", "input gather",
                 "depthwise of the live kernels", "output placement", "copy of the output"]


def test_sparse_benchmark_target_checks(bench_sparse):
    timing = {"keras": {"ratio": 1.0}, "sparse": {"ratio": 0.41}, "limit": {"ratio": 0.3}}
    record = dict(size="256x56", reduction="sum", structure="block-diagonal", parameter=4,
                  filters=256, train=timing, infer=dict(timing, sparse={"ratio": 0.39}))
    checks = bench_sparse.target_checks([record, dict(record, size="64x32")])
    assert [(c["mode"], c["met"], c["limit"]) for c in checks] == [
        ("train", False, 0.3), ("infer", True, 0.3)]


# --- every script runs as a script ---------------------------------------------------


SCRIPTS = ["bench_conv.py", "bench_networks.py", "bench_routing.py", "bench_assembly.py",
           "bench_grouped.py", "bench_sparse.py"]
#: Runs each script as ``python benchmarks/<script> --help`` would, all in one
#: process (one TensorFlow import instead of six, 8 s each): the script as
#: ``__main__``, its own directory first on ``sys.path``. Prints one JSON
#: record per script: exit code and output.
HELP_DRIVER = """
import contextlib, io, json, os, runpy, sys
for script in sys.argv[1:]:
    out = io.StringIO()
    sys.argv, sys.path[0] = [script, "--help"], os.path.dirname(script)
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code
    print(json.dumps({"script": os.path.basename(script), "code": code, "out": out.getvalue()}))
"""


@pytest.fixture(scope="module")
def help_runs():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", HELP_DRIVER, *(str(BENCHMARKS / s) for s in SCRIPTS)],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {r["script"]: r for r in records}


@pytest.mark.once
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_runs_from_the_command_line(help_runs, script):
    """``python benchmarks/<script> --help``: its main is reached and parses."""
    record = help_runs[script]
    assert record["code"] == 0, record
    assert record["out"].startswith("usage: "), record["out"][:500]


# --- benchlib.steps, on this backend -----------------------------------------------


def step_record(jit):
    """An inference step, then three SGD training steps, of a Dense layer through
    ``benchlib.steps``."""
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype("float32") for s in ((4, 3), (3, 2), (2,)))
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    layer.set_weights([w, b])
    infer = make_step(layer, "infer", jit)
    y = keras.ops.convert_to_numpy(infer(tensor(x)))  # before training: JAX keeps its own state
    train = make_step(layer, "train", jit, keras.optimizers.SGD(0.1))
    losses = [float(keras.ops.convert_to_numpy(train(tensor(x)))) for _ in range(3)]
    return dict(x=x, w=w, b=b, learning_rate=0.1, y=y, losses=losses,
                traces=[infer.traces, train.traces])


def sgd_reference(record, steps=3):
    """NumPy: the losses ``mean(y ** 2)`` of plain gradient descent on ``x @ w + b``."""
    x, w, b = (np.array(record[k], "float64") for k in ("x", "w", "b"))
    losses = []
    for _ in range(steps):
        y = x @ w + b
        losses.append(np.mean(y**2))
        dy = 2 * y / y.size
        w, b = w - record["learning_rate"] * x.T @ dy, b - record["learning_rate"] * dy.sum(0)
    return losses


@pytest.mark.parametrize("jit", jit_settings((False, True)), ids=lambda j: f"jit-{'on' if j else 'off'}")
def test_steps_infer_and_train_as_defined(jit):
    """The timed steps compute what they say: the forward call, and forward,
    gradient and update with the state carried from step to step (JAX)."""
    with without_tensorflow():
        record = step_record(jit)
    x, w, b = record["x"], record["w"], record["b"]
    np.testing.assert_allclose(record["y"], x @ w + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(record["losses"], sgd_reference(record), rtol=1e-5)
    traces = None if BACKEND == "torch" else 1  # PyTorch runs eagerly
    assert record["traces"] == [traces, traces]
