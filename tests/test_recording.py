"""Whole recordings: voice activity, windows, speaker turns and the combined feature, against hand
computations and synthetic voices; `s2f predict` on a two-speaker file and on silence."""

import json
import os

import numpy as np
import pytest
import soundfile
from conftest import run_s2f

from s2f_tf import recording
from s2f_tf.media import speech

SR = 16000


# -- hand computations -------------------------------------------------------------------------------


def test_runs_and_smoothing():
    assert speech.runs(np.array([0, 1, 1, 0, 0, 1, 0, 1], bool)) == [(1, 3), (5, 6), (7, 8)]
    assert speech.runs(np.zeros(4, bool)) == []
    # the gap of 10 bridged (<= 10), 65..67 dropped (shorter than 5), each padded by 2 within [0, 100]
    spans = [(0, 20), (30, 50), (65, 67), (80, 95)]
    assert speech.smooth_spans(spans, 100, max_gap=10, min_length=5, pad=2) == [(0, 52), (78, 97)]
    assert speech.smooth_spans([(3, 10), (14, 20)], 21, max_gap=1, min_length=1, pad=2) == [(1, 21)]


def test_window_starts_cover_the_span_evenly():
    assert speech.window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert speech.window_starts(11, 4, 3) == [0, 2, 5, 7]  # ceil(7 / 3) + 1 = 4 windows over 7
    assert speech.window_starts(4, 4, 2) == [0]
    assert speech.window_starts(3, 4, 2) == [0]
    with pytest.raises(ValueError):
        speech.window_starts(10, 4, 0)


def test_window_spans_skip_short_and_keep_a_short_span_whole():
    spans = [(0, 10), (20, 23), (30, 32)]
    assert speech.window_spans(spans, 4, 2, min_samples=3) == [
        (0, 4),
        (2, 6),
        (4, 8),
        (6, 10),
        (20, 23),
    ]


def test_pieces_join_a_short_tail_and_drop_a_short_span():
    cut = [(0, 10), (10, 24), (40, 52)]
    assert recording.pieces([(0, 24), (30, 34), (40, 52)], 10) == (cut, [0, 1, 2])
    assert recording.pieces([(0, 16)], 10) == ([(0, 10), (10, 16)], [0, 1])


def test_short_spans_gather_into_pieces_and_no_speech_is_lost():
    # pieces of 10, spans of 2 and more kept: short spans gather until a piece holds 10 samples
    spans = [(0, 3), (5, 9), (12, 15), (20, 40), (41, 43), (50, 51), (60, 64)]
    cut, piece = recording.pieces(spans, 10, shortest=2)
    assert cut == [(0, 3), (5, 9), (12, 15), (20, 30), (30, 40), (41, 43), (60, 64)]
    # 3+4+3 = 10 close the first gathering; 2+4 after the long span stay under 10 and over half
    assert piece == [0, 0, 0, 1, 2, 3, 3]
    # a gathering under half a piece joins the piece before it
    assert recording.pieces([(0, 10), (12, 14)], 10, shortest=2)[1] == [0, 0]
    # all speech in spans of `shortest` and more is in the cut, whatever the piece length
    rng = np.random.default_rng(0)
    bounds = np.cumsum(rng.integers(1, 400, 2000))
    spans = [(int(a), int(b)) for a, b in zip(bounds[0::2], bounds[1::2])]
    for length in (16, 100, 1000):
        cut, piece = recording.pieces(spans, length, shortest=8)
        assert sum(b - a for a, b in cut) == sum(b - a for a, b in spans if b - a >= 8)
        assert piece == sorted(piece) and piece[0] == 0
        assert set(np.diff(piece)) <= {0, 1}


def test_turns_merge_touching_pieces_of_one_speaker():
    cut = [(0, 10), (10, 20), (25, 30), (30, 40), (40, 50)]
    assert recording.turns(cut, np.array([0, 0, 0, 1, 0])) == [
        (0, 20, 0),
        (25, 30, 0),
        (30, 40, 1),
        (40, 50, 0),
    ]


def test_combine_is_the_mean_unit_vector_at_the_mean_norm():
    f = np.array([[3.0, 0.0], [0.0, 1.0]])
    want = np.array([0.5, 0.5]) / np.linalg.norm([0.5, 0.5]) * 2.0
    np.testing.assert_allclose(recording.combine(f), want, rtol=1e-6)
    np.testing.assert_allclose(recording.combine(f[:1]), f[0], rtol=1e-6)


