"""Video files -> one segment's audio and a representative frame.

  read_video_segment(path, start, end)    -> (int16 [samples] of [start, end), uint8 [H, W, 3] RGB frame)
  read_frame(path, time_seconds)          -> uint8 [H, W, 3] RGB

Two ffmpeg runs per segment (input seeking `-ss start -t duration`): one decodes the first audio
stream (as in audio.py), one grabs a single frame (PPM on a pipe, so the frame carries its own
size; ffmpeg applies the rotation metadata of phone videos) at `start + frame_position * duration`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from s2f_tf.contract import SAMPLE_RATE
from s2f_tf.media.audio import _ffmpeg_audio, _run_ffmpeg, to_mono_int16
from s2f_tf.media.errors import TOO_SHORT, UNDECODABLE, MediaError, require_file


def read_frame(path: str, time_seconds: float) -> np.ndarray:
    """One video frame at `time_seconds` -> uint8 [H, W, 3] RGB (ffmpeg -> PPM on a pipe).
    Raises MediaError(UNDECODABLE) if there is no video stream or no frame at that time."""
    args = [
        "-ss",
        f"{max(time_seconds, 0.0):.6f}",
        "-i",
        path,
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        "-frames:v",
        "1",
        "-c:v",
        "ppm",
        "-f",
        "image2pipe",
        "pipe:1",
    ]
    data = _run_ffmpeg(args, path, "video")
    if not data:
        raise MediaError(UNDECODABLE, f"{path}: no video frame at {time_seconds:.3f} s")
    try:
        with Image.open(io.BytesIO(data)) as im:
            frame = np.asarray(im.convert("RGB"))  # [H, W, 3]
    except Exception as e:  # noqa: BLE001
        raise MediaError(
            UNDECODABLE, f"{path}: unreadable frame at {time_seconds:.3f} s ({e})"
        ) from None
    return frame


def read_video_segment(
    path: str,
    start: float,
    end: float,
    sample_rate: int = SAMPLE_RATE,
    min_seconds: float = 1.0,
    frame_position: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Audio of [start, end) and one representative frame of a video file.

    Returns (pcm int16 [samples] mono at `sample_rate`, frame uint8 [H, W, 3] RGB taken at
    start + frame_position * (end - start), by default the middle of the segment).
    Raises MediaError: MISSING_FILE; TOO_SHORT (end - start < min_seconds, or less than
    min_seconds of audio decoded, e.g. the file ends early); UNDECODABLE (ffmpeg fails, no audio
    stream, no video stream, no frame at that time).
    """
    path = require_file(path)
    duration = end - start
    if not duration >= min_seconds:
        raise MediaError(
            TOO_SHORT,
            f"{path}: segment [{start:.3f}, {end:.3f}] is {duration:.3f} s (< {min_seconds} s)",
        )
    samples, rate = _ffmpeg_audio(path, start, duration)
    pcm = to_mono_int16(samples, rate, sample_rate)  # [samples]
    if pcm.size < min_seconds * sample_rate:
        raise MediaError(
            TOO_SHORT,
            f"{path}: only {pcm.size / sample_rate:.3f} s of audio decoded in "
            f"[{start:.3f}, {end:.3f}] (< {min_seconds} s; does the file end early?)",
        )
    frame = read_frame(path, start + frame_position * duration)  # [H, W, 3]
    return pcm, frame
