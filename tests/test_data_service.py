"""Training input through a real tf.data service: `s2f data-service` (a dispatcher and two workers on
127.0.0.1, in their own process) and `s2f train --data_service`, resumed with fresh batches."""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import run_s2f

from s2f_tf.data.service import Servers


@pytest.fixture
def data_service():
    """`s2f data-service --port=0 --workers=2` -> (its address, the process)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2f_tf.app.cli", "data-service", "--port=0", "--workers=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    assert first.startswith("tf.data service: dispatcher grpc://127.0.0.1:"), (
        first + proc.stderr.read()
    )
    target = first.split()[3].rstrip(",")
    yield target, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_voice_stage_trains_through_a_two_worker_service_and_resumes(
    data_service, tiny_corpus, tiny_faces_workdir, tmp_path
):
    target, proc = data_service
    workdir = str(tmp_path / "run")
    shutil.copytree(tiny_faces_workdir, workdir, ignore=shutil.ignore_patterns("tensorboard"))
    common = [
        "train",
        "--config=tiny",
        "--stage=voice_encoder",
        f"--workdir={workdir}",
        f"--data={tiny_corpus}",
        f"--data_service={target}",
        "--set=train.checkpoint_every=4",
    ]
    first = run_s2f(*common, "--set=train.voice_encoder_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"input from the tf.data service at {target}" in first.stdout
    again = run_s2f(*common, "--set=train.voice_encoder_steps=8")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed at step 4 with fresh batches" in again.stdout
    assert json.loads(again.stdout.strip().splitlines()[-1])["steps"] == 8
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    # both workers ran the trainers' pipelines: one task per worker per job, two jobs
    tasks = json.loads(out.strip().splitlines()[-1].split("tasks run per worker: ")[1])
    assert tasks == [2, 2], out


def test_data_service_flags_are_checked(tmp_path):
    bad = run_s2f(
        "train", "--stage=face_encoder", f"--workdir={tmp_path}", "--data=x", "--data_service=nope"
    )
    assert bad.returncode == 2 and "grpc://HOST:PORT, got 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
    both = run_s2f(
        "train",
        "--stage=face_encoder",
        f"--workdir={tmp_path}",
        "--data=x",
        "--data_service=grpc://127.0.0.1:5050",
        "--deterministic",
    )
    assert both.returncode == 2 and "use one or the other" in both.stderr


class _Server:
    """Stands in for a TF data server: records when it is stopped, and can hang in stop()."""

    def __init__(self, name: str, stopped: list, hang: threading.Event | None = None):
        self.name, self.stopped, self.hang = name, stopped, hang

    def stop(self):
        self.stopped.append(self.name)
        if self.hang is not None:
            self.hang.wait()


def test_servers_stop_workers_first_and_give_up_on_a_hung_one():
    stopped = []
    servers = Servers(_Server("dispatcher", stopped), "grpc://127.0.0.1:1", [])
    servers.workers = [_Server("worker 0", stopped), _Server("worker 1", stopped)]
    assert servers.stop(timeout=5.0) is True
    assert stopped == ["worker 0", "worker 1", "dispatcher"]

    stopped.clear()
    hang = threading.Event()
    servers.workers[1] = _Server("worker 1", stopped, hang)
    start = time.perf_counter()
    assert servers.stop(timeout=0.3) is False
    assert time.perf_counter() - start < 3.0
    assert stopped == ["worker 0", "worker 1"]  # the dispatcher waits for its workers
    hang.set()
