"""The StackOverflow answer's layer, transcribed to run on TensorFlow 2 / Keras 3.

The question (see ``docs/reproduction.md``) asks how to train
``Conv2D(16, k)`` on 3 input channels with 5 of its 48 kernels held at
exactly zero. Its one answer proposes a custom layer, ``CustomConv2D``;
:data:`~channelconv.apps.answer.ANSWER_SOURCE` holds it verbatim and
:class:`AnswerConv2D` is the same code with the one change it needs to run
today. TensorFlow only: importing this module on another Keras backend
raises :class:`channelconv._backend.BackendError`. The helpers below
let tests and ``channelconv reproduce`` compare it with
:class:`channelconv.ChannelConv2D`.
"""

import contextlib
import io

from channelconv._backend import require_tensorflow

require_tensorflow("channelconv.apps.reference (the answer's code, written with tf.nn.conv2d)")

import numpy as np  # noqa: E402 - after the backend check
import tensorflow as tf  # noqa: E402
from keras.layers import Layer  # noqa: E402

from channelconv.apps.answer import (  # noqa: E402,F401 - the answer's data, re-exported
    ANSWER_COUNTS,
    ANSWER_FROZEN,
    ANSWER_SOURCE,
    ANSWER_USAGE,
)
from channelconv import ChannelConv2D  # noqa: E402


#: The source :class:`AnswerConv2D` runs: :data:`ANSWER_SOURCE` with its
#: one change, ``strides=1`` in the three ``tf.nn.conv2d`` calls (TF 2 has
#: no default for it), and the class named ``AnswerConv2D``.
RUNNABLE_SOURCE = ANSWER_SOURCE.replace(
    ",padding='VALID')", ",strides=1,padding='VALID')"
).replace("CustomConv2D", "AnswerConv2D")


def _answer_class():
    """The class :data:`RUNNABLE_SOURCE` defines, as a class of this module."""
    namespace = {"tf": tf, "Layer": Layer, "__name__": __name__}
    exec(compile(RUNNABLE_SOURCE, "<the answer, with strides=1>", "exec"), namespace)
    return namespace["AnswerConv2D"]


AnswerConv2D = _answer_class()
AnswerConv2D.__doc__ = """The answer's ``CustomConv2D``, changed only so that it runs on TF 2.

    It is the answer's own text run, not a copy: :data:`RUNNABLE_SOURCE`,
    which is :data:`ANSWER_SOURCE` with exactly one change, ``strides=1``
    added to the three ``tf.nn.conv2d`` calls (TF 2 has no default for it),
    executed with the class named ``AnswerConv2D``. Keras 3 needs nothing else: weights
    may still be created in ``__init__``. Everything below is kept on
    purpose, defects included, so that they can be shown.

    Defects, each with its evidence (the tests are in
    ``tests/test_reference.py``; ``channelconv reproduce`` prints them):

    1. **It does not run as written on TF 2.** ``tf.nn.conv2d(input,
       filters, strides, padding, ...)`` has no default for ``strides``;
       building the answer's model raises ``TypeError: ... Missing required
       positional argument`` (verified on TF 2.21 by executing
       :data:`ANSWER_SOURCE` and :data:`ANSWER_USAGE`).
    2. **The 11 "trainable" channel-0 filters never train.** ``tf.concat``
       runs once, in ``__init__``, so ``self.c1`` is a constant tensor, not
       a view of the variables: the variable behind the 11 filters gets
       gradient ``None`` (Keras warns "Gradients do not exist for variables
       ...") and ``self.c1`` stays at its initial zeros after ``fit``. Of the
       387 parameters the summary calls trainable, 99 (11 x 3 x 3) are dead,
       and channel 0 contributes nothing to the output.
    3. **It is not the layer the question asked for.** It concatenates the
       per-channel results into 48 output channels (``3 * 16``; channel
       ``c * 16 + f`` is input channel ``c`` convolved with filter ``f``)
       where ``Conv2D(16, k)`` sums them into 16: it is
       ``DepthwiseConv2D(k, depth_multiplier=16)`` with 5 kernels masked,
       and equals ``ChannelConv2D(16, k, frozen=ANSWER_FROZEN,
       reduction="concat", use_bias=False, kernel_initializer="zeros")``.
    4. **No bias**, where ``Conv2D`` has one by default.
    5. **Everything is hard-coded:** 3 input channels (an input with more
       channels is silently cut to its first three), 16 filters, which 5
       kernels are frozen, ``VALID`` padding, stride 1, and zero
       initialisation of the trainable filters too: every output starts at
       zero, and in a stack of such layers with ReLU between them no
       variable receives a non-zero gradient.

    It is not registered as Keras-serializable: loading calls
    ``cls(**config)`` with ``name`` and ``dtype``, which the answer's
    ``__init__(self, k=3)`` does not accept, and changing that signature
    would go beyond "only what is needed to run".

    Args:
        k: kernel height and width (the answer's only argument).

    Input shape:
        ``(batch, rows, cols, channels)``; only channels 0, 1 and 2 are read.

    Output shape:
        ``(batch, rows - k + 1, cols - k + 1, 48)``.

    Example:

    >>> model = answer_model()
    >>> model.count_params(), model.output_shape
    (432, (None, None, None, 48))
    >>> import numpy as np
    >>> x = np.ones((1, 5, 5, 3), "float32")
    >>> with tf.GradientTape() as tape:
    ...     loss = tf.reduce_sum(model(x))
    >>> [g is None for g in tape.gradient(loss, model.trainable_weights)]
    [True, False, False]
"""


