"""Runs the ``model.fit`` scenarios under ``keras.distribution.DataParallel`` on JAX.

The JAX counterpart of ``tests/distribute_worker.py``: the same table
(:data:`fit_scenarios.FIT_SCENARIOS`), model, data and training, with
Keras's own distribution API in place of ``tf.distribute``. The host CPU is
split into two XLA devices, which must happen before JAX starts, so
``tests/test_distribute.py`` runs this script in a subprocess::

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/jax_distribution_worker.py OUT_DIR

For every scenario it writes ``OUT_DIR/<scenario>.npz``: weights by
variable path, ``initial/``, ``single/`` (trained without a distribution),
``parallel/`` (trained under ``DataParallel`` over both devices) and
``replica1/`` (each variable's copy on the second device); absent when the
scenario raised. ``OUT_DIR/parallel.json``: the backend, devices, the
devices each variable lives on, per scenario the dtypes or the traceback,
and seconds taken. It checks nothing itself: the test process judges.
"""

import json
import pathlib
import sys
import time
import traceback

import jax
import keras
import numpy as np

from fit_scenarios import (
    FIT_SCENARIOS,
    build_model,
    dtypes,
    make_data,
    run_scenario,
    train_fit,
    weights_by_path,
)


def replica_copies(model, prefix):
    """``{prefix + "/" + path: array}``: each variable's copy on the second device."""
    return {
        f"{prefix}/{w.path}": np.asarray(w.value.addressable_shards[1].data)
        for w in model.weights
    }


def run_fit_scenario(name, options, distribution, out_dir):
    """``model.fit`` without and with ``distribution``, from the same weights."""
    x, y = make_data()
    single = build_model(**options)
    with distribution.scope():
        parallel = build_model(**options)
        parallel.set_weights(single.get_weights())
        arrays = weights_by_path(parallel, "initial")
        train_fit(parallel, x, y, options.get("pruning", False))
    train_fit(single, x, y, options.get("pruning", False))
    arrays.update(weights_by_path(single, "single"))
    arrays.update(weights_by_path(parallel, "parallel"))
    arrays.update(replica_copies(parallel, "replica1"))
    np.savez(out_dir / f"{name}.npz", **arrays)
    info = dtypes(parallel.get_layer("channel_conv0"), parallel.optimizer)
    info["variable_devices"] = sorted(
        {len(w.value.sharding.device_set) for w in parallel.weights}
    )
    return info


def main(argv):
    out_dir = pathlib.Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    summary = {
        "backend": keras.backend.backend(),
        "devices": [str(d) for d in jax.devices()],
        "scenarios": {},
        "seconds": {},
    }
    for name, options in FIT_SCENARIOS.items():
        start = time.perf_counter()
        try:
            summary["scenarios"][name] = run_scenario(
                run_fit_scenario, name, options, distribution, out_dir
            )
        except Exception:  # recorded; the test reports it
            summary["scenarios"][name] = {"error": traceback.format_exc()}
        summary["seconds"][name] = round(time.perf_counter() - start, 2)
    (out_dir / "parallel.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(sys.argv)
