"""Files written whole or not at all: the one way s2f writes a result file.

  write_atomic(path, content)   str or bytes, or an iterable of them (streamed, for long files) ->
                                `path`, written under a temporary name beside it and renamed when
                                complete, so a reader, or a re-run after a crash, never sees half a
                                file; a failed write leaves no temporary file behind
  atomic_path(path)             the same for a writer that wants a path (a TFRecordWriter): yields
                                the temporary path, renamed to `path` when the block ends
  require_filesystem(path)      a ValueError naming the scheme when TensorFlow has no filesystem for
                                `path`'s (the pinned one reads local paths and gs:// only)
  storage_fault(exc)            "no space left on device writing PATH" (or read-only, quota, file too
                                large, output location gone) when `exc` is a storage fault, else None:
                                an OSError by its errno, or any exception whose message or cause
                                carries the system's text (TensorFlow's SaveV2 and gfile errors,
                                Beam's wrapped worker failures)

Paths may be local or on any tf.io.gfile filesystem (gs://, ...). Imports nothing of s2f's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path) -> Iterator[str]:
    """Yields a temporary path beside `path`; when the block ends without an exception it is renamed
    to `path`, and in any case no temporary file is left behind."""
    import tensorflow as tf

    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def write_atomic(path, content: str | bytes | Iterable[str | bytes]) -> str:
    """Writes `content` to `path` (see the module docstring); returns `path` as a str."""
    import tensorflow as tf

    path = os.fspath(path)
    chunks = [content] if isinstance(content, (str, bytes)) else content
    with atomic_path(path) as tmp, tf.io.gfile.GFile(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk.encode() if isinstance(chunk, str) else chunk)
    return path


def require_filesystem(path) -> None:
    """Raises a one-line ValueError when `path` is a URL whose scheme TensorFlow cannot read (s3://,
    hdfs://, ... in TensorFlow 2.21's PyPI build, where gfile says only "not implemented")."""
    import tensorflow as tf

    path = os.fspath(path)
    if "://" not in path:
        return
    try:
        tf.io.gfile.exists(path)
    except tf.errors.UnimplementedError:
        scheme = path.split("://", 1)[0]
        raise ValueError(
            f"{path}: TensorFlow has no filesystem for {scheme}:// (it reads local paths and gs://)"
        ) from None


# -- storage faults: a write that failed because of where it writes, not of what it writes
STORAGE_FAULTS = {  # errno -> what the user is told
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large for the file system",
}
# The system's own texts, as TensorFlow (ResourceExhaustedError from SaveV2, gfile's errors), h5py
# and Beam (a worker's traceback inside the runner's exception) pass them on without an errno.
_TEXTS = {os.strerror(code): code for code in STORAGE_FAULTS}
_TEXT = re.compile("|".join(re.escape(t) for t in _TEXTS))
# The output location removed while writing: TensorFlow names the write that failed.
_GONE = re.compile(
    r"(Failed to create a directory|Could not (?:create|rename|open)|Failed to rename|"
    r"Unable to (?:create|open|synchronously create)|SaveV2|MergeV2Checkpoints)"
    r"[^\n]*No such file or directory|No such file or directory[^\n]*\[Op:(?:SaveV2|MergeV2Checkpoints)"
)
_PATH = re.compile(r"""(?:[a-z][a-z0-9+.-]*://[^\s'",;\]]+|(?<![\w.])/[^\s'",;:\]]+)""")


def storage_fault(exc: BaseException) -> str | None:
    """`exc` (or an exception in its cause chain) -> "no space left on device writing PATH" when it is
    a storage fault (module docstring), else None. PATH is the OSError's file name, else the last
    path on the message's line that names the fault (a temporary name as the file it was to become)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code, text = getattr(exc, "errno", None), str(exc)
        if code in STORAGE_FAULTS:
            return _fault(STORAGE_FAULTS[code], getattr(exc, "filename", None), text, None)
        found = list(_TEXT.finditer(text))
        if found:
            return _fault(STORAGE_FAULTS[_TEXTS[found[-1].group()]], None, text, found[-1].start())
        gone = list(_GONE.finditer(text))
        if gone:
            return _fault("the output location is gone", None, text, gone[-1].start())
        exc = exc.__cause__ or exc.__context__
    return None


def _fault(what: str, filename, text: str, at: int | None) -> str:
    if filename is None:  # the paths on the line that names the fault, else in the whole text
        line = text if at is None else text[text.rfind("\n", 0, at) + 1 :].split("\n", 1)[0]
        paths = [p for p in _PATH.findall(line) or _PATH.findall(text) if not p.endswith(".py")]
        filename = paths[-1] if paths else None
    if filename is None:
        return f"{what} writing an unnamed file"
    return f"{what} writing {re.sub(r'[.]tmp-[0-9]+', '', os.fspath(filename))}"
