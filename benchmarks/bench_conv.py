"""Step times of the channel convolutions against the dense Keras layers.

Run from the repository root, with the ``bench`` extra installed
(``pip install -e ".[bench]"``)::

    python benchmarks/bench_conv.py            # 2-D, full run, about 14 min on 2 cores
    python benchmarks/bench_conv.py --quick    # a smaller run, under a minute
    python benchmarks/bench_conv.py --rank 1   # ChannelConv1D against Conv1D / DepthwiseConv1D
    python benchmarks/bench_conv.py --rank 3   # ChannelConv3D against Conv3D / grouped Conv3D
    python benchmarks/bench_conv.py --cells concat:64:64 sum:256:64 --jit off --rounds 121 --seconds 12
                                               # re-time cells of the full run, longer
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_conv.py   # with oneDNN off
    KERAS_BACKEND=jax python benchmarks/bench_conv.py          # on JAX (bench_conv_jax.*)
    KERAS_BACKEND=torch python benchmarks/bench_conv.py        # on PyTorch (bench_conv_torch.*)
    KERAS_BACKEND=jax python benchmarks/bench_conv.py --smoke  # seconds: checks the install
    python benchmarks/bench_conv.py --smoke --jit off          # TensorFlow without XLA only

It writes ``bench_conv.json``, ``bench_conv.md`` and ``bench_conv.png``
(``bench_conv_quick.*`` with ``--quick``, ``bench_conv_smoke.*`` with
``--smoke``, ``bench_conv1d.*`` / ``bench_conv3d.*`` with ``--rank``;
``_jax`` or ``_torch`` appended on those backends) to
``benchmarks/results/`` (change with ``--out``) and shows a progress bar on
stderr. The cases, timing, reports and plot are the shared harness in
``benchlib/``; this script is its command line.

It runs on the Keras backend ``KERAS_BACKEND`` names: TensorFlow (the
default), JAX or PyTorch; :mod:`benchlib.steps` says how each compiles the
steps. The ``jit`` axis is TensorFlow's ``jit_compile`` off and on; JAX
compiles every step with XLA (recorded as ``jit`` on), PyTorch runs them
eagerly (``jit`` off). The StackOverflow answer's layer is TensorFlow code
and is timed on TensorFlow only.

TensorFlow's oneDNN CPU kernels change the dense baselines' times. Whether
they run is decided when TensorFlow starts, by ``TF_ENABLE_ONEDNN_OPTS`` or,
unset, by the CPU (on Linux: on for CPUs with AVX512_VNNI, AVX512_BF16,
AVX_VNNI or AMX, off on others). Each run records the setting TensorFlow
actually used (see :func:`benchlib.environment.onednn_setting`) in the JSON environment and the
Markdown header; compare runs only with the same one.

What is timed in 2-D, for each size (input channels 3, 16, 64, 256; filters
16 and 64; 3x3 kernels; 32x32 images; ``valid`` padding; 10% of the kernels
frozen with :func:`channelconv.random_frozen_mask`); 1-D and 3-D the same,
at the sizes of :data:`benchlib.cases.FULL_1D` and ``FULL_3D`` (sequences of
1024 steps, volumes of 12x12x12, kernels of 3 along each axis; for 3-D
``concat``, whose Keras equivalent is a grouped ``Conv3D``, that is the
baseline):

- sum semantics: ``keras.layers.Conv2D`` (the baseline),
  ``ChannelConv2D(reduction="sum")`` fused and per_channel, and ``Conv2D``
  with a mask ``kernel_constraint`` (the usual workaround);
- concat semantics: ``keras.layers.DepthwiseConv2D(depth_multiplier=filters)``
  (the baseline), ``ChannelConv2D(reduction="concat")`` fused and
  per_channel, and the StackOverflow answer's layer
  (:class:`channelconv.apps.reference.AnswerConv2D`) where its fixed shape
  applies (3 input channels, 16 filters);
- a training step (forward, backward and Adam update in one compiled
  ``tf.function``, one ``jax.jit`` function, or eagerly on PyTorch) and an
  inference step (forward only), on TensorFlow each with and without
  ``jit_compile``.

The training step is written out (:mod:`benchlib.steps`: on TensorFlow
with ``tf.GradientTape`` and ``optimizer.apply_gradients``) rather than
taken from ``model.fit`` / ``train_on_batch``: those add a per-call Python
cost (data adapter, logs, callbacks) that is the same for every variant and
only dilutes the ratios, and the hand-written step makes it explicit what
is compiled (exactly forward + backward + update) and with which
``jit_compile``.

How it is timed: the variants of one size, one step kind and one
``jit`` setting are built, traced and warmed up, then timed in
rounds (:func:`benchlib.timing.interleaved`); each round runs every
variant once, in a shuffled order, so that drift of a shared machine hits
all alike (see :class:`benchlib.cases.Plan` for how many rounds). A variant's time is its median over rounds; its ratio to the
baseline is the median of the per-round ratios (each round pairs the variant
with the baseline timed moments apart). The batch size of each size and step
kind is chosen so that a baseline step takes tens of milliseconds on a
2-core CPU; the plot divides by it (time per image).
"""

