"""Training: the three stages through the `s2f train` command, at tiny sizes.

MirroredStrategy over 2 logical CPUs and MultiWorkerMirroredStrategy over 2 processes on
127.0.0.1 end with identical weights everywhere; a run killed with SIGKILL and restarted ends
exactly where an uninterrupted one does (also with two steps per call), and so does one stopped by
SIGTERM (gracefully: a checkpoint at the step it stopped); summaries, a profile trace, mixed
precision, NaN stop, bad data.
"""

import functools
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_s2f


def _result(proc):
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _voice_workdir(tiny_faces_workdir, tmp_path, name="run"):
    workdir = str(tmp_path / name)
    shutil.copytree(tiny_faces_workdir, workdir, ignore=shutil.ignore_patterns("tensorboard"))
    return workdir


def _tags(logdir):
    tags = set()
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.add(value.tag)
    return tags


@pytest.mark.slow
def test_stages_write_weights_summaries_and_profile(tiny_corpus, tiny_faces_workdir, tmp_path):
    for stage in ("face_encoder", "face_decoder"):
        assert os.path.exists(os.path.join(tiny_faces_workdir, stage, f"{stage}.weights.h5"))
    assert "faces/input|target|decoded|target_texture|texture" in _tags(
        os.path.join(tiny_faces_workdir, "tensorboard", "face_decoder")
    )
    config = json.load(open(os.path.join(tiny_faces_workdir, "config.json")))
    assert config["face_encoder"]["num_identities"] == 8  # resolved from the data
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path)
    result = _result(
        run_s2f(
            "train",
            "--config=tiny",
            "--stage=voice_encoder",
            f"--workdir={workdir}",
            f"--data={tiny_corpus}",
            "--profile_steps=2,4",
            "--jit_compile=true",
        )
    )
    assert result["steps"] == 6 and set(result["losses"]) == {
        "decoder_l1",
        "feature_l2",
        "distill",
        "total",
    }
    logdir = os.path.join(workdir, "tensorboard", "voice_encoder")
    tags = _tags(logdir)
    for tag in (
        "loss/total",
        "loss/distill",
        "learning_rate",
        "examples_per_second",
        "faces/true|from_true_feature|from_voice",
        "voice",
        "spectrogram",
    ):
        assert tag in tags, (tag, tags)
    assert glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    assert (
        len(glob.glob(os.path.join(workdir, "voice_encoder", "checkpoints", "ckpt-*.index"))) == 2
    )
    _check_validation(result, workdir, "voice_encoder", "feature_R@1", tags)


def _weights(path):
    import h5py

    arrays = []
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: (
                arrays.append((name, obj[()])) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return arrays


def _check_validation(result, workdir, stage, figure, tags, best_by=None):
    """Validation while training (tiny: every 3 steps, on the 2 validation speakers): TensorBoard
    validation/ curves, result.json's entry, and the output weights are the best step's: the highest
    figure, or with `best_by` (a loss term) the lowest held-out loss."""
    assert f"validation/{figure}" in tags, tags
    if stage != "face_encoder":
        assert "validation/loss/total" in tags, tags
    v = result["validation"]
    assert v["every"] == 3 and v["speakers"] == 2 and v["final"]["step"] == result["steps"]
    assert v["weights_from_step"] == v["best"]["step"] in (3, 6)
    key = best_by or "value"
    seen = {h["step"]: h[key] for h in v["history"]}
    assert (
        v["best"]["figure"] == (best_by or figure) and v["best"]["value"] == seen[v["best"]["step"]]
    )
    assert v["best"]["value"] == (min(seen.values()) if best_by else max(seen.values()))
    assert all(0.0 <= h["value"] <= 1.0 for h in v["history"])
    outputs = _weights(os.path.join(workdir, stage, f"{stage}.weights.h5"))
    best = _weights(os.path.join(workdir, stage, "best", f"{stage}.weights.h5"))
    assert len(outputs) == len(best) and all(
        (a == b).all() for (_, a), (_, b) in zip(outputs, best)
    )
    assert (
        json.load(open(os.path.join(workdir, stage, "best", "best.json")))["step"]
        == v["best"]["step"]
    )


@pytest.mark.slow
def test_validation_while_training_for_the_face_stages(tiny_faces_workdir):
    for stage, figure, best_by in (
        ("face_encoder", "clip_R@1", None),
        ("face_decoder", "image_space_R@1", "loss/fidelity"),
    ):
        result = json.load(open(os.path.join(tiny_faces_workdir, stage, "result.json")))
        _check_validation(
            result,
            tiny_faces_workdir,
            stage,
            figure,
            _tags(os.path.join(tiny_faces_workdir, "tensorboard", stage)),
            best_by,
        )


@pytest.mark.slow
def test_keep_best_off_keeps_the_last_weights(tiny_corpus, tiny_faces_workdir, tmp_path):
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path)
    result = _result(
        run_s2f(
            "train",
            "--config=tiny",
            "--stage=voice_encoder",
            f"--workdir={workdir}",
            f"--data={tiny_corpus}",
            "--set=train.keep_best=false",
        )
    )
    assert (
        result["validation"]["weights_from_step"] == result["steps"]
        and "best" not in result["validation"]
    )
    assert not os.path.exists(os.path.join(workdir, "voice_encoder", "best"))


