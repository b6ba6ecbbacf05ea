"""Optional parts of the install ("extras"): which command needs which, and the error without it.

  pip install s2f                 describe, train, evaluate, export, serve, predict, bench
  pip install 's2f[prepare]'      + `s2f prepare` (Apache Beam, MTCNN face detection)
  pip install 's2f[dask]'         + `s2f prepare --runner=DaskRunner` (a dask.distributed cluster)
  pip install 's2f[synthetic]'    + the synthetic corpus's voices (espeak-ng), for `prepare
                                  synthetic` and `demo`
  pip install 's2f[report]'       + report.html's plots (matplotlib; `evaluate` runs without)
  pip install 's2f[all]'          every extra but `gpu` (TensorFlow's CUDA libraries)

require(command, kind) runs before a command: when a module it needs is not installed it raises
MissingExtraError, which the command line prints as one line naming the `pip install` that fixes it
(`s2f prepare synthetic: needs the 'prepare' extra: pip install 's2f[prepare]'`). for_import_error
does the same for a ModuleNotFoundError raised later (an import this table does not foresee).
Modules are looked up with importlib.util.find_spec, which imports nothing.
"""

from __future__ import annotations

import importlib.util

from s2f_tf.contract import S2FError

# extra -> the top-level modules it installs (pyproject.toml's [project.optional-dependencies])
EXTRAS = {
    "prepare": ("apache_beam", "mtcnn"),
    "dask": ("dask", "distributed"),
    "synthetic": ("espeakng_loader",),
    "report": ("matplotlib",),
}
# command (with its source or benchmark, when it has one) -> the modules it cannot run without
NEEDS = {
    "prepare synthetic": ("apache_beam", "espeakng_loader"),
    "prepare avspeech": ("apache_beam", "mtcnn"),
    "prepare folders": ("apache_beam", "mtcnn"),
    "demo": ("apache_beam", "espeakng_loader"),
}
EXTRA_OF = {module: extra for extra, modules in EXTRAS.items() for module in modules}


class MissingExtraError(S2FError):
    """A command needs an extra that is not installed: one line naming the pip install."""

    def __init__(self, extras: list[str]):
        self.extras = sorted(set(extras))
        names = " and ".join(f"'{e}'" for e in self.extras)
        plural = "s" if len(self.extras) > 1 else ""
        super().__init__(f"needs the {names} extra{plural}: {install_command(self.extras)}")


def install_command(extras: list[str]) -> str:
    return f"pip install 's2f[{','.join(sorted(set(extras)))}]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed package
        return False


def missing_extras(modules) -> list[str]:
    """The extras whose modules among `modules` are not installed, sorted."""
    return sorted({EXTRA_OF[m] for m in modules if m in EXTRA_OF and not _installed(m)})


def require(command: str) -> None:
    """Raises MissingExtraError when `command` ("prepare synthetic", "demo", ...) lacks an extra."""
    extras = missing_extras(NEEDS.get(command, ()))
    if extras:
        raise MissingExtraError(extras)


def for_import_error(error: ImportError) -> MissingExtraError | None:
    """A ModuleNotFoundError for one of an extra's modules as a MissingExtraError; None otherwise."""
    name = getattr(error, "name", None) or ""
    extra = EXTRA_OF.get(name.split(".")[0])
    return MissingExtraError([extra]) if isinstance(error, ModuleNotFoundError) and extra else None
