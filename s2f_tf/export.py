"""Where a SavedModel is written: `s2f export`. The names and layout are the contract's
(s2f_tf/contract.py); this module writes them.

  <export_base>/<model_name>/<version>/          integer version, what TF Serving polls
      saved_model.pb, variables/
      assets.extra/tf_serving_warmup_requests    PredictionLog records (TF Serving warms up with them):
                                                 both signatures at every WARMUP_BATCH_SIZES
      assets.extra/s2f_model.json                 sample rate, length limits, shapes, config name
Signature `serving_default`:
  waveform     float32 [batch, samples] at 16 kHz (any length in [min, max]; short clips are tiled)
  -> face_feature float32 [batch, D], face_image uint8 [batch, S, S, 3], landmarks float32 [batch, K, 2]
Signature `decode_feature` (the face decoder alone, for a feature combined from several windows):
  face_feature float32 [batch, D] -> face_image, landmarks
Signature `model_info` (contract.INFO_SIGNATURE): inputs that default to the model info's numbers
  (clip_samples, min_samples, ...), so GetModelMetadata over gRPC and REST tells a client what to send.
The export is built in a temporary directory next to the versions and renamed when complete, so
a polling server never sees half a model. It is reloaded and checked against the in-process model
before the rename.
"""

from __future__ import annotations

import inspect
import json
import os

import numpy as np
import tensorflow as tf

from s2f_tf import contract
from s2f_tf.configs import Config
from s2f_tf.contract import (
    DECODE_OUTPUTS,
    DECODE_SIGNATURE,
    FEATURE_INPUT,
    INFO_FIELDS,
    INFO_SIGNATURE,
    INPUT,
    OUTPUTS,
    SIGNATURE,
)
from s2f_tf.workdir import load_trained_model

# serving/batching.config's allowed_batch_sizes (tests/test_serving.py checks they agree): TF Serving
# pads every merged batch to one of them, so warm-up runs each before a version goes AVAILABLE.
WARMUP_BATCH_SIZES = (1, 2, 4, 8, 16, 32)


class ServingModule(tf.Module):
    """The exported computation: raw waveform in, feature + face image + landmarks out (`serve`);
    a face feature in, face image + landmarks out (`decode`)."""

    def __init__(self, model, feature_dim: int, info: dict):
        super().__init__()
        self.model = model
        self.decode = tf.function(
            self._decode,
            input_signature=[tf.TensorSpec([None, feature_dim], tf.float32, name=FEATURE_INPUT)],
        )
        self.info = _info_function(info)

    @staticmethod
    def _image(image):
        return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name=INPUT)])
    def serve(self, waveform):
        out = self.model(waveform, training=False)
        return {
            "face_feature": tf.identity(out["face_feature"], name="face_feature"),
            "face_image": tf.identity(
                self._image(out["face_image"]), name="face_image"
            ),  # [B, S, S, 3]
            "landmarks": tf.identity(out["landmarks"], name="landmarks"),
        }  # [B, K, 2]

    def _decode(self, face_feature):
        out = self.model.face_decoder(face_feature, training=False)
        return {
            "face_image": tf.identity(self._image(out["image"]), name="face_image"),
            "landmarks": tf.identity(out["landmarks"], name="landmarks"),
        }


def _info_function(info: dict):
    """A tf.function whose inputs are INFO_FIELDS, each defaulting to its value in `info` (scalar
    int64): saved as a signature, its SignatureDef.defaults carry the numbers into the metadata."""

    def model_info(*values):
        return {k: tf.identity(v, name=k) for k, v in zip(INFO_FIELDS, values)}

    model_info.__signature__ = inspect.Signature(
        [
            inspect.Parameter(
                k,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=tf.constant(int(info[k]), tf.int64),
            )
            for k in INFO_FIELDS
        ]
    )  # the defaults tf.saved_model.save writes into SignatureDef.defaults
    return tf.function(
        model_info, input_signature=[tf.TensorSpec([], tf.int64, name=k) for k in INFO_FIELDS]
    )


def next_version(model_dir: str) -> int:
    return max(contract.versions(model_dir, complete=False), default=0) + 1


