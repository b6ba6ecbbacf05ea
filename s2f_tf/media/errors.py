"""Typed media failures: `MediaError(reason, detail)` with `reason` one of `REASONS`.

The same vocabulary as the manifest's typed failures (pipelines/common.py re-exports it; s2f_tf
must not import pipelines). A MediaError is an S2FError: the `s2f` command prints its message
without a traceback.
"""

from __future__ import annotations

import os

from s2f_tf.contract import S2FError

MISSING_FILE = "missing_file"
UNDECODABLE = "undecodable"
TOO_SHORT = "too_short"
NO_FACE = "no_face"
SEVERAL_FACES = "several_faces"
NO_FACE_NEAR_CENTER = "no_face_near_center"
NO_SPEECH = "no_speech"
REASONS = (
    MISSING_FILE,
    UNDECODABLE,
    TOO_SHORT,
    NO_FACE,
    SEVERAL_FACES,
    NO_FACE_NEAR_CENTER,
    NO_SPEECH,
)


class MediaError(S2FError):
    """A typed, expected failure on one media file; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str):
        if reason not in REASONS:
            raise ValueError(f"unknown media failure reason {reason!r}; known: {REASONS}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def require_file(path) -> str:
    """path -> path as a str; MediaError(MISSING_FILE) unless it names a file (a directory is not one)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MediaError(
            MISSING_FILE,
            f"{path}: {'a directory, not a file' if os.path.isdir(path) else 'no such file'}",
        )
    return path
