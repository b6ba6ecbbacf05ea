"""Files written whole or not at all: the one way s2f writes a result file.

  write_atomic(path, content)   str or bytes, or an iterable of them (streamed, for long files) ->
                                `path`, written under a temporary name beside it and renamed when
                                complete, so a reader, or a re-run after a crash, never sees half a
                                file; a failed write leaves no temporary file behind

Paths may be local or on any tf.io.gfile filesystem (gs://, ...). Imports nothing of s2f's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def write_atomic(path, content: str | bytes | Iterable[str | bytes]) -> str:
    """Writes `content` to `path` (see the module docstring); returns `path` as a str."""
    import tensorflow as tf

    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    chunks = [content] if isinstance(content, (str, bytes)) else content
    try:
        with tf.io.gfile.GFile(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk.encode() if isinstance(chunk, str) else chunk)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
    return path
