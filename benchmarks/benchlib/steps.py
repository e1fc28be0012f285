"""The compiled steps of the benchmarks, one way per Keras backend.

Everything the benchmarks run goes through here, so that one definition of
a training and an inference step is timed on every backend and their ratios
compare across backends:

- inference step: the forward call ``layer(x, training=False)``;
- training step: the forward call ``layer(x, training=True)``, the loss
  :func:`loss_of` (the sum over outputs of the mean of the squares), its
  gradient with respect to ``layer.trainable_variables`` and one update of
  the optimizer (variables without a gradient are skipped, as Keras does).

How each backend compiles them (the ``jit`` axis of the reports):

- TensorFlow: a ``tf.function`` with ``jit_compile`` off or on (XLA); the
  gradient by ``tf.GradientTape``, the update by
  ``optimizer.apply_gradients``.
- JAX: always one ``jax.jit`` (XLA) function, recorded as ``jit`` on; the
  step is stateless (``layer.stateless_call``, ``jax.value_and_grad``,
  ``optimizer.stateless_apply``), its variables, their updates and the
  optimizer's state are carried from call to call, and the state is donated
  to the call, as ``model.fit`` does on JAX.
- PyTorch: eager, no compilation, recorded as ``jit`` off; the inference
  step runs under ``torch.no_grad()``, the training step clears the
  gradients, calls ``loss.backward()`` and ``optimizer.apply`` under
  ``torch.no_grad()``, as ``model.fit`` does on PyTorch.

Every function made here returns only once its result is computed (JAX
dispatches asynchronously: its results are waited for with
``jax.block_until_ready``; TensorFlow's and PyTorch's CPU calls are
synchronous). The backend's package is imported when a step is made, never
at import: TensorFlow is not needed on JAX or PyTorch.
"""

import functools
import inspect
import operator

import keras
import numpy as np
from keras import ops


def backend():
    """The Keras backend the steps are made for: ``"tensorflow"``, ``"jax"``, ``"torch"``."""
    return keras.backend.backend()


def loss_of(outputs):
    """The training step's loss: the sum over ``outputs`` of the mean of their squares."""
    return functools.reduce(
        operator.add, [ops.mean(ops.square(y)) for y in keras.tree.flatten(outputs)]
    )


class Step:
    """A step made by :func:`make_step`: ``step(x)`` runs it once and waits for the result.

    ``traces`` is how often it was traced so far (``None`` on PyTorch, which
    runs eagerly and traces nothing).
    """

    def __init__(self, run, traces=lambda: None):
        self._run, self._traces = run, traces

    def __call__(self, x):
        return self._run(x)

    @property
    def traces(self):
        return self._traces()


class _Counter:
    """How many times a JAX function was traced (its Python body runs once per trace)."""

    def __init__(self):
        self.count = 0

    def counted(self, fn):
        @functools.wraps(fn)
        def wrapper(*args):
            self.count += 1
            return fn(*args)

        return wrapper


class _TensorFlow:
    """``tf.function`` steps, with ``jit_compile`` off and on."""

    jit = (False, True)
    text = "`jit` = `jit_compile=True`"

    @staticmethod
    def wait(out):
        # CPU execution is synchronous; touching the results costs nothing and
        # guards against a lazily finished output.
        for tensor in keras.tree.flatten(out):
            tensor.shape  # noqa: B018
        return out

    @classmethod
    def compiled(cls, fn, jit=False):
        import tensorflow as tf

        return _waiting(tf.function(fn, jit_compile=jit, autograph=False), cls.wait)

    @classmethod
    def infer(cls, layer, jit):
        import tensorflow as tf

        @tf.function(jit_compile=jit, reduce_retracing=False)
        def infer(x):
            return layer(x, training=False)

        return Step(_waiting(infer, cls.wait), infer.experimental_get_tracing_count)

    @classmethod
    def train(cls, layer, optimizer, jit):
        import tensorflow as tf

        variables = layer.trainable_variables

        @tf.function(jit_compile=jit, reduce_retracing=False)
        def train(x):
            with tf.GradientTape() as tape:
                loss = loss_of(layer(x, training=True))
            grads = tape.gradient(loss, variables)
            # Variables without a gradient (the answer layer's dead channel-0
            # filters) are skipped, as Keras would, minus its warning.
            optimizer.apply_gradients(
                [(g, v) for g, v in zip(grads, variables) if g is not None]
            )
            return loss

        return Step(_waiting(train, cls.wait), train.experimental_get_tracing_count)

    @classmethod
    def kernel_functions(cls, read, variables, wrt, upstream):
        import tensorflow as tf

        def backward():
            with tf.GradientTape() as tape:
                kernel = read()
                loss = ops.sum(kernel * upstream)
            # the kernel is returned too: the gradient alone does not need it
            return kernel, tape.gradient(loss, wrt)

        return cls.compiled(read), cls.compiled(backward)

    @staticmethod
    def quiet():
        import tensorflow as tf

        # One trace per function is checked and reported; TensorFlow's
        # retracing warning counts traces across the many functions made.
        tf.get_logger().setLevel("ERROR")


