"""train.sync_batch_norm through `s2f train`: MirroredStrategy over 2 logical CPUs trains the tiny
preset's batch-normalised face encoder with cross-replica statistics, and both replicas end with the
same weights (the maths itself: tests/test_norm.py)."""

import json

import pytest
from conftest import run_s2f


@pytest.mark.slow
def test_two_replicas_train_with_synchronized_batch_norm(tiny_corpus, tmp_path):
    r = run_s2f(
        "train",
        "--config=tiny",
        "--stage=face_encoder",
        f"--workdir={tmp_path / 'run'}",
        f"--data={tiny_corpus}",
        "--cpu_devices=2",
        "--strategy=mirrored",
        "--set=train.sync_batch_norm=true",
        "--set=train.face_encoder_steps=2",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["steps"] == 2
    assert result["replica_digests"][0] == result["replica_digests"][1]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["sync_batch_norm"] is True
