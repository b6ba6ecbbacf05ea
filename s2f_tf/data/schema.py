"""The one TFRecord schema shared by pipelines/ (writers), s2f_tf/data/dataset.py (training reader),
evaluation and serving tools. One `tf.train.Example` per clip:

| key                  | type          | meaning                                                      |
|----------------------|---------------|--------------------------------------------------------------|
| schema_version       | int64         | SCHEMA_VERSION; readers reject other versions                 |
| clip_id              | bytes         | unique id of the clip (e.g. "<speaker>/<n>" or "<yt>_<start>") |
| speaker_id           | bytes         | the speaker's id in its corpus                                |
| speaker_index        | int64         | dense 0..S-1 index over the corpus's speakers (identity label) |
| split                | bytes         | train | validation | test (speaker-disjoint)                  |
| audio/pcm            | bytes         | 16 kHz mono int16 little-endian PCM                            |
| audio/sample_rate    | int64         | 16000                                                          |
| audio/num_samples    | int64         | len(pcm) / 2                                                   |
| face/image           | bytes         | the face crop, PNG (RGB, square)                               |
| face/size            | int64         | its side in pixels                                             |
| face/landmarks       | float[K*2]    | (x, y) normalised to [0, 1], x right, y down                   |
| face/feature         | float[D]      | optional face-encoder feature (empty when not computed)        |
| target/image         | bytes         | the face decoder's target face, PNG (same size as face/image): |
|                      |               | synthetic: the identity's canonical face; real data: see       |
|                      |               | DatasetInfo.decoder_target                                     |
| target/landmarks     | float[K*2]    | its landmarks                                                  |
| target/texture       | bytes         | target/image warped from target/landmarks to the dataset's     |
|                      |               | mean_landmarks (the decoder's texture target), PNG             |
| attributes/names     | bytes[A]      | optional attribute names (e.g. sex, age, size)                 |
| attributes/values    | float[A]      | their values (NaN where unknown)                               |
| source/path          | bytes         | provenance: source file                                        |
| source/start, /end   | float         | provenance: segment times in seconds                           |
| text                 | bytes         | optional transcript                                            |

Next to the shards, `dataset.json` (see `DatasetInfo`) describes the whole corpus.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf

from s2f_tf.contract import SAMPLE_RATE, SPLITS
from s2f_tf.files import require_filesystem

SCHEMA_VERSION = 2  # 2: target/image, target/landmarks, target/texture
INFO_FILE = "dataset.json"
MANIFEST_FILE = "manifest.jsonl"


@dataclasses.dataclass
class Clip:
    """One prepared clip, in memory (what writers fill and `decode_numpy` returns)."""

    clip_id: str
    speaker_id: str
    speaker_index: int
    split: str
    pcm: np.ndarray  # int16 [samples] at 16 kHz
    face_png: bytes  # PNG of an RGB square face crop
    face_size: int
    landmarks: np.ndarray  # float32 [K, 2] normalised (x, y)
    feature: np.ndarray | None = None  # float32 [D]
    target_png: bytes = b""  # the decoder's target face (PNG); empty: the clip's own face
    target_landmarks: np.ndarray | None = None  # float32 [K, 2]; None: the clip's own landmarks
    texture_png: bytes = b""  # the target warped to the mean landmarks (prepare fills it in)
    attributes: dict[str, float] = dataclasses.field(default_factory=dict)
    source_path: str = ""
    source_start: float = 0.0
    source_end: float = 0.0
    text: str = ""


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [S, S, 3] RGB -> PNG bytes."""
    from PIL import Image

    image = np.asarray(image)
    if (
        image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] != 3
        or image.shape[0] != image.shape[1]
    ):
        raise ValueError(f"face image must be uint8 [S, S, 3], got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _bytes(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def encode(clip: Clip) -> bytes:
    """Clip -> serialized tf.train.Example; validates what it writes."""
    pcm = np.asarray(clip.pcm)
    if pcm.dtype != np.int16 or pcm.ndim != 1 or pcm.size == 0:
        raise ValueError(
            f"clip {clip.clip_id}: pcm must be non-empty int16 [samples], got {pcm.dtype} {pcm.shape}"
        )
    if clip.split not in SPLITS:
        raise ValueError(f"clip {clip.clip_id}: split must be one of {SPLITS}, got {clip.split!r}")
    landmarks = np.asarray(clip.landmarks, np.float32)
    if landmarks.ndim != 2 or landmarks.shape[1] != 2:
        raise ValueError(f"clip {clip.clip_id}: landmarks must be [K, 2], got {landmarks.shape}")
    feature = (
        np.zeros([0], np.float32)
        if clip.feature is None
        else np.asarray(clip.feature, np.float32).ravel()
    )
    if not clip.texture_png:
        raise ValueError(
            f"clip {clip.clip_id}: no target texture (prepare makes it, pipelines/targets.py)"
        )
    target_landmarks = (
        landmarks
        if clip.target_landmarks is None
        else np.asarray(clip.target_landmarks, np.float32)
    )
    if target_landmarks.shape != landmarks.shape:
        raise ValueError(
            f"clip {clip.clip_id}: target landmarks {target_landmarks.shape} differ from the face's "
            f"{landmarks.shape}"
        )
    names = sorted(clip.attributes)
    features = {
        "schema_version": _ints([SCHEMA_VERSION]),
        "clip_id": _bytes([clip.clip_id.encode()]),
        "speaker_id": _bytes([clip.speaker_id.encode()]),
        "speaker_index": _ints([int(clip.speaker_index)]),
        "split": _bytes([clip.split.encode()]),
        "audio/pcm": _bytes([pcm.astype("<i2").tobytes()]),
        "audio/sample_rate": _ints([SAMPLE_RATE]),
        "audio/num_samples": _ints([pcm.size]),
        "face/image": _bytes([clip.face_png]),
        "face/size": _ints([int(clip.face_size)]),
        "face/landmarks": _floats(landmarks.ravel().tolist()),
        "face/feature": _floats(feature.tolist()),
        "target/image": _bytes([clip.target_png or clip.face_png]),
        "target/landmarks": _floats(target_landmarks.ravel().tolist()),
        "target/texture": _bytes([clip.texture_png]),
        "attributes/names": _bytes([n.encode() for n in names]),
        "attributes/values": _floats([float(clip.attributes[n]) for n in names]),
        "source/path": _bytes([clip.source_path.encode()]),
        "source/start": _floats([float(clip.source_start)]),
        "source/end": _floats([float(clip.source_end)]),
        "text": _bytes([clip.text.encode()]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)  # map order fixed: byte-identical re-runs


def decode_numpy(serialized: bytes) -> Clip:
    """Serialized Example -> Clip, in plain Python (tools and tests; training uses dataset.py)."""
    ex = tf.train.Example.FromString(serialized)
    f = ex.features.feature

    def one(key, kind):
        values = getattr(f[key], kind).value
        if len(values) != 1:
            raise ValueError(f"record field {key!r}: expected one value, got {len(values)}")
        return values[0]

    version = one("schema_version", "int64_list")
    if version != SCHEMA_VERSION:
        raise ValueError(f"record schema_version {version}, this reader needs {SCHEMA_VERSION}")
    names = [n.decode() for n in f["attributes/names"].bytes_list.value]
    values = list(f["attributes/values"].float_list.value)
    feature = np.asarray(f["face/feature"].float_list.value, np.float32)
    return Clip(
        clip_id=one("clip_id", "bytes_list").decode(),
        speaker_id=one("speaker_id", "bytes_list").decode(),
        speaker_index=one("speaker_index", "int64_list"),
        split=one("split", "bytes_list").decode(),
        pcm=np.frombuffer(one("audio/pcm", "bytes_list"), "<i2").astype(np.int16),
        face_png=one("face/image", "bytes_list"),
        face_size=one("face/size", "int64_list"),
        landmarks=np.asarray(f["face/landmarks"].float_list.value, np.float32).reshape(-1, 2),
        feature=feature if feature.size else None,
        target_png=one("target/image", "bytes_list"),
        target_landmarks=np.asarray(f["target/landmarks"].float_list.value, np.float32).reshape(
            -1, 2
        ),
        texture_png=one("target/texture", "bytes_list"),
        attributes=dict(zip(names, values)),
        source_path=one("source/path", "bytes_list").decode(),
        source_start=one("source/start", "float_list"),
        source_end=one("source/end", "float_list"),
        text=one("text", "bytes_list").decode(),
    )


def feature_spec(
    num_landmarks: int, feature_dim: int = 0, num_attributes: int = 0, targets: bool = False
) -> dict[str, Any]:
    """tf.io.parse_example spec with static shapes (from DatasetInfo); `targets`: the decoder's too."""
    spec = {
        "schema_version": tf.io.FixedLenFeature([], tf.int64),
        "clip_id": tf.io.FixedLenFeature([], tf.string),
        "speaker_index": tf.io.FixedLenFeature([], tf.int64),
        "audio/pcm": tf.io.FixedLenFeature([], tf.string),
        "audio/num_samples": tf.io.FixedLenFeature([], tf.int64),
        "face/image": tf.io.FixedLenFeature([], tf.string),
        "face/landmarks": tf.io.FixedLenFeature([num_landmarks * 2], tf.float32),
    }
    if feature_dim:
        spec["face/feature"] = tf.io.FixedLenFeature([feature_dim], tf.float32)
    if num_attributes:
        spec["attributes/values"] = tf.io.FixedLenFeature([num_attributes], tf.float32)
    if targets:
        spec["target/image"] = tf.io.FixedLenFeature([], tf.string)
        spec["target/landmarks"] = tf.io.FixedLenFeature([num_landmarks * 2], tf.float32)
        spec["target/texture"] = tf.io.FixedLenFeature([], tf.string)
    return spec


@dataclasses.dataclass
class DatasetInfo:
    """`dataset.json` next to the shards: what a reader needs to know before reading a record."""

    schema_version: int = SCHEMA_VERSION
    source: str = ""  # synthetic | avspeech | folders
    sample_rate: int = SAMPLE_RATE
    image_size: int = 0
    num_landmarks: int = 0
    feature_dim: int = 0  # 0: no face/feature stored
    attribute_names: list[str] = dataclasses.field(default_factory=list)
    # categorical attributes: name -> class names (the stored value is the class index); others are
    # continuous (e.g. age in years)
    attribute_classes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    num_speakers: int = 0  # speaker_index ranges over [0, num_speakers)
    speakers: dict[str, int] = dataclasses.field(default_factory=dict)  # speaker_id -> index
    shards: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # split -> file names
    counts: dict[str, int] = dataclasses.field(default_factory=dict)  # split -> clips
    speaker_counts: dict[str, int] = dataclasses.field(default_factory=dict)  # split -> speakers
    # The decoder's layout [K, 2]: target/texture is aligned to it (synthetic: the mean of the train
    # identities' canonical landmarks; real data: the face alignment's canonical layout).
    mean_landmarks: list[list[float]] = dataclasses.field(default_factory=list)
    texture_warp: dict[str, Any] = dataclasses.field(
        default_factory=dict
    )  # border_points, regularization,
    # interpolation
    decoder_target: str = ""  # canonical | clip: what target/image holds
    # the Beam metrics of the prepare run that finished the dataset (pipelines/metrics.py)
    prepare_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        """The text of INFO_FILE (`s2f prepare` writes it, through pipelines/storage.py)."""
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def read(cls, data_dir: str) -> DatasetInfo:
        path = os.path.join(data_dir, INFO_FILE)
        require_filesystem(data_dir)
        if not tf.io.gfile.isdir(data_dir):
            raise FileNotFoundError(f"data directory {data_dir!r} does not exist")
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: {data_dir!r} is not a prepared s2f dataset "
                "(run `s2f prepare ...` first)"
            )
        with tf.io.gfile.GFile(path) as f:
            data = json.load(f)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown fields {sorted(unknown)}")
        info = cls(**data)
        if info.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"{path}: schema_version {info.schema_version}, this version of s2f reads "
                f"{SCHEMA_VERSION}; re-run `s2f prepare`"
            )
        return info

    def files(self, data_dir: str, split: str) -> list[str]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        names = self.shards.get(split, [])
        if not names:
            raise ValueError(
                f"{data_dir}: no shards for split {split!r} (have: "
                f"{', '.join(s for s in SPLITS if self.shards.get(s)) or 'none'})"
            )
        paths = [os.path.join(data_dir, n) for n in names]
        missing = [p for p in paths if not tf.io.gfile.exists(p)]
        if missing:
            raise FileNotFoundError(
                f"{data_dir}: {len(missing)} shard(s) listed in {INFO_FILE} are missing, "
                f"e.g. {missing[0]}"
            )
        return paths


def write_records(path: str, records) -> int:
    """Writes serialized records to the local file `path` as a TFRecord file; returns the count. The
    caller makes it whole or nothing (`s2f prepare`: pipelines/storage.local_output)."""
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
            count += 1
    return count