MIRRORED = ["--cpu_devices=2", "--strategy=mirrored", "--set=optimizer.clip_global_norm=1e-6"]


@pytest.fixture(scope="module")
def uninterrupted_mirrored_run(tiny_corpus, tiny_faces_workdir, tmp_path_factory):
    """_kill_args() on two CPU replicas, the global batch's gradient clipped at every step (a norm
    so small that every step is clipped), run once: (its workdir, its result)."""
    reference = _voice_workdir(tiny_faces_workdir, tmp_path_factory.mktemp("mirrored"), "reference")
    args = [*_kill_args(), *MIRRORED, f"--workdir={reference}", f"--data={tiny_corpus}"]
    return reference, _result(run_s2f("train", *args))


@pytest.mark.slow
def test_mirrored_two_cpu_replicas_stay_identical(uninterrupted_mirrored_run):
    """... also with the global batch's gradient clipped (the clipped gradient must be the same on
    both replicas), its norm in TensorBoard."""
    workdir, result = uninterrupted_mirrored_run
    assert result["replicas"] == 2 and len(result["replica_digests"]) == 2
    assert result["replica_digests"][0] == result["replica_digests"][1]
    assert result["clipped_steps"] == result["steps"] > 0
    events = glob.glob(os.path.join(workdir, "tensorboard", "voice_encoder", "events.*"))
    tags = {
        v.tag
        for e in events
        for ev in tf.compat.v1.train.summary_iterator(e)
        for v in ev.summary.value
    }
    assert {"gradient/global_norm", "gradient/clipped_steps"} <= tags


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_two_processes_end_identical(tiny_corpus, tiny_faces_workdir, tmp_path):
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path)
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "s2f_tf.app.cli",
                    "train",
                    "--config=tiny",
                    "--stage=voice_encoder",
                    f"--workdir={workdir}",
                    f"--data={tiny_corpus}",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-4000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["worker"] for r in results] == [0, 1] and all(r["replicas"] == 2 for r in results)
    assert results[0]["replica_digests"] == results[1]["replica_digests"]
    assert results[0]["losses"] == results[1]["losses"]
    assert os.path.exists(os.path.join(workdir, "voice_encoder", "voice_encoder.weights.h5"))


KILL_ARGS = [
    "--config=tiny",
    "--stage=voice_encoder",
    "--deterministic",
    "--set=train.voice_encoder_steps=12",
    "--set=train.checkpoint_every=2",
    "--set=train.image_every=4",  # multiples of 2, for the runs of two steps per call
    "--set=train.validate_every=4",
]


@functools.lru_cache(maxsize=1)
def _kill_args():
    """KILL_ARGS in the policy `auto` picks on this machine, named: the uninterrupted and the killed
    run start apart, and each would probe for itself (runs of one stage keep theirs: the test below)."""
    from s2f_tf.train import runtime

    return KILL_ARGS + [f"--precision={runtime.resolve_precision('auto')[0]}"]


def _checkpoint_steps(workdir):
    names = glob.glob(os.path.join(workdir, "voice_encoder", "checkpoints", "ckpt-*.index"))
    return sorted(int(os.path.basename(n)[5:-6]) for n in names)


