"""`s2f prepare` on a real distributed runner: Apache Beam's Dask runner against a dask.distributed
cluster on 127.0.0.1 (a scheduler and two worker processes, started here). Its shards, manifest and
dataset.json are byte-identical to the DirectRunner's, also when a worker is killed with SIGKILL
mid-run. The options each runner gets (pipelines/runners.py), and the source package Beam ships."""

import glob
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_s2f

ARGS = ["--config=tiny", "--identities=8", "--clips_per_identity=2", "--items_per_shard=2"]


def _digests(data_dir: str) -> dict[str, str]:
    """sha256 of every file the run leaves, but the run's own record of its arguments."""
    return {
        os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
        for p in sorted(glob.glob(os.path.join(data_dir, "*")))
        if os.path.basename(p) != "prepare.json"
    }


def _dask(*args, log):
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dask"), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and two single-threaded worker processes (no nanny: a killed worker stays dead)
    on 127.0.0.1 -> (scheduler address, the worker processes)."""
    scheduler_file = str(tmp_path / "scheduler.json")
    log = open(tmp_path / "dask.log", "wb")
    procs = [
        _dask(
            "scheduler",
            "--host=127.0.0.1",
            "--port=0",
            "--no-dashboard",
            f"--scheduler-file={scheduler_file}",
            log=log,
        )
    ]
    deadline = time.monotonic() + 60
    while not os.path.exists(scheduler_file) and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = [
        _dask(
            "worker",
            f"--scheduler-file={scheduler_file}",
            "--host=127.0.0.1",
            "--nthreads=1",
            "--no-nanny",
            "--no-dashboard",
            log=log,
        )
        for _ in range(2)
    ]
    procs += workers
    import json

    address = json.load(open(scheduler_file))["address"]
    yield address, workers
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
    log.close()


@pytest.mark.slow
def test_dask_runner_output_equals_direct_runner_even_after_a_worker_is_killed(
    dask_cluster, tmp_path
):
    address, workers = dask_cluster
    direct = str(tmp_path / "direct")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = run_s2f("prepare", "synthetic", *ARGS, f"--data={direct}", env={"TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "metrics (s2f.prepare, Beam)" in proc.stdout
    # the DirectRunner ran as the FnApiRunner: Beam's Prism runner (a download) was never tried,
    # which leaves its job server's beam-temp* directory behind
    assert not list(scratch.glob("beam-temp*"))

    dask_args = ["--runner=DaskRunner", f"--beam_arg=--dask_client_address={address}"]
    on_dask = str(tmp_path / "dask")
    proc = run_s2f("prepare", "synthetic", *ARGS, f"--data={on_dask}", *dask_args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the runner reports no metrics" in proc.stdout
    assert _digests(on_dask) == _digests(direct)

    # SIGKILL one worker once the first shard is written: the run ends (the scheduler gives the
    # lost worker's shards to the other), or a rerun of the same command does; identical output
    killed = str(tmp_path / "killed")
    command = [sys.executable, "-m", "s2f_tf.app.cli", "prepare", "synthetic", *ARGS]
    command += [f"--data={killed}", *dask_args]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not glob.glob(os.path.join(killed, "*.done.json")) and time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()
        time.sleep(0.05)
    os.kill(workers[0].pid, signal.SIGKILL)
    out, err = run.communicate(timeout=600)
    if run.returncode != 0:
        again = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
    assert _digests(killed) == _digests(direct), (out, err[-2000:])


def test_remote_runners_get_the_project_shipped_to_their_workers():
    """Runners whose workers are elsewhere get --setup_file (the project's own, from its source
    tree) unless the user ships s2f another way; local runners get their worker settings."""
    from pipelines import runners

    setup = runners.source_setup_file()
    assert setup and os.path.isfile(setup)
    args = runners.pipeline_args("DataflowRunner", ["--project=p"], 2, 5, loud=False)
    assert f"--setup_file={setup}" in args and "--runner=DataflowRunner" in args
    image = ["--sdk_container_image=gcr.io/p/s2f:1"]
    assert not any(
        a.startswith("--setup_file")
        for a in runners.pipeline_args("FlinkRunner", image, 2, 5, False)
    )
    dask = runners.pipeline_args("DaskRunner", [], 2, 5, False)
    assert f"--runner={runners.DASK}" in dask and "--dask_npartitions=5" in dask
    assert not any(a.startswith("--setup_file") for a in dask)
    direct = runners.pipeline_args("DirectRunner", [], 3, 5, False)
    assert "--direct_num_workers=3" in direct


@pytest.mark.slow
def test_the_setup_file_builds_a_source_package_with_the_pipelines(tmp_path):
    """What Beam's stager does with --setup_file (`python setup.py sdist` in its folder): the package
    it ships holds the pipelines, the models and the serving files."""
    import tarfile

    from pipelines import runners

    setup = runners.source_setup_file()
    proc = subprocess.run(
        [sys.executable, os.path.basename(setup), "sdist", "--dist-dir", str(tmp_path)],
        cwd=os.path.dirname(setup),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (archive,) = glob.glob(str(tmp_path / "s2f-*.tar.gz"))
    names = {n.split("/", 1)[1] for n in tarfile.open(archive).getnames() if "/" in n}
    assert {"pipelines/common.py", "s2f_tf/train/trainer.py", "serving/batching.config"} <= names
