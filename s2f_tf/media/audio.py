"""Audio files -> 16 kHz mono int16 PCM, whole or a block at a time.

  load_audio(path)                  any WAV/FLAC/OGG/MP3/M4A/... -> int16 [samples] at SAMPLE_RATE
  decode_blocks(path)               the same samples as int16 blocks of at most BLOCK_SECONDS, in order
  open_audio(path) -> PcmFile       the same samples in an unnamed temporary file, read back a span
                                    at a time (`read(start, end)`): a recording of any length in
                                    bounded memory (2 bytes a sample on disk: 115 MB an hour)
  to_mono_int16(samples, rate)      float [n] or [n, channels] -> int16 [m] mono at SAMPLE_RATE
  ffmpeg_exe()                      the ffmpeg binary of the imageio-ffmpeg wheel

soundfile (libsndfile) first; anything it cannot read (AAC/M4A, video containers, ...) is decoded
by the ffmpeg binary shipped in the imageio-ffmpeg wheel, to float32 WAV on a pipe at the file's
own rate and channel count, read as it comes. Both paths then share one conversion: average the
channels, resample with soxr "HQ" (a stream: the same samples as resampling the whole at once),
scale by 32768, round, clip to int16 (contract.float_to_pcm). (ffmpeg's own `-ac 1` is not a plain
average: it mixes stereo at 0.707 per channel.) Paths are local files.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Sequence

import imageio_ffmpeg
import numpy as np
import soundfile as sf
import soxr

from s2f_tf.contract import SAMPLE_RATE, float_to_pcm
from s2f_tf.media.errors import TOO_SHORT, UNDECODABLE, MediaError, require_file

FFMPEG_TIMEOUT_SECONDS = (
    300.0  # ffmpeg silent for this long (a whole short decode, or one block) fails
)
BLOCK_SECONDS = 60.0  # what decode_blocks holds at a time


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
        _ffmpeg_failed(proc.returncode, proc.stderr, path, what)
    return proc.stdout


def _ffmpeg_audio(
    path: str, start: float | None = None, duration: float | None = None
) -> tuple[np.ndarray, int]:
    """The first audio stream (optionally [start, start + duration)) -> (float32 [n, channels], rate),
    at the stream's own rate and channel count (_ffmpeg_blocks, joined)."""
    blocks = list(_ffmpeg_blocks(path, start, duration))
    return np.concatenate([block for block, _ in blocks]), blocks[0][1]


def _ffmpeg_blocks(
    path: str,
    start: float | None = None,
    duration: float | None = None,
    block_seconds: float = BLOCK_SECONDS,
) -> Iterator[tuple[np.ndarray, int]]:
    """(float32 [n, channels], rate) blocks of the first audio stream, decoded by ffmpeg to float WAV
    on a pipe and read as they come (the last block may be empty). MediaError(UNDECODABLE) with
    ffmpeg's last error line when it fails, or when it stays silent FFMPEG_TIMEOUT_SECONDS."""
    args: list[str] = []
    if start is not None:
        args += ["-ss", f"{start:.6f}"]
    if duration is not None:
        args += ["-t", f"{duration:.6f}"]
    args += ["-i", path, "-map", "0:a:0", "-vn", "-sn", "-dn", "-c:a", "pcm_f32le"]
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *args, "-f", "wav"]
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen([*cmd, "pipe:1"], stdout=subprocess.PIPE, stderr=errors) as proc,
    ):
        finished, pipe = False, _Pipe(proc, path)
        try:
            channels, rate = _wav_header(pipe, path)
            empty = True
            size = max(1, int(block_seconds * rate)) * channels * 4
            while (data := pipe.read(size, frame=channels * 4)) is not None:
                empty = False
                yield np.frombuffer(data, "<f4").astype(np.float32).reshape(-1, channels), rate
            if empty:
                yield np.zeros([0, channels], np.float32), rate
            finished = True
        except MediaError:
            if pipe.timed_out:
                raise
            try:  # ffmpeg failed if it exits non-zero: say why
                if proc.wait(FFMPEG_TIMEOUT_SECONDS) == 0:
                    raise
            except subprocess.TimeoutExpired:
                raise MediaError(
                    UNDECODABLE, f"{path}: ffmpeg produced no readable audio"
                ) from None
        finally:
            if not finished:  # an error, or a reader that stopped early
                proc.kill()
            proc.wait()
        if proc.returncode != 0:
            errors.seek(0)
            _ffmpeg_failed(proc.returncode, errors.read(), path, "audio")


class _Pipe:
    """ffmpeg's stdout, read in whole frames; a timeout when it stays silent."""

    def __init__(self, proc: subprocess.Popen, path: str):
        self.fd, self.path, self.rest = proc.stdout.fileno(), path, b""
        self.timed_out = False

    def read(self, size: int, exact: bool = False, frame: int = 1) -> bytes | None:
        """Up to `size` bytes in whole `frame`s (the rest waits for the next read), exactly `size`
        with exact=True (else MediaError); None at the end."""
        chunks, have = [self.rest], len(self.rest)
        while have < size:
            ready, _, _ = select.select([self.fd], [], [], FFMPEG_TIMEOUT_SECONDS)
            if not ready:
                self.timed_out = True
                raise MediaError(
                    UNDECODABLE,
                    f"{self.path}: ffmpeg timed out after {FFMPEG_TIMEOUT_SECONDS:.0f} s decoding audio",
                )
            chunk = os.read(self.fd, size - have)
            if not chunk:
                break
            chunks.append(chunk)
            have += len(chunk)
        data = b"".join(chunks)
        if exact and len(data) < size:
            raise MediaError(UNDECODABLE, f"{self.path}: ffmpeg produced no readable audio")
        keep = len(data) - len(data) % frame
        self.rest = data[keep:]
        return data[:keep] or None


