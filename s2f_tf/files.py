"""Files written whole or not at all: the one way s2f writes a result file.

  write_atomic(path, content)   str or bytes, or an iterable of them (streamed, for long files) ->
                                `path`, written under a temporary name beside it and renamed when
                                complete, so a reader, or a re-run after a crash, never sees half a
                                file; a failed write leaves no temporary file behind
  atomic_path(path, suffix="")  the same for a writer that wants a path (a TFRecordWriter, Keras
                                `save_weights`): yields the temporary path (ending in `suffix`, for
                                writers that check the name), renamed to `path` when the block ends

Paths may be local or on any tf.io.gfile filesystem (gs://, ...). Imports nothing of s2f's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `path`; when the block ends without an exception it is renamed
    to `path`, and in any case no temporary file is left behind. A `suffix` that `path` ends with
    stays at the end of the temporary name (Keras refuses weights not named *.weights.h5)."""
    import tensorflow as tf

    path = os.fspath(path)
    stem = path[: -len(suffix)] if suffix and path.endswith(suffix) else path
    tmp = f"{stem}.tmp-{os.getpid()}{suffix if stem != path else ''}"
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
