"""Packaging: pyproject.toml's metadata and extras, requirements.lock's pins, the core's imports, and
the one-line error of a command whose extra is not installed. Fast: no TensorFlow is loaded."""

import ast
import os
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from s2f_tf.app import cli, extras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_PARTY = ("s2f_tf", "pipelines", "serving")
EXTRA_MODULES = sorted(extras.EXTRA_OF)  # apache_beam, espeakng_loader, matplotlib, mtcnn
# the modules each core dependency brings (pyproject's [project] dependencies)
CORE_MODULES = {
    "tensorflow": "tensorflow",
    "keras": "keras",
    "numpy": "numpy",
    "h5py": "h5py",
    "pillow": "PIL",
    "scipy": "scipy",
    "soundfile": "soundfile",
    "soxr": "soxr",
    "imageio-ffmpeg": "imageio_ffmpeg",
    "webrtcvad-wheels": "webrtcvad",
    "tensorflow-serving-api": "tensorflow_serving",
    "grpcio": "grpc",
    "prometheus-client": "prometheus_client",
    "protobuf": "google",
    "tensorboard": "tensorboard",
}
# what the core commands (describe, train, evaluate, export, serve, predict, bench) import
CORE_ENTRY_POINTS = (
    "s2f_tf.app.cli",
    "s2f_tf.factory",
    "s2f_tf.configs",
    "s2f_tf.train.loop",
    "s2f_tf.evaluate",
    "s2f_tf.export",
    "s2f_tf.predict",
    "s2f_tf.recording",
    "serving.server",
    "serving.client",
    "s2f_tf.app.bench",
    "s2f_tf.app.bench_serve",
)


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _lock() -> dict[str, str]:
    pins = {}
    for line in open(os.path.join(ROOT, "requirements.lock")).read().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_pyproject_declares_the_package_and_its_extras():
    project = _pyproject()["project"]
    assert project["name"] == "s2f" and project["dynamic"] == ["version"]
    assert project["scripts"] == {"s2f": "s2f_tf.app.cli:run"}
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["dynamic"]["version"] == {"attr": "s2f_tf.__version__"}
    assert setuptools["package-data"] == {"serving": ["web/*", "*.config"]}
    groups = project["optional-dependencies"]
    assert set(groups) == {
        "prepare",
        "dask",
        "gcs",
        "synthetic",
        "serve",
        "report",
        "gpu",
        "profile",
        "test",
        "all",
        "demo",
    }
    (everything,) = map(Requirement, groups["all"])
    assert everything.name == "s2f" and everything.extras == set(groups) - {
        "gpu",
        "profile",
        "test",
        "all",
        "demo",
    }
    (demo,) = map(Requirement, groups["demo"])
    assert demo.extras == {"prepare", "synthetic", "report"}  # what `make demo` runs
    assert [str(r) for r in map(Requirement, groups["gpu"])] == ["tensorflow[and-cuda]==2.21.*"]
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert core == set(CORE_MODULES)
    assert "absl-py" not in core  # TensorFlow's, never imported by s2f
    assert set(extras.EXTRAS) <= set(groups)  # the CLI's table names extras that pyproject has
    # setup.py is a shim: the metadata is stated once, in pyproject.toml
    calls = [
        n
        for n in ast.walk(ast.parse(open(os.path.join(ROOT, "setup.py")).read()))
        if isinstance(n, ast.Call)
    ]
    assert [(c.func.id, c.args, c.keywords) for c in calls] == [("setup", [], [])]


