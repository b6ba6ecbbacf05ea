"""Tests for the synthetic paired voice/face corpus (s2f_tf/synthetic/)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses

import numpy as np
import pytest

from s2f_tf import synthetic as syn

SEED = 7


def _f0(pcm: np.ndarray, sample_rate: int = syn.SAMPLE_RATE) -> float:
    """Median F0 (Hz) of the clearly voiced 40 ms frames, by plain autocorrelation."""
    x = pcm.astype(np.float64)
    frame, hop = int(0.04 * sample_rate), int(0.02 * sample_rate)
    starts = range(0, len(x) - frame, hop)
    rms = np.array([np.sqrt(np.mean(np.square(x[s : s + frame]))) for s in starts])
    lo, hi = sample_rate // 400, sample_rate // 60  # lags for 400 .. 60 Hz
    f0s = []
    for s, r in zip(starts, rms):
        if r < 0.3 * rms.max():
            continue
        seg = x[s : s + frame] - x[s : s + frame].mean()
        ac = np.correlate(seg, seg, "full")[frame - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            f0s.append(sample_rate / lag)
    assert f0s, "no voiced frame found"
    return float(np.median(f0s))


def _identities_by_sex(n: int) -> tuple[list[syn.Identity], list[syn.Identity]]:
    males, females = [], []
    i = 0
    while len(males) < n or len(females) < n:
        idt = syn.make_identity(SEED, i)
        (males if idt.sex == 0 else females).append(idt)
        i += 1
    return males[:n], females[:n]


def test_make_clip_is_deterministic_and_clips_differ():
    a = syn.make_clip(SEED, 3, 0, 64)
    b = syn.make_clip(SEED, 3, 0, 64)
    assert a["pcm"].tobytes() == b["pcm"].tobytes()
    assert a["face"].tobytes() == b["face"].tobytes()
    assert a["landmarks"].tobytes() == b["landmarks"].tobytes()
    assert (
        a["text"] == b["text"] and a["attributes"] == b["attributes"] and a["split"] == b["split"]
    )
    c = syn.make_clip(SEED, 3, 1, 64)
    assert c["text"] != a["text"]
    assert c["pcm"].tobytes() != a["pcm"].tobytes()
    assert c["face"].tobytes() != a["face"].tobytes()
    assert c["attributes"] == a["attributes"]  # same person
    assert (a["identity"], a["clip"], c["clip"]) == (3, 0, 1)


def test_audio_does_not_depend_on_what_was_synthesised_before():
    idt = syn.make_identity(SEED, 5)
    first = syn.synthesize_voice(idt, "Please open the garden gate.", np.random.default_rng(1))
    for i in range(3):  # other voices and texts in between
        syn.synthesize_voice(
            syn.make_identity(SEED, 100 + i),
            syn.sentence(np.random.default_rng(i)),
            np.random.default_rng(i),
        )
    again = syn.synthesize_voice(idt, "Please open the garden gate.", np.random.default_rng(1))
    assert first.tobytes() == again.tobytes()


def test_audio_format_length_and_trimming():
    for index in range(4):
        clip = syn.make_clip(SEED, index, 2, 64)
        pcm = clip["pcm"]
        assert pcm.dtype == np.int16 and pcm.ndim == 1
        seconds = len(pcm) / syn.SAMPLE_RATE
        assert syn.MIN_SECONDS <= seconds <= syn.MAX_SECONDS, seconds
        x = pcm.astype(np.float64) / 32768.0
        assert np.sqrt(np.mean(x**2)) > 0.02  # non-silent
        assert np.abs(x).max() <= syn.PEAK_LIMIT + 1e-4
        edge = int(0.05 * syn.SAMPLE_RATE)  # ~0.1 s of quiet padding on each side
        loud = np.abs(x).max()
        assert np.abs(x[:edge]).max() < 0.1 * loud and np.abs(x[-edge:]).max() < 0.1 * loud


def test_pitch_is_lower_for_male_voices():
    males, females = _identities_by_sex(3)
    text = "We should move the heavy box to the kitchen table."
    f0 = {
        sex: [
            _f0(syn.synthesize_voice(idt, text, np.random.default_rng(idt.index))) for idt in group
        ]
        for sex, group in (("male", males), ("female", females))
    }
    male, female = np.mean(f0["male"]), np.mean(f0["female"])
    assert 90 < male < 150 and 170 < female < 260, f0
    assert female > 1.4 * male, f0
    for idt, est in zip(
        males + females, f0["male"] + f0["female"]
    ):  # each voice near its target F0
        assert abs(np.log(est / idt.f0_hz)) < np.log(1.25), (idt.f0_hz, est)


def test_vocal_tract_follows_sex_and_size():
    ids = [syn.make_identity(SEED, i) for i in range(300)]
    k = np.array([i.vtl_factor for i in ids])
    sex = np.array([i.sex for i in ids])
    size = np.array([i.size for i in ids])
    assert k[sex == 1].mean() > 1.1 * k[sex == 0].mean()
    for s in (0, 1):
        assert (
            np.corrcoef(size[sex == s], k[sex == s])[0, 1] < -0.5
        )  # bigger -> longer tract -> lower formants
    age = np.array([i.age for i in ids])
    assert np.corrcoef(age, [i.rate_wpm for i in ids])[0, 1] < -0.5  # older -> slower


@pytest.mark.parametrize("size", [64, 224])
def test_face_image_and_landmarks(size):
    for index in range(6):
        idt = syn.make_identity(SEED, index)
        face, lm = syn.draw_face(idt, size, np.random.default_rng(index))
        assert face.dtype == np.uint8 and face.shape == (size, size, 3)
        assert lm.dtype == np.float32 and lm.shape == (syn.NUM_LANDMARKS, 2)
        assert np.all(lm >= 0.0) and np.all(lm <= 1.0)
        jaw, brows, nose, eyes, mouth = lm[0:17], lm[17:27], lm[27:36], lm[36:48], lm[48:68]
        # iBUG order sanity, in image coordinates (x right, y down)
        assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # image-left eye is left
        assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0]  # outer/inner corners
        assert lm[17:22, 0].mean() < lm[22:27, 0].mean()
        assert brows[:, 1].mean() < eyes[:, 1].mean() < lm[30, 1] < mouth[:, 1].mean() < lm[8, 1]
        assert lm[48, 0] < lm[51, 0] < lm[54, 0] and lm[51, 1] < lm[57, 1]
        assert np.argmax(jaw[:, 1]) == 8  # chin is the lowest jaw point
        inner = np.concatenate([brows, nose, eyes, mouth])
        assert np.all(inner[:, 0] > jaw[0, 0]) and np.all(inner[:, 0] < jaw[16, 0])
        # roughly an aligned crop: centred, similar scale
        assert abs(eyes[:, 0].mean() - 0.5) < 0.06 and 0.3 < eyes[:, 1].mean() < 0.5
        assert 0.2 < lm[45, 0] - lm[36, 0] < 0.45
        # the drawn face sits where the landmarks say: the nose bridge has the identity's skin colour
        x, y = (lm[28] + lm[29]) / 2 * size
        patch = face[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2].reshape(-1, 3).mean(0)
        assert np.abs(patch - np.array(idt.skin_rgb)).max() < 70, (patch, idt.skin_rgb)


def test_canonical_face_is_one_per_identity_and_its_landmarks_match_the_drawing():
    for index in range(4):
        idt = syn.make_identity(SEED, index)
        face, lm = syn.draw_canonical_face(idt, 128)
        again, lm_again = syn.draw_canonical_face(syn.make_identity(SEED, index), 128)
        assert (
            face.tobytes() == again.tobytes() and lm.tobytes() == lm_again.tobytes()
        )  # deterministic
        np.testing.assert_array_equal(
            lm, syn.canonical_landmarks(idt)
        )  # the layout, without drawing
        # frontal and neutral: the eyes level and the mouth closed, the face centred on the midline
        assert (
            abs(lm[36:42, 1].mean() - lm[42:48, 1].mean()) < 1e-6
            and np.abs(lm[60:68, 1] - lm[60:68, 1].mean()).max() < 1e-3
        )
        assert abs((lm[0, 0] + lm[16, 0]) / 2 - 0.5) < 1e-6

        # the drawing sits where the landmarks say (as for the clips' faces): skin on the nose bridge,
        # an eye (iris, pupil, white) at each eye's centre, and lip colour on the lower lip
        def at(point, size=128, face=face):
            x, y = point * size
            return (
                face[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2]
                .reshape(-1, 3)
                .astype(float)
                .mean(0)
            )

        assert np.abs(at((lm[28] + lm[29]) / 2) - np.array(idt.skin_rgb)).max() < 40
        for ring in (lm[36:42], lm[42:48]):
            assert np.linalg.norm(at(ring.mean(0)) - np.array(idt.skin_rgb)) > 30
        assert np.abs(at((lm[57] + lm[66]) / 2) - np.array(idt.lip_rgb)).max() < 60
        # a plain background: the top corners are the canonical background, not a clip's colour
        np.testing.assert_allclose(
            face[:3, :3].reshape(-1, 3).mean(0), syn.params.CANONICAL_BACKGROUND_RGB, atol=2
        )
    # every clip of an identity looks different; its canonical face does not depend on any clip
    clip_faces = [syn.make_clip(SEED, 1, c, 32)["face"] for c in range(2)]
    assert clip_faces[0].tobytes() != clip_faces[1].tobytes()
    assert (
        syn.draw_canonical_face(syn.make_identity(SEED, 1), 64)[0].tobytes()
        != syn.draw_canonical_face(syn.make_identity(SEED, 2), 64)[0].tobytes()
    )


def test_face_varies_a_little_per_clip():
    idt = syn.make_identity(SEED, 2)
    (f1, l1), (f2, l2) = (syn.draw_face(idt, 64, np.random.default_rng(s)) for s in (1, 2))
    assert 0 < np.abs(l1 - l2).max() < 0.08  # small pose/expression change
    other = syn.make_identity(SEED, 3)
    _, l3 = syn.draw_face(other, 64, np.random.default_rng(1))
    assert np.abs(l1 - l3).max() > 0.0


def test_splits_are_speaker_disjoint_and_fractions_hold():
    n = 500
    splits = [syn.split_of(SEED, i) for i in range(n)]
    assert splits == [syn.split_of(SEED, i) for i in range(n)]  # a function of the identity alone
    counts = {s: splits.count(s) / n for s in syn.SPLITS}
    assert abs(counts["train"] - 0.8) < 0.06 and abs(counts["validation"] - 0.1) < 0.04
    assert abs(counts["test"] - 0.1) < 0.04
    halves = [syn.split_of(SEED, i, (0.5, 0.25, 0.25)) for i in range(n)]
    assert abs(halves.count("train") / n - 0.5) < 0.07
    assert [syn.split_of(SEED, i, (0, 0, 1)) for i in range(20)] == ["test"] * 20
    clip = syn.make_clip(SEED, 11, 0, 32)
    assert clip["split"] == syn.split_of(SEED, 11)


def test_attributes_are_stored_and_in_range():
    ids = [syn.make_identity(SEED, i) for i in range(200)]
    for idt in ids:
        attrs = idt.attributes()
        assert tuple(attrs) == syn.ATTRIBUTE_NAMES
        assert attrs["sex"] in (0.0, 1.0)
        assert syn.AGE_RANGE[0] <= attrs["age"] <= syn.AGE_RANGE[1]
        for name in ("size", "timbre", "rasp"):
            assert 0.0 <= attrs[name] <= 1.0
        assert attrs["ancestry"] in range(len(syn.ACCENTS)) and idt.accent in syn.ACCENTS
    assert 0.35 < np.mean([i.sex for i in ids]) < 0.65
    assert ids[0] == syn.make_identity(SEED, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ids[0].age = 3.0  # type: ignore[misc]
    clip = syn.make_clip(SEED, 4, 0, 32)
    assert clip["attributes"] == syn.make_identity(SEED, 4).attributes()


def test_ancestry_sets_the_accent_mostly_and_the_skin_tone_range():
    ids = [syn.make_identity(SEED, i) for i in range(600)]
    matched = np.mean([syn.ACCENTS[i.ancestry] == i.accent for i in ids])
    expected = syn.P_ACCENT_OF_ANCESTRY + (1 - syn.P_ACCENT_OF_ANCESTRY) / len(syn.ACCENTS)
    assert abs(matched - expected) < 0.05, matched
    brightness = [
        np.mean([sum(i.skin_rgb) for i in ids if i.ancestry == g]) for g in range(len(syn.ACCENTS))
    ]
    assert all(a > b + 20 for a, b in zip(brightness, brightness[1:])), brightness  # light -> dark


def test_accent_changes_the_voice_and_clothes_change_per_clip():
    idt = syn.make_identity(SEED, 5)
    other = dataclasses.replace(idt, accent=next(a for a in syn.ACCENTS if a != idt.accent))
    text = "The quick brown fox jumps over the lazy dog."
    a = syn.synthesize_voice(idt, text, np.random.default_rng(1))
    b = syn.synthesize_voice(other, text, np.random.default_rng(1))
    assert len(a) != len(b) or np.abs(a.astype(np.int32) - b).mean() > 100
    shoulder = np.array(
        [syn.draw_face(idt, 64, np.random.default_rng(s))[0][62, 3] for s in range(6)], float
    )
    chroma = shoulder / shoulder.sum(
        axis=1, keepdims=True
    )  # light scales a pixel, not its chromaticity
    assert np.std(chroma, axis=0).max() > 0.05  # the shirt: a new colour per clip


def test_sentences_vary():
    rng = np.random.default_rng(0)
    sentences = [syn.sentence(rng) for _ in range(60)]
    assert len(set(sentences)) >= 58
    for s in sentences:
        assert s[0].isupper() and s[-1] in ".?" and "{" not in s
        assert 4 <= len(s.split()) <= 25
