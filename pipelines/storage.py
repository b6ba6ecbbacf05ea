"""Every file `s2f prepare` reads or writes, through Beam's FileSystems: local paths and the schemes
Beam's extras add (gs://, s3://, azfs://, hdfs://) the same way, on the driver and on every worker.

  configure(beam_args)      Beam's filesystem options from the run's --beam_arg (the driver's side)
  is_local(path)            a plain path (no scheme)
  absolute(path)            a local path made absolute (workers may run elsewhere); a URL as it is
  exists(path), is_dir(path)
  list_files(root)          the files under `root`, recursively: paths relative to it ('/'), in the
                            order a sorted walk visits them (a folder's files, then its folders)
  read_text(path), read_bytes(path)
  local_copy(path)          a local path holding the file, for readers that need one (ffmpeg,
                            soundfile, PIL): the path itself when local, else a temporary copy
                            removed when the block ends; a MediaError names `path`, not the copy
  write_atomic(path, content)   written under a temporary name beside `path` and renamed when
                                complete (an object store's rename is a copy: the reader still
                                sees the whole object or none), no temporary left on failure
  local_output(path)        the same for a writer that wants a local path (a TFRecordWriter)
  glob(pattern), remove(paths), makedirs(path), join(base, *parts)

Training and evaluation read what this writes through tf.io.gfile, which in TensorFlow 2.21's PyPI
build has local paths and gs:// only (s2f_tf/files.require_filesystem names the others): BUILD says
which scheme works where. So `prepare` can write where training cannot read (s3://, ...), and
nothing here depends on TensorFlow's file systems.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

from s2f_tf.media.errors import MISSING_FILE, MediaError

_BINARY = "application/octet-stream"
_CHUNK = 8 << 20


# What each scheme's Beam filesystem needs installed: the install, and the client library it brings
# (Beam registers the filesystem without it and fails on first use, differently for each).
NEEDS = {
    "gs": ("s2f[gcs]", "google.cloud.storage"),
    "s3": ("apache-beam[aws]", "boto3"),
    "azfs": ("apache-beam[azure]", "azure.storage.blob"),
    "hdfs": ("apache-beam[hadoop]", "hdfs"),
}


def configure(beam_args) -> None:
    """Beam's filesystem options (--s3_endpoint_url, --hdfs_host, ...) from `--beam_arg`s, for the
    driver's own reads and writes (the pipeline passes them to its workers)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(list(beam_args)))


@functools.cache
def _check_scheme(scheme: str) -> None:
    import importlib.util

    from apache_beam.io.filesystems import FileSystems

    install, module = NEEDS.get(scheme, (None, None))
    try:
        usable = importlib.util.find_spec(module) is not None if module else True
    except ModuleNotFoundError:
        usable = False
    if usable:
        try:
            FileSystems.get_filesystem(f"{scheme}://")
        except ValueError:
            usable = False
    if not usable:
        raise ValueError(
            f"no filesystem for {scheme}:// is installed"
            + (f" (pip install '{install}')" if install else "")
        )


def _fs(path: str = ""):
    """Beam's FileSystems and its no-compression flag; a ValueError naming the path and the install
    that adds its filesystem when `path` is a URL no installed Beam filesystem takes."""
    # Imported on use: the pipeline modules are imported by the CLI before Beam is needed.
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if path and not is_local(path):
        try:
            _check_scheme(path.split("://", 1)[0])
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return FileSystems, CompressionTypes.UNCOMPRESSED


def is_local(path: str) -> bool:
    return "://" not in os.fspath(path)


def absolute(path: str) -> str:
    return os.path.abspath(path) if is_local(path) else path


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(base, *parts)
    return _fs(base)[0].join(base, *parts)


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path)
    return _fs(path)[0].exists(path)


def is_dir(path: str) -> bool:
    """A local directory; on an object store, a prefix that holds at least one object."""
    if is_local(path):
        return os.path.isdir(path)
    return bool(_match(join(path, "**"), limit=1))


