"""The benchmarks' shared harness: cases, timing, reports, plots, environment.

``bench_conv.py`` (2-D), ``bench_ranks.py`` (1-D and 3-D) and later studies
are thin scripts over these modules: :mod:`benchlib.cases` (what is timed),
:mod:`benchlib.timing` (compiled steps, interleaved rounds),
:mod:`benchlib.report` (records, targets, Markdown), :mod:`benchlib.plot` and
:mod:`benchlib.environment` (versions, CPU, oneDNN).
"""