def _logged_losses(workdir):
    """{step: loss/total} from the stage's TensorBoard events (all of a workdir's runs)."""
    out = {}
    for path in glob.glob(os.path.join(workdir, "tensorboard", "voice_encoder", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "loss/total":
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


def _untimed(validation):
    def drop(entry):
        return {k: v for k, v in entry.items() if k != "seconds"}

    return {
        "final": drop(validation["final"]),
        "history": [drop(e) for e in validation["history"]],
        "best": validation.get("best"),
        "weights_from_step": validation["weights_from_step"],
    }


def _assert_same_run(final, expected, workdir, reference, logs=""):
    """The killed-and-restarted (or restarted-at-the-end) run's result and weights are the
    uninterrupted run's; on a difference, says at which logged step the two first part and what
    the interrupted runs printed."""
    where = ""
    if (
        final["replica_digests"] != expected["replica_digests"]
        or final["losses"] != expected["losses"]
    ):
        a, b = _logged_losses(workdir), _logged_losses(reference)
        parted = [s for s in sorted(b) if a.get(s) != b[s]]
        where = (
            f"\nlogged loss/total, restarted vs uninterrupted: {a} vs {b}; first differs at step "
            f"{parted[0] if parted else None}\n{logs}"
        )
    assert final["steps"] == expected["steps"] == 12
    assert final["precision"] == expected["precision"], where
    assert final["replica_digests"] == expected["replica_digests"], where
    assert final["losses"] == expected["losses"], where
    assert _untimed(final["validation"]) == _untimed(
        expected["validation"]
    )  # the best step survives a kill
    for name in (
        "voice_encoder.weights.h5",
        "best/voice_encoder.weights.h5",
    ):  # BatchNorm statistics included
        killed, uninterrupted = (
            _weights(os.path.join(w, "voice_encoder", name)) for w in (workdir, reference)
        )
        assert [n for n, _ in killed] == [n for n, _ in uninterrupted]
        assert all((a == b).all() for (_, a), (_, b) in zip(killed, uninterrupted)), name


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_corpus, tiny_faces_workdir, tmp_path_factory):
    reference = _voice_workdir(
        tiny_faces_workdir, tmp_path_factory.mktemp("uninterrupted"), "reference"
    )
    return reference, _result(
        run_s2f("train", *_kill_args(), f"--workdir={reference}", f"--data={tiny_corpus}")
    )


def _kill_twice_then_finish(args, workdir, tiny_corpus, tmp_path):
    """Runs `s2f train *args` and SIGKILLs it at a random moment after a new checkpoint, twice, then
    runs it to the end; (the last run, what the interrupted runs said about precision and resuming)."""
    rng = random.Random(7)
    kills, logs = 0, []
    for attempt in range(2):  # two kills at random moments after a new checkpoint
        log_path = tmp_path / f"killed-{attempt}.log"
        with open(log_path, "w") as log:
            p = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "s2f_tf.app.cli",
                    "train",
                    *args,
                    f"--workdir={workdir}",
                    f"--data={tiny_corpus}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            deadline = time.time() + 120
            done = max(_checkpoint_steps(workdir), default=0)
            while time.time() < deadline and p.poll() is None:
                if max(_checkpoint_steps(workdir), default=0) > done:
                    time.sleep(rng.uniform(0.0, 0.5))
                    break
                time.sleep(0.05)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.wait(timeout=60)
        told = [
            line
            for line in log_path.read_text().splitlines()
            if "precision" in line or "resumed" in line
        ]
        logs.append(
            f"run {attempt} ({'killed' if p.returncode == -signal.SIGKILL else p.returncode}): {told}"
        )
    assert kills >= 1
    final = run_s2f("train", *args, f"--workdir={workdir}", f"--data={tiny_corpus}")
    logs.append(
        "last run: "
        + str(
            [
                line
                for line in final.stdout.splitlines()
                if "precision" in line or "resumed" in line or "already" in line
            ]
        )
    )
    return final, "\n".join(logs)


@pytest.mark.slow
def test_killed_and_restarted_ends_exactly_like_an_uninterrupted_run(
    tiny_corpus, tiny_faces_workdir, tmp_path, uninterrupted_run
):
    """SIGKILLed twice at random moments after a checkpoint and restarted, a run of two steps per
    call (train.steps_per_loop=2, checkpoints every 2 steps: every call's end) ends with the weights,
    best weights, losses and validation history of the uninterrupted one-step-per-call run. (One
    step per call resumes the same way: the SIGTERM tests below resume such runs.)"""
    reference, expected = uninterrupted_run
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path, "killed_k2")
    args = _kill_args() + ["--set=train.steps_per_loop=2"]
    final, logs = _kill_twice_then_finish(args, workdir, tiny_corpus, tmp_path)
    final = _result(final)
    _assert_same_run(final, expected, workdir, reference, logs)
    assert [e["step"] for e in final["validation"]["history"]] == [4, 8, 12], logs


@pytest.mark.slow
def test_a_run_restarted_after_its_last_checkpoint_writes_the_uninterrupted_result(
    tiny_corpus, tiny_faces_workdir, tmp_path, uninterrupted_run
):
    """Killed after the last step's checkpoint, before result.json and the stage's weights: the
    restart trains nothing and writes what the uninterrupted run wrote (the last step's losses from
    its step record, the whole validation history from validation.json)."""
    reference, expected = uninterrupted_run
    workdir = str(tmp_path / "ended")
    shutil.copytree(reference, workdir)
    for name in ("result.json", "voice_encoder.weights.h5"):
        os.remove(os.path.join(workdir, "voice_encoder", name))
    final = run_s2f("train", *_kill_args(), f"--workdir={workdir}", f"--data={tiny_corpus}")
    assert "already at step 12 of 12" in final.stdout
    _assert_same_run(_result(final), expected, workdir, reference)