def _warmup_records(config: Config, batch_sizes=WARMUP_BATCH_SIZES) -> list[bytes]:
    """PredictionLog records TF Serving replays before a version goes AVAILABLE: both signatures
    (SIGNATURE on clip_samples waveforms, DECODE_SIGNATURE on features) at every batch size."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    rng = np.random.RandomState(0)
    for signature, name, width in (
        (SIGNATURE, INPUT, config.audio.clip_samples),
        (DECODE_SIGNATURE, FEATURE_INPUT, config.feature_dim),
    ):
        for b in batch_sizes:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(signature_name=signature)
            )
            array = (rng.randn(b, width) * 0.05).astype(np.float32)  # [B, samples] | [B, D]
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            records.append(log.SerializeToString())
    return records


def model_info(config: Config) -> dict:
    a = config.audio
    return contract.model_info(
        config.name,
        a.min_samples,
        a.max_samples,
        a.clip_samples,
        config.feature_dim,
        config.face_encoder.image_size,
        config.face_decoder.num_landmarks,
        a.sample_rate,
    )


def export_model(
    model,
    config: Config,
    export_base: str,
    model_name: str,
    version: int | None = None,
    check: bool = True,
) -> str:
    """Writes the SavedModel atomically; returns the final version directory."""
    if not model_name or "/" in model_name:
        raise ValueError(f"model_name must be a plain name, got {model_name!r}")
    model_dir = os.path.join(export_base, model_name)
    tf.io.gfile.makedirs(model_dir)
    version = version or next_version(model_dir)
    final = contract.version_dir(model_dir, version)
    if tf.io.gfile.exists(final):
        raise FileExistsError(f"{final} already exists; versions are never overwritten")
    tmp = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    if tf.io.gfile.exists(tmp):
        tf.io.gfile.rmtree(tmp)
    module = ServingModule(model, config.feature_dim, model_info(config))
    try:
        tf.saved_model.save(
            module,
            tmp,
            signatures={
                SIGNATURE: module.serve,
                DECODE_SIGNATURE: module.decode,
                INFO_SIGNATURE: module.info,
            },
        )
        extra = os.path.join(tmp, contract.ASSETS_EXTRA)
        tf.io.gfile.makedirs(extra)
        with tf.io.TFRecordWriter(os.path.join(extra, contract.WARMUP_FILE)) as writer:
            for record in _warmup_records(config):
                writer.write(record)
        with tf.io.gfile.GFile(contract.model_info_path(tmp), "w") as f:
            f.write(json.dumps(model_info(config), indent=2))
        if check:
            check_export(tmp, model, config)
        tf.io.gfile.rename(tmp, final)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
    return final


def check_export(path: str, model, config: Config, atol: float = 1e-4) -> None:
    """Reloads the SavedModel and compares its outputs with the in-process model."""
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures[SIGNATURE]
    wave = (np.random.RandomState(1).randn(2, config.audio.clip_samples) * 0.05).astype(np.float32)
    got = fn(waveform=tf.constant(wave))
    want = model(wave, training=False)
    if set(got) != set(OUTPUTS):
        raise AssertionError(f"exported outputs {sorted(got)} != {list(OUTPUTS)}")
    np.testing.assert_allclose(
        got["face_feature"].numpy(), want["face_feature"].numpy(), atol=atol, rtol=1e-4
    )
    np.testing.assert_allclose(
        got["landmarks"].numpy(), want["landmarks"].numpy(), atol=atol, rtol=1e-4
    )
    image = np.round(np.clip(want["face_image"].numpy(), 0, 1) * 255)
    if np.abs(got["face_image"].numpy().astype(np.int32) - image).max() > 1:
        raise AssertionError("exported face_image differs from the in-process model")
    decoded = loaded.signatures[DECODE_SIGNATURE](**{FEATURE_INPUT: got["face_feature"]})
    if set(decoded) != set(DECODE_OUTPUTS):
        raise AssertionError(
            f"exported {DECODE_SIGNATURE} outputs {sorted(decoded)} != {list(DECODE_OUTPUTS)}"
        )
    np.testing.assert_allclose(
        decoded["landmarks"].numpy(), got["landmarks"].numpy(), atol=atol, rtol=1e-4
    )
    if np.abs(decoded["face_image"].numpy().astype(np.int32) - got["face_image"].numpy()).max() > 1:
        raise AssertionError(f"exported {DECODE_SIGNATURE} face_image differs from {SIGNATURE}'s")


def export_workdir(
    workdir: str, export_base: str, model_name: str, version: int | None = None
) -> str:
    model, config = load_trained_model(workdir)
    return export_model(model, config, export_base, model_name, version)
