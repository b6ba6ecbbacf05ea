"""The `paper` preset end to end at reduced sizes: its own structure (valid-padding Table 1 voice
encoder, VGG-16 face encoder without batch norm and with dropout, the Cole et al. decoder with
transposed convolutions and a bilinear warp, the paper's optimiser and loss weights), only thinner,
smaller and shorter. Three stages trained in-process on real TFRecords, exported as a SavedModel,
and one prediction served over gRPC with the official tensorflow-serving-api stubs."""

from __future__ import annotations

import json
import math
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf

# The paper's structure at test size. What is NOT overridden stays the paper's: padding=valid,
# face_encoder.batchnorm=False, dropout 0.5, upsample=transposed, warp bilinear, the decoder reading
# the feature's direction, Adam(1e-3, beta1 0.5, eps 1e-4) with a 50-step warm-up, lambda1 0.025,
# lambda2 200, T 2.
REDUCED = [
    "audio.clip_seconds=2.7",
    "audio.min_seconds=2.7",
    "audio.max_seconds=10",  # valid padding: >= 2.6 s
    "voice_encoder.width=0.0625",
    "voice_encoder.fc_units=64",
    "face_encoder.image_size=32",
    "face_encoder.width=0.0625",
    "face_encoder.fc_units=64",
    "face_decoder.bottleneck=64",
    "face_decoder.num_landmarks=68",
    "face_decoder.landmark_hidden=64",
    "face_decoder.texture_start_size=4",
    "face_decoder.texture_base_channels=32",
    "face_decoder.texture_min_channels=8",
    "train.batch_size=4",
    "train.face_encoder_steps=8",
    "train.face_decoder_steps=8",
    "train.voice_encoder_steps=8",
    "train.log_every=2",
    "train.image_every=4",
    "train.checkpoint_every=4",
    "train.shuffle_buffer=16",
    "train.validate_every=4",
    "train.validation_clips=16",
    "train.precision=mixed_bfloat16",  # what accelerators train in (here: XLA on CPU)
]


@pytest.fixture(scope="module")
def paper_small():
    from s2f_tf import factory
    from s2f_tf.configs import get_config

    config = factory.validate(get_config("paper", REDUCED))
    assert config.name == "paper"
    return config


def test_reduced_paper_preset_keeps_the_paper_structure(paper_small):
    from s2f_tf.configs import get_config

    paper = get_config("paper")
    for section, field in [
        ("voice_encoder", "padding"),
        ("voice_encoder", "kernel_size"),
        ("face_encoder", "batchnorm"),
        ("face_encoder", "dropout"),
        ("face_decoder", "upsample"),
        ("face_decoder", "warp_interpolation"),
        ("face_decoder", "normalize_input"),
        ("loss", None),
        ("optimizer", None),
    ]:
        ours, theirs = getattr(paper_small, section), getattr(paper, section)
        assert (getattr(ours, field) if field else ours) == (
            getattr(theirs, field) if field else theirs
        ), section


@pytest.mark.slow
def test_paper_preset_trains_exports_and_serves_at_reduced_size(paper_small, tmp_path):
    data = _prepare(paper_small, str(tmp_path / "data"))
    workdir = str(tmp_path / "run")
    results, lines = _train_three_stages(paper_small, data, workdir)
    # the decoder's landmarks stay where faces are (normalised coordinates): no jump by the image size
    assert results["face_decoder"]["losses"]["landmark_mse"] < 0.01, results["face_decoder"]
    # the voice stage's three terms are all live (the distillation is not a saturated 0)
    voice = results["voice_encoder"]["losses"]
    assert voice["decoder_l1"] > 0 and voice["feature_l2"] > 0 and voice["distill"] > 0, voice
    _check_the_reported_loss_balance(results["voice_encoder"]["start"], lines, workdir)
    _check_served_matches_in_process(paper_small, workdir, str(tmp_path / "exports"))


def _prepare(config, data: str) -> str:
    """8 speakers x 3 clips of the synthetic corpus at 32 x 32, into `data`."""
    from pipelines.common import run_prepare
    from pipelines.synthetic import SyntheticSource
    from s2f_tf import factory

    run_prepare(
        SyntheticSource(identities=8, clips_per_identity=3, image_size=32, seed=24),
        data,
        items_per_shard=8,
        beam_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
        log=lambda *_: None,
        texture_warp=factory.texture_warp(config),
    )
    return data


def _train_three_stages(config, data: str, workdir: str) -> tuple[dict, list[str]]:
    """Each stage's result (8 finite steps in mixed_bfloat16, checked) and the log lines."""
    from s2f_tf.train.loop import TrainOptions, train

    results, lines = {}, []
    for stage in ("face_encoder", "face_decoder", "voice_encoder"):
        results[stage] = train(
            config,
            TrainOptions(
                stage=stage, workdir=workdir, data_dir=data, jit_compile=True, progress=False
            ),
            log=lines.append,
        )
        r = results[stage]
        assert (
            r["steps"] == 8
            and r["precision"] == "mixed_bfloat16"
            and all(math.isfinite(v) for v in r["losses"].values())
        ), r
    return results, lines


def _check_the_reported_loss_balance(start: dict, lines: list[str], workdir: str) -> None:
    """The loss balance at the voice stage's start is reported: each weighted term and its pull on
    v_s, and the teacher's softmax over the corpus's speakers."""
    reported = [line for line in lines if " at the start: " in line]  # the face stages report none
    assert (
        len(reported) == 1
        and reported[0].startswith(
            "[voice_encoder] at the start: loss terms (weighted) decoder_l1 "
        )
        and "teacher softmax top probability" in reported[0]
    )
    assert (
        set(start["weighted_terms"])
        == set(start["gradient_norms"])
        == {"decoder_l1", "feature_l2", "distill"}
    )
    assert all(v > 0 and math.isfinite(v) for v in start["gradient_norms"].values()), start
    with open(os.path.join(workdir, "config.json")) as f:
        stored = json.load(f)
    assert stored["voice_encoder"]["padding"] == "valid"
    classes = stored["face_encoder"]["num_identities"]  # fc8: the corpus's 8 speakers
    assert classes == 8 and 1 / classes <= start["teacher_top_probability"] <= 1
    assert 0 <= start["teacher_entropy"] <= math.log(classes) + 1e-4


def _check_served_matches_in_process(config, workdir: str, export_base: str) -> None:
    """Exported, served by the DevServer and asked over gRPC with the official stubs: the answer is
    the SavedModel's own, in-process."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

    from s2f_tf.export import export_workdir
    from serving.server import AUTO_PORT, DevServer

    version_dir = export_workdir(workdir, export_base, "s2f")
    model_dir = os.path.dirname(version_dir)
    loaded = tf.saved_model.load(version_dir)
    wave = (np.random.RandomState(0).randn(1, config.audio.clip_samples) * 0.05).astype(np.float32)
    expected = {
        k: v.numpy()
        for k, v in loaded.signatures["serving_default"](waveform=tf.constant(wave)).items()
    }

    server = DevServer(model_dir, "s2f", port=AUTO_PORT, rest_api_port=AUTO_PORT, poll_seconds=0.5)
    server.start()
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name="s2f", signature_name="serving_default")
            )
            request.inputs["waveform"].CopyFrom(tf.make_tensor_proto(wave))
            response = stub.Predict(request, timeout=60)
    finally:
        server.stop()
    served = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert set(served) == set(expected)
    assert served["face_feature"].shape == (1, config.feature_dim)
    assert served["face_image"].shape[1:3] == (32, 32)
    for k in expected:
        np.testing.assert_allclose(served[k], expected[k], atol=1e-4, err_msg=k)
