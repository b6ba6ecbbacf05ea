"""Faults a user meets (issue 38). A full disk while `s2f` writes is one line `s2f COMMAND: no space
left on device writing PATH (what was kept; how to continue)`, exit 1, no partial file, and the same
command continues once there is space: real full disks, a tiny tmpfs mounted for the test (root only;
skipped elsewhere) and grown with `mount -o remount`. `s2f prepare` stopped by SIGTERM keeps its
finished shards and leaves no temporary file; run again, it ends identical to an uninterrupted run."""

import glob
import hashlib
import os
import subprocess

import numpy as np
import pytest
import soundfile
from conftest import run_s2f

PREPARE = [
    "prepare",
    "synthetic",
    "--config=tiny",
    "--identities=8",
    "--clips_per_identity=3",
    "--seed=24",
    "--items_per_shard=8",
    "--image_size=32",
]


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 64 KiB at tmp_path/disk: grow(kib) resizes it. Skipped unless mount works here."""
    disk = tmp_path / "disk"
    disk.mkdir()

    def mount(*options):
        return subprocess.run(
            ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(disk)],
            capture_output=True,
            text=True,
        )

    if os.geteuid() != 0 or mount("size=64k").returncode != 0:
        pytest.skip("mounting a tmpfs needs root (and a kernel that lets this process mount)")

    def grow(kib: int) -> None:
        assert mount("remount", f"size={kib}k").returncode == 0

    try:
        yield disk, grow
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk, leave_kib: int) -> str:
    """Fills the disk but `leave_kib`; returns the filler file (delete it to free the space)."""
    filler = os.path.join(disk, "filler")
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_kib * 1024))
    return filler


def one_line(r, command: str, path: str) -> str:
    """The one error line of a failed run (train's progress lines aside)."""
    assert r.returncode == 1, r.stderr[-3000:]
    lines = [
        ln
        for ln in r.stderr.splitlines()
        if "TensorFlow cannot use a GPU" not in ln and not ln.startswith("[")
    ]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines[0].startswith(f"s2f {command}: no space left on device writing {path}"), lines
    return lines[0]


def digests(folder) -> dict[str, str]:
    return {
        os.path.relpath(p, folder): hashlib.sha256(open(p, "rb").read()).hexdigest()
        for p in sorted(glob.glob(f"{folder}/**", recursive=True))
        if os.path.isfile(p)
    }


@pytest.fixture(scope="module")
def prepared(tiny_corpus):
    """What an uninterrupted `s2f prepare synthetic` with PREPARE's arguments writes: the session's
    tiny corpus, which conftest prepares in-process with the same arguments (only prepare.json's
    record of the command line differs: `assert_same_corpus`)."""
    return tiny_corpus


def assert_same_corpus(data, prepared) -> None:
    """`data`, prepared by the command, is byte for byte the uninterrupted corpus."""
    import json

    got, want = digests(data), digests(prepared)
    assert got.pop("prepare.json") and want.pop("prepare.json")
    assert got == want
    with open(f"{data}/prepare.json") as f:
        assert json.load(f)["arguments"] == {
            "identities": 8,
            "clips_per_identity": 3,
            "seed": 24,
            "image_size": 32,
        }


@pytest.mark.slow
def test_prepare_on_a_full_disk_then_again(small_disk, prepared):
    disk, grow = small_disk
    grow(1200)  # room for a shard or two, not for all four
    data = f"{disk}/data"
    r = run_s2f(*PREPARE, f"--data={data}")
    line = one_line(r, "prepare synthetic", f"{data}/")
    assert "finished shards are kept" in line and "rerun the same command" in line
    assert not glob.glob(f"{data}/*.tmp-*")
    for done in glob.glob(f"{data}/*.done.json"):  # what was kept is whole
        assert os.path.exists(done.replace(".done.json", ".tfrecord"))
    grow(20000)
    r = run_s2f(*PREPARE, f"--data={data}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_corpus(data, prepared)


@pytest.mark.slow
def test_export_and_predict_on_a_full_disk_then_again(
    small_disk, tiny_trained_workdir, tiny_export
):
    disk, grow = small_disk
    grow(2048)
    filler = fill(disk, 300)
    r = run_s2f("export", f"--workdir={tiny_trained_workdir}", f"--export_base={disk}")
    line = one_line(r, "export", f"{disk}/s2f/")
    assert "no version was written" in line
    assert os.listdir(f"{disk}/s2f") == []  # no half-written version, no temporary directory
    # predict: the face does not fit
    from test_recording import _voice

    audio = str(disk.parent / "voice.wav")
    soundfile.write(audio, np.concatenate([np.zeros(8000, np.int16), _voice(0, 0)]), 16000)
    os.remove(filler)
    fill(disk, 0)
    r = run_s2f(
        "predict",
        audio,
        f"--model_dir={tiny_export}",
        f"--face_out={disk}/face.png",
        "--speakers=1",
    )
    one_line(r, "predict", f"{disk}/face.png")
    assert not glob.glob(f"{disk}/face*")
    os.remove(f"{disk}/filler")
    grow(20000)
    r = run_s2f("export", f"--workdir={tiny_trained_workdir}", f"--export_base={disk}")
    assert r.returncode == 0 and os.listdir(f"{disk}/s2f") == ["1"], r.stderr[-3000:]


@pytest.mark.slow
def test_prepare_stopped_by_sigterm_then_again(tmp_path, prepared):
    """SIGTERM once the first shard is finished: exit 143 with one line, that shard kept, no
    temporary file; the same command then ends with every file byte-identical to an uninterrupted run."""
    import signal
    import sys
    import time

    data = str(tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "s2f_tf.app.cli", *PREPARE, f"--data={data}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not glob.glob(f"{data}/*.done.json") and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    lines = [ln for ln in stderr.splitlines() if "TensorFlow cannot use a GPU" not in ln]
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM came (a fast machine): nothing to stop")
    assert proc.returncode == 143 and len(lines) == 1, stderr[-3000:]
    assert (
        lines[0].startswith("s2f prepare synthetic: stopped by SIGTERM: ") and "rerun" in lines[0]
    )
    kept = glob.glob(f"{data}/*.done.json")
    assert kept and not glob.glob(f"{data}/*.tmp-*")
    assert not os.path.exists(f"{data}/dataset.json")  # not finished: no dataset yet
    r = run_s2f(*PREPARE, f"--data={data}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"({len(kept)} already done)" in r.stdout
    assert_same_corpus(data, prepared)


@pytest.mark.slow
def test_train_on_a_full_disk_then_again(small_disk, tiny_faces_workdir, tiny_corpus):
    """`s2f train` whose workdir fills up: one line, exit 1 (not h5py's crash at exit), no temporary
    file; with space again, the same command resumes and finishes the stage."""
    import shutil

    disk, grow = small_disk
    grow(20000)
    workdir = f"{disk}/run"
    shutil.copytree(tiny_faces_workdir, workdir)
    train = [
        "train",
        "--config=tiny",
        "--stage=voice_encoder",
        f"--workdir={workdir}",
        f"--data={tiny_corpus}",
        "--set=train.voice_encoder_steps=4",
    ]
    filler = fill(disk, 300)
    r = run_s2f(*train)
    line = one_line(r, "train", f"{workdir}/voice_encoder/")
    assert "the last whole checkpoint is kept" in line
    assert not glob.glob(f"{workdir}/**/*.tmp-*", recursive=True)
    os.remove(filler)
    r = run_s2f(*train)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.exists(f"{workdir}/voice_encoder/voice_encoder.weights.h5")
