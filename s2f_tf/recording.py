"""A whole recording -> who speaks when, and one face feature per speaker.

  analyse(pcm, predictor, info, speakers=None) -> Analysis

  1. speech      WebRTC voice activity (s2f_tf/media/speech.py): the spans that hold speech (steady
                 sounds such as a modem, whose loudness hardly moves, are not speech)
  2. pieces     the speech cut into PIECE_SECONDS pieces (a short last piece joins the one before);
                 a recording with more than MAX_PIECES seconds of speech gets longer pieces, and
                 its spans too short for one gather into pieces of several spans
  3. speakers    the pieces clustered by the Bayesian information criterion on their MFCC frames
                 (`speaker_labels`: Chen & Gopalakrishnan's agglomerative BIC clustering, full
                 covariance Gaussians; merging stops when no merge lowers the BIC, or at the forced
                 count); a cluster holding under MIN_SHARE of the speech joins its nearest one;
                 consecutive pieces of one speaker become that speaker's turns
  4. windows     the model's clip length (hop half a clip) inside each speaker's turns
  5. features    every window through the model's SIGNATURE; a speaker's feature is the mean of its
                 windows' unit features (`combine`), scaled to their mean norm, so more speech gives
                 a steadier face; the face is then decoded from it (the DECODE_SIGNATURE)

Speakers are told apart by MFCC statistics, not by the model's face feature: the feature is made
to predict a face, so two voices with similar faces would merge, and a model trained on one corpus
says little about another corpus's voices. BIC clustering needs no trained model and no weights
(nothing is downloaded); it is written here because no maintained library offers it (BUILD.md).
It tells apart voices that differ clearly (sex, pitch, channel); close voices may merge, and one
voice over changing channels may split: `speakers=` forces the count.

A recording of any length fits in bounded memory: `analyse` takes an int16 array or an
audio.PcmFile (the decoded recording in a temporary file) and reads it a block at a time for the
voice activity and the loudness (`speech_spans`, one WebRTC detector throughout), a minute of
MFCC frames at a time for the pieces' statistics (`piece_statistics`, on mfcc_frames' own grid),
and a window at a time for the model; it gives the spans, speakers and features of the whole array
at once. What grows with the length is only the lists of spans, pieces (at most MAX_PIECES) and
windows, and each speaker's window features (D floats a window, a window every half clip of speech).
"""

from __future__ import annotations

import functools
import inspect
import operator
from dataclasses import dataclass, field

import numpy as np

from s2f_tf import contract
from s2f_tf.media import speech

PIECE_SECONDS = 1.0  # speaker pieces: short enough for the turns of a conversation
BIC_PENALTY = 2.5  # lambda of the BIC's parameter penalty (measured: BUILD.md)
MIN_SHARE = 0.10  # a speaker holds at least this share of the speech (BUILD.md)
MAX_PIECES = 2000  # longer recordings get longer pieces (the clustering is O(pieces^2))
MAX_BATCH = 8  # windows per predict request
MFCC_HOP_SAMPLES = 160  # the speaker MFCC frames' hop: 10 ms at 16 kHz
MFCC_WINDOW_SAMPLES = 400  # and their window: 25 ms
MFCC_CHUNK_FRAMES = 6000  # MFCC frames computed at a time (a minute)
BLOCK_SAMPLES = 60 * contract.SAMPLE_RATE  # what the voice activity and loudness read at a time
# speech.speech_spans' smoothing, stated there once (its keyword defaults)
SMOOTHING = {
    name: parameter.default
    for name, parameter in inspect.signature(speech.speech_spans).parameters.items()
    if name in ("max_gap_seconds", "min_speech_seconds", "pad_seconds", "min_range_db")
}


@dataclass
class Speaker:
    turns: list[tuple[int, int]]  # [start, end) samples this speaker holds
    windows: list[tuple[int, int]]  # the model windows cut from the turns
    feature: np.ndarray  # float32 [D], combined from the windows

    @property
    def samples(self) -> int:
        return int(sum(b - a for a, b in self.turns))