def test_version_is_stated_once_and_importing_the_package_is_light():
    tree = ast.parse(open(os.path.join(ROOT, "s2f_tf", "__init__.py")).read())
    assert not [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    (version,) = [
        n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["__version__"]
    ]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    from s2f_tf import __version__

    assert __version__ == version


def test_every_declared_dependency_is_pinned_in_the_lock():
    project, pins = _pyproject()["project"], _lock()
    declared = list(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        # TensorFlow's CUDA wheels (no GPU here or in CI), TensorBoard's profile plugin: not pinned
        if extra not in ("gpu", "profile"):
            declared += requirements
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "s2f":  # `all` names the other extras
            continue
        assert name in pins, f"{requirement.name} is declared but not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )
    assert "ml-collections" not in pins  # nothing needs it


def _module_file(module: str) -> str | None:
    base = os.path.join(ROOT, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def _module_level_imports(module: str) -> set[str]:
    """The modules `module` imports when it is imported: its statements outside functions and
    classes (inside `if`/`try` too), with `from package import submodule` as the submodule."""
    path = _module_file(module)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found.add(base)
                for alias in node.names:
                    if _module_file(f"{base}.{alias.name}"):
                        found.add(f"{base}.{alias.name}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])

    visit(ast.parse(open(path).read()).body)
    return found


def _third_party_imports_of(entry_points) -> dict[str, str]:
    """Top-level third-party module -> the first-party module that imports it at module level,
    over everything `entry_points` import when they are imported."""
    seen, todo, third_party = set(), list(entry_points), {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        for name in _module_level_imports(module):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                if _module_file(name):
                    todo.append(name)
            elif top not in sys.stdlib_module_names and top != "_ctypes":
                third_party.setdefault(top, module)
    return third_party


def test_core_commands_import_no_extra_at_module_level():
    imported = _third_party_imports_of(CORE_ENTRY_POINTS)
    assert not {m: imported[m] for m in EXTRA_MODULES if m in imported}, (
        "a core command imports an extra's package at module level: import it where it is used"
    )
    undeclared = set(imported) - set(CORE_MODULES.values())
    assert not undeclared, {m: imported[m] for m in undeclared}


BLOCKER = """
import os, sys
BLOCKED = set(os.environ["S2F_TEST_BLOCK"].split(","))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""


def _s2f(tmp_path, blocked, *args) -> subprocess.CompletedProcess:
    """Runs `s2f ARGS` with `blocked` modules unimportable (a sitecustomize on PYTHONPATH)."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, S2F_TEST_BLOCK=",".join(blocked), S2F_ALLOCATOR="system")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), ROOT, env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "s2f_tf.app.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_the_blocker_blocks(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, S2F_TEST_BLOCK="apache_beam", PYTHONPATH=str(tmp_path))
    code = "import importlib.util as u; print(u.find_spec('json') is not None); import apache_beam"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == "True\n"
    assert "ModuleNotFoundError: No module named 'apache_beam'" in r.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "serve", "predict", "describe"])
def test_core_commands_start_without_the_extras(tmp_path, command):
    r = _s2f(tmp_path, EXTRA_MODULES, command, "--help")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.startswith(f"usage: s2f {command}")


@pytest.mark.parametrize(
    "blocked, line",
    [
        (
            ["apache_beam", "mtcnn"],
            "s2f prepare synthetic: needs the 'prepare' extra: pip install 's2f[prepare]'",
        ),
        (
            EXTRA_MODULES,
            "s2f prepare synthetic: needs the 'prepare' and 'synthetic' extras: "
            "pip install 's2f[prepare,synthetic]'",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_its_pip_install(tmp_path, blocked, line):
    data = tmp_path / "data"
    r = _s2f(tmp_path, blocked, "prepare", "synthetic", "--identities=4", f"--data={data}")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", line + "\n")
    assert not data.exists()  # failed before doing anything


def test_the_dask_runner_without_its_extra_is_one_line(tmp_path):
    data = tmp_path / "data"
    r = _s2f(
        tmp_path,
        ["dask", "distributed"],
        "prepare",
        "synthetic",
        "--runner=DaskRunner",
        f"--data={data}",
    )
    line = "s2f prepare synthetic: needs the 'dask' extra: pip install 's2f[dask]'"
    assert (r.returncode, r.stdout, r.stderr) == (1, "", line + "\n")
    assert not data.exists()


def test_an_unforeseen_import_of_an_extra_is_one_line_too(monkeypatch, capsys):
    def needs_matplotlib(args):
        raise ModuleNotFoundError("No module named 'matplotlib.figure'", name="matplotlib.figure")

    monkeypatch.setitem(cli.COMMANDS, "describe", needs_matplotlib)
    assert cli.main(["describe"]) == 1
    assert capsys.readouterr().err == (
        "s2f describe: needs the 'report' extra: pip install 's2f[report]'\n"
    )

    def needs_something_else(args):
        raise ModuleNotFoundError("No module named 'nope'", name="nope")

    monkeypatch.setitem(cli.COMMANDS, "describe", needs_something_else)
    with pytest.raises(ModuleNotFoundError):  # a bug, not a missing extra: the traceback
        cli.main(["describe"])


def _metrics() -> dict:
    """The least of metrics.json that report.html reads."""
    chance = {f"R@{k}": k / 10 for k in (1, 2, 5, 10)}
    ranks = {metric: dict(chance) for metric in ("cosine", "l2", "l1")}
    spread = {"mean": 1.0, "std": 0.1}
    entry = {
        "retrieval": {**ranks, "chance": chance, "gallery_size": 10},
        "confidence_intervals": {
            "retrieval_R@1": {"value": 0.2, "low": 0.1, "high": 0.3},
            "matching_1:2": {"value": 0.6, "low": 0.5, "high": 0.7},
        },
        "angles": {"own_face": {"edges": [0, 90, 180], "counts": [3, 1]}},
        "similarity": {"cosine_angle_degrees": spread, "l2": spread, "l1": spread},
    }
    return {
        "inputs": {"voice": entry},
        "definitions": {"confidence_intervals": "95% bootstrap intervals"},
        "dataset": {"source": "synthetic"},
        "speakers": 4,
        "clips": 8,
        "split": "test",
        "config": "tiny",
    }


def test_report_without_matplotlib_has_the_tables_and_says_how_to_get_the_plots(monkeypatch):
    from s2f_tf import report

    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` fails
    page = report.render_report(_metrics(), b"png")
    assert "pip install 's2f[report]'" in page and 'class="plot"' not in page
    assert "recall at K" not in page and "<td>voice</td><td>cosine</td>" in page


def test_report_with_matplotlib_has_the_plots():
    pytest.importorskip("matplotlib")
    from s2f_tf import report

    page = report.render_report(_metrics(), b"png")
    assert (
        "pip install" not in page and page.count('class="plot"') == 3
    )  # retrieval, matching, angles
