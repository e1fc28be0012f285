"""ChannelConv2D under tf.distribute and keras.distribution, mixed precision and XLA.

The training runs in subprocesses (``tests/distribute_worker.py``): logical
CPU devices must be configured before TensorFlow initialises its devices, and
a multi-worker cluster needs one process per worker. One subprocess runs all
``MirroredStrategy`` scenarios (each TensorFlow start costs seconds), two run
the ``MultiWorkerMirroredStrategy`` cluster; this process judges what they
wrote. One more runs the ``model.fit`` scenarios on JAX under Keras's own
``keras.distribution.DataParallel`` over two XLA host devices
(``tests/jax_distribution_worker.py``, the same table from
``tests/fit_scenarios.py``), judged by the same checks.

Two trainings are checked: ``model.fit``, and the documented custom loop
(``loop_epochs`` of ``docs/examples/train_distributed.py``, imported by the
worker, on the example's model and data). The reference for distributed
training is the same training without a strategy, from the same initial
weights (the same seed, checked), on the same global batches, in order; the
documented loop without a strategy is itself compared with ``model.fit``,
so that a loop that scales every step wrongly cannot match itself. The
example's data ends with a partial global batch, split unevenly over the
replicas. SGD, unless a scenario says otherwise: its steps are proportional
to the gradient, so a wrongly scaled loss moves the weights elsewhere.

Tolerances, absolute, on weights of size ~0.1-1 after 8-10 steps that move
them by up to ~0.1 (measured on a 2-core x86 CPU, oneDNN off and on):

- float32: 1e-6. Distributed and single-device training differ only in the
  order of float32 additions (per-replica sums, then the all-reduce);
  measured at most 1.7e-7.
- float32 with Adam (the example script's optimizer): 1e-5; Adam divides
  each step by the gradient's running scale, which magnifies those
  differences; measured 2e-6.
- mixed_float16: 2e-3, about 2 float16 ulps at 1; measured 4e-4.
- mixed_bfloat16: 1e-2, about 1.3 bfloat16 ulps at 1; measured 2.7e-3.

Each comparison also requires training to have moved the weights by more
than 5 times its tolerance, so "same weights" cannot pass by not training.
Frozen kernels are compared with ``np.array_equal``, always.
"""

import importlib.util
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import distribute_worker as worker

WORKER = pathlib.Path(worker.__file__).resolve()
JAX_WORKER = WORKER.parent / "jax_distribution_worker.py"
ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "train_distributed.py"
JAX_EXAMPLE = ROOT / "docs" / "examples" / "train_jax_data_parallel.py"
MIRRORED_TIMEOUT = 300  # seconds; 20-40 s on a 2-core machine
MULTIWORKER_TIMEOUT = 180  # seconds for the whole cluster; 10-20 s
EXAMPLE_TIMEOUT = 180

TOLERANCE = {"float32": 1e-6, "mixed_float16": 2e-3, "mixed_bfloat16": 1e-2}
ADAM_TOLERANCE = 1e-5

# Scenario name -> its options; the scenarios are the worker's tables.
SCENARIOS = {**worker.FIT_SCENARIOS, **worker.EXAMPLE_SCENARIOS}
EXAMPLES = list(worker.EXAMPLE_SCENARIOS)


def tolerance(name):
    """The absolute tolerance of a scenario's weights (see the docstring)."""
    options = SCENARIOS[name]
    if options.get("optimizer") == "adam":
        return ADAM_TOLERANCE
    return TOLERANCE[options.get("policy", "float32")]


