"""The applications built on channelconv: the ``channelconv`` command and its parts.

The library (everything else in the package) has convolutions with frozen
kernels, pruning and conversion; it never imports this subpackage. What is
here uses the library as any user would, through its public names (the
package's top level, ``channelconv.mask.resolve_frozen``,
``channelconv.pruning.GRANULARITIES``, ...); the one exception is the
backend check of the TensorFlow-only reproduction
(``channelconv._backend.require_tensorflow``).

- :mod:`.cli`: the ``channelconv`` command, ``main(argv)``; its help and
  usage errors need no Keras.
- :mod:`.reproduce` (``channelconv reproduce``): replays the StackOverflow
  answer that started the library and checks its defects, with
  :mod:`.reference` (the answer's layer transcribed, TensorFlow only) and
  :mod:`.answer` (its source and published numbers, as plain data).
- :mod:`.demo` (``channelconv demo``): trains the question's model with
  frozen kernels, then checks, saves and reloads it.
- :mod:`.prune_demo` (``channelconv prune-demo``): prunes kernels in
  training on scikit-learn's digits, then condenses.
- :mod:`.report`: the commands' checked findings and exit codes, and
  :func:`.report.parameter_counts`; :mod:`.defaults`: the commands'
  default settings.

Run them with the console script ``channelconv`` that ``pip install``
installs, or ``python -m channelconv.apps.cli``; see ``docs/cli.md``::

    channelconv --help
    channelconv reproduce            # TensorFlow backend only
    channelconv demo --epochs 2
    channelconv prune-demo --seeds 1 # needs scikit-learn: channelconv[demo]

From Python, ``main(argv)`` runs a command and returns its exit code, and
``build_parser()`` is its parser:

>>> from channelconv.apps.cli import build_parser
>>> build_parser().format_usage()
'usage: channelconv [-h] {reproduce,demo,prune-demo} ...\\n'
"""
