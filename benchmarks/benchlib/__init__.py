"""The benchmarks' shared harness: cases, timing, reports, plots, environment.

``bench_conv.py`` (every rank), ``bench_sparse.py`` and later studies
are thin scripts over these modules: :mod:`benchlib.cases` (what is timed),
:mod:`benchlib.steps` (the compiled steps, one way per Keras backend),
:mod:`benchlib.timing` (the one timing loop, interleaved rounds of plain
callables, used by every script), :mod:`benchlib.groups` (a group's layer
variants built, warmed up and timed; the kernel assembly alone),
:mod:`benchlib.report` (records, targets, Markdown), :mod:`benchlib.plot`,
:mod:`benchlib.environment` (backend, versions, CPU, oneDNN) and
:mod:`benchlib.progress` (a progress bar).
"""
