"""The s2f contract: the facts every layer agrees on, each stated once. Imports no Keras, and
TensorFlow only inside the functions that read an export's files (tf.io.gfile, local or remote).

  audio     SAMPLE_RATE 16 kHz mono; int16 PCM <-> float by PCM_SCALE (1/32768); centre crops
  splits    SPLITS (train | validation | test, speaker-disjoint) and their default SPLIT_FRACTIONS
  serving   what `s2f export` writes and every client, server and `s2f predict` relies on:
              <export_base>/<model_name>/<integer version>/saved_model.pb
              signature SIGNATURE: INPUT float32 [batch, samples] at SAMPLE_RATE
                                   -> OUTPUTS face_feature [B, D], face_image uint8 [B, S, S, 3],
                                      landmarks [B, K, 2]
              signature DECODE_SIGNATURE: FEATURE_INPUT float32 [batch, D] (a face feature, e.g.
                                   one speaker's combined windows) -> DECODE_OUTPUTS face_image, landmarks
              signature INFO_SIGNATURE: INFO_FIELDS as its inputs' defaults (metadata carries them)
              assets.extra/MODEL_INFO_FILE (the export's limits and shapes, `model_info`)
              assets.extra/WARMUP_FILE (PredictionLog records, at most MAX_WARMUP_RECORDS)
  failures  S2FError: a failure whose message is written for the user (the `s2f` command prints it
            without a traceback); InputError: a waveform that breaks the serving contract;
            StorageError: a full disk, a quota, a read-only or vanished output location

Every layer may import this module; it imports nothing of s2f's.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

# -- audio
SAMPLE_RATE = 16000  # Hz: what s2f stores, trains on, exports and serves
PCM_SCALE = 1.0 / 32768.0  # int16 PCM * PCM_SCALE -> float in [-1, 1)


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM -> float32 in [-1, 1) (same shape)."""
    return np.asarray(pcm).astype(np.float32) * np.float32(PCM_SCALE)


