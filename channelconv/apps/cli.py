"""The ``channelconv`` command: argument parsing and dispatch.

``channelconv reproduce`` replays the StackOverflow answer and checks its
defects (:mod:`channelconv.apps.reproduce`); ``channelconv demo`` trains
the question's model with frozen kernels (:mod:`channelconv.apps.demo`);
``channelconv prune-demo`` prunes kernels in training on scikit-learn's
digits (:mod:`channelconv.apps.prune_demo`). See ``docs/cli.md``.

Building the parser imports neither Keras nor a backend (its choices and
defaults come from :mod:`channelconv.options` and
:mod:`channelconv.apps.defaults`), so that ``channelconv --help`` and usage
errors are immediate; a command imports its module when it runs.

Exit codes: 0 success, 1 a check failed or the model could not be saved,
2 a usage error (bad option value, unwritable output path), 130 interrupted.
"""

import argparse
import os
import sys

from channelconv.apps import defaults
from channelconv.options import IMPLEMENTATIONS, REDUCTIONS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr, exit 2."""

    def error(self, message):
        self.exit(
            EXIT_USAGE,
            f"{self.prog}: error: {message} (see '{self.prog} --help')\n",
        )


def _add_counts(parser, defaults, options):
    """Adds options taking a whole number >= 1, their defaults from ``defaults``.

    ``options``: ``(flag, metavar, help)`` each; the default is
    ``defaults[name]`` for ``--some-name`` and is shown after the help.
    """
    for flag, metavar, text in options:
        parser.add_argument(
            flag, type=_int_at_least(1), default=defaults[flag[2:].replace("-", "_")],
            metavar=metavar, help=f"{text} (default: %(default)s)",
        )


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, received {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, received {value}"
            )
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a positive number, received {text!r}"
        )
    return value


def _pairs(text):
    """Parses ``"0:0,0:1"`` into ``[(0, 0), (0, 1)]``."""
    pairs = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            pairs.append((int(parts[0]), int(parts[1])))
        except ValueError:
            raise argparse.ArgumentTypeError(
                "expected comma-separated CHANNEL:FILTER pairs such as "
                f"'0:0,0:1', received {text!r}"
            ) from None
    return pairs


def _keras_path(text):
    """Checks that a ``.keras`` file can be written at ``text``."""
    if not text.endswith(".keras"):
        raise argparse.ArgumentTypeError(
            f"the file name must end in .keras, received {text!r}"
        )
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.exists(parent):
        raise argparse.ArgumentTypeError(f"directory {parent!r} does not exist")
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{parent!r} is not a directory")
    if not os.access(parent, os.W_OK) or (
        os.path.exists(text) and not os.access(text, os.W_OK)
    ):
        raise argparse.ArgumentTypeError(f"cannot write to {text!r}")
    return text


def build_parser():
    """The ``channelconv`` argument parser.

    Returns:
        An ``argparse.ArgumentParser`` with the subcommands ``reproduce``,
        ``demo`` and ``prune-demo``.

    Example:

    >>> args = build_parser().parse_args(["demo", "--epochs", "2"])
    >>> args.command, args.epochs, args.reduction
    ('demo', 2, 'sum')
    """
    parser = _Parser(
        prog="channelconv",
        description=(
            "Keras convolutions in which chosen (input channel, filter) "
            "kernels are frozen. Replays the StackOverflow answer this "
            "library answers, and trains the question's model."
        ),
        epilog=(
            "Exit codes: 0 success; 1 a check failed (or the model could not "
            "be saved); 2 usage error. See docs/cli.md."
        ),
    )
    commands = parser.add_subparsers(
        dest="command", metavar="{reproduce,demo,prune-demo}", required=True,
        parser_class=_Parser,
    )

    reproduce_parser = commands.add_parser(
        "reproduce",
        help="replay the StackOverflow answer and check its defects",
        description=(
            "Runs the answer's code as written, builds its model as "
            "AnswerConv2D and as ChannelConv2D and prints both summaries, "
            "shows which filters a gradient step reaches, and compares sum "
            "and concat with keras Conv2D and DepthwiseConv2D. Exits 0 when "
            "every check agrees, 1 otherwise."
        ),
    )
    reproduce_parser.add_argument(
        "--seed", type=_int_at_least(0), default=0,
        help="seed of the random inputs and kernels (default: 0)",
    )

    demo_parser = commands.add_parser(
        "demo",
        help="train the question's model with frozen kernels",
        description=(
            "Trains the question's model (3 x ChannelConv2D(16, k) with ReLU "
            "between) with frozen kernels in the first layer, on a generated "
            "task: recover a random teacher network with the same frozen "
            "kernels from random images. Then checks that the frozen kernels "
            "are exactly zero, prints the parameter table and the loss, "
            "saves the model and reloads it. Exits 0 when every check holds."
        ),
    )
    demo_defaults = defaults.DEMO
    which = demo_parser.add_mutually_exclusive_group()
    which.add_argument(
        "--frozen", type=_pairs, metavar="C:F[,C:F...]",
        help="first-layer kernels to freeze, as (input channel 0-2):(filter "
        "0-15) pairs (default: the answer's 0:0,0:1,0:2,0:3,0:4)",
    )
    which.add_argument(
        "--frozen-count", type=_int_at_least(0), metavar="N",
        help="freeze N of the 48 first-layer kernels, chosen at random with "
        "--seed",
    )
    demo_parser.add_argument(
        "--reduction", choices=REDUCTIONS, default="sum",
        help="reduction of the first layer; the other two always sum "
        "(default: sum)",
    )
    demo_parser.add_argument(
        "--implementation", choices=IMPLEMENTATIONS, default="fused",
        help="implementation of all three layers (default: fused)",
    )
    _add_counts(demo_parser, demo_defaults, [
        ("--epochs", None, "training epochs"),
        ("--steps-per-epoch", "N",
         "batches per epoch; the training set has N x batch size images"),
        ("--batch-size", "N", "images per batch"),
        ("--image-size", "N",
         "height and width of the generated images; at least 3 x (kernel size - 1) + 1"),
        ("--kernel-size", "K", "kernel height and width"),
    ])
    demo_parser.add_argument(
        "--learning-rate", type=_positive_float,
        default=demo_defaults["learning_rate"], metavar="LR",
        help="Adam learning rate (default: %(default)s)",
    )
    demo_parser.add_argument(
        "--seed", type=_int_at_least(0), default=demo_defaults["seed"],
        help="seed of the weights, the images and --frozen-count "
        "(default: %(default)s)",
    )
    demo_parser.add_argument(
        "--output", type=_keras_path, default=demo_defaults["output"],
        metavar="PATH.keras",
        help="where to save the trained model (default: %(default)s)",
    )
    demo_parser.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), default=demo_defaults["verbose"],
        help="model.fit verbosity: 0 silent, 1 progress bar, 2 one line per "
        "epoch (default: %(default)s)",
    )
    demo_parser.set_defaults(subparser=demo_parser)

    prune_parser = commands.add_parser(
        "prune-demo",
        help="prune kernels in training on scikit-learn's digits, then condense",
        description=(
            "Trains a small CNN on the 8x8 digits bundled with scikit-learn, "
            "then prunes 50% and 75% of the kernels of its two larger "
            "convolutions with each granularity (and at random), fine-tunes, "
            "condenses, and prints test accuracy, trainable weights and "
            "inference time against the dense model. Exits 0 when its checks "
            "hold. Needs scikit-learn (pip install 'channelconv[demo]')."
        ),
    )
    prune_defaults = defaults.PRUNE_DEMO
    _add_counts(prune_parser, prune_defaults, [
        ("--seeds", "N", "runs per case"),
        ("--dense-epochs", "N", "epochs of dense training"),
        ("--finetune-epochs", "N", "epochs of pruning and fine-tuning"),
        ("--batch-size", "N", "images per batch"),
    ])
    prune_parser.add_argument("--plot", default=prune_defaults["plot"], metavar="PATH.png",
                              help="where to save the accuracy plot; '' for none "
                              "(default: %(default)s)")
    prune_parser.add_argument("--verbose", type=int, choices=(0, 1),
                              default=prune_defaults["verbose"],
                              help="1: a progress bar (default: %(default)s)")
    return parser


def main(argv=None):
    """Runs the ``channelconv`` command.

    Args:
        argv: the arguments, without the program name; ``sys.argv[1:]`` by
            default.

    Returns:
        The exit code: 0 success, 1 a check failed or the model could not
        be saved, 130 interrupted. Usage errors exit with 2 through
        ``SystemExit``, as ``--help`` exits with 0.

    Example:

    >>> main(["demo", "--epochs", "0"])  # prints one line to stderr
    Traceback (most recent call last):
    SystemExit: 2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "reproduce":
            return _reproduce(args)
        if args.command == "prune-demo":
            from channelconv.apps import prune_demo

            return prune_demo.run(
                seeds=args.seeds, dense_epochs=args.dense_epochs,
                finetune_epochs=args.finetune_epochs, batch_size=args.batch_size,
                plot=args.plot, verbose=args.verbose,
            )
        return _demo(args)
    except KeyboardInterrupt:
        print(f"channelconv {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _reproduce(args):
    """``channelconv reproduce``: TensorFlow only (it runs the answer's code)."""
    from channelconv._backend import BackendError

    try:
        from channelconv.apps import reproduce
    except BackendError as error:
        print(f"channelconv reproduce: {error}", file=sys.stderr)
        return EXIT_USAGE
    return reproduce.run(seed=args.seed)


def _demo(args):
    from channelconv.apps import demo
    from channelconv.apps.report import EXIT_FAILED

    demo_parser = args.subparser
    try:
        mask = demo.first_layer_mask(args.frozen, args.frozen_count, args.seed)
    except (TypeError, ValueError) as error:
        option = "--frozen" if args.frozen is not None else "--frozen-count"
        demo_parser.error(f"argument {option}: {error}")
    smallest = 3 * (args.kernel_size - 1) + 1
    if args.image_size < smallest:
        demo_parser.error(
            f"argument --image-size: three {args.kernel_size}x"
            f"{args.kernel_size} valid convolutions need images of at least "
            f"{smallest}x{smallest}, received {args.image_size}"
        )
    try:
        return demo.run(
            mask,
            reduction=args.reduction,
            implementation=args.implementation,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size,
            image_size=args.image_size,
            kernel_size=args.kernel_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            output=args.output,
            verbose=args.verbose,
        )
    except OSError as error:
        print(
            f"channelconv demo: error: cannot save the model to "
            f"{args.output!r}: {error}",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
