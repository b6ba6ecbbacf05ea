"""s2f_tf/media/: audio decoding/resampling (soundfile and the ffmpeg fallback), video
segments, typed errors, face detection (MTCNN), selection and alignment. Fixtures are made here."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess

import numpy as np
import pytest
import soundfile as sf

from s2f_tf.media import audio as media_audio
from s2f_tf.media import errors as media_errors
from s2f_tf.media import faces as media_faces
from s2f_tf.media import video as media_video

# ---------------------------------------------------------------------------------------------
# helpers (also used by test_sources.py)
# ---------------------------------------------------------------------------------------------


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)  # [n]


def peak_hz(pcm: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    return float(np.argmax(spectrum) * rate / pcm.size)


def ffmpeg(*args: str) -> None:
    subprocess.run([media_audio.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


def synthetic_face(identity: int, size: int) -> np.ndarray:
    """A synthetic face MTCNN detects (identities 0, 7, 10-12, 14, 17-22 detect reliably)."""
    from s2f_tf import synthetic

    face, _ = synthetic.draw_face(
        synthetic.make_identity(0, identity), size, np.random.default_rng(identity)
    )
    return face  # [size, size, 3]


def make_video(
    path,
    frame: np.ndarray,
    seconds: float,
    audio: bool = True,
    video: bool = True,
    freq: float = 440.0,
    fps: int = 10,
) -> str:
    """An H.264/AAC mp4 showing `frame` [H, W, 3] for `seconds`, with a stereo 44.1 kHz sine."""
    h, w = frame.shape[:2]
    cmd = [media_audio.ffmpeg_exe(), "-nostdin", "-v", "error", "-y"]
    if video:
        cmd += [
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{w}x{h}",
            "-r",
            str(fps),
            "-i",
            "pipe:0",
        ]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=44100:duration={seconds}"]
    if video:
        cmd += ["-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-map", f"{1 if video else 0}:a", "-c:a", "aac", "-ac", "2"]
    cmd += ["-t", str(seconds), str(path)]
    frames = np.repeat(frame[None], int(seconds * fps), 0).tobytes() if video else None
    subprocess.run(cmd, input=frames, check=True)
    return str(path)


def face_frame(
    width: int = 320,
    height: int = 240,
    identity: int = 0,
    size: int = 100,
    x: int = 150,
    y: int = 70,
) -> np.ndarray:
    frame = np.full((height, width, 3), 110, np.uint8)
    frame[y : y + size, x : x + size] = synthetic_face(identity, size)
    return frame  # [H, W, 3]


# ---------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------

FORMATS = [("wav", "PCM_16"), ("wav", "FLOAT"), ("flac", "PCM_24"), ("ogg", "VORBIS")]


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt,subtype", FORMATS)
def test_load_audio_formats_rates_channels(tmp_path, fmt, subtype, rate, channels):
    x = sine(1000.0, rate, 1.0)  # [n]
    data = x if channels == 1 else np.stack([x, np.zeros_like(x)], 1)  # right channel silent
    path = str(tmp_path / f"a.{fmt}")
    sf.write(path, data, rate, subtype=subtype)
    pcm = media_audio.load_audio(path)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert abs(pcm.size - 16000) <= 16
    assert abs(peak_hz(pcm) - 1000.0) <= 2.0
    # downmix is the channel average: a silent right channel halves the amplitude
    rms = np.sqrt(np.mean(pcm[1000:-1000].astype(np.float64) ** 2)) / 32768
    expected = 0.5 / np.sqrt(2) / channels
    assert abs(rms - expected) < 0.06 * expected


def test_load_audio_16k_mono_int16_is_exact(tmp_path):
    pcm = (np.random.default_rng(0).normal(0, 3000, 16000)).astype(np.int16)
    path = str(tmp_path / "a.wav")
    sf.write(path, pcm, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(media_audio.load_audio(path), pcm)


def test_load_audio_clips_instead_of_wrapping(tmp_path):
    path = str(tmp_path / "loud.wav")
    sf.write(path, np.full(1600, 1.5, np.float32), 16000, subtype="FLOAT")
    assert media_audio.load_audio(path).min() == 32767


def test_mp3_and_m4a(tmp_path):
    wav = str(tmp_path / "a.wav")
    sf.write(wav, np.stack([sine(1000.0, 44100, 1.0)] * 2, 1), 44100)
    ffmpeg("-i", wav, "-c:a", "libmp3lame", "-b:a", "128k", str(tmp_path / "a.mp3"))
    ffmpeg("-i", wav, "-c:a", "aac", str(tmp_path / "a.m4a"))  # soundfile can't: ffmpeg path
    for name in ("a.mp3", "a.m4a"):
        pcm = media_audio.load_audio(str(tmp_path / name))
        assert pcm.dtype == np.int16 and abs(pcm.size - 16000) < 1200, name  # encoder padding
        assert abs(peak_hz(pcm) - 1000.0) <= 2.0, name
    with pytest.raises(RuntimeError):  # soundfile.LibsndfileError
        sf.info(str(tmp_path / "a.m4a"))


def test_ffmpeg_path_matches_soundfile_path(tmp_path):
    path = str(tmp_path / "a.flac")
    sf.write(
        path,
        np.stack([sine(700.0, 48000, 0.5), sine(300.0, 48000, 0.5)], 1),
        48000,
        subtype="PCM_16",
    )
    samples, rate = media_audio._ffmpeg_audio(path)
    assert rate == 48000 and samples.shape == (24000, 2)
    np.testing.assert_allclose(
        media_audio.to_mono_int16(samples, rate), media_audio.load_audio(path), atol=1
    )


def test_audio_errors_are_typed(tmp_path):
    with pytest.raises(media_errors.MediaError) as e:
        media_audio.load_audio(str(tmp_path / "nope.wav"))
    assert e.value.reason == "missing_file" and "no such file" in str(e.value)
    with pytest.raises(media_errors.MediaError) as e:
        media_audio.load_audio(str(tmp_path))
    assert e.value.reason == "missing_file" and "a directory, not a file" in str(e.value)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" + bytes(range(256)) * 8)
    with pytest.raises(media_errors.MediaError) as e:
        media_audio.load_audio(str(bad))
    assert e.value.reason == "undecodable"
    empty = str(tmp_path / "empty.wav")
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(media_errors.MediaError) as e:
        media_audio.load_audio(empty)
    assert e.value.reason == "too_short"
    with pytest.raises(ValueError, match="unknown media failure reason"):
        media_errors.MediaError("bad", "x")


# ---------------------------------------------------------------------------------------------
# video
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    frame = face_frame()
    return {
        "face": make_video(d / "face.mp4", frame, 4.0),
        "frame": frame,
        "silent": make_video(d / "silent.mp4", frame, 2.0, audio=False),
        "audio_only": make_video(d / "audio.m4a", frame, 2.0, video=False),
    }


def test_read_video_segment(videos):
    pcm, frame = media_video.read_video_segment(videos["face"], 1.0, 3.5)
    assert pcm.dtype == np.int16 and abs(pcm.size - 40000) <= 160
    assert abs(peak_hz(pcm) - 440.0) <= 2.0
    assert frame.dtype == np.uint8 and frame.shape == (240, 320, 3)
    assert np.abs(frame.astype(int) - videos["frame"]).mean() < 4  # the frame we encoded


def test_video_errors_are_typed(videos, tmp_path):
    def reason(path, start=0.0, end=2.0, **kw):
        with pytest.raises(media_errors.MediaError) as e:
            media_video.read_video_segment(path, start, end, **kw)
        return e.value

    assert reason(str(tmp_path / "missing.mp4")).reason == "missing_file"
    err = reason(videos["silent"], end=1.5)
    assert err.reason == "undecodable" and "no audio stream" in err.detail
    err = reason(videos["audio_only"], end=1.5)
    assert err.reason == "undecodable" and "no video stream" in err.detail
    assert (
        reason(videos["face"], 1.0, 1.5, min_seconds=1.0).reason == "too_short"
    )  # segment too short
    assert (
        reason(videos["face"], 3.5, 6.0, min_seconds=1.0).reason == "too_short"
    )  # file ends early
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 50000, np.uint8).tobytes())
    assert reason(str(garbage)).reason == "undecodable"
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(videos["face"], "rb").read()[:20000])  # moov atom is at the end
    assert reason(str(truncated)).reason == "undecodable"


# ---------------------------------------------------------------------------------------------
# faces
# ---------------------------------------------------------------------------------------------


def _face(cx, cy, size=50.0, confidence=0.99):
    box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], np.float32)
    return media_faces.Face(box=box, confidence=confidence, keypoints=np.zeros((5, 2), np.float32))


def test_select_face():
    hw = (200, 400)
    with pytest.raises(media_errors.MediaError) as e:
        media_faces.select_face([], (0.5, 0.5), hw)
    assert e.value.reason == "no_face"
    with pytest.raises(media_errors.MediaError) as e:
        media_faces.select_face([_face(200, 100, confidence=0.5)], (0.5, 0.5), hw)
    assert e.value.reason == "no_face"
    with pytest.raises(media_errors.MediaError) as e:
        media_faces.select_face([_face(50, 100)], (0.5, 0.5), hw)  # 3 face sizes away
    assert e.value.reason == "no_face_near_center"
    with pytest.raises(media_errors.MediaError) as e:
        media_faces.select_face([_face(180, 100), _face(220, 100)], (0.5, 0.5), hw)  # equally near
    assert e.value.reason == "several_faces"
    near, far = _face(205, 100), _face(260, 100)
    assert media_faces.select_face([far, near], (0.5, 0.5), hw) is near
    assert (
        media_faces.select_face([_face(205, 100), _face(380, 100)], (0.5, 0.5), hw).center[0] == 205
    )


def test_crop_face_geometry():
    """Dots painted at the keypoints of a rotated, scaled face land where the returned landmarks say,
    and the eyes end horizontal at the canonical layout."""
    size = 64
    angle = np.deg2rad(20.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    canonical = np.array([[0.35, 0.40], [0.65, 0.40], [0.5, 0.57], [0.4, 0.74], [0.6, 0.74]])
    keypoints = (canonical - 0.5) @ rot.T * 300 + np.array([250.0, 180.0])  # [5, 2], 300 px face
    frame = np.zeros((400, 500, 3), np.uint8)
    for x, y in keypoints:
        frame[int(y) - 6 : int(y) + 7, int(x) - 6 : int(x) + 7] = 255  # 13 px dots
    crop, landmarks = media_faces.crop_face(
        frame, np.floor(keypoints) + 0.5, None, size
    )  # dot centres
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8 and landmarks.shape == (5, 2)
    np.testing.assert_allclose(landmarks, canonical, atol=0.01)
    for x, y in landmarks * size:  # the dots are there
        assert crop[int(y), int(x)].min() > 200
    ii, jj = np.nonzero(crop[:, :, 0] > 60)  # and nowhere else
    centres = np.stack([jj + 0.5, ii + 0.5], 1) / size  # [n, 2]
    nearest = np.min(np.linalg.norm(centres[:, None] - landmarks[None], axis=-1), axis=1)
    assert nearest.max() < 2.5 / size


def test_detect_and_crop_synthetic_face():
    from s2f_tf import synthetic

    face, lm68 = synthetic.draw_face(synthetic.make_identity(0, 0), 128, np.random.default_rng(0))
    frame = np.full((240, 320, 3), 90, np.uint8)
    frame[40:168, 150:278] = face
    faces = media_faces.detect_faces(frame)
    assert len(faces) == 1 and faces[0].confidence > 0.95
    kp = faces[0].keypoints
    eyes68 = np.stack([lm68[36:42].mean(0), lm68[42:48].mean(0)]) * 128 + [150, 40]
    iod = np.linalg.norm(eyes68[1] - eyes68[0])
    assert np.abs(kp[:2] - eyes68).max() < 0.15 * iod  # MTCNN's eyes are the eyes
    crop, landmarks, chosen = media_faces.face_from_frame(frame, (214 / 320, 104 / 240), 64)
    assert crop.shape == (64, 64, 3) and chosen is not None
    assert abs(landmarks[0, 1] - landmarks[1, 1]) < 0.01  # eyes horizontal
    assert np.all((landmarks > 0.2) & (landmarks < 0.85))
    # the same face in a 2x larger frame, detected on a downscaled copy: same crop layout
    big = np.repeat(np.repeat(frame, 2, 0), 2, 1)
    faces_big = media_faces.detect_faces(big, max_side=320)
    assert len(faces_big) == 1
    np.testing.assert_allclose(faces_big[0].keypoints / 2, kp, atol=3.0)
    assert media_faces.detect_faces(np.full((120, 160, 3), 128, np.uint8)) == []
    assert media_faces.detect_faces(np.zeros((8, 8, 3), np.uint8)) == []


def test_min_face_size_above_mtcnn_default_still_finds_faces():
    """mtcnn 1.0 silently returns nothing for min_face_size > 20 (broken pyramid); media works
    around it by downscaling."""
    frame = face_frame(width=640, height=360, identity=7, size=200, x=220, y=80)
    for min_face_size in (20, 40, 80):
        faces = media_faces.detect_faces(frame, min_face_size=min_face_size)
        assert len(faces) == 1, min_face_size
        assert abs(faces[0].center[0] - 320) < 20 and abs(faces[0].center[1] - 180) < 30
    assert media_faces.detect_faces(frame, min_face_size=400) == []  # face smaller than that
    assert media_faces.detect_faces(np.full((20, 20, 3), 128, np.uint8)) == []