def subprocess_env(**extra):
    """This process's environment, quieter, with only the given TF_CONFIG."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    # No GPU: the scenarios run on logical CPU devices on any machine.
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def run_on_two_jax_devices(script, out_dir, timeout):
    """Runs ``script out_dir`` on JAX with two XLA host devices; skips without JAX.

    JAX is skipped only where it is not installed (CI installs it: the
    ``jax`` extra).
    """
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed (pip install channelconv[jax])")
    result = subprocess.run(
        [sys.executable, str(script), str(out_dir)],
        capture_output=True,
        text=True,
        env=subprocess_env(
            KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2"
        ),
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def split(arrays, stage):
    """``{variable path: array}`` of one stage (``initial``, ``single``, ...)."""
    prefix = stage + "/"
    return {k[len(prefix) :]: arrays[k] for k in arrays.files if k.startswith(prefix)}


def frozen_paths(weights):
    """The stored frozen kernels (none where they are zeros by construction)."""
    return [p for p in weights if p.endswith("/frozen_kernels")]


def trainable_paths(weights):
    return [p for p in weights if not p.endswith("/frozen_kernels")]


def assert_same_training(result, reference, initial, tolerance):
    """``result`` equals ``reference`` within ``tolerance``; training moved."""
    moved = max(np.abs(reference[p] - initial[p]).max() for p in trainable_paths(initial))
    assert moved > 5 * tolerance, f"training moved the weights by only {moved}"
    for path in trainable_paths(initial):
        np.testing.assert_allclose(
            result[path], reference[path], rtol=0, atol=tolerance, err_msg=path
        )


def assert_same_weights(first, second):
    """The same variables, bit-identical."""
    assert sorted(first) == sorted(second)
    for path in first:
        assert np.array_equal(first[path], second[path]), path


def assert_frozen_exact_and_trainable_trained(final, initial):
    """Frozen kernels bit-identical; every trainable kernel changed."""
    for path in frozen_paths(initial):
        assert np.array_equal(final[path], initial[path]), path
    for path in [p for p in initial if p.endswith("/trainable_kernels")]:
        changed = [
            not np.array_equal(final[path][..., k], initial[path][..., k])
            for k in range(initial[path].shape[-1])
        ]
        assert all(changed), f"{path}: kernels {np.flatnonzero(~np.array(changed))} unchanged"


# --- MirroredStrategy on two logical CPU devices --------------------------------


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Runs every MirroredStrategy scenario once; returns (directory, summary)."""
    out = tmp_path_factory.mktemp("mirrored")
    result = subprocess.run(
        [sys.executable, str(WORKER), "mirrored", str(out)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=MIRRORED_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "mirrored.json").read_text())


@pytest.fixture(scope="module")
def jax_data_parallel(tmp_path_factory):
    """Runs every fit scenario under keras.distribution.DataParallel on JAX.

    Two XLA host devices (``--xla_force_host_platform_device_count=2``);
    returns (directory, summary).
    """
    out = tmp_path_factory.mktemp("jax_data_parallel")
    run_on_two_jax_devices(JAX_WORKER, out, MIRRORED_TIMEOUT)
    return out, json.loads((out / "parallel.json").read_text())


# Distributed run -> (its fixture, the stage its distributed weights are
# saved under, its scenarios). Every check below runs on both runs.
RUNS = {
    "mirrored": ("mirrored", "mirrored", list(SCENARIOS)),
    "jax_data_parallel": ("jax_data_parallel", "parallel", list(worker.FIT_SCENARIOS)),
}
RUN_SCENARIOS = [
    pytest.param(run, name, id=f"{run}-{name}")
    for run, (_, _, names) in RUNS.items()
    for name in names
]


def run_result(request, run):
    """The (directory, summary) of a distributed run, and its stage name."""
    fixture, stage, _ = RUNS[run]
    return request.getfixturevalue(fixture), stage


def scenario_result(distributed, name):
    out, summary = distributed
    info = summary["scenarios"][name]
    assert "error" not in info, f"scenario {name} raised:\n{info.get('error')}"
    return np.load(out / f"{name}.npz"), info


def test_mirrored_runs_on_two_replicas(mirrored):
    _, summary = mirrored
    assert summary["num_replicas"] == 2
    assert summary["devices"] == ["/device:CPU:0", "/device:CPU:1"]