@pytest.mark.slow
def test_a_resumed_run_keeps_the_precision_it_started_in(tiny_corpus, tiny_faces_workdir, tmp_path):
    """--precision=auto on a resumed stage takes the policy of the checkpoint's step record, not a
    new probe of this machine (which sits near its threshold on some CPUs, and differs on another)."""
    from s2f_tf.train import runtime

    probe_says = runtime.resolve_precision("auto")[0]
    started_in = "mixed_bfloat16" if probe_says == "float32" else "float32"
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path)
    args = [
        "train",
        "--config=tiny",
        "--stage=voice_encoder",
        f"--workdir={workdir}",
        f"--data={tiny_corpus}",
    ]
    first = _result(
        run_s2f(*args, f"--precision={started_in}", "--set=train.voice_encoder_steps=2")
    )
    assert first["precision"] == started_in
    resumed = run_s2f(*args, "--precision=auto", "--set=train.voice_encoder_steps=4")
    assert _result(resumed)["precision"] == started_in and _result(resumed)["steps"] == 4
    assert (
        f"precision {started_in} (auto: the policy the checkpoint at step 2 trained in)"
        in resumed.stdout
    )
    told = run_s2f(
        *args, f"--precision={probe_says}", "--set=train.voice_encoder_steps=5"
    )  # set: obeyed, and said
    assert _result(told)["precision"] == probe_says
    assert f"the checkpoint at step 4 trained in {started_in}" in told.stdout


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_runs_with_finite_losses(
    tiny_corpus, tiny_faces_workdir, tmp_path, precision
):
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path)
    result = _result(
        run_s2f(
            "train",
            "--config=tiny",
            "--stage=voice_encoder",
            f"--workdir={workdir}",
            f"--data={tiny_corpus}",
            f"--precision={precision}",
            "--set=train.voice_encoder_steps=3",
        )
    )
    assert result["precision"] == precision and all(
        map(lambda v: abs(v) < 1e9, result["losses"].values())
    )
    if precision == "mixed_float16":
        assert result["loss_scale"] > 0 and 0 <= result["skipped_steps"] <= 3


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step(tiny_corpus, tiny_faces_workdir, tmp_path):
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path)
    r = run_s2f(
        "train",
        "--config=tiny",
        "--stage=voice_encoder",
        f"--workdir={workdir}",
        f"--data={tiny_corpus}",
        "--set=loss.lambda_distill=inf",
    )
    assert (
        r.returncode == 1 and "at step 1" in r.stderr and ("inf" in r.stderr or "nan" in r.stderr)
    )


@pytest.mark.slow
def test_bad_data_fails_before_training(tiny_corpus, tmp_path):
    r = run_s2f(
        "train",
        "--config=tiny",
        "--stage=face_encoder",
        f"--workdir={tmp_path}/w",
        f"--data={tmp_path}/missing",
    )
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_s2f(
        "train",
        "--config=tiny",
        "--stage=face_encoder",
        f"--workdir={tmp_path}/w",
        f"--data={tiny_corpus}",
        "--set=face_decoder.num_landmarks=5",
    )
    assert r.returncode == 2 and "face_decoder.num_landmarks=68" in r.stderr
    r = run_s2f(
        "train",
        "--config=tiny",
        "--stage=voice_encoder",
        f"--workdir={tmp_path}/fresh",
        f"--data={tiny_corpus}",
    )
    assert r.returncode == 2 and "train --stage=face_encoder first" in r.stderr