def answer_model(k=3):
    """Builds the answer's model with :class:`AnswerConv2D`, as its snippet does.

    Runs :data:`ANSWER_USAGE` (``Sequential``, ``build``, a symbolic
    ``call``) without printing the summary.

    Args:
        k: kernel size passed to :class:`AnswerConv2D`.

    Returns:
        The built ``keras.Sequential`` model.

    Example:

    >>> answer_model().layers[0].c1.shape
    TensorShape([3, 3, 1, 16])
    """
    model = tf.keras.models.Sequential()
    model.add(AnswerConv2D(k))
    model.build(input_shape=(None, None, None, 3))
    model.call(tf.keras.Input((None, None, 3)))
    return model


def run_answer_as_written():
    """Executes the answer's code verbatim on the installed TensorFlow.

    Returns:
        The exception it raises (on TF 2: a ``TypeError`` from
        ``tf.nn.conv2d``), or ``None`` if it ran to the end. The summary it
        would print is discarded.

    Example:

    >>> error = run_answer_as_written()
    >>> type(error).__name__, "Missing required positional argument" in str(error)
    ('TypeError', True)
    """
    namespace = {"tf": tf, "Layer": Layer}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(ANSWER_SOURCE + ANSWER_USAGE, "<answer>", "exec"), namespace)
    except Exception as error:  # noqa: BLE001 - whatever it raises is the finding
        return error
    return None


def answer_variables(layer):
    """The answer layer's four variables, by the names its source gives them.

    Args:
        layer: an :class:`AnswerConv2D`.

    Returns:
        A dict with keys ``"c1_1"`` (5 frozen channel-0 filters,
        non-trainable), ``"c1_2"`` (11 "trainable" channel-0 filters),
        ``"c2"`` and ``"c3"`` (16 filters each for channels 1 and 2).

    Example:

    >>> v = answer_variables(answer_model().layers[0])
    >>> {name: tuple(var.shape) for name, var in v.items()}["c1_2"]
    (3, 3, 1, 11)
    """
    (c1_1,) = layer.non_trainable_weights
    (c1_2,) = [
        w for w in layer.trainable_weights if w is not layer.c2 and w is not layer.c3
    ]
    return {"c1_1": c1_1, "c1_2": c1_2, "c2": layer.c2, "c3": layer.c3}


def answer_kernel(layer):
    """The full kernel the answer's layer convolves with.

    Args:
        layer: an :class:`AnswerConv2D`.

    Returns:
        NumPy array ``(k, k, 3, 16)``: its three banks ``c1`` (the constant
        made in ``__init__``, not the current variables), ``c2`` and ``c3``
        stacked along the input-channel axis, the layout of
        ``ChannelConv2D.kernel`` and ``DepthwiseConv2D.kernel``.

    Example:

    >>> answer_kernel(answer_model().layers[0]).shape
    (3, 3, 3, 16)
    """
    banks = [np.asarray(layer.c1), np.asarray(layer.c2), np.asarray(layer.c3)]
    return np.concatenate(banks, axis=-2)


def channel_conv2d_like_answer(k=3, **overrides):
    """The :class:`channelconv.ChannelConv2D` that computes what the answer does.

    Args:
        k: kernel size.
        **overrides: constructor arguments to change, e.g. ``reduction="sum"``
            for the layer the question actually asked for.

    Returns:
        An unbuilt ``ChannelConv2D(16, k, frozen=ANSWER_FROZEN,
        reduction="concat", use_bias=False, kernel_initializer="zeros",
        store_frozen=True)``: like the answer's layer it stores its frozen
        zero kernels as non-trainable weights (by default a channel
        convolution keeps them as structure, stored nowhere).

    Example:

    >>> layer = channel_conv2d_like_answer()
    >>> layer.reduction, layer.use_bias, layer.store_frozen
    ('concat', False, True)
    """
    args = dict(
        frozen=ANSWER_FROZEN,
        reduction="concat",
        use_bias=False,
        kernel_initializer="zeros",
        store_frozen=True,
    )
    args.update(overrides)
    return ChannelConv2D(16, k, **args)