def test_jax_data_parallel_runs_on_two_devices(jax_data_parallel):
    _, summary = jax_data_parallel
    assert summary["backend"] == "jax"
    assert summary["devices"] == ["cpu:0", "cpu:1"]
    for name, info in summary["scenarios"].items():
        assert info.get("variable_devices") == [2], (name, info)


@pytest.mark.parametrize("run, name", RUN_SCENARIOS)
def test_distributed_matches_single_device(request, run, name):
    distributed, stage = run_result(request, run)
    arrays, _ = scenario_result(distributed, name)
    assert_same_training(
        split(arrays, stage),
        split(arrays, "single"),
        split(arrays, "initial"),
        tolerance(name),
    )


@pytest.mark.parametrize("run, name", RUN_SCENARIOS)
def test_distributed_frozen_kernels_bit_exact(request, run, name):
    """Stored frozen kernels unchanged (the sparse scenarios keep theirs at zero
    by construction: no variable to change)."""
    distributed, stage = run_result(request, run)
    arrays, _ = scenario_result(distributed, name)
    initial = split(arrays, "initial")
    assert bool(frozen_paths(initial)) == (not name.startswith("sparse"))
    stages = [stage, "single"] + (["fit"] if name in EXAMPLES else [])
    for stage in stages:
        assert_frozen_exact_and_trainable_trained(split(arrays, stage), initial)


@pytest.mark.parametrize("run, name", RUN_SCENARIOS)
def test_distributed_replicas_hold_identical_copies(request, run, name):
    distributed, stage = run_result(request, run)
    arrays, _ = scenario_result(distributed, name)
    assert_same_weights(split(arrays, "replica1"), split(arrays, stage))


@pytest.mark.parametrize("run", list(RUNS))
def test_distributed_pruning_prunes_the_same_kernels(request, run):
    """KernelPruning in distributed fit: the single-device run's masks, bit for bit,
    half of the 12 kernels (the 4 frozen ones, at non-zero values, never)."""
    distributed, stage = run_result(request, run)
    arrays, _ = scenario_result(distributed, "pruned-fused-sum")
    masks = {s: split(arrays, s)["channel_conv0/pruned_kernels"]
             for s in ("single", stage, "replica1")}
    assert masks["single"].sum() == 6
    assert not masks["single"][tuple(np.array(worker.FROZEN).T)].any()
    for s in (stage, "replica1"):
        np.testing.assert_array_equal(masks[s], masks["single"])


# --- the documented loop (docs/examples/train_distributed.py) ------------------


@pytest.mark.parametrize("name", EXAMPLES, ids=EXAMPLES)
def test_example_models_from_the_same_seed_start_equal(mirrored, name):
    arrays, _ = scenario_result(mirrored, name)
    assert_same_weights(split(arrays, "single_initial"), split(arrays, "initial"))


@pytest.mark.parametrize("name", EXAMPLES, ids=EXAMPLES)
def test_example_loop_without_strategy_matches_fit(mirrored, name):
    """The loop's own loss scaling: one device, against ``model.fit``."""
    arrays, _ = scenario_result(mirrored, name)
    assert_same_training(
        split(arrays, "single"), split(arrays, "fit"), split(arrays, "initial"), tolerance(name)
    )


@pytest.mark.parametrize("name", EXAMPLES, ids=EXAMPLES)
def test_example_loop_reports_the_same_loss_with_and_without_strategy(mirrored, name):
    _, info = scenario_result(mirrored, name)
    losses = info["loop_loss"]
    assert len(losses["single"]) == worker.EPOCHS
    assert losses["single"][-1] < losses["single"][0]
    np.testing.assert_allclose(
        losses["mirrored"], losses["single"], rtol=10 * tolerance(name)
    )


MIXED = [
    # scenario, compute dtype, optimizer Keras gives model.fit
    ("mixed_float16", "float16", "LossScaleOptimizer"),
    ("mixed_bfloat16", "bfloat16", "SGD"),
    ("example-mixed_float16", "float16", "LossScaleOptimizer"),
]


