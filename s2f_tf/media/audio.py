"""Audio files -> 16 kHz mono int16 PCM.

  load_audio(path)                  any WAV/FLAC/OGG/MP3/M4A/... -> int16 [samples] at SAMPLE_RATE
  to_mono_int16(samples, rate)      float [n] or [n, channels] -> int16 [m] mono at SAMPLE_RATE
  ffmpeg_exe()                      the ffmpeg binary of the imageio-ffmpeg wheel

soundfile (libsndfile) first; anything it cannot read (AAC/M4A, video containers, ...) is decoded
by the ffmpeg binary shipped in the imageio-ffmpeg wheel, to float32 WAV on a pipe at the file's
own rate and channel count. Both paths then share one conversion: average the channels, resample
with soxr "HQ", scale by 32768, round, clip to int16 (contract.float_to_pcm). (ffmpeg's own `-ac 1`
is not a plain average: it mixes stereo at 0.707 per channel.) Paths are local files.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Sequence

import imageio_ffmpeg
import numpy as np
import soundfile as sf
import soxr

from s2f_tf.contract import SAMPLE_RATE, float_to_pcm
from s2f_tf.media.errors import TOO_SHORT, UNDECODABLE, MediaError, require_file

FFMPEG_TIMEOUT_SECONDS = 300.0


def to_mono_int16(samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float [n] or [n, channels] in [-1, 1] at `rate` -> int16 [m] mono at `sample_rate`.

    Channels are averaged; resampling is soxr "HQ"; the result is rounded and clipped to int16.
    """
    x = np.asarray(samples, np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)  # [n]
    elif x.ndim != 1:
        raise ValueError(f"samples must be [n] or [n, channels], got shape {x.shape}")
    if rate != sample_rate and x.size:
        x = soxr.resample(x, rate, sample_rate, quality="HQ")  # [m]
    return float_to_pcm(x)  # x 32768, round, clip to int16


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped in the imageio-ffmpeg wheel."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def _run_ffmpeg(args: Sequence[str], path: str, what: str) -> bytes:
    """Runs ffmpeg with `args` (after the binary and global options); returns stdout.
    Raises MediaError(UNDECODABLE) with ffmpeg's last error line when it fails."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            timeout=FFMPEG_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MediaError(
            UNDECODABLE,
            f"{path}: ffmpeg timed out after {FFMPEG_TIMEOUT_SECONDS:.0f} s decoding {what}",
        ) from None
    if proc.returncode != 0:
        lines = [
            ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()
        ]
        message = lines[-1] if lines else f"exit status {proc.returncode}"
        if any("matches no streams" in ln for ln in lines):
            message = f"no {what} stream"
        raise MediaError(UNDECODABLE, f"{path}: ffmpeg cannot decode {what}: {message}")
    return proc.stdout


def _ffmpeg_audio(
    path: str, start: float | None = None, duration: float | None = None
) -> tuple[np.ndarray, int]:
    """The first audio stream (optionally [start, start + duration)) -> (float32 [n, channels], rate),
    at the stream's own rate and channel count (float WAV on a pipe, read by soundfile)."""
    args: list[str] = []
    if start is not None:
        args += ["-ss", f"{start:.6f}"]
    if duration is not None:
        args += ["-t", f"{duration:.6f}"]
    args += [
        "-i",
        path,
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-c:a",
        "pcm_f32le",
        "-f",
        "wav",
        "pipe:1",
    ]
    data = _run_ffmpeg(args, path, "audio")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # [n, channels]
    except Exception as e:  # noqa: BLE001  (an unreadable pipe means ffmpeg produced no audio)
        raise MediaError(UNDECODABLE, f"{path}: ffmpeg produced no readable audio ({e})") from None
    return samples, int(rate)


def load_audio(path: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any audio file (WAV/FLAC/OGG/MP3 via soundfile; M4A/AAC/video containers/... via ffmpeg), any
    rate, any channel count -> int16 [samples] mono at `sample_rate`.

    Raises MediaError: MISSING_FILE (no such file), UNDECODABLE (neither decoder reads it),
    TOO_SHORT (it decodes to no samples).
    """
    path = require_file(path)
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)  # [n, channels]
    except Exception:  # noqa: BLE001  (libsndfile refuses many valid files: fall back to ffmpeg)
        samples, rate = _ffmpeg_audio(path)
    pcm = to_mono_int16(samples, int(rate), sample_rate)  # [samples]
    if pcm.size == 0:
        raise MediaError(TOO_SHORT, f"{path}: no audio samples")
    return pcm