class _Jax:
    """``jax.jit`` of stateless steps: always XLA."""

    jit = (True,)
    text = "every step is one `jax.jit` function (XLA), the only way on JAX: `jit` throughout"

    @staticmethod
    def wait(out):
        import jax

        return jax.block_until_ready(out)

    @classmethod
    def compiled(cls, fn, jit=True):
        import jax

        return _waiting(jax.jit(fn), cls.wait)

    @classmethod
    def infer(cls, layer, jit):
        import jax

        counter = _Counter()

        @counter.counted
        def infer(trainable, non_trainable, x):
            outputs, _ = layer.stateless_call(
                trainable, non_trainable, x, **_training(layer, False))
            return outputs

        compiled = jax.jit(infer)
        trainable = _values(layer.trainable_variables)
        non_trainable = _values(layer.non_trainable_variables)
        return Step(lambda x: cls.wait(compiled(trainable, non_trainable, x)),
                    lambda: counter.count)

    @classmethod
    def train(cls, layer, optimizer, jit):
        import jax

        def loss_and_updates(trainable, non_trainable, x):
            outputs, non_trainable = layer.stateless_call(
                trainable, non_trainable, x, **_training(layer, True))
            return loss_of(outputs), non_trainable

        gradient = jax.value_and_grad(loss_and_updates, has_aux=True)
        counter = _Counter()

        @counter.counted
        def train(state, x):
            trainable, non_trainable, optimizer_variables = state
            (loss, non_trainable), grads = gradient(trainable, non_trainable, x)
            trainable, optimizer_variables = optimizer.stateless_apply(
                optimizer_variables, grads, trainable)
            return loss, (trainable, non_trainable, optimizer_variables)

        compiled = jax.jit(train, donate_argnums=0)
        state = [(_values(layer.trainable_variables), _values(layer.non_trainable_variables),
                  _values(optimizer.variables))]

        def run(x):
            loss, state[0] = cls.wait(compiled(state[0], x))
            return loss

        return Step(run, lambda: counter.count)

    @classmethod
    def kernel_functions(cls, read, variables, wrt, upstream):
        import jax

        # Every variable read is an argument (as a variable is in a
        # tf.function): captured as constants, XLA would fold the assembly.
        values = _values(variables)
        (at,) = [i for i, v in enumerate(variables) if v is wrt]

        def forward(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return read()

        def loss(w, values, upstream):
            kernel = forward(values[:at] + [w] + values[at + 1:])
            return ops.sum(kernel * upstream), kernel

        forward_fn, backward_fn = jax.jit(forward), jax.jit(jax.grad(loss, has_aux=True))
        return (lambda: cls.wait(forward_fn(values)),
                lambda: cls.wait(backward_fn(values[at], values, upstream)))

    @staticmethod
    def quiet():
        pass


class _Torch:
    """Eager PyTorch steps: nothing to compile."""

    jit = (False,)
    text = "steps run eagerly: nothing is compiled on PyTorch (`-` in the jit column)"

    @staticmethod
    def wait(out):
        return out  # CPU calls return once computed

    @classmethod
    def compiled(cls, fn, jit=False):
        import torch

        def run(*args):
            with torch.no_grad():
                return fn(*args)

        return run

    @classmethod
    def infer(cls, layer, jit):
        return Step(cls.compiled(lambda x: layer(x, training=False)))

    @classmethod
    def train(cls, layer, optimizer, jit):
        import torch

        variables = layer.trainable_variables

        def train(x):
            for v in variables:  # what Module.zero_grad() does
                v.value.grad = None
            loss = loss_of(layer(x, training=True))
            loss.backward()
            pairs = [(v.value.grad, v) for v in variables if v.value.grad is not None]
            with torch.no_grad():
                optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return loss

        return Step(train)

    @classmethod
    def kernel_functions(cls, read, variables, wrt, upstream):
        import torch

        def backward():
            kernel = read()
            (grad,) = torch.autograd.grad(ops.sum(kernel * upstream), [wrt.value])
            return kernel, grad

        return cls.compiled(read), backward

    @staticmethod
    def quiet():
        pass


_BACKENDS = {"tensorflow": _TensorFlow, "jax": _Jax, "torch": _Torch}


def _waiting(fn, wait):
    """``fn`` that returns only once its result is computed."""
    return lambda *args: wait(fn(*args))


def _training(layer, training):
    """``training=`` for ``layer.stateless_call``, which passes it on to
    ``call`` unchecked (``layer(...)`` drops it where ``call`` has none)."""
    return {"training": training} if "training" in inspect.signature(layer.call).parameters else {}


def _values(variables):
    """Copies of the variables' values (a JAX step donates its state)."""
    import jax.numpy as jnp

    return [jnp.array(v.value, copy=True) for v in variables]


def _backend():
    name = backend()
    if name not in _BACKENDS:
        raise ValueError(
            f"The benchmarks run on the Keras backends {sorted(_BACKENDS)}. "
            f"Received: KERAS_BACKEND={name!r}."
        )
    return _BACKENDS[name]


def make_step(layer, mode, jit, optimizer=None):
    """A step of ``layer``: ``"train"`` (forward, backward, update) or ``"infer"``.

    Args:
        layer: a built Keras layer.
        mode: ``"train"`` or ``"infer"``.
        jit: TensorFlow's ``jit_compile``; JAX always compiles with XLA and
            PyTorch never compiles, whatever it is.
        optimizer: for ``"train"``; built on ``layer.trainable_variables``
            here if it is not yet.

    Returns:
        A :class:`Step`.
    """
    steps = _backend()
    if mode == "infer":
        return steps.infer(layer, jit)
    if not optimizer.built:
        optimizer.build(layer.trainable_variables)
    return steps.train(layer, optimizer, jit)


def compiled(fn):
    """``fn`` compiled as the backend compiles a step without ``jit_compile``.

    A ``tf.function``, a ``jax.jit`` function, or ``fn`` itself under
    ``torch.no_grad()``; it returns only once its result is computed. For
    functions of tensors only: a Keras variable read inside would be a
    constant under ``jax.jit``.
    """
    return _backend().compiled(fn)


def kernel_functions(read, variables, wrt, upstream):
    """A compiled forward and forward-plus-backward of a kernel read from variables.

    Args:
        read: no-argument function returning a kernel computed from Keras
            ``variables`` (e.g. ``lambda: layer.kernel``).
        variables: every Keras variable ``read`` reads.
        wrt: the one of them the gradient is taken of.
        upstream: tensor of the kernel's shape.

    Returns:
        ``(forward, backward)``, no-argument functions: ``forward()`` returns
        the kernel, ``backward()`` the kernel and the gradient of
        ``sum(kernel * upstream)`` with respect to ``wrt``.
    """
    return _backend().kernel_functions(read, variables, wrt, upstream)


def jit_settings(requested):
    """The settings of the ``jit`` axis among ``requested`` that this backend has.

    TensorFlow: off and on; JAX: on only (every step is XLA); PyTorch: off
    only (nothing is compiled).

    Raises:
        ValueError: none of ``requested`` exists on this backend.
    """
    available = _backend().jit
    settings = tuple(j for j in requested if j in available)
    if not settings:
        names = {False: "off", True: "on"}
        raise ValueError(
            f"On the {backend()} backend `--jit` can only be "
            f"{' or '.join(names[j] for j in available)}. "
            f"Received: {'/'.join(names[j] for j in requested)}."
        )
    return settings


def jit_text(name):
    """What the ``jit`` column of a report means on backend ``name``."""
    return _BACKENDS[name].text


def quiet():
    """Silences the backend's retracing warnings (TensorFlow's logger)."""
    _backend().quiet()


def tensor(array):
    """A NumPy array as a tensor of the backend."""
    return ops.convert_to_tensor(np.asarray(array))