@pytest.mark.parametrize(
    "run, name, compute_dtype, optimizer",
    [
        pytest.param(run, *mixed, id=f"{run}-{mixed[0]}")
        for run, (_, _, names) in RUNS.items()
        for mixed in MIXED
        if mixed[0] in names
    ],
)
def test_mixed_precision_policy_took_effect(request, run, name, compute_dtype, optimizer):
    distributed, _ = run_result(request, run)
    _, info = scenario_result(distributed, name)
    assert info["compute_dtype"] == compute_dtype
    assert info["variable_dtype"] == "float32"
    assert info["optimizer"] == optimizer


def test_keras_jit_compile_fit_behaves_as_for_conv2d(mirrored):
    """``compile(jit_compile=True)`` + ``fit`` under MirroredStrategy.

    Keras 3.15 fails here for any model (keras-team/keras#19005), so the XLA
    scenarios use the documented loop, which compiles each replica's step.
    This pins that ChannelConv2D is no worse than Conv2D, and exact if Keras
    ever makes it work.
    """
    _, summary = mirrored
    outcome = summary["keras_jit_fit"]
    assert outcome["ChannelConv2D"]["error"] == outcome["Conv2D"]["error"], outcome
    if outcome["ChannelConv2D"]["error"] is None:
        assert outcome["ChannelConv2D"]["frozen_unchanged"]


# --- a checkpoint of distributed training, loaded without a strategy ----------


def load_keras(out):
    return keras.saving.load_model(out / "mirrored.keras")


def load_weights_h5(out):
    model = worker.build_model(**worker.FIT_SCENARIOS[worker.CHECKPOINT_SCENARIO])
    model.load_weights(out / "mirrored.weights.h5")
    return model


def load_tf_checkpoint(out):
    model = worker.build_model(**worker.FIT_SCENARIOS[worker.CHECKPOINT_SCENARIO])
    status = tf.train.Checkpoint(model=model).read(str(out / "tf_ckpt" / "ckpt"))
    status.assert_existing_objects_matched()
    return model


LOADERS = {
    "keras_file": load_keras,
    "weights_h5": load_weights_h5,
    "tf_train_checkpoint": load_tf_checkpoint,
}


@pytest.mark.parametrize("load", list(LOADERS.values()), ids=list(LOADERS))
def test_distributed_checkpoint_loads_into_single_device_model(mirrored, load):
    out, _ = mirrored
    assert not tf.distribute.has_strategy()
    model = load(out)
    expected = split(np.load(out / f"{worker.CHECKPOINT_SCENARIO}.npz"), "mirrored")
    loaded = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    assert_same_weights(loaded, expected)
    probe = np.load(out / "probe.npz")
    prediction = model.predict(probe["x"], batch_size=len(probe["x"]), verbose=0)
    # Measured identical; 1e-5 (a few float32 ulps at |y| ~ 3) allows a different
    # oneDNN algorithm for the whole batch than for the per-replica halves.
    np.testing.assert_allclose(prediction, probe["prediction"], rtol=0, atol=1e-5)


# --- MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 -----------


def free_ports(count):
    """``count`` distinct free TCP ports on the loopback interface."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_cluster(out, workers=2):
    """Runs a local cluster of ``workers`` worker processes; returns exit codes.

    Waits at most ``MULTIWORKER_TIMEOUT`` seconds and stops waiting as soon
    as one worker fails (the others would block on it); whatever still runs
    then is killed. Each worker's output goes to ``out/worker<i>.log``.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    processes, logs = [], []
    try:
        for index in range(workers):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            logs.append(open(out / f"worker{index}.log", "w"))
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), "multiworker", str(out)],
                    stdout=logs[-1],
                    stderr=subprocess.STDOUT,
                    env=subprocess_env(TF_CONFIG=json.dumps(config)),
                )
            )
        deadline = time.monotonic() + MULTIWORKER_TIMEOUT
        while time.monotonic() < deadline:
            codes = [p.poll() for p in processes]
            if None not in codes or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
        for log in logs:
            log.close()
    return [p.returncode for p in processes]