@pytest.mark.slow
def test_corrupt_shard_fails_naming_the_file(tiny_corpus, tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(tiny_corpus, data)
    shards = sorted(
        glob.glob(os.path.join(data, "train-*.tfrecord"))
        + glob.glob(os.path.join(data, "validation-*.tfrecord"))
    )
    for shard in shards:  # whichever read comes first (preview or training) must fail well
        raw = open(shard, "rb").read()
        open(shard, "wb").write(raw[: len(raw) // 2])
    r = run_s2f(
        "train",
        "--config=tiny",
        "--stage=face_encoder",
        f"--workdir={tmp_path}/w",
        f"--data={data}",
        "--set=train.face_encoder_steps=40",
    )
    assert r.returncode == 1 and "corrupt data in" in r.stderr, r.stderr[-2000:]
    assert any(os.path.basename(shard) in r.stderr for shard in shards)
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_multi_worker_sigterm_saves_and_resumes(tiny_corpus, tiny_faces_workdir, tmp_path):
    """SIGTERM to one worker: every worker stops after the call in flight at the same step, saying
    so, with status 143 and its step record; restarting the same commands resumes from that step
    and finishes with identical workers."""
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path)
    args = [
        "--config=tiny",
        "--stage=voice_encoder",
        f"--workdir={workdir}",
        f"--data={tiny_corpus}",
        "--set=train.voice_encoder_steps=80",  # ~18 s of steps here: SIGTERM lands ~3 s in
        "--set=train.checkpoint_every=100000",
        "--set=train.log_every=1",
        "--set=train.validate_every=80",
    ]  # (tiny validates every 3 steps)
    ckpts = os.path.join(workdir, "voice_encoder", "checkpoints")

    def launch():
        workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
        procs = []
        for index in range(2):
            env = dict(
                os.environ,
                TF_CONFIG=json.dumps(
                    {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
                ),
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "s2f_tf.app.cli", "train", *args],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        return procs

    procs = launch()
    events = os.path.join(workdir, "tensorboard", "voice_encoder")
    deadline = time.time() + 180
    while time.time() < deadline and not glob.glob(os.path.join(events, "events.*")):
        time.sleep(0.2)
    time.sleep(3)  # some steps in
    procs[0].send_signal(signal.SIGTERM)
    told = [
        [ln for ln in p.communicate(timeout=180)[1].splitlines() if "stopped by" in ln]
        for p in procs
    ]
    assert [p.returncode for p in procs] == [143, 143], told
    steps = {line[0].split(" at step ")[1].split()[0] for line in told}
    assert len(steps) == 1 and all("stopped by SIGTERM" in line[0] for line in told), told
    saved = glob.glob(os.path.join(ckpts, f"ckpt-{steps.pop()}.index"))
    assert saved, "no checkpoint written at the step the workers stopped at"
    results = []
    for p in launch():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["steps"] == 80 for r in results)
    assert results[0]["replica_digests"] == results[1]["replica_digests"]


def test_warm_up_ramps_the_learning_rate_then_follows_the_decay():
    import numpy as np

    from s2f_tf.configs import get_config
    from s2f_tf.train.trainer import make_optimizer

    config = get_config("paper", ["optimizer.warmup_steps=4", "optimizer.decay_steps=10"])
    lr = make_optimizer(config, 1e-3, "float32").learning_rate
    schedule = make_optimizer(config, 1e-3, "float32")._learning_rate
    values = [float(schedule(step)) for step in (0, 1, 3, 4, 9, 10, 25)]
    np.testing.assert_allclose(
        values, [2.5e-4, 5e-4, 1e-3, 1e-3, 1e-3, 0.95e-3, 0.95**2 * 1e-3], rtol=1e-6
    )
    assert float(lr) == pytest.approx(2.5e-4)  # at iteration 0, what the first step uses
    plain = make_optimizer(
        get_config("paper", ["optimizer.warmup_steps=0"]), 1e-3, "float32"
    )._learning_rate
    assert float(plain(0)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="warmup_steps must be >= 0"):
        from s2f_tf.configs import validate

        validate(get_config("paper", ["optimizer.warmup_steps=-1"]))


def test_cool_down_ramps_the_learning_rate_to_zero_over_the_last_steps():
    import numpy as np

    from s2f_tf.configs import get_config, validate
    from s2f_tf.train.trainer import make_optimizer

    config = get_config("demo", ["optimizer.cooldown_steps=4", "optimizer.warmup_steps=2"])
    schedule = make_optimizer(config, 1e-3, "float32", total_steps=10)._learning_rate
    # warm-up over steps 0-1, flat, then (10 - step) / 4 over the last four steps (6..9)
    values = [float(schedule(step)) for step in (0, 1, 5, 6, 7, 9, 10)]
    np.testing.assert_allclose(
        values, [5e-4, 1e-3, 1e-3, 1e-3, 0.75e-3, 0.25e-3, 0.0], rtol=1e-6, atol=1e-12
    )
    # without a stage length (or with cooldown_steps 0) nothing changes
    assert float(make_optimizer(config, 1e-3, "float32")._learning_rate(9)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="cooldown_steps must be >= 0"):
        validate(get_config("demo", ["optimizer.cooldown_steps=-1"]))


_ADAM_SCRIPT = r"""
import json
import numpy as np, tensorflow as tf, keras
from s2f_tf.train.runtime import configure_cpu_devices
configure_cpu_devices(2)
from s2f_tf.train.trainer import FusedAdam
rng = np.random.RandomState(0)
start = [rng.randn(3, 5).astype(np.float32), rng.randn(7).astype(np.float32)]
# four steps of two replicas' gradients; the global gradient is their sum
parts = tf.constant(rng.randn(4, 2, 3 * 5 + 7).astype(np.float32))
split = lambda flat: [tf.reshape(flat[:15], [3, 5]), flat[15:]]
schedule = keras.optimizers.schedules.ExponentialDecay(3e-2, decay_steps=2, decay_rate=0.5)
settings = dict(beta_1=0.5, beta_2=0.99, epsilon=1e-4)

def run(optimizer, strategy):
    with strategy.scope():
        variables = [keras.Variable(v) for v in start]
        optimizer = optimizer(schedule, **settings)
        optimizer.build(variables)

    @tf.function
    def step(k):
        def replica():
            i = tf.distribute.get_replica_context().replica_id_in_sync_group
            n = strategy.num_replicas_in_sync
            grads = tf.gather(parts[k], i) if n == 2 else tf.reduce_sum(parts[k], 0)
            optimizer.apply(split(grads), variables)  # Keras sums the replicas' parts
        strategy.run(replica)

    for k in range(4):
        step(tf.constant(k))
    return [v.numpy() for v in variables], int(optimizer.iterations.numpy())

mirrored = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
one = tf.distribute.get_strategy()
ours, n = run(FusedAdam, mirrored)
keras_one, _ = run(keras.optimizers.Adam, one)
ours_one, _ = run(FusedAdam, one)
diff = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(a, b))
moved = max(float(np.abs(x - y).max()) for x, y in zip(keras_one, start))
print(json.dumps({"iterations": n, "mirrored_vs_keras": diff(ours, keras_one),
                  "one_vs_keras": diff(ours_one, keras_one), "moved": moved}))
"""


@pytest.mark.slow
def test_fused_adam_is_keras_adam_on_one_device_and_on_two_replicas():
    """The training loop's Adam (TensorFlow's fused kernel per variable) takes the same four steps as
    Keras' Adam with the same schedule, on one device and across two replicas (the global gradient
    split between them)."""
    proc = subprocess.run(
        [sys.executable, "-c", _ADAM_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["iterations"] == 4 and out["moved"] > 0.05
    assert out["one_vs_keras"] < 1e-6 and out["mirrored_vs_keras"] < 1e-6, out


_CLIP_SCRIPT = r"""
import json, sys
import numpy as np, tensorflow as tf, keras
from s2f_tf.train.runtime import configure_cpu_devices
configure_cpu_devices(2)
from s2f_tf.train.trainer import clip_global_norm
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
parts = [[np.array([3.0, 0.0], np.float32), np.array([[1.0]], np.float32)],      # replica 0's gradients
         [np.array([1.0, 2.0], np.float32), np.array([[1.0]], np.float32)]]      # replica 1's
clip = float(sys.argv[1])
with strategy.scope():
  variables = [keras.Variable(np.zeros(2, np.float32)), keras.Variable(np.zeros((1, 1), np.float32))]
  optimizer = keras.optimizers.SGD(learning_rate=1.0)
  optimizer.build(variables)

@tf.function
def step():
  def replica():
    i = tf.distribute.get_replica_context().replica_id_in_sync_group
    grads = [tf.where(tf.equal(i, 0), tf.constant(a), tf.constant(b)) for a, b in zip(*parts)]
    clipped, norm = clip_global_norm(grads, clip)
    optimizer.apply(clipped, variables)
    return norm
  return strategy.reduce(tf.distribute.ReduceOp.MEAN, strategy.run(replica), axis=None)

norm = float(step())
print(json.dumps({"norm": norm, "replicas": strategy.num_replicas_in_sync,
                  "moved": [(-v.numpy()).ravel().tolist() for v in variables]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("clip", [1.0, 100.0])
def test_gradient_clipping_is_of_the_global_batch_across_replicas(clip):
    """Two replicas' gradients [3, 0], [1] and [1, 2], [1] sum to [4, 2], [2]: global norm sqrt(24).
    One SGD step (rate 1) through Keras' own cross-replica sum moves the weights by that sum clipped
    to `clip` (Keras' global_clipnorm would clip each replica's part, norms sqrt(10) and sqrt(6))."""
    import numpy as np

    proc = subprocess.run(
        [sys.executable, "-c", _CLIP_SCRIPT, str(clip)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["norm"] == pytest.approx(24**0.5, rel=1e-6)
    scale = min(1.0, clip / 24**0.5)
    np.testing.assert_allclose(
        np.concatenate(out["moved"]), np.array([4.0, 2.0, 2.0]) * scale, rtol=1e-6
    )


def _stage_config(tiny_corpus, workdir, stage):
    """(DatasetInfo, the tiny preset resolved for `stage` on the tiny corpus), as `s2f train` does."""
    from s2f_tf.configs import get_config
    from s2f_tf.data.schema import DatasetInfo
    from s2f_tf.train import loop

    info = DatasetInfo.read(tiny_corpus)
    return info, loop.resolve_config(
        get_config("tiny"),
        info,
        loop.TrainOptions(stage=stage, workdir=workdir, data_dir=tiny_corpus),
    )


@pytest.mark.slow
def test_voice_stage_teacher_features_are_computed_once_and_equal_the_per_step_ones(
    tiny_corpus, tiny_faces_workdir, monkeypatch
):
    """Without stored features the voice stage computes the frozen face encoder's features of each
    split once and looks them up by clip id: the batches then carry exactly the features (and give
    the loss) that running the face encoder on each batch's faces gives; above the memory bound it
    reads the faces as before."""
    import numpy as np

    from s2f_tf.data.dataset import InputOptions
    from s2f_tf.train import stages, voice_stage

    info, config = _stage_config(tiny_corpus, tiny_faces_workdir, "voice_encoder")
    lines = []
    stage = voice_stage.VoiceEncoderStage(config, info, tiny_faces_workdir, log=lines.append)
    stage.build()
    assert stage.fields == ("pcm", "feature")
    options = InputOptions(
        batch_size=4,
        clip_samples=config.audio.clip_samples,
        training=False,
        repeat=False,
        drop_remainder=False,
        deterministic=True,
        fields=("pcm", "feature", "image", "clip_id"),
    )
    compared = 0
    for split in ("train", "validation"):
        for batch in stage.dataset(tiny_corpus, split, options):
            assert set(batch) == {"pcm", "feature", "image", "clip_id"}
            direct = stage.face_encoder(tf.cast(batch["image"], tf.float32), training=False)[
                "feature"
            ].numpy()
            np.testing.assert_allclose(batch["feature"].numpy(), direct, rtol=1e-5, atol=1e-5)
            cached = stage.compute_loss(
                {"pcm": batch["pcm"], "feature": batch["feature"]}, training=False
            )
            per_step = stage.compute_loss(
                {"pcm": batch["pcm"], "image": batch["image"]}, training=False
            )
            for name in cached:
                np.testing.assert_allclose(
                    cached[name].numpy(), per_step[name].numpy(), rtol=1e-4, atol=1e-4
                )
            compared += len(batch["clip_id"])
    assert compared == info.counts["train"] + info.counts["validation"]
    assert sum("face features of the" in line for line in lines) == 2  # once per split
    # Asking again reuses the split's table (no new pass, no new log line).
    next(iter(stage.dataset(tiny_corpus, "train", options)))
    assert sum("face features of the" in line for line in lines) == 2

    monkeypatch.setattr(stages, "TEACHER_CACHE_BYTES", 0)
    lines.clear()
    bounded = voice_stage.VoiceEncoderStage(config, info, tiny_faces_workdir, log=lines.append)
    bounded.build()
    assert bounded.fields == ("pcm", "image") and "the face encoder runs on every batch" in lines[0]


@pytest.mark.slow
def test_decoder_stage_reads_the_cached_face_features(tiny_corpus, tiny_faces_workdir):
    """The decoder stage also trains from the frozen face encoder's features computed once per split:
    its batches carry no input face, and its loss equals the one computed from the faces."""
    import numpy as np

    from s2f_tf.data.dataset import InputOptions
    from s2f_tf.train import face_stages

    info, config = _stage_config(tiny_corpus, tiny_faces_workdir, "face_decoder")
    lines = []
    stage = face_stages.FaceDecoderStage(config, info, tiny_faces_workdir, log=lines.append)
    stage.build()
    assert stage.fields[0] == "feature" and "image" not in stage.fields
    fields = stage.fields + ("image", "target_image")
    options = InputOptions(
        batch_size=4,
        clip_samples=config.audio.clip_samples,
        training=False,
        repeat=False,
        drop_remainder=False,
        deterministic=True,
        fields=fields,
    )
    batch = next(iter(stage.dataset(tiny_corpus, "validation", options)))
    direct = stage.face_encoder(tf.cast(batch["image"], tf.float32), training=False)[
        "feature"
    ].numpy()
    np.testing.assert_allclose(batch["feature"].numpy(), direct, rtol=1e-5, atol=1e-5)
    cached = stage.compute_loss({k: v for k, v in batch.items() if k != "image"}, training=False)
    per_step = stage.compute_loss(
        {k: v for k, v in batch.items() if k != "feature"}, training=False
    )
    for name in cached:
        np.testing.assert_allclose(
            cached[name].numpy(), per_step[name].numpy(), rtol=1e-4, atol=1e-4
        )
    assert sum("face features of the" in line for line in lines) == 1


@pytest.mark.slow
def test_decoder_stage_needs_textures_of_its_own_spline_from_any_sampler(
    tiny_corpus, tiny_faces_workdir
):
    import dataclasses

    from s2f_tf.train import face_stages

    info, config = _stage_config(tiny_corpus, tiny_faces_workdir, "face_decoder")
    assert (
        info.texture_warp["interpolation"] == "bspline5"
    )  # prepare's sampler, whatever the config's
    assert config.face_decoder.warp_interpolation == "bicubic"
    other_sampler = dataclasses.replace(
        info, texture_warp={**info.texture_warp, "interpolation": "bilinear"}
    )
    face_stages.FaceDecoderStage(
        config, other_sampler, tiny_faces_workdir, log=lambda *_: None
    ).build()
    other_spline = dataclasses.replace(info, texture_warp={**info.texture_warp, "border_points": 8})
    with pytest.raises(ValueError, match="warp spline .*border_points.: 8"):
        face_stages.FaceDecoderStage(
            config, other_spline, tiny_faces_workdir, log=lambda *_: None
        ).build()


@pytest.mark.slow
def test_decoder_stage_with_a_critic_trains_checkpoints_and_resumes_both_players(
    tiny_corpus, tiny_faces_workdir, tmp_path
):
    """loss.decoder_adversarial > 0: the critic trains beside the decoder, its variables are in the
    stage's checkpoints (a longer run resumes both players), never in the decoder's weights, and the
    best weights are picked by the held-out fidelity terms alone."""
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path)
    args = (
        "train",
        "--config=tiny",
        "--stage=face_decoder",
        f"--workdir={workdir}",
        f"--data={tiny_corpus}",
        "--set=loss.decoder_adversarial=0.5",
    )
    r = run_s2f(*args)  # the workdir's decoder checkpoints are of a run without a critic
    assert (
        r.returncode != 0 and "trained other variables" in r.stderr and "Traceback" not in r.stderr
    ), r.stderr[-2000:]
    shutil.rmtree(os.path.join(workdir, "face_decoder"))
    result = _result(run_s2f(*args))
    assert {"critic", "adversarial", "fidelity", "texture_l1", "total"} <= set(result["losses"])
    assert result["validation"]["best"]["figure"] == "loss/fidelity"
    checkpoint = tf.train.latest_checkpoint(os.path.join(workdir, "face_decoder", "checkpoints"))
    names = [name for name, _ in tf.train.list_variables(checkpoint)]
    assert any(name.startswith("critic/") for name in names), names
    decoder = _weights(os.path.join(workdir, "face_decoder", "face_decoder.weights.h5"))
    assert decoder and not any("critic" in name or "down1" in name for name, _ in decoder)
    longer = _result(run_s2f(*args, "--set=train.face_decoder_steps=9"))
    assert longer["steps"] == 9
    r = run_s2f(*args[:-1], "--set=loss.decoder_adversarial=-1")
    assert (
        r.returncode != 0
        and "loss.decoder_adversarial must be" in r.stderr
        and "Traceback" not in r.stderr
    )


def _stop_with(signum, args, workdir, tiny_corpus):
    """Starts `s2f train *args`, sends `signum` once its first checkpoint is written; (the exit
    status, the stop line, the step it names)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "s2f_tf.app.cli", "train", *args, f"--workdir={workdir}"]
        + [f"--data={tiny_corpus}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and p.poll() is None and not _checkpoint_steps(workdir):
        time.sleep(0.05)
    p.send_signal(signum)
    _, err = p.communicate(timeout=180)
    told = [line for line in err.splitlines() if "stopped by" in line]
    assert len(told) == 1, err[-3000:]
    return p.returncode, told[0], int(told[0].split(" at step ")[1].split()[0])


@pytest.mark.slow
def test_sigterm_stops_after_the_step_in_flight_and_the_same_command_resumes_exactly(
    tiny_corpus, tiny_faces_workdir, tmp_path, uninterrupted_run
):
    """SIGTERM mid-run: the step in flight finishes, its checkpoint and step record are written at
    that step (not only on checkpoint_every), one line says where it stopped and how to resume, the
    exit status is 143; the same command then ends bit-identical to the uninterrupted run."""
    reference, expected = uninterrupted_run
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path, "stopped")
    status, line, step = _stop_with(signal.SIGTERM, _kill_args(), workdir, tiny_corpus)
    assert status == 143 and "run the same command again to resume" in line, line
    assert 2 <= step < 12 and max(_checkpoint_steps(workdir)) == step, (
        line,
        _checkpoint_steps(workdir),
    )
    records = os.path.join(workdir, "voice_encoder", "input")
    assert glob.glob(os.path.join(records, "**", f"position-{step}.json"), recursive=True)
    assert not os.path.exists(os.path.join(workdir, "voice_encoder", "result.json"))
    final = run_s2f("train", *_kill_args(), f"--workdir={workdir}", f"--data={tiny_corpus}")
    assert "resumed from" in final.stdout and f"at step {step}" in final.stdout
    _assert_same_run(_result(final), expected, workdir, reference)


@pytest.mark.slow
def test_sigint_stops_a_mirrored_run_which_then_resumes_exactly(
    tiny_corpus, tiny_faces_workdir, tmp_path, uninterrupted_mirrored_run
):
    """Two replicas (MirroredStrategy), SIGINT: exit status 130, a checkpoint at the step it names;
    the same command then ends bit-identical to the uninterrupted two-replica run."""
    reference, expected = uninterrupted_mirrored_run
    workdir = _voice_workdir(tiny_faces_workdir, tmp_path, "stopped2")
    args = _kill_args() + MIRRORED
    status, line, step = _stop_with(signal.SIGINT, args, workdir, tiny_corpus)
    assert status == 130 and "stopped by SIGINT" in line and step in _checkpoint_steps(workdir)
    final = _result(run_s2f("train", *args, f"--workdir={workdir}", f"--data={tiny_corpus}"))
    assert final["replicas"] == 2
    assert final["replica_digests"][0] == final["replica_digests"][1]
    _assert_same_run(final, expected, workdir, reference)


def test_attribute_head_targets_are_the_data_classes_and_the_evaluations_age_bands():
    from s2f_tf import metrics
    from s2f_tf.data.schema import DatasetInfo
    from s2f_tf.train import attributes

    info = DatasetInfo(
        attribute_names=["age", "sex"], attribute_classes={"sex": ["male", "female"]}
    )
    assert attributes.head_classes(info) == {
        "sex": ["male", "female"],
        "age_band": metrics.age_band_names(),
    }
    ages = np.array([10, 18, 29.9, 30, 59, 60, 77, np.nan], np.float32)
    values = tf.constant(np.stack([ages, np.arange(8) % 2], axis=1).astype(np.float32))
    bands = attributes.head_targets(values, info.attribute_names, "age_band").numpy()
    np.testing.assert_array_equal(bands, metrics.age_bands(ages))  # NaN stays unknown
    sex = attributes.head_targets(values, info.attribute_names, "sex").numpy()
    np.testing.assert_array_equal(sex, np.arange(8) % 2)


def test_face_encoder_attribute_heads_train_and_resume(tiny_corpus, tmp_path):
    """loss.face_encoder_attributes > 0: stage 1 also learns the data's sex and age band from its
    feature (their terms reported, their heads kept in the checkpoint for a resume); a name the data
    lacks is one line."""
    common = [
        "train", "--config=tiny", "--stage=face_encoder", f"--workdir={tmp_path}/run",
        f"--data={tiny_corpus}", "--set=loss.face_encoder_attributes=1.0",
        "--set=train.checkpoint_every=3", "--set=loss.face_encoder_attribute_heads=sex,age_band",
    ]  # fmt: skip
    first = _result(run_s2f(*common, "--set=train.face_encoder_steps=3"))
    assert set(first["losses"]) == {
        "total",
        "cross_entropy",
        "accuracy",
        "sex_cross_entropy",
        "age_band_cross_entropy",
    }
    assert first["losses"]["total"] > first["losses"]["cross_entropy"] > 0
    again = run_s2f(*common, "--set=train.face_encoder_steps=6")
    assert again.returncode == 0 and "at step 3" in again.stdout and "resumed from" in again.stdout
    bad = run_s2f(*common, "--set=loss.face_encoder_attribute_heads=height")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "names 'height', which is not a categorical attribute of the data" in bad.stderr
