"""Several training steps per tf.function call (train.steps_per_loop), on per-replica input: the
same weights as one step per call, TensorBoard scalars as means over the logging interval, step
markers in the profile, and the HParams dashboard's record of the stage."""

import glob
import json
import os
import shutil

import pytest
import tensorflow as tf
from conftest import run_s2f

ARGS = [
    "--config=tiny",
    "--stage=voice_encoder",
    "--deterministic",
    "--cpu_devices=2",
    "--strategy=mirrored",
    "--precision=float32",
    "--set=train.log_every=3",  # tiny logs every 2 steps: not a multiple of 3
]


def _train(tiny_corpus, tiny_faces_workdir, tmp_path, name, *extra):
    workdir = str(tmp_path / name)
    shutil.copytree(tiny_faces_workdir, workdir, ignore=shutil.ignore_patterns("tensorboard"))
    r = run_s2f("train", *ARGS, f"--workdir={workdir}", f"--data={tiny_corpus}", *extra)
    assert r.returncode == 0, r.stderr[-4000:]
    return workdir, json.loads(r.stdout.strip().splitlines()[-1]), r.stdout


def _events(workdir):
    for path in glob.glob(os.path.join(workdir, "tensorboard", "voice_encoder", "events.*")):
        yield from tf.compat.v1.train.summary_iterator(path)


def _step_markers(workdir) -> list[int]:
    """The step numbers of the profile's "train" step markers (TraceMe events with step_num)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    steps = []
    logdir = os.path.join(workdir, "tensorboard", "voice_encoder", "plugins", "profile")
    for path in glob.glob(os.path.join(logdir, "*", "*.xplane.pb")):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            names = {k: v.name for k, v in plane.event_metadata.items()}
            stats = {k: v.name for k, v in plane.stat_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    if names.get(event.metadata_id) == "train":
                        got = {stats[s.metadata_id]: s.int64_value for s in event.stats}
                        steps.append(got.get("step_num"))
    return sorted(steps)


@pytest.mark.slow
def test_three_steps_per_call_on_two_replicas_end_like_one_step_per_call(
    tiny_corpus, tiny_faces_workdir, tmp_path
):
    """K=3 and K=1 on 2 logical CPUs (per-replica input, --deterministic): the same weights, losses
    and validation; the K=3 run's profile has a step marker per call, its scalars are means over the
    interval, and its events hold the HParams session with the resolved config and final figures."""
    _, one, said = _train(tiny_corpus, tiny_faces_workdir, tmp_path, "k1")
    assert "strategy MirroredStrategy, 2 replicas on 2 x CPU" in said
    workdir, three, _ = _train(
        tiny_corpus,
        tiny_faces_workdir,
        tmp_path,
        "k3",
        "--set=train.steps_per_loop=3",
        "--profile_steps=0,6",
    )
    assert one["steps"] == three["steps"] == 6 and three["replicas"] == 2
    assert three["replica_digests"] == one["replica_digests"]
    assert three["losses"] == one["losses"]
    assert three["validation"]["history"][-1]["value"] == one["validation"]["history"][-1]["value"]
    assert _step_markers(workdir) == [0, 3]  # one call of 3 steps each

    hparams, logged, tags = {}, {}, set()
    for event in _events(workdir):
        for value in event.summary.value:
            tags.add(value.tag)
            if value.metadata.plugin_data.plugin_name == "hparams" and value.tag.endswith(
                "session_start_info"
            ):
                from tensorboard.plugins.hparams import plugin_data_pb2

                data = plugin_data_pb2.HParamsPluginData.FromString(
                    value.metadata.plugin_data.content
                )
                hparams = {
                    k: v.string_value or v.number_value or v.bool_value
                    for k, v in data.session_start_info.hparams.items()
                }
            if value.tag == "loss/total":
                logged[event.step] = float(tf.make_ndarray(value.tensor))
    assert hparams["train.steps_per_loop"] == 3 and hparams["stage"] == "voice_encoder"
    assert hparams["replicas"] == 2 and hparams["precision"] == "float32"
    assert {"final/loss/total", "final/validation/feature_R@1", "best/feature_R@1"} <= tags, tags
    assert sorted(logged) == [3, 6]
    # the logged figure at step 6 is the mean over steps 4-6, not step 6's loss
    assert logged[6] != pytest.approx(three["losses"]["total"], rel=1e-9)