def _match(pattern: str, limit: int | None = None) -> list[str]:
    fs = _fs(pattern)[0]
    result = fs.match([pattern], limits=None if limit is None else [limit])[0]
    return [m.path for m in result.metadata_list if not m.path.endswith("/")]


def _walk_key(rel: str) -> list[tuple[int, str]]:
    """Sorts relative paths as a sorted walk visits them: at each level files, then folders."""
    *folders, name = rel.split("/")
    return [(1, f) for f in folders] + [(0, name)]


def list_files(root: str) -> list[str]:
    """The files under `root`, recursively, relative to it with '/' (module docstring)."""
    if is_local(root):
        out = []
        for here, _, files in os.walk(root):
            rel = os.path.relpath(here, root)
            out += [name if rel == "." else f"{rel}/{name}".replace(os.sep, "/") for name in files]
    else:
        prefix = root.rstrip("/") + "/"
        out = [p[len(prefix) :] for p in _match(prefix + "**") if p.startswith(prefix)]
    return sorted(out, key=_walk_key)


def glob(pattern: str) -> list[str]:
    """The files that match `pattern` ('*' within a name, '**' across folders), sorted."""
    if is_local(pattern):
        import glob as _glob

        return sorted(p for p in _glob.glob(pattern) if os.path.isfile(p))
    return sorted(_match(pattern))


def read_bytes(path: str) -> bytes:
    fs, raw = _fs(path)
    with fs.open(path, mime_type=_BINARY, compression_type=raw) as f:
        return f.read()


def read_text(path: str) -> str:
    """The file as text (UTF-8, a byte-order mark dropped)."""
    return read_bytes(path).decode("utf-8-sig")


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding the file at `path` (module docstring)."""
    if is_local(path):
        yield path
        return
    if not exists(path):
        raise MediaError(MISSING_FILE, f"{path}: no such file")
    fs, raw = _fs(path)
    with tempfile.TemporaryDirectory(prefix="s2f-input-") as folder:
        local = os.path.join(folder, path.rstrip("/").rsplit("/", 1)[-1])
        with (
            fs.open(path, mime_type=_BINARY, compression_type=raw) as src,
            open(local, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, _CHUNK)
        try:
            yield local
        except MediaError as e:
            raise MediaError(e.reason, e.detail.replace(local, path)) from None


def makedirs(path: str) -> None:
    """A local directory (object stores have none to make)."""
    if is_local(path):
        os.makedirs(path, exist_ok=True)


def remove(paths: Iterable[str]) -> None:
    paths = list(paths)
    if paths:
        _fs(paths[0])[0].delete(paths)


def _temporary(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


@contextlib.contextmanager
def _renamed_when_done(path: str) -> Iterator[str]:
    tmp = _temporary(path)
    try:
        yield tmp
        _fs(path)[0].rename([tmp], [path])
    finally:
        if exists(tmp):
            remove([tmp])


def write_atomic(path: str, content: str | bytes | Iterable[str | bytes]) -> str:
    """Writes `content` to `path` whole or not at all (module docstring); returns `path`."""
    fs, raw = _fs(path)
    chunks = [content] if isinstance(content, (str, bytes)) else content
    with _renamed_when_done(path) as tmp:
        with fs.create(tmp, mime_type=_BINARY, compression_type=raw) as f:
            for chunk in chunks:
                f.write(chunk.encode() if isinstance(chunk, str) else chunk)
    return path


@contextlib.contextmanager
def local_output(path: str) -> Iterator[str]:
    """Yields a local path to write; when the block ends it becomes `path`, whole (module
    docstring). Local: a temporary name beside `path`; elsewhere a local temporary file, copied."""
    if is_local(path):
        with _renamed_when_done(path) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="s2f-output-") as folder:
        local = os.path.join(folder, "file")
        yield local
        with open(local, "rb") as f:
            write_atomic(path, iter(lambda: f.read(_CHUNK), b""))