@dataclass
class Analysis:
    samples: int  # the recording's length
    speech: list[tuple[int, int]]  # what the VAD kept
    speakers: list[Speaker] = field(default_factory=list)  # in order of first appearance

    @property
    def speech_samples(self) -> int:
        return int(sum(b - a for a, b in self.speech))


def pieces(
    spans: list[tuple[int, int]], length: int, shortest: int | None = None
) -> tuple[list[tuple[int, int]], list[int]]:
    """Speech spans -> (cut, piece): the speech as stretches cut[i] of about `length` samples, each in
    the speaker piece numbered piece[i] (in time order). A span is cut into consecutive stretches of
    `length`, its last one shorter than half of that joining the stretch before it; each stretch is a
    piece. Spans shorter than half a piece are too short to stand alone: consecutive ones gather into
    one piece until it holds `length` samples of speech, and a gathering under half of that joins the
    piece before it. Spans shorter than `shortest` (default half a piece: none gather) are dropped."""
    half = length // 2
    shortest = half if shortest is None else shortest
    cut: list[tuple[int, int]] = []
    piece: list[int] = []
    gathered = None  # speech samples of the gathering still open, None when there is none

    def close() -> None:  # a gathering under half a piece joins the piece before it
        if gathered is not None and gathered < half and piece[-1] > 0:
            j, last = len(piece) - 1, piece[-1]
            while j >= 0 and piece[j] == last:
                piece[j], j = last - 1, j - 1

    for start, end in spans:
        if end - start < half:
            if end - start < shortest:
                continue
            if gathered is None:
                gathered = 0
                piece.append(piece[-1] + 1 if piece else 0)
            else:
                piece.append(piece[-1])
            cut.append((start, end))
            gathered += end - start
            if gathered >= length:
                gathered = None
            continue
        close()
        gathered = None
        for s in range(start, end, length):
            e = min(s + length, end)
            if e - s < half:
                cut[-1] = (cut[-1][0], e)
                continue
            cut.append((s, e))
            piece.append(piece[-1] + 1 if piece else 0)
    close()
    return cut, piece


def mfcc_frames(
    pcm: np.ndarray,
    coefficients: int = 12,
    sample_rate: int = contract.SAMPLE_RATE,
    chunk_frames: int = MFCC_CHUNK_FRAMES,
) -> np.ndarray:
    """int16 [N] -> float64 [frames, coefficients]: MFCCs 1..coefficients (c0, the loudness, left
    out) of 25 ms Hann frames every MFCC_HOP_SAMPLES, 40 mel bands from 60 Hz to 7.6 kHz. Computed
    `chunk_frames` frames at a time (the same frames as at once), so an hour of audio needs the
    memory of a minute."""
    import tensorflow as tf

    from s2f_tf.frontend import num_frames

    window = MFCC_WINDOW_SAMPLES
    mel = tf.signal.linear_to_mel_weight_matrix(
        40, 257, sample_rate, 60.0, min(7600.0, sample_rate / 2)
    )
    total = num_frames(len(pcm), window, MFCC_HOP_SAMPLES) if len(pcm) >= window else 0
    out = [np.zeros([0, coefficients])]
    for first in range(0, total, chunk_frames):
        count = min(chunk_frames, total - first)
        start = first * MFCC_HOP_SAMPLES
        x = tf.constant(
            contract.pcm_to_float(pcm[start : start + (count - 1) * MFCC_HOP_SAMPLES + window])
        )
        power = tf.abs(tf.signal.stft(x, window, MFCC_HOP_SAMPLES, 512)) ** 2  # [count, 257]
        log_mel = tf.math.log(tf.matmul(power, mel) + 1e-6)  # [count, 40]
        out.append(
            tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[:, 1 : coefficients + 1]
            .numpy()
            .astype(np.float64)
        )
    return np.concatenate(out)