def test_delta_bic_prefers_two_gaussians_only_when_there_are_two():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (300, 3)), rng.normal(0, 1, (300, 3))
    g = recording._Gaussian.of
    assert recording.delta_bic(g(a), g(b)) < 0  # one source: merge
    assert recording.delta_bic(g(a), g(b * 2.0 + 3.0)) > 0  # two sources: keep apart
    # the statistics add up: one Gaussian of both equals the sum of the two
    both = g(a) + g(b)
    assert both.count == 600 and np.isclose(both.log_det(), g(np.concatenate([a, b])).log_det())
    # the clustering's batched gains are delta_bic, pair by pair
    groups = [g(a), g(b * 2.0 + 3.0), g(a[:100] - 1.0)]
    counts = np.array([x.count for x in groups], float)
    stack = [np.stack([x.total for x in groups]), np.stack([x.outer for x in groups])]
    batched = recording._gains(
        counts, *stack, np.array([x.log_det() for x in groups]), 0, np.array([1, 2]), 2.5
    )
    np.testing.assert_allclose(
        batched, [recording.delta_bic(groups[0], groups[k], 2.5) for k in (1, 2)], rtol=1e-9
    )


def test_speaker_labels_order_of_appearance_and_forced_count():
    rng = np.random.default_rng(1)
    frames = np.concatenate(
        [rng.normal(4, 1, (100, 3)), rng.normal(0, 1, (100, 3)), rng.normal(4, 1, (100, 3))]
    )
    spans = [(0, 50), (50, 100), (100, 150), (150, 200), (200, 250), (250, 300)]
    assert recording.speaker_labels(frames, spans).tolist() == [0, 0, 1, 1, 0, 0]
    assert recording.speaker_labels(frames, spans, speakers=1).tolist() == [0] * 6
    assert len(set(recording.speaker_labels(frames, spans, speakers=3).tolist())) == 3


# -- synthetic voices ---------------------------------------------------------------------------------


def _voice(identity: int, clip: int, seed: int = 5) -> np.ndarray:
    from s2f_tf.synthetic.identity import make_identity
    from s2f_tf.synthetic.text import sentence
    from s2f_tf.synthetic.voice import synthesize_voice

    rng = np.random.default_rng([seed, identity, clip])
    text = " ".join(sentence(rng) for _ in range(2))
    return synthesize_voice(
        make_identity(seed, identity), text, np.random.default_rng([seed, identity, clip, 1])
    )


def _two_voices():
    """Identities of opposite sex from the synthetic generator."""
    from s2f_tf.synthetic.identity import make_identity

    by_sex = {}
    for i in range(40):
        by_sex.setdefault(make_identity(5, i).sex, i)
        if len(by_sex) == 2:
            return by_sex[0], by_sex[1]
    raise AssertionError("no two sexes among 40 identities")


def _conversation():
    """A B A B with 0.6 s pauses and 1 s of silence at both ends -> (int16 pcm, [(start, end, who)])."""
    a, b = _two_voices()
    gap = np.zeros(int(0.6 * SR), np.int16)
    parts, truth, t = [np.zeros(SR, np.int16)], [], SR
    for k, who in enumerate((a, b, a, b)):
        x = _voice(who, k)
        truth.append((t, t + len(x), 0 if who == a else 1))
        parts += [x, gap]
        t += len(x) + len(gap)
    parts.append(np.zeros(SR, np.int16))
    return np.concatenate(parts), truth


class _Features:
    """A predictor whose feature is the window's own position and length: shows which windows ran."""

    def __init__(self):
        self.batches = []

    def predict(self, batch):
        self.batches.append(np.asarray(batch).shape)
        return {"face_feature": np.tile([1.0, 2.0, 3.0], (len(batch), 1)).astype(np.float32)}


