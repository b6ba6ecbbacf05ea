"""The main job end to end at tiny size, and `s2f predict` on real audio files."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
from conftest import run_s2f


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path):
    out = str(tmp_path / "demo_out")
    r = run_s2f(
        "demo", "--config=tiny", "--identities=10", "--clips_per_identity=3", f"--demo_dir={out}"
    )
    assert r.returncode == 0, r.stderr[-4000:] + r.stdout[-2000:]
    for name in ("metrics.json", "faces.png", "report.html", "served_faces.png", "summary.json"):
        assert os.path.getsize(os.path.join(out, name)) > 100, name
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert set(summary["training"]) == {"face_encoder", "face_decoder", "voice_encoder"}
    assert summary["served"]["requests"] >= 1
    assert os.path.exists(os.path.join(out, "export", "s2f", "1", "saved_model.pb"))
    assert os.path.isdir(os.path.join(out, "tensorboard", "voice_encoder"))
    assert "retrieval R@1" in r.stdout and "faces:" in r.stdout and "face to face" in r.stdout
    assert set(summary["headline"]["bars"]) == {
        "R@1_over_chance >= 5",
        "sex_agreement >= 0.90",
        "face_to_face_image_R@1 >= 0.90",
        "face_to_face_sharpness >= 0.5",
        "face_to_face_sex_agreement >= 0.95",
        "face_to_face_sex_agreement of each sex >= 0.90",
    }
    by_class = summary["headline"]["face_to_face_attributes"]["sex_by_class"]
    assert set(by_class) <= {"male", "female"} and by_class
    assert "face to face, sex as the attribute judge reads it" in r.stdout


def _wav(path, seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    soundfile.write(path, np.stack([x] * channels, 1) if channels > 1 else x, rate)
    return path


def _voice_file(path, rate, channels=1):
    """A synthetic voice (2.5 s or more) with 0.5 s of silence around it, at `rate`."""
    import soxr

    from s2f_tf.synthetic.identity import make_identity
    from s2f_tf.synthetic.voice import synthesize_voice

    rng = np.random.default_rng(3)
    pcm = synthesize_voice(
        make_identity(3, 1), "The quick brown fox jumps over the lazy dog near the river bank.", rng
    )
    x = np.concatenate([np.zeros(8000), pcm / 32768.0, np.zeros(8000)])
    x = soxr.resample(x, 16000, rate)
    soundfile.write(path, np.stack([x] * channels, 1) if channels > 1 else x, rate)
    return path


@pytest.mark.slow
def test_predict_local_and_over_grpc(tiny_export, tmp_path):
    audio = _voice_file(str(tmp_path / "voice.flac"), 44100, channels=2)
    face = str(tmp_path / "face.png")
    r = run_s2f(
        "predict",
        audio,
        f"--model_dir={tiny_export}",
        f"--face_out={face}",
        f"--feature_out={tmp_path}/f.npy",
        "--speakers=1",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert len(report["speakers"]) == 1 and report["speakers"][0]["face"] == face
    assert 2.0 <= report["speech_seconds"] <= report["seconds"]
    from PIL import Image

    assert Image.open(face).size == (32, 32)
    local_feature = np.load(tmp_path / "f.npy")
    assert local_feature.shape == (32,)
    # the same file through the development server and the official gRPC stubs
    from support import free_port

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "s2f_tf.app.cli",
            "serve",
            f"--model_base_path={tiny_export}",
            f"--port={port}",
            "--rest_api_port=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            r = run_s2f(
                "predict",
                audio,
                f"--server=127.0.0.1:{port}",
                f"--face_out={tmp_path}/served.png",
                f"--feature_out={tmp_path}/g.npy",
                "--timeout=10",
                "--speakers=1",
                "--window_seconds=1",
            )
            if r.returncode == 0:
                break
            time.sleep(1)
        assert r.returncode == 0, r.stderr[-3000:]
        np.testing.assert_allclose(np.load(tmp_path / "g.npy"), local_feature, atol=1e-4)
        served, local = (
            Image.open(tmp_path / "served.png"),
            Image.open(face),
        )  # decode_feature, both ways
        assert np.abs(np.asarray(served, int) - np.asarray(local, int)).max() <= 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_predict_errors(tmp_path):
    r = run_s2f(
        "predict", str(tmp_path / "missing.wav"), "--model_dir=x", f"--face_out={tmp_path}/f.png"
    )
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_s2f("predict", "a.wav", f"--face_out={tmp_path}/f.png")
    assert r.returncode == 2 and "exactly one of --server" in r.stderr


@pytest.mark.slow
def test_predict_too_short_in_process_is_a_short_error(tiny_export, tmp_path):
    """50 ms of audio: no stretch of speech the model can take, a one-line error and no face."""
    audio = _wav(str(tmp_path / "short.wav"), 0.05, 16000)
    face = tmp_path / "f.png"
    r = run_s2f("predict", audio, f"--model_dir={tiny_export}", f"--face_out={face}")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "no_speech" in r.stderr, r.stderr[-3000:]
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not face.exists()