def _wav_header(pipe: _Pipe, path: str) -> tuple[int, int]:
    """The RIFF header ffmpeg writes before float32 samples -> (channels, rate)."""
    if pipe.read(12, exact=True)[8:12] != b"WAVE":
        raise MediaError(UNDECODABLE, f"{path}: ffmpeg produced no readable audio (no WAV header)")
    fmt = None
    while True:
        kind, size = struct.unpack("<4sI", pipe.read(8, exact=True))
        if kind == b"data":
            break
        body = pipe.read(size + size % 2, exact=True) if size else b""
        if kind == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])  # tag, channels, rate, bytes/s, align, bits
    if fmt is None or fmt[0] not in (3, 0xFFFE) or fmt[5] != 32:
        raise MediaError(UNDECODABLE, f"{path}: ffmpeg produced no readable audio ({fmt})")
    return int(fmt[1]), int(fmt[2])


def _ffmpeg_failed(returncode: int, stderr: bytes, path: str, what: str) -> None:
    """Raises MediaError(UNDECODABLE) with ffmpeg's last error line."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    message = lines[-1] if lines else f"exit status {returncode}"
    if any("matches no streams" in ln for ln in lines):
        message = f"no {what} stream"
    raise MediaError(UNDECODABLE, f"{path}: ffmpeg cannot decode {what}: {message}")


def decode_blocks(
    path: str, sample_rate: int = SAMPLE_RATE, block_seconds: float = BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Any audio file (as load_audio) -> int16 [<= block] blocks mono at `sample_rate`, in order; joined,
    the samples load_audio gives. Raises MediaError: MISSING_FILE, UNDECODABLE (neither decoder
    reads it; a file that fails after its first block is not retried with ffmpeg)."""
    path = require_file(path)
    try:
        sound = sf.SoundFile(path)
    except Exception:  # noqa: BLE001  (libsndfile refuses many valid files: fall back to ffmpeg)
        sound = None
    resample = None
    if sound is not None:
        with sound:
            rate, started = int(sound.samplerate), False
            resample = _Stream(rate, sample_rate)
            try:
                for block in sound.blocks(
                    max(1, int(block_seconds * rate)), dtype="float32", always_2d=True
                ):
                    started = True
                    yield resample(block)
            except Exception as e:  # noqa: BLE001
                if started:
                    raise MediaError(
                        UNDECODABLE, f"{path}: unreadable after its start ({e})"
                    ) from None
                resample = None
    if resample is None:  # libsndfile could not read it
        for block, rate in _ffmpeg_blocks(path, block_seconds=block_seconds):
            resample = resample or _Stream(rate, sample_rate)
            yield resample(block)
        if resample is None:
            return
    yield resample(np.zeros([0, 1], np.float32), last=True)


class _Stream:
    """to_mono_int16 a block at a time: soxr's stream resampler gives the samples of a whole-file
    resample."""

    def __init__(self, rate: int, sample_rate: int):
        self.rate, self.sample_rate = rate, sample_rate
        self.soxr = (
            soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
            if rate != sample_rate
            else None
        )

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        x = np.asarray(samples, np.float32).mean(axis=1)  # [n]
        if self.soxr is not None:
            x = self.soxr.resample_chunk(x, last=last)  # [m]
        return float_to_pcm(x)  # x 32768, round, clip to int16


def load_audio(path: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any audio file (WAV/FLAC/OGG/MP3 via soundfile; M4A/AAC/video containers/... via ffmpeg), any
    rate, any channel count -> int16 [samples] mono at `sample_rate` (decode_blocks, joined).

    Raises MediaError: MISSING_FILE (no such file), UNDECODABLE (neither decoder reads it),
    TOO_SHORT (it decodes to no samples).
    """
    pcm = np.concatenate([np.zeros(0, np.int16), *decode_blocks(path, sample_rate)])  # [samples]
    if pcm.size == 0:
        raise MediaError(TOO_SHORT, f"{path}: no audio samples")
    return pcm


class PcmFile:
    """A decoded recording (int16 mono) in an unnamed temporary file in TMPDIR (gone when closed or
    when the process ends): `size` samples, `read(start, end)` -> int16 [end - start]."""

    def __init__(self, blocks, what: str = "audio"):
        self.file = tempfile.TemporaryFile()
        self.size = 0
        try:
            for block in blocks:
                self.file.write(np.ascontiguousarray(block, "<i2").tobytes())
                self.size += int(block.size)
            self.file.flush()
        except OSError as e:  # a full TMPDIR names the folder (the file has no name)
            self.close()
            raise OSError(
                e.errno, e.strerror, f"{tempfile.gettempdir()} ({what}; TMPDIR sets where)"
            ) from e
        except BaseException:
            self.close()
            raise

    def read(self, start: int, end: int) -> np.ndarray:
        start, end = max(0, int(start)), min(self.size, int(end))
        if end <= start:
            return np.zeros(0, np.int16)
        data = os.pread(self.file.fileno(), 2 * (end - start), 2 * start)
        return np.frombuffer(data, "<i2").astype(np.int16)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> PcmFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_audio(path: str, sample_rate: int = SAMPLE_RATE) -> PcmFile:
    """Any audio file, any length -> a PcmFile of its int16 samples mono at `sample_rate` (decode_blocks
    into a temporary file). Raises MediaError as load_audio does."""
    pcm = PcmFile(decode_blocks(path, sample_rate), f"the decoded {os.path.basename(path)}")
    if pcm.size == 0:
        pcm.close()
        raise MediaError(TOO_SHORT, f"{path}: no audio samples")
    return pcm
