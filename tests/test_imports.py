"""What importing channelconv costs and does, each in a fresh interpreter.

``import channelconv`` imports neither Keras nor a backend, and neither does
the ``channelconv`` command's help; the public names load on first use; a
model holding channelconv layers loads with ``keras.saving.load_model``
after ``import channelconv`` and ``import keras`` in either order, with no
channelconv name used first (``channelconv/__init__.py`` says how). And the
library never imports its applications (``channelconv.apps``).
"""

import ast
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import keras
import pytest

from channelconv import ChannelConv2D

pytestmark = pytest.mark.subprocess

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "channelconv"
HEAVY = ("keras", "tensorflow", "jax", "torch")


def run_python(script, cwd=None):
    """Runs ``script`` in a fresh interpreter (this process's environment and
    Keras backend); returns its stdout, after checking it exited with 0."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
        timeout=300, cwd=cwd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def heavy_modules():
    return f"sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))"


def _written_version():
    """``__version__`` as channelconv/__init__.py writes it (not imported)."""
    source = pathlib.Path(__file__).resolve().parents[1] / "channelconv" / "__init__.py"
    return re.search(r'^__version__ = "(.+)"$', source.read_text(), re.M).group(1)


@pytest.mark.once
def test_import_is_lazy_and_every_public_name_loads():
    out = run_python(
        f"""
        import sys
        import channelconv
        print("AFTER IMPORT", {heavy_modules()})
        print("DIR", set(channelconv.__all__) <= set(dir(channelconv)))
        print("VERSION", channelconv.__version__)
        try:
            channelconv.no_such_name
        except AttributeError as error:
            print("ERROR", error)
        print("AFTER LOOK-UPS", {heavy_modules()})
        from channelconv import *
        print("STAR", all(name in globals() for name in channelconv.__all__))
        print("CLASS", ChannelConv2D.__module__, channelconv.ChannelConv2D is ChannelConv2D)
        print("SUBMODULE", channelconv._routing.__name__)
        print("APPS", [m for m in sys.modules if m.startswith("channelconv.apps")])
        """
    )
    assert out.splitlines() == [
        "AFTER IMPORT []",
        "DIR True",
        f"VERSION {_written_version()}",
        "ERROR module 'channelconv' has no attribute 'no_such_name'",
        "AFTER LOOK-UPS []",
        "STAR True",
        "CLASS channelconv.layers.channel_conv2d True",
        "SUBMODULE channelconv._routing",
        "APPS []",
    ]


@pytest.mark.once
def test_command_help_and_usage_errors_import_no_keras():
    argvs = [["--help"], ["reproduce", "--help"], ["demo", "--help"], ["prune-demo", "--help"],
             ["demo", "--epochs", "0"], ["train"]]
    out = run_python(
        f"""
        import contextlib, io, sys
        from channelconv.apps.cli import main
        for argv in {argvs!r}:
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                try:
                    main(argv)
                except SystemExit as exit:
                    code = exit.code
            print(argv, code)
        print("HEAVY", {heavy_modules()})
        """
    )
    assert out.splitlines() == [f"{argv} {0 if '--help' in argv else 2}" for argv in argvs] + [
        "HEAVY []"
    ]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A model holding a ChannelConv2D, saved on this pass's backend."""
    inputs = keras.Input((8, 8, 3))
    layer = ChannelConv2D(4, 3, frozen=[(0, 1), (2, 3)], name="conv")
    path = tmp_path_factory.mktemp("saved") / "model.keras"
    keras.Model(inputs, layer(inputs)).save(path)
    return path


LOAD = """
model = keras.saving.load_model({path!r})
conv = model.get_layer("conv")
print(type(conv).__module__, type(conv).__name__, conv.frozen_mask.nonzero())
"""


@pytest.mark.parametrize(
    "imports",
    ["import channelconv\nimport keras", "import keras\nimport channelconv"],
    ids=["channelconv-then-keras", "keras-then-channelconv"],
)
def test_a_saved_model_loads_after_importing_channelconv_in_either_order(saved_model, imports):
    out = run_python(imports + LOAD.format(path=str(saved_model)))
    assert out.split(maxsplit=2) == [
        "channelconv.layers.channel_conv2d", "ChannelConv2D", "(array([0, 2]), array([1, 3]))\n"
    ]


@pytest.mark.tensorflow
def test_tensorflow_importing_keras_registers_the_layers(saved_model):
    """TensorFlow looks Keras up (``importlib.util.find_spec``) and imports it
    itself; the layers are registered all the same."""
    out = run_python(
        f"""
        import channelconv
        import tensorflow as tf
        model = tf.keras.models.load_model({str(saved_model)!r})
        print(type(model.get_layer("conv")).__name__)
        """
    )
    assert out == "ChannelConv2D\n"


def imported_modules(path):
    """The absolute names of the modules that ``path`` (in the package) imports."""
    package = ["channelconv", *path.relative_to(PACKAGE).parent.parts]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_the_library_never_imports_the_applications():
    """No module of the library (``channelconv`` but ``channelconv/apps/``)
    imports ``channelconv.apps`` or a module of it."""
    library = [p for p in sorted(PACKAGE.rglob("*.py"))
               if "apps" not in p.relative_to(PACKAGE).parts]
    assert PACKAGE / "layers" / "base.py" in library
    offenders = [f"{path.relative_to(PACKAGE)}: {name}" for path in library
                 for name in imported_modules(path)
                 if name.split(".")[:2] == ["channelconv", "apps"]]
    assert offenders == []


def test_tensorflow_only_library_paths_exist():
    """Every TensorFlow-only pattern of conftest names a file: a moved module
    must be moved in the list too, or its examples would run on every backend."""
    import conftest

    root = pathlib.Path(__file__).resolve().parents[1]
    for pattern in conftest.TENSORFLOW_ONLY_LIBRARY:
        assert list(root.glob(pattern)), pattern


def test_only_the_backend_facade_asks_which_backend_runs():
    """The per-backend choices are made once, in ``channelconv._backend``:
    no other module of the library asks which backend runs (the
    applications may require TensorFlow through the facade)."""
    asks = re.compile(r"is_tensorflow\(|backend\.backend\(\)|KERAS_BACKEND")
    facade = PACKAGE / "_backend"
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py")) if facade not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if asks.search(line)
    ]
    assert offenders == []
