"""Imports point one way (docs/DESIGN.md, "Layers"): read every module's imports with `ast`, fail on
one that points back, and on a file that grew past the size a module with one job needs."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("s2f_tf", "pipelines", "serving")

# module (prefix) -> what it may import of the project's own packages (prefixes). First match wins,
# so the more specific prefixes come first. Third-party imports are not restricted here.
CORE = ("s2f_tf.contract", "s2f_tf.files")
ALLOWED = (
    ("s2f_tf.app", PACKAGES),  # the applications: anything
    ("s2f_tf.contract", ()),
    ("s2f_tf.files", ()),  # write_atomic: whole files only
    ("s2f_tf.progress", ()),
    ("s2f_tf.savedmodel", ("s2f_tf.contract",)),  # load and call an export: predict and serving
    # configs check the networks' arguments with the models' own checks, which import no Keras
    ("s2f_tf.configs", CORE + ("s2f_tf.configs", "s2f_tf.models.checks")),
    ("s2f_tf.frontend", CORE),
    ("s2f_tf.losses", CORE),
    ("s2f_tf.metrics", CORE + ("s2f_tf.protocols",)),  # figures of arrays: numpy only
    ("s2f_tf.protocols", ()),  # whom a voice is matched against: numpy only
    ("s2f_tf.judge", CORE),  # the attribute classifier of evaluate: Keras only
    ("s2f_tf.report_html", ()),  # the page's tables, numbers and figures
    ("s2f_tf.report_card", ("s2f_tf.report_html",)),  # the model card
    ("s2f_tf.report", ("s2f_tf.report_html", "s2f_tf.report_card")),  # metrics.json -> report.html
    ("s2f_tf.models.checks", ()),
    ("s2f_tf.models", CORE + ("s2f_tf.models",)),
    ("s2f_tf.data.schema", CORE),
    ("s2f_tf.data.dataset", CORE + ("s2f_tf.data.schema",)),  # host side: parse, crop, batch
    ("s2f_tf.data", CORE),
    ("s2f_tf.media", CORE + ("s2f_tf.media",)),
    ("s2f_tf.synthetic", CORE + ("s2f_tf.synthetic",)),
    ("s2f_tf.factory", CORE + ("s2f_tf.configs", "s2f_tf.frontend", "s2f_tf.models")),
    ("s2f_tf.workdir", CORE + ("s2f_tf.configs", "s2f_tf.factory", "s2f_tf.models")),
    (
        "s2f_tf.train",
        CORE
        + (
            "s2f_tf.configs",
            "s2f_tf.frontend",
            "s2f_tf.models",
            "s2f_tf.losses",
            "s2f_tf.data",
            "s2f_tf.factory",
            "s2f_tf.workdir",
            "s2f_tf.progress",
            "s2f_tf.metrics",
            "s2f_tf.train",
        ),
    ),
    (
        "s2f_tf.evaluate",
        CORE
        + (
            "s2f_tf.configs",
            "s2f_tf.data",
            "s2f_tf.factory",
            "s2f_tf.judge",
            "s2f_tf.metrics",
            "s2f_tf.protocols",
            "s2f_tf.report",
            "s2f_tf.workdir",
        ),
    ),
    ("s2f_tf.export", CORE + ("s2f_tf.configs", "s2f_tf.factory", "s2f_tf.workdir")),
    ("s2f_tf.recording", CORE + ("s2f_tf.media", "s2f_tf.frontend")),  # speech, speakers, windows
    ("s2f_tf.predict", CORE + ("s2f_tf.media", "s2f_tf.recording", "s2f_tf.savedmodel")),
    ("s2f_tf", ()),  # the package's __init__
    (
        "pipelines",
        CORE
        + ("s2f_tf.data.schema", "s2f_tf.media", "s2f_tf.synthetic", "s2f_tf.models", "pipelines"),
    ),
    ("serving", CORE + ("serving", "s2f_tf.savedmodel")),  # the contract and a SavedModel
)
# Lines as `ruff format` writes them (4-space indent, 100 columns): about 450 of the old 2-space,
# 120-column style.
MAX_LINES = 600
LONGER_ON_PURPOSE: set[str] = set()  # paths of modules kept whole on purpose, each with its reason


def _modules():
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, ROOT)
                    module = rel[:-3].replace(os.sep, ".")
                    yield (
                        (module[: -len(".__init__")] if module.endswith(".__init__") else module),
                        rel,
                        path,
                    )


def _imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import in `source`, at any depth (functions included)."""
    found = []
    package = module if is_package or "." not in module else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            found += [
                (node.lineno, f"{base}.{alias.name}" if base else alias.name)
                for alias in node.names
            ]
    return found


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """The imports of `module` that point the wrong way, as 'line: module -> imported'."""
    allowed = next(allow for prefix, allow in ALLOWED if _is_under(module, prefix))
    bad = []
    for line, name in _imports(source, module, is_package):
        if name.split(".")[0] not in PACKAGES:
            continue  # third party / standard library
        # `from s2f_tf import factory` names the module s2f_tf.factory; `from s2f_tf import __version__`
        # names the package itself
        if name == "s2f_tf.__version__" or (module not in PACKAGES and _is_under(name, module)):
            continue  # a module's own submodules
        if not any(_is_under(name, prefix) for prefix in allowed):
            bad.append(f"{line}: {module} -> {name}")
    return bad


