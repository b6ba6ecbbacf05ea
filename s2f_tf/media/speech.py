"""Where a recording holds speech, and the model-length windows cut from it.

  speech_spans(pcm)                       int16 [N] at 16 kHz -> [(start, end)] samples of speech
  window_spans(spans, window, hop, min)   -> [(start, end)]: windows of `window` samples inside each
                                          span, spread evenly from its start to its end; a span
                                          shorter than `window` (but at least `min`) is one window
  windows(x, spans, length)               -> [W, length]: the windows' samples, a short one tiled to
                                          `length` as training tiles short clips (contract.tile),
                                          so every request a server gets has the export's clip length

Voice activity is WebRTC's detector (the `webrtcvad-wheels` build of py-webrtcvad) on 30 ms frames
at 16 kHz. Its frame decisions are smoothed the usual way: pauses shorter than `max_gap_seconds`
are bridged, bursts shorter than `min_speech_seconds` are dropped (clicks, breaths), and each span
is padded by `pad_seconds` on both sides so word onsets are kept.

WebRTC also takes steady sounds for speech: a digital-radio modem, hum or a fan can hold it on for
a whole recording. Speech comes and goes with its syllables and pauses, so a span whose loudness
hardly moves is dropped (`loudness_range_db`, the spread of its 10 ms frame energies, must reach
MIN_LOUDNESS_RANGE_DB). Measured on real files from Debian's codec2-examples and asterisk sounds
and pyannote.audio's sample: speech spans 19.6 dB (noisy radio) to 83 dB, modem signals 2.7-5.4 dB.
"""

from __future__ import annotations

import math

import numpy as np

from s2f_tf.contract import SAMPLE_RATE, tile

FRAME_SECONDS = 0.03  # WebRTC takes 10, 20 or 30 ms frames
AGGRESSIVENESS = 2  # 0 (keeps most) .. 3 (drops most non-speech)
LOUDNESS_FRAME_SECONDS = 0.01
MIN_LOUDNESS_RANGE_DB = 12.0  # 90th - 10th percentile of a span's frame energies (see above)


def voiced_frames(
    pcm: np.ndarray, aggressiveness: int = AGGRESSIVENESS, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """int16 [N] -> bool [N // frame]: WebRTC's speech decision per 30 ms frame (a partial last frame
    is not judged)."""
    import webrtcvad

    if not 0 <= aggressiveness <= 3:
        raise ValueError(f"VAD aggressiveness must be 0..3, got {aggressiveness}")
    vad = webrtcvad.Vad(int(aggressiveness))
    frame = int(round(FRAME_SECONDS * sample_rate))
    pcm = np.ascontiguousarray(pcm, np.int16)
    count = pcm.size // frame
    data = pcm[: count * frame].tobytes()
    step = frame * 2  # bytes per frame
    return np.array(
        [vad.is_speech(data[i * step : (i + 1) * step], sample_rate) for i in range(count)], bool
    )


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """bool [n] -> the [start, end) index ranges where it is True."""
    padded = np.concatenate([[False], np.asarray(flags, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def smooth_spans(
    spans: list[tuple[int, int]], length: int, max_gap: int, min_length: int, pad: int
) -> list[tuple[int, int]]:
    """Bridges gaps up to `max_gap`, drops spans shorter than `min_length`, pads each by `pad` (within
    [0, length]) and merges what then overlaps. All in samples."""
    bridged: list[list[int]] = []
    for start, end in spans:
        if bridged and start - bridged[-1][1] <= max_gap:
            bridged[-1][1] = end
        else:
            bridged.append([start, end])
    out: list[list[int]] = []
    for start, end in bridged:
        if end - start < min_length:
            continue
        start, end = max(0, start - pad), min(length, end + pad)
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


def loudness_range_db(pcm: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """int16 [N] -> the 90th minus the 10th percentile of its 10 ms frames' energies, in dB (0 for
    less than two frames)."""
    frame = int(round(LOUDNESS_FRAME_SECONDS * sample_rate))
    count = np.asarray(pcm).size // frame
    if count < 2:
        return 0.0
    x = np.asarray(pcm, np.float64)[: count * frame].reshape(count, frame) / 32768.0
    energy = 10.0 * np.log10(np.mean(x * x, axis=1) + 1e-10)
    return float(np.percentile(energy, 90) - np.percentile(energy, 10))


def speech_spans(
    pcm: np.ndarray,
    aggressiveness: int = AGGRESSIVENESS,
    max_gap_seconds: float = 0.3,
    min_speech_seconds: float = 0.25,
    pad_seconds: float = 0.1,
    min_range_db: float = MIN_LOUDNESS_RANGE_DB,
    sample_rate: int = SAMPLE_RATE,
) -> list[tuple[int, int]]:
    """int16 [N] -> the [start, end) sample ranges that hold speech, in order, not overlapping: WebRTC's
    smoothed spans whose loudness range reaches `min_range_db`."""
    pcm = np.asarray(pcm)
    frame = int(round(FRAME_SECONDS * sample_rate))
    frames = runs(voiced_frames(pcm, aggressiveness, sample_rate))
    spans = smooth_spans(
        [(a * frame, b * frame) for a, b in frames],
        int(pcm.size),
        max_gap=int(round(max_gap_seconds * sample_rate)),
        min_length=int(round(min_speech_seconds * sample_rate)),
        pad=int(round(pad_seconds * sample_rate)),
    )
    return [(a, b) for a, b in spans if loudness_range_db(pcm[a:b], sample_rate) >= min_range_db]


def window_starts(length: int, window: int, hop: int) -> list[int]:
    """Starts of windows of `window` samples covering [0, length): the fewest with a step of at most
    `hop`, spread evenly so the first starts at 0 and the last ends at `length`. [0] if it fits."""
    if hop <= 0 or window <= 0:
        raise ValueError(f"window and hop must be positive, got {window}, {hop}")
    if length <= window:
        return [0]
    count = math.ceil((length - window) / hop) + 1
    return [int(round(i * (length - window) / (count - 1))) for i in range(count)]


def window_spans(
    spans: list[tuple[int, int]], window: int, hop: int, min_samples: int
) -> list[tuple[int, int]]:
    """Model-length windows inside each speech span (see window_starts); a span shorter than
    `window` is one window of its own length, and one shorter than `min_samples` is skipped."""
    out = []
    for start, end in spans:
        if end - start < min_samples:
            continue
        out += [
            (start + s, min(start + s + window, end))
            for s in window_starts(end - start, window, hop)
        ]
    return out


def windows(x: np.ndarray, spans: list[tuple[int, int]], length: int) -> np.ndarray:
    """x [N] and window spans (window_spans) -> [len(spans), length] of x's dtype: each span's
    samples, tiled to `length` when shorter (contract.tile: repeated from the start, as training
    and the model's front end tile), so windows cut for a model all have its clip length."""
    x = np.asarray(x)
    if not spans:
        return np.zeros((0, length), x.dtype)
    return np.stack([tile(x[a:b], length)[:length] for a, b in spans])  # [W, length]