class _Array:
    """An int16 [N] array read the way audio.PcmFile is: `size`, `read(start, end)`."""

    def __init__(self, pcm):
        self.pcm = np.asarray(pcm)
        self.size = int(self.pcm.size)

    def read(self, start: int, end: int) -> np.ndarray:
        return self.pcm[max(0, int(start)) : max(0, int(end))]


def _readable(pcm):
    """An int16 [N] array or anything with `size` and `read(start, end)` (audio.PcmFile)."""
    return pcm if hasattr(pcm, "read") else _Array(pcm)


def speech_spans(
    pcm,
    aggressiveness: int = speech.AGGRESSIVENESS,
    sample_rate: int = contract.SAMPLE_RATE,
    block_samples: int = BLOCK_SAMPLES,
) -> list[tuple[int, int]]:
    """speech.speech_spans of a recording of any length (an int16 array or an audio.PcmFile), read
    `block_samples` at a time: the same spans. One WebRTC detector runs through the blocks (its state
    carries from frame to frame, as on the whole array), and a span's loudness range is taken from
    its frame energies a block at a time."""
    import webrtcvad

    source = _readable(pcm)
    if not 0 <= aggressiveness <= 3:
        raise ValueError(f"VAD aggressiveness must be 0..3, got {aggressiveness}")
    vad = webrtcvad.Vad(int(aggressiveness))
    frame = int(round(speech.FRAME_SECONDS * sample_rate))
    end = source.size - source.size % frame  # a partial last frame is not judged
    voiced, block = [np.zeros(0, bool)], max(1, block_samples // frame) * frame
    for start in range(0, end, block):
        data = source.read(start, min(start + block, end)).tobytes()
        step = 2 * frame  # bytes per frame
        decide = [vad.is_speech(data[i : i + step], sample_rate) for i in range(0, len(data), step)]
        voiced.append(np.array(decide, bool))
    spans = speech.smooth_spans(
        [(a * frame, b * frame) for a, b in speech.runs(np.concatenate(voiced))],
        source.size,
        max_gap=int(round(SMOOTHING["max_gap_seconds"] * sample_rate)),
        min_length=int(round(SMOOTHING["min_speech_seconds"] * sample_rate)),
        pad=int(round(SMOOTHING["pad_seconds"] * sample_rate)),
    )
    return [
        (a, b)
        for a, b in spans
        if _loudness_range_db(source, a, b, sample_rate, block_samples) >= SMOOTHING["min_range_db"]
    ]


def _loudness_range_db(source, start: int, end: int, sample_rate: int, block_samples: int) -> float:
    """speech.loudness_range_db(pcm[start:end]), its frame energies taken a block at a time."""
    if end - start <= block_samples:
        return speech.loudness_range_db(source.read(start, end), sample_rate)
    frame = int(round(speech.LOUDNESS_FRAME_SECONDS * sample_rate))
    stop = start + (end - start) // frame * frame
    step = max(1, block_samples // frame) * frame
    energy = []
    for first in range(start, stop, step):
        x = np.asarray(source.read(first, min(first + step, stop)), np.float64).reshape(-1, frame)
        x = x / 32768.0  # as speech.loudness_range_db
        energy.append(10.0 * np.log10(np.mean(x * x, axis=1) + 1e-10))
    energy = np.concatenate(energy)
    return float(np.percentile(energy, 90) - np.percentile(energy, 10))


def mfcc_frame_count(samples: int) -> int:
    """How many frames mfcc_frames gives for `samples` samples."""
    from s2f_tf.frontend import num_frames

    if samples < MFCC_WINDOW_SAMPLES:
        return 0
    return num_frames(samples, MFCC_WINDOW_SAMPLES, MFCC_HOP_SAMPLES)


def frame_spans(cut: list[tuple[int, int]], samples: int) -> list[tuple[int, int]]:
    """Pieces [(start, end)] in samples -> their MFCC frame ranges in a recording of `samples`."""
    last, hop = mfcc_frame_count(samples), MFCC_HOP_SAMPLES
    return [(min(a // hop, last), min(max(b // hop, a // hop + 1), last)) for a, b in cut]


def piece_statistics(
    pcm,
    cut: list[tuple[int, int]],
    sample_rate: int = contract.SAMPLE_RATE,
    chunk_frames: int = MFCC_CHUNK_FRAMES,
) -> list[_Gaussian]:
    """Each piece's MFCC statistics (`_Gaussian.of` its frames of mfcc_frames(whole recording)), for a
    recording of any length (an int16 array or an audio.PcmFile): the frames are computed on
    mfcc_frames' own grid of `chunk_frames`, so they are the same frames, one chunk at a time, and
    only the chunks that hold a piece."""
    source = _readable(pcm)
    hop, cache = MFCC_HOP_SAMPLES, {}
    total = mfcc_frame_count(source.size)

    def chunk(k: int) -> np.ndarray:  # frames [k * chunk_frames, ...) of the whole recording
        if k not in cache:
            cache.clear()  # pieces come in time order: one chunk at a time suffices
            count = min(chunk_frames, total - k * chunk_frames)
            first = k * chunk_frames * hop
            samples = source.read(first, first + (count - 1) * hop + MFCC_WINDOW_SAMPLES)
            cache[k] = mfcc_frames(samples, sample_rate=sample_rate, chunk_frames=chunk_frames)
        return cache[k]

    out = []
    for a, b in frame_spans(cut, source.size):
        parts = [np.zeros([0, 12])]  # float64 [frames, 12], as mfcc_frames gives
        for k in range(a // chunk_frames, (b - 1) // chunk_frames + 1) if b > a else ():
            parts.append(chunk(k)[max(a - k * chunk_frames, 0) : b - k * chunk_frames])
        out.append(_Gaussian.of(np.concatenate(parts)))
    return out


class _Gaussian:
    """Sufficient statistics of a set of frames: count, sum, sum of outer products."""

    def __init__(self, count: int, total: np.ndarray, outer: np.ndarray):
        self.count, self.total, self.outer = count, total, outer

    @classmethod
    def of(cls, frames: np.ndarray) -> _Gaussian:
        return cls(len(frames), frames.sum(axis=0), frames.T @ frames)

    def __add__(self, other: _Gaussian) -> _Gaussian:
        return _Gaussian(
            self.count + other.count, self.total + other.total, self.outer + other.outer
        )

    def log_det(self) -> float:
        mean = self.total / self.count
        cov = self.outer / self.count - np.outer(mean, mean) + 1e-6 * np.eye(len(mean))
        return float(np.linalg.slogdet(cov)[1])


def delta_bic(a: _Gaussian, b: _Gaussian, penalty: float = BIC_PENALTY) -> float:
    """BIC(one Gaussian for a and b) - BIC(one each), as a gain: > 0 means two speakers fit better."""
    both = a + b
    d = len(a.total)
    params = d + d * (d + 1) / 2
    return 0.5 * (
        both.count * both.log_det() - a.count * a.log_det() - b.count * b.log_det()
    ) - penalty * 0.5 * params * np.log(both.count)


def _gains(counts, totals, outers, log_dets, i: int, js: np.ndarray, penalty: float) -> np.ndarray:
    """delta_bic of group i with each group in js, at once (the statistics as stacked arrays)."""
    n = counts[i] + counts[js]  # [m]
    mean = (totals[i] + totals[js]) / n[:, None]  # [m, d]
    d = totals.shape[1]
    cov = (
        (outers[i] + outers[js]) / n[:, None, None]
        - mean[:, :, None] * mean[:, None, :]
        + 1e-6 * np.eye(d)
    )
    both = np.linalg.slogdet(cov)[1]
    params = d + d * (d + 1) / 2
    return 0.5 * (
        n * both - counts[i] * log_dets[i] - counts[js] * log_dets[js]
    ) - penalty * 0.5 * params * np.log(n)


def speaker_labels(
    frames: np.ndarray,
    spans: list[tuple[int, int]],
    speakers: int | None = None,
    penalty: float = BIC_PENALTY,
    min_share: float = MIN_SHARE,
) -> np.ndarray:
    """frames [T, d] (MFCCs), spans [(first, end)] frame ranges of the pieces -> int [pieces]
    speaker per piece, numbered in order of first appearance. `speakers` forces the count.

    Greedy agglomeration: the pair with the lowest delta_bic merges while that is negative (or until
    `speakers` groups remain). The gains of all pairs are kept in a matrix and only the merged
    group's row is recomputed, so n pieces cost O(n^2) determinants, not O(n^3)."""
    return cluster([_Gaussian.of(frames[a:b]) for a, b in spans], speakers, penalty, min_share)


def cluster(
    groups: list[_Gaussian],
    speakers: int | None = None,
    penalty: float = BIC_PENALTY,
    min_share: float = MIN_SHARE,
) -> np.ndarray:
    """The pieces' MFCC statistics (`_Gaussian` each) -> int [pieces] speaker per piece (see
    speaker_labels, which takes the frames)."""
    if speakers is not None and speakers < 1:
        raise ValueError(f"speakers must be >= 1, got {speakers}")
    n = len(groups)
    counts = np.array([g.count for g in groups], np.float64)  # [n]
    totals = np.stack([g.total for g in groups])  # [n, d]
    outers = np.stack([g.outer for g in groups])  # [n, d, d]
    log_dets = np.array([g.log_det() for g in groups])
    owner = np.arange(n)  # piece -> its group
    alive = np.ones(n, bool)
    gains = np.full((n, n), np.inf)
    for i in range(n - 1):
        js = np.arange(i + 1, n)
        gains[i, js] = gains[js, i] = _gains(counts, totals, outers, log_dets, i, js, penalty)

    def merge(i: int, j: int) -> None:
        counts[i] += counts[j]
        totals[i] += totals[j]
        outers[i] += outers[j]
        log_dets[i] = _Gaussian(counts[i], totals[i], outers[i]).log_det()
        owner[owner == j] = i
        alive[j] = False
        gains[j, :] = gains[:, j] = np.inf
        js = np.flatnonzero(alive & (np.arange(n) != i))
        if len(js):
            gains[i, js] = gains[js, i] = _gains(counts, totals, outers, log_dets, i, js, penalty)

    while alive.sum() > max(1, speakers or 1):
        i, j = np.unravel_index(np.argmin(gains), gains.shape)
        if speakers is None and gains[i, j] >= 0:
            break
        merge(min(i, j), max(i, j))
    if speakers is None:
        while alive.sum() > 1 and counts[alive].min() < min_share * counts[alive].sum():
            small = np.flatnonzero(alive)[np.argmin(counts[alive])]
            other = int(np.argmin(gains[small]))
            merge(min(small, other), max(small, other))
    order: dict[int, int] = {}
    for group in owner.tolist():
        order.setdefault(group, len(order))
    return np.array([order[group] for group in owner.tolist()], int)


def turns(segments: list[tuple[int, int]], labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Pieces (in time order, not overlapping) and their speaker -> [(start, end, speaker)] turns:
    touching pieces of one speaker are merged."""
    out: list[list[int]] = []
    for (start, end), who in zip(segments, labels.tolist()):
        if out and out[-1][2] == who and out[-1][1] >= start:
            out[-1][1] = end
        else:
            out.append([start, end, who])
    return [(a, b, w) for a, b, w in out]


def stretch_speakers(
    pcm,
    cut: list[tuple[int, int]],
    piece: list[int],
    length: int,
    speakers: int | None = None,
    sample_rate: int = contract.SAMPLE_RATE,
) -> np.ndarray:
    """`pieces`' (cut, piece) -> int [stretches] the speaker of each stretch, numbered in order of
    first appearance. The pieces are clustered (`cluster`, each on its stretches' statistics
    summed); then each gathered span (a stretch shorter than half a piece) goes to the speaker its
    own statistics join at the least BIC cost, so a quick exchange of short turns is not all given
    to whoever holds more of their piece."""
    if speakers == 1 or piece[-1] == 0:
        return np.zeros(len(cut), int)
    own = piece_statistics(pcm, cut, sample_rate)
    statistics: list[_Gaussian] = []  # a piece's: the sum of its stretches'
    for g, k in zip(own, piece):
        if k < len(statistics):
            statistics[k] = statistics[k] + g
        else:
            statistics.append(g)
    labels = cluster(statistics, speakers)[piece]
    gathered = [i for i, (a, b) in enumerate(cut) if b - a < length // 2]
    if not gathered or labels.max() == 0:
        return labels
    models = [
        functools.reduce(operator.add, (own[i] for i in np.flatnonzero(labels == who)))
        for who in range(int(labels.max()) + 1)
    ]
    for i in gathered:
        labels[i] = int(np.argmin([delta_bic(own[i], model) for model in models]))
    _, first = np.unique(labels, return_index=True)  # renumbered in order of first appearance
    order = {int(labels[j]): n for n, j in enumerate(sorted(first))}
    return np.array([order[int(w)] for w in labels], int)


def combine(features: np.ndarray) -> np.ndarray:
    """float [W, D] window features -> float32 [D]: the mean of their unit vectors, at their mean norm."""
    f = np.asarray(features, np.float64)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    mean = (f / np.maximum(norms, 1e-12)).mean(axis=0)
    return (mean / max(np.linalg.norm(mean), 1e-12) * norms.mean()).astype(np.float32)


def encode_windows(
    pcm,
    windows: list[tuple[int, int]],
    predictor,
    clip: int,
    max_batch: int = MAX_BATCH,
) -> np.ndarray:
    """float32 [len(windows), D]: the windows, each `clip` samples (a short one tiled:
    speech.windows), through predictor.predict `max_batch` at a time. `pcm`: an int16 array or an
    audio.PcmFile, read a window at a time."""
    source, features = _readable(pcm), []
    for j in range(0, len(windows), max_batch):
        pieces = [
            speech.windows(source.read(a, b), [(0, b - a)], clip)
            for a, b in windows[j : j + max_batch]
        ]
        batch = contract.pcm_to_float(np.concatenate(pieces))  # [B, clip]
        features.append(np.asarray(predictor.predict(batch)["face_feature"], np.float32))
    return np.concatenate(features)


def analyse(
    pcm,
    predictor,
    info: dict,
    speakers: int | None = None,
    aggressiveness: int = speech.AGGRESSIVENESS,
) -> Analysis:
    """int16 [N] at 16 kHz -> Analysis (no speakers when there is no usable speech). `info` is the
    export's model info (clip_samples, min_samples, max_samples). `pcm` may be an audio.PcmFile (a
    recording of any length on disk): every step reads it a block, a chunk or a window at a time."""
    sr = int(info.get("sample_rate", contract.SAMPLE_RATE))
    clip = int(info.get("clip_samples") or 6 * sr)
    min_samples = int(info.get("min_samples") or 1)
    clip = min(clip, int(info.get("max_samples") or clip))
    pcm = _readable(pcm)  # read a block at a time: any length in bounded memory
    spans = speech_spans(pcm, aggressiveness, sample_rate=sr)
    result = Analysis(samples=pcm.size, speech=spans)
    speech_samples = sum(b - a for a, b in spans)
    base = int(round(PIECE_SECONDS * sr))
    length = max(base, -(-speech_samples // MAX_PIECES))
    cut, piece = pieces(spans, length, shortest=base // 2)
    if not cut:
        return result
    labels = stretch_speakers(pcm, cut, piece, length, speakers, sr)
    for who in range(int(labels.max()) + 1):
        own = [(a, b) for a, b, w in turns(cut, labels) if w == who]
        windows = speech.window_spans(own, clip, clip // 2, min_samples)
        if not windows:
            continue
        feature = combine(encode_windows(pcm, windows, predictor, clip))
        result.speakers.append(Speaker(turns=own, windows=windows, feature=feature))
    return result