def float_to_pcm(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16 PCM: scaled by 1 / PCM_SCALE, rounded, clipped to the int16 range."""
    return np.clip(np.round(np.asarray(x, np.float64) / PCM_SCALE), -32768, 32767).astype(np.int16)


def as_waveform(x) -> np.ndarray:
    """What every predictor sends: float input cast to float32 (the signature's dtype); anything else
    is passed as it is, so the model's side reports what it expects."""
    array = np.asarray(x)
    return (
        array.astype(np.float32) if array.dtype.kind == "f" and array.dtype != np.float32 else array
    )


def center_offset(length: int, window: int) -> int:
    """Where a centred window of `window` samples starts in `length` samples (0 if it does not fit)."""
    return max(int(length) - int(window), 0) // 2


def center_crop(x, window: int):
    """The centred `window` samples of x [..., N] along the last axis (all of it when N <= window).
    Works on numpy arrays and on tensors with a static last dimension."""
    start = center_offset(x.shape[-1], window)
    return x[..., start : start + window]


def tile(x: np.ndarray, length: int) -> np.ndarray:
    """x [..., N] repeated from its start along the last axis to exactly `length` samples when N is
    shorter (longer x is returned as it is): how training tiles short clips (data/dataset.py's
    crop_or_tile) and the model's front end tiles them (frontend.tile_to_length), so a tiled clip
    gives the model the same samples as the short one."""
    x = np.asarray(x)
    n = x.shape[-1]
    if n >= length or n == 0:
        return x
    reps = [1] * (x.ndim - 1) + [-(-length // n)]
    return np.tile(x, reps)[..., :length]


def fit_clip(x: np.ndarray, length: int) -> np.ndarray:
    """x [..., N] -> [..., length]: tiled when shorter (`tile`), the centred `length` samples when
    longer (`center_crop`, as evaluation crops): what a client sends a server that batches."""
    return center_crop(tile(x, length), length)


def seconds(samples: int, sample_rate: int = SAMPLE_RATE) -> float:
    return samples / float(sample_rate)


# -- splits
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def split_from_unit(u: float, fractions: Sequence[float] = SPLIT_FRACTIONS) -> str:
    """A number in [0, 1) -> the split whose share of [0, 1) holds it (fractions are normalised)."""
    fr = np.asarray(fractions, np.float64)
    if fr.shape != (len(SPLITS),) or np.any(fr < 0) or fr.sum() <= 0:
        raise ValueError(
            f"split fractions must be {len(SPLITS)} non-negative numbers, got {fractions!r}"
        )
    edges = np.cumsum(fr) / fr.sum()
    return SPLITS[int(min(np.searchsorted(edges, u, side="right"), len(SPLITS) - 1))]


# -- serving
SIGNATURE = "serving_default"
INPUT = "waveform"
OUTPUTS = ("face_feature", "face_image", "landmarks")
DECODE_SIGNATURE = "decode_feature"
FEATURE_INPUT = "face_feature"
DECODE_OUTPUTS = ("face_image", "landmarks")
# A third signature that carries the model info in its signature_def: every input defaults to one of
# model_info's numbers (SignatureDef.defaults), so GetModelMetadata over gRPC or REST answers with them.
INFO_SIGNATURE = "model_info"
INFO_FIELDS = ("sample_rate", "min_samples", "max_samples", "clip_samples", "feature_dim")
ASSETS_EXTRA = "assets.extra"
MODEL_INFO_FILE = "s2f_model.json"
WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving's name
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
SAVED_MODEL_FILE = "saved_model.pb"


def _gfile():
    """tf.io.gfile, for local and remote (gs://, hdfs://) paths alike; TensorFlow is imported only
    when a function here touches a file."""
    import tensorflow as tf

    return tf.io.gfile


_VERSION_NAME = re.compile(r"0|[1-9][0-9]*")  # "7", not "007" or "7.tmp"


def versions(model_dir: str, complete: bool = True) -> list[int]:
    """The integer version directories under <export_base>/<model_name>, ascending; with `complete`
    only those holding saved_model.pb. Temporary export directories are not versions."""
    gfile = _gfile()
    names = gfile.listdir(model_dir) if gfile.isdir(model_dir) else []
    found = []
    for name in names:
        name = name.strip("/")
        if _VERSION_NAME.fullmatch(name) and (
            not complete or gfile.exists(os.path.join(model_dir, name, SAVED_MODEL_FILE))
        ):
            found.append(int(name))
    return sorted(found)


def version_dir(model_dir: str, version: int) -> str:
    return os.path.join(model_dir, str(int(version)))


def newest_version_dir(model_dir: str) -> str:
    """`model_dir` itself if it is a SavedModel, else its newest integer version directory."""
    if _gfile().exists(os.path.join(model_dir, SAVED_MODEL_FILE)):
        return model_dir
    found = versions(model_dir)
    if not found:
        raise FileNotFoundError(
            f"{model_dir!r} holds no SavedModel (expected {SAVED_MODEL_FILE} or "
            "<version>/ directories written by `s2f export`)"
        )
    return version_dir(model_dir, found[-1])


def model_info(
    config_name: str,
    min_samples: int,
    max_samples: int,
    clip_samples: int,
    feature_dim: int,
    image_size: int,
    num_landmarks: int,
    sample_rate: int = SAMPLE_RATE,
) -> dict[str, Any]:
    """The content of assets.extra/MODEL_INFO_FILE: what a client must know to call the export."""
    return {
        "config": config_name,
        "sample_rate": sample_rate,
        "min_samples": int(min_samples),
        "max_samples": int(max_samples),
        "clip_samples": int(clip_samples),
        "feature_dim": int(feature_dim),
        "image_size": int(image_size),
        "num_landmarks": int(num_landmarks),
        "signature": SIGNATURE,
        "input": INPUT,
        "outputs": list(OUTPUTS),
        "decode_signature": DECODE_SIGNATURE,
        "decode_input": FEATURE_INPUT,
        "decode_outputs": list(DECODE_OUTPUTS),
    }


def model_info_path(version_path: str) -> str:
    return os.path.join(version_path, ASSETS_EXTRA, MODEL_INFO_FILE)


def read_model_info(version_path: str) -> dict[str, Any]:
    """assets.extra/MODEL_INFO_FILE of one version directory; {} for an export without one."""
    path = model_info_path(version_path)
    gfile = _gfile()
    if not gfile.exists(path):
        return {}
    with gfile.GFile(path) as f:
        return json.load(f)


# -- failures
class S2FError(Exception):
    """A failure whose message says what went wrong and what to do: the `s2f` command prints it
    (no traceback) and exits 1. Corrupt data, a NaN loss, unreadable media, a server's answer, a
    waveform the model cannot take are all S2FErrors."""


class StorageError(S2FError):
    """A write that failed for want of space, quota or a writable place (s2f_tf.files.storage_fault
    names it): the message says where, what was kept and how to continue."""


class StoppedError(S2FError):
    """Stopped cleanly by a signal (SIGTERM, SIGINT): the message says what was kept and how to go on;
    the `s2f` command exits with `exit_status`, 128 + the signal's number (143 for SIGTERM)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_status = 128 + self.signum


class InputError(S2FError):
    """A waveform that breaks the serving contract; `why` is the short reason ("clip too short")."""

    def __init__(self, why: str, message: str):
        super().__init__(message)
        self.why = why


def shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def describe_input(
    info: dict[str, Any],
    max_batch: int | None = None,
    dtype: str = "float32",
    input_name: str = INPUT,
) -> str:
    """The input contract of an export in words, for error messages."""
    want = f"input '{input_name}' must be {dtype} [batch, samples]"
    if info.get("max_samples"):
        want += f" with {int(info.get('min_samples', 1))}..{info['max_samples']} samples"
    if "sample_rate" in info:
        want += f" at {info['sample_rate']} Hz"
    return want + (f", batch 1..{max_batch}" if max_batch else "")


def check_waveform(
    info: dict[str, Any],
    dtype: str,
    shape: Sequence[int] | None,
    max_batch: int | None = None,
    want_dtype: str = "float32",
    rank: int | None = 2,
    input_name: str = INPUT,
) -> None:
    """Checks dtype, rank, emptiness, batch size and clip length against an export's info (before any
    data is decoded); raises InputError whose message says what was expected and what came."""
    got = f"{dtype} {shape_str(shape) if shape is not None else '[unknown rank]'}"
    expected = describe_input(info, max_batch, want_dtype, input_name)

    def fail(why: str):
        raise InputError(why, f"{why}: {expected}; got {got}")

    if dtype != want_dtype:
        fail("wrong dtype")
    if shape is None or (rank is not None and len(shape) != rank):
        fail("wrong rank")
    if any(d <= 0 for d in shape):
        fail("empty input")
    batch, samples = shape[0], shape[-1]
    if max_batch and batch > max_batch:
        fail("batch too large")
    if samples < int(info.get("min_samples", 1)):
        fail("clip too short")
    if info.get("max_samples") and samples > info["max_samples"]:
        fail("clip too long")


def describe_feature(info: dict[str, Any], max_batch: int | None = None) -> str:
    """The DECODE_SIGNATURE's input contract in words, for error messages."""
    return f"input '{FEATURE_INPUT}' must be float32 [batch, {info.get('feature_dim') or 'D'}]" + (
        f", batch 1..{max_batch}" if max_batch else ""
    )


def check_feature(
    info: dict[str, Any], dtype: str, shape: Sequence[int] | None, max_batch: int | None = None
) -> None:
    """The DECODE_SIGNATURE's input: float32 [batch, feature_dim]; raises InputError like check_waveform."""
    dim = info.get("feature_dim")
    expected = describe_feature(info, max_batch)
    got = f"{dtype} {shape_str(shape) if shape is not None else '[unknown rank]'}"

    def fail(why: str):
        raise InputError(why, f"{why}: {expected}; got {got}")

    if dtype != "float32":
        fail("wrong dtype")
    if shape is None or len(shape) != 2:
        fail("wrong rank")
    if any(d <= 0 for d in shape):
        fail("empty input")
    if max_batch and shape[0] > max_batch:
        fail("batch too large")
    if dim and shape[1] != dim:
        fail("wrong feature size")


def check_finite(
    info: dict[str, Any],
    waveform: np.ndarray,
    max_batch: int | None = None,
    input_name: str = INPUT,
    expected: str | None = None,
) -> None:
    """NaN/Inf would propagate silently through the model: refuse them (InputError). `expected` is
    the input contract in words (default: the waveform's)."""
    if not np.isfinite(waveform).all():
        kind = "NaN" if np.isnan(waveform).any() else "Inf"
        expected = expected or describe_input(info, max_batch, input_name=input_name)
        raise InputError(
            "non-finite values",
            f"non-finite values: {expected}, finite; got "
            f"{waveform.dtype.name} {shape_str(waveform.shape)} containing {kind}",
        )
