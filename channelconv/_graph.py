"""Rewriting Keras models: walk their layers, rebuild them with some replaced.

The one place that knows how a Sequential or functional model is taken
apart and put together again. :func:`~channelconv.convert_model`,
:func:`~channelconv.strip`, :func:`~channelconv.condense` and the pruning
callback all go through it: :func:`check_graph_model` refuses what cannot
be rebuilt, :func:`all_layers` walks nested models, :func:`rebuild` clones a
model with chosen layers replaced and every other layer's weights copied.

Keras has no public name for the class of functional models; it is
imported here alone, from ``keras.src``. Should a Keras release move it,
the check falls back to the class's name and
``tests/test_convert.py::test_keras_still_has_the_functional_class`` fails,
so the move is seen in CI rather than by users.
"""

import keras

try:  # no public name exists (Keras 3.8 to 3.15 at least)
    from keras.src.models.functional import Functional
except ImportError:  # pragma: no cover - a Keras that moved it; the test says so
    Functional = None


def is_graph_model(layer):
    """Whether ``layer`` is a Sequential or functional model (not subclassed).

    Example:

    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> is_graph_model(functional), is_graph_model(keras.Sequential())
    (True, True)
    >>> is_graph_model(keras.layers.Dense(2))
    False
    """
    if isinstance(layer, keras.Sequential):
        return True
    if Functional is not None:
        return isinstance(layer, Functional)
    return any(cls.__name__ == "Functional" for cls in type(layer).__mro__)


def check_graph_model(model, function):
    """Raises ``TypeError`` unless ``model`` is a Sequential or functional model.

    Args:
        model: what the user passed.
        function: the public function's name, for the message.
    """
    if not is_graph_model(model):
        raise TypeError(
            f"`{function}` rebuilds Sequential and functional Keras models "
            "only; a subclassed model's wiring is code, so replace its layers "
            "in that code (with `from_conv` or `to_keras_layer`). Received: "
            f"model {getattr(model, 'name', model)!r} of type "
            f"{type(model).__name__}."
        )


def all_layers(model):
    """The layers of ``model``, those of nested graph models included.

    Example:

    >>> import keras
    >>> inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")],
    ...                          name="inner")
    >>> outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.Dense(2, name="e")])
    >>> [layer.name for layer in all_layers(outer)]
    ['inner', 'd', 'e']
    """
    for layer in model.layers:
        yield layer
        if is_graph_model(layer):
            yield from all_layers(layer)


def rebuild(model, replace):
    """Clones ``model``, with ``replace(layer)`` where it is not ``None``.

    Layers that ``replace`` leaves alone are cloned from their config and get
    a copy of the original's weights (``clone_model`` itself does not copy
    weights), so the new model shares no variable with ``model``. Nested
    graph models are rebuilt too; shared layers stay shared. A compiled
    model's compile configuration is reapplied (with a fresh optimizer).

    Args:
        model: a built Sequential or functional model (see
            :func:`check_graph_model`).
        replace: ``layer -> new layer or None``; a new layer must be built,
            with its weights set.

    Returns:
        The new model, of the same kind and name.

    Example:

    >>> import numpy as np, keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    >>> twin = rebuild(model, lambda layer: None)
    >>> twin.get_layer("d") is model.get_layer("d")
    False
    >>> x = np.ones((1, 4), "float32")
    >>> bool(np.array_equal(model.predict_on_batch(x), twin.predict_on_batch(x)))
    True
    """
    replaced = set()  # ids of the new layers made by `replace`

    def clone(layer):
        new = replace(layer)
        if new is None:
            return layer.__class__.from_config(layer.get_config())
        replaced.add(id(new))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    _copy_weights(model, new_model, replaced)
    if model.compiled and not new_model.compiled:  # Keras < 3.9's clone_model
        new_model.compile_from_config(model.get_compile_config())
    return new_model


def _copy_weights(source, target, replaced):
    """Copies weights layer by layer (by name) except into replaced layers."""
    for layer in source.layers:
        if not layer.weights:  # e.g. an InputLayer, which the clone renames
            continue
        new = target.get_layer(layer.name)
        if id(new) in replaced:
            continue
        if is_graph_model(layer):
            _copy_weights(layer, new, replaced)
        else:
            new.set_weights(layer.get_weights())
