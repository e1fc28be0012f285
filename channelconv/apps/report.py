"""What the ``channelconv`` commands report: checked findings, parameter counts.

:class:`Report` prints a command's findings, records every claim it checks
and ends with a verdict and the exit code (``channelconv reproduce`` and
``channelconv demo``). :func:`parameter_counts` counts the parameters of a
layer or model, trainable and non-trainable apart (the two commands, the
benchmark and the pretrained walkthrough in ``docs/examples/``).
"""

import collections
import math
import sys

import keras

#: Exit codes of a command that ran: every check held, or one did not.
EXIT_OK = 0
EXIT_FAILED = 1


class Report:
    """Prints a command's findings; records its checks; gives the verdict.

    Args:
        command: the command's name, which starts the verdict's failure
            line on stderr, e.g. ``"channelconv demo"``.
        out: text stream for the findings; ``sys.stdout`` (at the time of
            the call) by default.
        marks: what :meth:`check` returns for a check that holds and for one
            that fails, to end the printed line; default ``("ok",
            "FAILED")``.

    Example:

    >>> report = Report("channelconv example", marks=("yes", "NO"))
    >>> report.say("Arithmetic:", "  1 + 1 == 2: " + report.check(1 + 1 == 2, "1 + 1 is not 2"))
    Arithmetic:
      1 + 1 == 2: yes
    >>> report.say("  2 + 2 == 5: " + report.check(2 + 2 == 5, "2 + 2 is not 5"))
      2 + 2 == 5: NO
    >>> report.failed
    ['2 + 2 is not 5']
    >>> report.verdict(err=sys.stdout)
    channelconv example: 1 of 2 checks failed: 2 + 2 is not 5
    1
    """

    def __init__(self, command, out=None, marks=("ok", "FAILED")):
        self.command = command
        self.out = sys.stdout if out is None else out
        self.marks = marks
        self.checks = []

    def say(self, *lines):
        """Prints each of ``lines`` to the report's stream, then flushes it."""
        for line in lines:
            print(line, file=self.out)
        self.out.flush()

    def check(self, ok, claim):
        """Records one check; returns the mark that ends its printed line.

        Args:
            ok: whether the check holds.
            claim: what the verdict lists for this check if it fails.

        Returns:
            ``marks[0]`` if ``ok`` is true, else ``marks[1]``.
        """
        self.checks.append((claim, bool(ok)))
        return self.marks[0] if ok else self.marks[1]

    @property
    def failed(self):
        """The claims of the checks that failed, in the order they ran."""
        return [claim for claim, ok in self.checks if not ok]

    def verdict(self, success="All {n} checks passed.", err=None):
        """Ends the report; returns the command's exit code.

        If every check held, prints ``success`` (``{n}`` is replaced by the
        number of checks) to the report's stream and returns
        :data:`EXIT_OK`. Otherwise prints one line, ``"<command>: <k> of
        <n> checks failed: <claim>; <claim>"``, to ``err`` (``sys.stderr``
        at the time of the call by default) and returns :data:`EXIT_FAILED`.

        Example:

        >>> report = Report("channelconv example")
        >>> report.say("The answer: 42 " + report.check(True, "the answer is not 42"))
        The answer: 42 ok
        >>> report.verdict("All {n} checks agree.")
        All 1 checks agree.
        0
        """
        if self.failed:
            print(
                f"{self.command}: {len(self.failed)} of {len(self.checks)} "
                "checks failed: " + "; ".join(self.failed),
                file=sys.stderr if err is None else err,
            )
            return EXIT_FAILED
        self.say(success.format(n=len(self.checks)))
        return EXIT_OK


#: Parameter counts, in the order ``model.summary()`` prints them.
ParameterCounts = collections.namedtuple(
    "ParameterCounts", ["total", "trainable", "non_trainable"]
)


def parameter_counts(layer):
    """The total, trainable and non-trainable parameters of a layer or model.

    The sizes of ``layer.trainable_weights`` and of
    ``layer.non_trainable_weights``, which ``model.summary()`` prints as
    "Trainable params" and "Non-trainable params"; the total equals
    ``layer.count_params()``. For a ``ChannelConv2D`` the trainable ones are
    its trainable kernels and bias, the non-trainable ones its stored frozen
    kernels (``store_frozen=True``; kernels frozen at zero are structure,
    not parameters).

    Args:
        layer: a built ``keras.layers.Layer`` (a ``keras.Model`` is one).

    Returns:
        A :data:`ParameterCounts` named tuple ``(total, trainable,
        non_trainable)`` of Python ints.

    Raises:
        TypeError: ``layer`` is not a Keras layer.
        ValueError: ``layer`` is not built, so it has no weights yet.

    Example:

    >>> from channelconv import ChannelConv2D
    >>> layer = ChannelConv2D(16, 3, frozen=[(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)])
    >>> layer.build((None, 8, 8, 3))
    >>> parameter_counts(layer)  # 43 trainable kernels of 3x3 + 16 biases
    ParameterCounts(total=403, trainable=403, non_trainable=0)
    >>> stored = ChannelConv2D(16, 3, frozen=[(0, 0), (0, 1)], store_frozen=True)
    >>> stored.build((None, 8, 8, 3))
    >>> parameter_counts(stored)  # 2 frozen kernels stored
    ParameterCounts(total=448, trainable=430, non_trainable=18)
    >>> parameter_counts(layer).total == layer.count_params()
    True
    >>> parameter_counts(ChannelConv2D(16, 3, name="unbuilt"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: Cannot count the parameters of layer 'unbuilt': it is not built, ...
    >>> parameter_counts("conv1")
    Traceback (most recent call last):
    TypeError: `layer` must be a Keras layer or model. Received: 'conv1' of type str.
    """
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            "`layer` must be a Keras layer or model. Received: "
            f"{layer!r} of type {type(layer).__name__}."
        )
    if not layer.built:
        raise ValueError(
            f"Cannot count the parameters of layer {layer.name!r}: it is not "
            "built, so it has no weights yet. Build it or call it on an input "
            "first."
        )
    trainable = _size(layer.trainable_weights)
    non_trainable = _size(layer.non_trainable_weights)
    return ParameterCounts(trainable + non_trainable, trainable, non_trainable)


def _size(weights):
    return sum(math.prod(w.shape) for w in weights)