import argparse
import dataclasses
import json
import os
import random
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib.cases import (  # noqa: E402
    FULL, PLANS, AnswerConv2D, cells_plan, group_label, quick_plan, smoke_plan, variants_for)
from benchlib.environment import (  # noqa: E402
    backend_suffix, environment, load_average, onednn_text, versions_text)
from benchlib.groups import build_entries, measure, time_assembly  # noqa: E402
from benchlib.progress import Progress  # noqa: E402
from benchlib.report import summarize, write_reports  # noqa: E402
from benchlib.steps import jit_settings, quiet  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def run(plan, out_dir, stem, mode_name="custom", stream=sys.stderr):
    """Runs ``plan``; writes ``<stem>.json``, ``.md`` and ``.png`` to ``out_dir``.

    Returns:
        The result dict that was written to the JSON file.
    """
    env, load_before = environment(answer_layer=AnswerConv2D is not None), load_average()
    start = time.perf_counter()
    rng = random.Random(plan.seed)
    groups = [(s, m, j) for s in plan.sizes for m in plan.modes for j in plan.jit]
    total = sum(len(variants_for(s, plan)) + 1 for s, _, _ in groups) + 1
    progress = Progress(total, stream)
    assembly = time_assembly(plan, rng)
    progress.advance("kernel assembly alone: timed")
    records = []
    for size, mode, jit in groups:
        x, entries = build_entries(size, mode, jit, plan, progress)
        measure(entries, x, plan, rng)
        records += summarize(size, mode, entries, plan)
        progress.advance(f"{group_label(size, mode, jit)}: timed")
        del x, entries
    result = {
        "mode": mode_name,
        "environment": env,
        "load_before": load_before,
        "load_after": load_average(),
        "wall_s": time.perf_counter() - start,
        "plan": dataclasses.asdict(plan),
        "assembly": assembly,
        "records": records,
    }
    write_reports(result, out_dir, stem)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds at toy sizes, through every path: checks a backend's install")
    parser.add_argument("--rank", type=int, choices=(1, 2, 3), default=2,
                        help="1-D, 2-D or 3-D convolutions (default: %(default)s)")
    parser.add_argument("--out", default=RESULTS, help="output directory (default: %(default)s)")
    parser.add_argument("--report", metavar="JSON",
                        help="time nothing: rewrite the Markdown and PNG of a recorded JSON")
    parser.add_argument("--cells", nargs="+", metavar="REDUCTION:IN:FILTERS",
                        help="only these cells of the full plan (written as bench_conv_cells.*)")
    parser.add_argument("--jit", choices=("off", "on", "both"), default="both",
                        help="jit_compile settings (default: %(default)s; "
                             "JAX has only on, PyTorch only off)")
    parser.add_argument("--rounds", type=int, default=FULL.max_rounds,
                        help="with --cells: most rounds per group (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=FULL.group_seconds,
                        help="with --cells: seconds per group (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            result = json.load(f)
        stem = os.path.splitext(os.path.basename(args.report))[0]
        write_reports(result, os.path.dirname(os.path.abspath(args.report)), stem)
        print(f"rewrote the reports of {args.report}")
        return
    quiet()
    name = "bench_conv" if args.rank == 2 else f"bench_conv{args.rank}d"
    plan, stem = PLANS[args.rank], name
    if args.quick:
        plan, stem = quick_plan(args.rank), f"{name}_quick"
    if args.smoke:
        plan, stem = smoke_plan(args.rank), f"{name}_smoke"
    jit = {"off": (False,), "on": (True,), "both": (False, True)}[args.jit]
    if args.cells:
        plan = cells_plan(args.cells, jit, args.rounds, args.seconds, args.rank)
        stem = f"{name}_cells"
    try:
        plan = dataclasses.replace(plan, jit=jit_settings(jit))
    except ValueError as error:
        parser.error(str(error))
    stem += backend_suffix()  # bench_conv_jax.*; TensorFlow's names carry none
    env = environment()
    print(f"{versions_text(env)}; {onednn_text(env)}; "
          f"CPU {env['cpu']}, {env['cores']} cores; {env['date']}; load {load_average()}", flush=True)
    mode_name = ("cells" if args.cells else "smoke" if args.smoke else
                 "quick" if args.quick else "full")
    result = run(plan, args.out, stem, mode_name)
    checks = result["targets"]
    print(f"done in {result['wall_s'] / 60:.1f} min; fused targets met: "
          f"{sum(c['met'] for c in checks)} of {len(checks)}; load after {result['load_after']}")
    for ext in ("json", "md", "png"):
        print(os.path.join(args.out, f"{stem}.{ext}"))


if __name__ == "__main__":
    main()