def test_imports_point_one_way():
    bad = []
    for module, rel, path in _modules():
        with open(path) as f:
            bad += [f"{rel}:{v}" for v in violations(module, f.read(), rel.endswith("__init__.py"))]
    assert not bad, "imports that point the wrong way (see docs/DESIGN.md, Layers):\n" + "\n".join(
        bad
    )


@pytest.mark.parametrize(
    "module, source",
    [
        ("s2f_tf.models.voice_encoder", "from s2f_tf.configs import Config\n"),
        ("s2f_tf.frontend", "def f():\n  from s2f_tf.train import loop\n"),
        ("s2f_tf.evaluate", "from s2f_tf import export\n"),
        ("s2f_tf.data.dataset", "from s2f_tf.frontend import SpectrogramFrontEnd\n"),
        ("serving.server", "from s2f_tf.export import export_model\n"),
        ("pipelines.common", "import serving.client\n"),
        ("s2f_tf.train.loop", "from pipelines import common\n"),
        ("s2f_tf.configs.base", "from ..models import voice_encoder\n"),
        ("s2f_tf.models.checks", "from s2f_tf import contract\n"),
        ("s2f_tf.savedmodel", "from s2f_tf import workdir\n"),
        ("serving.servable", "from s2f_tf.predict import LocalModel\n"),
        ("s2f_tf", "from s2f_tf.train import loop\n"),
    ],
)
def test_a_forbidden_import_is_caught(module, source):
    assert violations(module, source), f"{module}: {source!r} should be refused"


def test_the_host_pipeline_does_no_signal_processing():
    with open(os.path.join(ROOT, "s2f_tf", "data", "dataset.py")) as f:
        source = f.read()
    uses = [
        n.lineno
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Attribute)
        and n.attr == "signal"
        and getattr(n.value, "id", "") == "tf"
    ]
    assert not uses, (
        f"s2f_tf/data/dataset.py uses tf.signal at lines {uses}: the STFT runs in the model"
    )


def test_modules_stay_small():
    long = []
    for _, rel, path in _modules():
        with open(path) as f:
            count = sum(1 for _ in f)
        if count > MAX_LINES and rel not in LONGER_ON_PURPOSE:
            long.append(f"{rel}: {count} lines")
    assert not long, (
        f"over {MAX_LINES} lines (split along its jobs, or say why in LONGER_ON_PURPOSE):\n"
        + "\n".join(long)
    )


# A function a reader can hold on one screen: at most this many lines as formatted (def line to last
# line), unless named here with its reason ("path::qualified.name": "reason").
MAX_FUNCTION_LINES = 80
LONG_ON_PURPOSE: dict[str, str] = {}


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function in `tree`, methods and nested functions included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = prefix + node.name
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, name + ".")
        else:
            yield from _functions(node, prefix)


def test_functions_stay_short():
    tests = [
        os.path.join(folder, name)
        for folder, _, files in os.walk(os.path.join(ROOT, "tests"))
        for name in sorted(files)
        if name.endswith(".py")
    ]
    long, seen = [], set()
    for path in [path for _, _, path in _modules()] + tests:
        rel = os.path.relpath(path, ROOT)
        with open(path) as f:
            tree = ast.parse(f.read())
        for name, node in _functions(tree):
            count = node.end_lineno - node.lineno + 1
            key = f"{rel}::{name}"
            if key in LONG_ON_PURPOSE:
                seen.add(key)
            elif count > MAX_FUNCTION_LINES:
                long.append(f"{key}: {count} lines")
    assert not long, (
        f"functions over {MAX_FUNCTION_LINES} lines (split along their jobs, or say why in "
        "LONG_ON_PURPOSE):\n" + "\n".join(long)
    )
    assert seen == set(LONG_ON_PURPOSE), f"no such function: {set(LONG_ON_PURPOSE) - seen}"