INFO = {"sample_rate": SR, "clip_samples": 2 * SR, "min_samples": SR // 2, "max_samples": 30 * SR}


def _overlap(spans, start, end):
    return sum(max(0, min(b, end) - max(a, start)) for a, b in spans)


def test_speech_spans_find_a_voice_between_silences():
    x = _voice(0, 0)
    pcm = np.concatenate([np.zeros(SR, np.int16), x, np.zeros(SR, np.int16)])
    spans = speech.speech_spans(pcm)
    assert spans and spans[0][0] >= int(0.7 * SR) and spans[-1][1] <= SR + len(x) + int(0.3 * SR)
    assert _overlap(spans, SR, SR + len(x)) >= 0.9 * len(x)
    assert speech.speech_spans(np.zeros(3 * SR, np.int16)) == []
    noise = (np.random.default_rng(0).normal(0, 30, 3 * SR)).astype(np.int16)  # a quiet hiss
    assert speech.speech_spans(noise) == []


def test_loudness_range_by_hand():
    frame = SR // 100
    # 10 frames at amplitude 1000, 10 at 100: the 90th and 10th percentiles are the two levels, 20 dB apart
    pcm = np.concatenate([np.full(10 * frame, 1000), np.full(10 * frame, 100)]).astype(np.int16)
    assert speech.loudness_range_db(pcm) == pytest.approx(20.0, abs=1e-3)
    assert speech.loudness_range_db(np.full(10 * frame, 500, np.int16)) == pytest.approx(
        0.0, abs=1e-9
    )
    assert speech.loudness_range_db(np.ones(frame + 1, np.int16)) == 0.0  # under two frames


def _modem(seconds: float, seed: int = 0) -> np.ndarray:
    """A steady digital-radio signal: 21 carriers 1-2 kHz, each a new QPSK phase every 20 ms, and hiss."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    symbol = int(0.02 * SR)
    phases = rng.integers(0, 4, (len(t) // symbol + 1, 21)) * np.pi / 2
    x = sum(
        np.cos(2 * np.pi * (1000 + 50 * k) * t + np.repeat(phases[:, k], symbol)[: len(t)])
        for k in range(21)
    )
    return (x / np.abs(x).max() * 8000 + rng.normal(0, 300, len(t))).astype(np.int16)


def test_steady_sounds_that_webrtc_takes_for_speech_are_not_speech():
    t = np.arange(4 * SR) / SR
    hum = (3000 * np.sin(2 * np.pi * 100 * t) + 1500 * np.sin(2 * np.pi * 200 * t)).astype(np.int16)
    for steady in (_modem(4.0), hum):
        assert speech.voiced_frames(steady).mean() > 0.9  # WebRTC alone: all speech
        assert speech.speech_spans(steady, min_range_db=0.0) == [(0, 4 * SR)]
        assert speech.speech_spans(steady) == []
    assert recording.analyse(_modem(4.0), _Features(), INFO).speakers == []
    # a voice after the modem: only the voice is speech
    x = _voice(0, 0)
    pcm = np.concatenate([_modem(3.0), np.zeros(SR, np.int16), x])
    spans = speech.speech_spans(pcm)
    assert (
        spans and spans[0][0] >= 3 * SR and _overlap(spans, 4 * SR, 4 * SR + len(x)) >= 0.9 * len(x)
    )


def test_two_synthetic_voices_give_two_speakers_with_their_spans():
    pcm, truth = _conversation()
    found = recording.analyse(pcm, _Features(), INFO)
    assert len(found.speakers) == 2
    for who, speaker in enumerate(found.speakers):
        own = sum(e - s for s, e, w in truth if w == who)
        right = sum(_overlap(speaker.turns, s, e) for s, e, w in truth if w == who)
        assert right >= 0.8 * own and right >= 0.8 * speaker.samples, (who, speaker.turns, truth)
        for a, b in speaker.windows:  # every window inside the speaker's turns
            assert any(s <= a and b <= e for s, e in speaker.turns)
            assert b - a <= INFO["clip_samples"]
        np.testing.assert_allclose(speaker.feature, [1, 2, 3], rtol=1e-6)
    one = recording.analyse(pcm, _Features(), INFO, speakers=1)
    assert len(one.speakers) == 1 and one.speakers[0].samples == one.speech_samples
    assert recording.analyse(np.zeros(4 * SR, np.int16), _Features(), INFO).speakers == []


def test_a_long_recording_keeps_its_short_spans_and_their_speakers(monkeypatch):
    """Past MAX_PIECES the pieces lengthen (here to 14 s: two of the four 6.6-7.7 s turns are
    shorter than half a piece); those spans gather into one piece of both voices, and each then
    goes to its own speaker: the turns are those of 1 s pieces, and no speech is left out."""
    pcm, _ = _conversation()
    usual = recording.analyse(pcm, _Features(), INFO)
    monkeypatch.setattr(recording, "MAX_PIECES", 2)
    found = recording.analyse(pcm, _Features(), INFO)
    length = -(-found.speech_samples // 2)
    assert sum(b - a < length // 2 for a, b in found.speech) == 2  # two spans gathered
    assert [s.turns for s in found.speakers] == [s.turns for s in usual.speakers]
    assert sum(s.samples for s in found.speakers) == found.speech_samples


def test_a_speaker_with_a_small_share_is_still_a_speaker():
    """Two voices of one sex talk at length, a third (the other sex) says one thing: 10-15% of the
    speech, which is one speaker to a listener (a 15% floor used to merge it into another)."""
    from s2f_tf.synthetic.identity import make_identity

    a, b = [i for i in range(40) if make_identity(5, i).sex == 0][:2]
    c = next(i for i in range(40) if make_identity(5, i).sex == 1)
    gap = np.zeros(int(0.6 * SR), np.int16)
    order = (a, b, a, c, b, a, b)
    parts = [p for k, who in enumerate(order) for p in (_voice(who, k), gap)]
    starts = np.cumsum([0] + [len(p) for p in parts])
    share = len(parts[6]) / sum(len(parts[2 * k]) for k in range(len(order)))
    assert recording.MIN_SHARE <= share < 0.15, share
    found = recording.analyse(np.concatenate(parts), _Features(), INFO)
    assert len(found.speakers) == 3, [s.turns for s in found.speakers]
    third = found.speakers[2]  # numbered by first speech: a, b, c
    assert _overlap(third.turns, starts[6], starts[7]) >= 0.8 * third.samples
    assert _overlap(third.turns, starts[6], starts[7]) >= 0.8 * len(parts[6])


def test_one_synthetic_voice_is_one_speaker():
    pcm = np.concatenate(
        [np.concatenate([_voice(3, k), np.zeros(SR // 2, np.int16)]) for k in range(4)]
    )
    assert len(recording.analyse(pcm, _Features(), INFO).speakers) == 1


# -- long recordings: read a block at a time, the same result -----------------------------------------


def _long(seconds: float) -> np.ndarray:
    """One synthetic voice with 0.5 s pauses, repeated to `seconds`."""
    one = np.concatenate(
        [np.concatenate([_voice(3, k), np.zeros(SR // 2, np.int16)]) for k in range(2)]
    )
    return np.resize(one, int(seconds * SR))


def test_streamed_spans_and_statistics_are_those_of_the_whole_array(tmp_path):
    from s2f_tf.media.audio import open_audio

    pcm = np.concatenate([_conversation()[0], _modem(4.0)])
    audio = str(tmp_path / "talk.wav")
    soundfile.write(audio, pcm, SR, subtype="PCM_16")
    with open_audio(audio, SR) as source:
        assert source.size == pcm.size
        np.testing.assert_array_equal(source.read(1000, 9000), pcm[1000:9000])
        want = speech.speech_spans(pcm)
        for block in (480 * 7, 2 * SR, 10**9):  # blocks cut through spans, and one block
            assert recording.speech_spans(source, block_samples=block) == want
        # a span longer than a block: its loudness range from frame energies a block at a time
        long = [(a, b) for a, b in speech.speech_spans(pcm, min_range_db=0.0) if b - a > 3 * SR]
        a, b = long[0]
        assert recording._loudness_range_db(source, a, b, SR, SR) == speech.loudness_range_db(
            pcm[a:b]
        )
        cut, _ = recording.pieces(want, SR)
        frames = recording.mfcc_frames(pcm, chunk_frames=300)
        spans = recording.frame_spans(cut, pcm.size)
        for got, (a, b) in zip(recording.piece_statistics(source, cut, chunk_frames=300), spans):
            whole = recording._Gaussian.of(frames[a:b])
            assert got.count == whole.count
            np.testing.assert_array_equal(got.total, whole.total)
            np.testing.assert_allclose(got.outer, whole.outer, rtol=1e-12)
        found = recording.analyse(source, _Features(), INFO)
    at_once = recording.analyse(pcm, _Features(), INFO)
    assert found.speech == at_once.speech and len(found.speakers) == 2
    for x, y in zip(found.speakers, at_once.speakers):
        assert x.turns == y.turns and x.windows == y.windows
        np.testing.assert_array_equal(x.feature, y.feature)


def _peak_bytes(seconds: float, tmp_path) -> int:
    import tracemalloc

    from s2f_tf.media.audio import open_audio

    audio = str(tmp_path / f"long-{seconds}.wav")
    soundfile.write(audio, _long(seconds), SR, subtype="PCM_16")
    tracemalloc.start()
    try:
        with open_audio(audio, SR) as source:
            found = recording.analyse(source, _Features(), INFO)
        assert found.speakers and found.samples == int(seconds * SR)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_does_not_grow_with_the_length(tmp_path):
    """Decoding, voice activity, loudness, MFCCs and windows read a recording a block at a time: the
    peak of Python's allocations (numpy's included) for 4 minutes is that for 2 (whole arrays would
    double it: 4 minutes of int16 PCM alone is 7.7 MB, its float copies 15-30 MB)."""
    two, four = _peak_bytes(120.0, tmp_path), _peak_bytes(240.0, tmp_path)
    assert four < 1.2 * two + 2e6, (two, four)


# -- real recordings (Debian's codec2-examples, installed by .ci/run) -------------------------------------

CODEC2 = "/usr/share/codec2/wav"


@pytest.mark.parametrize(
    "name, speakers",
    [
        ("vk2tpm_004.wav", 0),  # 35 s of a FreeDV modem signal off the air: no voice at all
        ("david4.wav", 0),  # 30 s of another modem signal
        ("ve9qrp.wav", 1),  # 112 s of one man over HF radio
        ("mmt1.wav", 1),  # 4 s of one man in loud noise
    ],
)
def test_real_recordings(name, speakers):
    from s2f_tf.media.audio import load_audio

    path = os.path.join(CODEC2, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} missing: apt-get install codec2-examples (.ci/run does)")
    pcm = load_audio(path, SR)
    assert len(speech.voiced_frames(pcm)) > 0
    found = recording.analyse(pcm, _Features(), INFO)
    assert len(found.speakers) == speakers, [s.turns for s in found.speakers]
    if speakers:
        assert found.speech_samples >= 0.8 * pcm.size


# -- the command --------------------------------------------------------------------------------------


# tiny_export: conftest's, exported once per session


@pytest.mark.slow
def test_predict_writes_a_face_per_speaker(tiny_export, tmp_path):
    pcm, truth = _conversation()
    audio = str(tmp_path / "talk.wav")
    soundfile.write(audio, pcm.astype(np.float32) / 32768, 48000 // 3)  # 16 kHz float WAV
    r = run_s2f(
        "predict",
        audio,
        f"--model_dir={tiny_export}",
        f"--face_out={tmp_path}/face.png",
        f"--feature_out={tmp_path}/f.npy",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert [s["speaker"] for s in report["speakers"]] == [1, 2]
    assert report["seconds"] == pytest.approx(len(pcm) / SR, abs=0.01)
    assert 0.8 * sum(e - s for s, e, _ in truth) / SR <= report["speech_seconds"] <= len(pcm) / SR
    for speaker in report["speakers"]:
        assert os.path.exists(speaker["face"]) and speaker["face"].endswith(
            f"face-{speaker['speaker']}.png"
        )
        assert np.load(speaker["feature"]).shape == (speaker["feature_dim"],)
        assert speaker["windows"] >= 1 and speaker["window_seconds"] <= 1.0  # tiny: 1 s clips
        first = min(s for s, _, w in truth if w == speaker["speaker"] - 1) / SR
        assert abs(speaker["spans"][0][0] - first) < 0.5
    r = run_s2f(
        "predict",
        audio,
        f"--model_dir={tiny_export}",
        f"--face_out={tmp_path}/one.png",
        "--speakers=1",
    )
    assert r.returncode == 0 and len(json.loads(r.stdout)["speakers"]) == 1
    assert os.path.exists(tmp_path / "one.png")


@pytest.mark.slow
def test_predict_on_silence_says_no_speech_and_writes_nothing(tiny_export, tmp_path):
    audio = str(tmp_path / "quiet.wav")
    soundfile.write(audio, np.zeros(5 * 8000, np.float32), 8000)
    r = run_s2f(
        "predict",
        audio,
        f"--model_dir={tiny_export}",
        f"--face_out={tmp_path}/f.png",
        f"--feature_out={tmp_path}/f.npy",
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no_speech" in r.stderr and "no face written" in r.stderr, r.stderr
    lines = [
        ln for ln in r.stderr.splitlines() if "cannot use a GPU" not in ln
    ]  # quiet.gpu_warning
    assert len(lines) == 1, r.stderr
    assert os.listdir(tmp_path) == ["quiet.wav"]
    r = run_s2f(
        "predict",
        audio,
        f"--model_dir={tiny_export}",
        f"--face_out={tmp_path}/f.png",
        "--speakers=0",
    )
    assert r.returncode == 2 and "--speakers" in r.stderr
    r = run_s2f(
        "predict", str(tmp_path), f"--model_dir={tiny_export}", f"--face_out={tmp_path}/f.png"
    )
    assert r.returncode == 2 and "is a directory" in r.stderr and "Traceback" not in r.stderr, (
        r.stderr
    )
    r = run_s2f("predict", audio, f"--model_dir={tiny_export}", f"--face_out={tmp_path}/no/f.png")
    assert r.returncode == 2 and "--face_out" in r.stderr and "does not exist" in r.stderr, r.stderr
    assert os.listdir(tmp_path) == ["quiet.wav"]