@pytest.mark.skipif(
    os.environ.get("CHANNELCONV_SKIP_MULTIWORKER") == "1",
    reason="CHANNELCONV_SKIP_MULTIWORKER=1: no local multi-worker cluster",
)
def test_multiworker_workers_agree_and_frozen_kernels_exact(tmp_path):
    codes = run_cluster(tmp_path)
    for index, code in enumerate(codes):
        log = (tmp_path / f"worker{index}.log").read_text()
        assert code == 0, (
            f"worker {index} exited with {code} (negative: killed, after "
            f"{MULTIWORKER_TIMEOUT} s or another worker's failure):\n{log[-3000:]}"
        )
    arrays = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    summaries = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    assert [s["num_replicas"] for s in summaries] == [2, 2]
    initial, final = split(arrays[0], "initial"), split(arrays[0], "final")
    # Both workers start from the same seeded weights, as the single device
    # does, and end with bit-identical weights.
    assert_same_weights(split(arrays[1], "initial"), initial)
    assert_same_weights(split(arrays[0], "single_initial"), initial)
    assert_same_weights(split(arrays[1], "final"), final)
    assert_frozen_exact_and_trainable_trained(final, initial)
    # The documented loop on the cluster trained as it does on one device, on
    # the same global batches (the last one partial).
    assert_same_training(final, split(arrays[0], "single"), initial, TOLERANCE["float32"])
    # model.fit under MultiWorkerMirroredStrategy: as for Conv2D (Keras 3.15
    # fails for any model, keras-team/keras#20585, hence the custom loop).
    fit = summaries[0]["keras_fit"]
    assert fit["ChannelConv2D"]["error"] == fit["Conv2D"]["error"], fit


# --- the docs example -------------------------------------------------------------


def test_example_script_trains_and_keeps_frozen_kernels(tmp_path):
    """docs/examples/train_distributed.py with tiny settings (docs/scaling.md)."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--cpu-replicas", "2", "--samples", "64",
         "--epochs", "1", "--policy", "mixed_bfloat16", "--jit-compile",
         "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=EXAMPLE_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["replicas"] == 2 and report["strategy"] == "MirroredStrategy"
    initial = np.load(tmp_path / "initial_weights.npz")
    model = keras.saving.load_model(tmp_path / "model.keras")
    final = {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}
    assert_frozen_exact_and_trainable_trained(final, dict(initial))


def test_jax_example_script_trains_on_two_devices_and_keeps_frozen_kernels(tmp_path):
    """docs/examples/train_jax_data_parallel.py (docs/scaling.md) on two XLA devices."""
    run_on_two_jax_devices(JAX_EXAMPLE, tmp_path, EXAMPLE_TIMEOUT)
    assert (tmp_path / "devices.txt").read_text() == "2"
    layer = keras.saving.load_model(tmp_path / "model.keras").layers[0]
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    frozen = layer.frozen_mask
    assert frozen.sum() == 2 and not kernel[..., frozen].any()  # exactly zero
    assert np.all(np.abs(kernel[..., ~frozen]).sum(axis=(0, 1)) > 0)


def test_scaling_doc_code_blocks_are_in_the_examples():
    page = (ROOT / "docs" / "scaling.md").read_text()
    scripts = [EXAMPLE.read_text(), JAX_EXAMPLE.read_text()]
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 7
    for block in blocks:  # verbatim, possibly dedented (the JAX one without its command line)
        body = block.split("\n", 1)[1] if block.startswith("# KERAS_BACKEND=jax") else block
        assert any(
            textwrap.indent(body, " " * n) in script for n in (0, 4, 8) for script in scripts
        ), block
