"""channelconv: Keras convolutions with individually frozen kernels.

Importing the package is cheap: it imports neither Keras nor a backend.
Each public name (``__all__``) is imported from its module the first time it
is used (PEP 562 ``__getattr__``), and so is a submodule reached as an
attribute (``channelconv._routing``); the ``channelconv`` command prints its
help without loading TensorFlow.

One promise needs more: ``import channelconv`` and then
``keras.saving.load_model("model.keras")`` loads a model holding channelconv
layers without any channelconv name being used first. The layers register
with Keras (``keras.saving.register_keras_serializable(package=
"channelconv")``) when :mod:`channelconv.layers` runs, and Keras imports
modules named in a saved file only if they belong to Keras's own packages.
So importing channelconv imports :mod:`channelconv.layers` as well when
Keras is already imported (it then costs little), and otherwise installs
:class:`_RegisterWithKeras` on ``sys.meta_path``: a finder that answers only
for ``keras`` and, when Keras is loaded, removes itself, lets Keras's own
loader run it and then imports :mod:`channelconv.layers`. A process that
never imports Keras never pays for it.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.3.0"

__all__ = [
    "BackendError",
    "ChannelConv1D",
    "ChannelConv2D",
    "ChannelConv3D",
    "ConstantSparsity",
    "KernelPruning",
    "PolynomialDecay",
    "SparsePlan",
    "condense",
    "convert_model",
    "from_conv",
    "from_conv2d",
    "grouped_frozen_mask",
    "plot_kernel_mask",
    "random_frozen_mask",
    "strip",
    "to_keras_layer",
    "__version__",
]

#: The module each public name comes from.
_SOURCES = {
    "channelconv._backend": ("BackendError",),
    "channelconv.convert": (
        "convert_model", "from_conv", "from_conv2d", "strip", "to_keras_layer"
    ),
    "channelconv.layers": ("ChannelConv1D", "ChannelConv2D", "ChannelConv3D"),
    "channelconv.mask": ("grouped_frozen_mask", "random_frozen_mask"),
    "channelconv.plan": ("SparsePlan",),
    "channelconv.plot": ("plot_kernel_mask",),
    "channelconv.pruning": ("ConstantSparsity", "KernelPruning", "PolynomialDecay", "condense"),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}


def __getattr__(name):
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    elif name.isidentifier() and not name.startswith("__") and importlib.util.find_spec(
        f"{__name__}.{name}"
    ):
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next look-up does not come here
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _RegisterWithKeras(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports :mod:`channelconv.layers` right after Keras is imported.

    As a finder it answers only for ``keras``: Keras's own spec (found by
    the finders after it), with itself as the loader. A look-up alone
    (``importlib.util.find_spec("keras")``, which TensorFlow makes) changes
    nothing. As the loader it removes itself from ``sys.meta_path``, gives
    the module Keras's loader back, runs it, then imports
    :mod:`channelconv.layers`.
    """

    def __init__(self):
        self.looking = False  # True while it asks the other finders

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras" or self.looking:
            return None
        self.looking = True
        try:
            spec = importlib.util.find_spec("keras")
        finally:
            self.looking = False
        if spec is not None and spec.loader is not None:
            self.keras_loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self.keras_loader.create_module(spec)

    def exec_module(self, module):
        _remove_hook()
        module.__spec__.loader = module.__loader__ = self.keras_loader
        self.keras_loader.exec_module(module)
        importlib.import_module("channelconv.layers")


def _remove_hook():
    # By name, not class: a reloaded channelconv removes its old hook too.
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_RegisterWithKeras"]


if "keras" in sys.modules:
    importlib.import_module("channelconv.layers")
else:
    _remove_hook()  # one hook, even if this module is reloaded
    sys.meta_path.insert(0, _RegisterWithKeras())
