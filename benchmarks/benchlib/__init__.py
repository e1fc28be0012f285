"""The benchmarks' shared harness: cases, timing, reports, plots, environment.

``bench_conv.py`` (every rank), ``bench_sparse.py`` and later studies
are thin scripts over these modules: :mod:`benchlib.cases` (what is timed),
:mod:`benchlib.steps` (the compiled steps, one way per Keras backend),
:mod:`benchlib.timing` (interleaved rounds),
:mod:`benchlib.report` (records, targets, Markdown), :mod:`benchlib.plot` and
:mod:`benchlib.environment` (backend, versions, CPU, oneDNN).
"""
