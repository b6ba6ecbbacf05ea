"""The preparation framework every source shares (synthetic, AVSpeech, speaker folders).

  driver: source.list_items() -> items with a stable item_id, speaker_id and split
          -> shard key = (split, stable_hash(item_id) % shards[split]) -> plan.jsonl (a line a shard)
  Beam:   ReadFromText(plan.jsonl) -> Reshuffle -> Map(process_shard) (the Dask runner, which
          runs no Read: Create(the plan's lines) -> Map); every shard reports Beam metrics
          (pipelines/metrics.py); the runner and its options: pipelines/runners.py
          ProcessShard: for each item in item_id order, source.process(item) -> Clip or ItemError
                        -> <split>-<i>-of-<n>.tfrecord (temporary name, renamed when complete)
                        -> <split>-<i>-of-<n>.done.json (the shard's manifest + stats; written last)
                        every clip gets the face decoder's targets (pipelines/targets.py: the
                        source's target face, and its texture warped to the mean landmarks)
  optional feature stage: with a FaceEncoder weights file, every shard's faces go through the face
          encoder (in batches, one encoder per worker process) and face/feature is stored
  driver: merge the .done.json files -> manifest.jsonl (every item: ok, or its typed failure)
          and dataset.json (schema.DatasetInfo)

A re-run with the same arguments skips shards whose .done.json exists and, because processing is
deterministic and items are written in item_id order, produces byte-identical shards. Nothing is
half-written: shards and the info file appear under their final names only when complete.
Every file it reads and writes goes through pipelines/storage.py (Beam's FileSystems), so inputs and
`--data` may be local paths, gs://, s3://, ... (training reads `--data` through tf.io.gfile).
The runner is a flag: DirectRunner (2 local processes) by default; the Dask runner on a
dask.distributed cluster; Dataflow/Flink/Spark at scale. Local workers: pipelines/local_workers.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import traceback
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from pipelines import local_workers, metrics, runners, storage
from pipelines.targets import TextureSpec, fill_targets
from s2f_tf import contract
from s2f_tf.data import schema
from s2f_tf.media.errors import REASONS as MEDIA_REASONS
from s2f_tf.media.errors import MediaError as ItemError  # one typed failure for items and media
from s2f_tf.media.faces import CANONICAL_LANDMARKS

PREPARE_FILE = "prepare.json"

# Typed failure reasons that land in the manifest: the media vocabulary (s2f_tf/media/errors.py),
# plus the framework's own catch-all for unexpected exceptions.
UNEXPECTED = "unexpected_error"
REASONS = MEDIA_REASONS + (UNEXPECTED,)


class Source(Protocol):
    """What a data source provides to `run_prepare`. Must be picklable (Beam ships it to workers)."""

    name: str

    def list_items(self) -> list[dict[str, Any]]:
        """Every work item: {'item_id': str (unique, stable), 'speaker_id': str, 'split': str, ...}."""

    def process(self, item: dict[str, Any], speaker_index: int) -> schema.Clip:
        """One item -> a Clip, or raise ItemError with a typed reason."""

    def info(self) -> dict[str, Any]:
        """Fields for dataset.json: image_size, num_landmarks, attribute_names, attribute_classes (the
        categorical attributes' class names), mean_landmarks (the layout the decoder's textures are
        aligned to), decoder_target (what target/image holds), ..."""


# Real faces (MTCNN's 5 points, aligned crops): the decoder learns each clip's own aligned crop,
# and its texture is aligned to the alignment's canonical layout.
REAL_FACE_TARGETS = {
    "mean_landmarks": [list(p) for p in CANONICAL_LANDMARKS],
    "decoder_target": "clip",
}


def stable_hash(text: str) -> int:
    """A hash that is the same in every process and Python version (unlike hash())."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_for_speaker(
    speaker_id: str, fractions=contract.SPLIT_FRACTIONS, salt: str = "s2f"
) -> str:
    """Speaker-disjoint split by a stable hash of the speaker id."""
    u = (stable_hash(f"{salt}:{speaker_id}") % 1_000_000) / 1_000_000
    return contract.split_from_unit(u, fractions)


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def default_shards(num_items: int, items_per_shard: int = 512) -> int:
    return max(1, -(-num_items // items_per_shard))


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which items go to which shard: computed once in the driver, deterministic in the arguments."""

    shards: dict[tuple[str, int, int], list[dict[str, Any]]]  # (split, index, count) -> items
    speakers: dict[str, int]  # speaker_id -> speaker_index


def make_plan(items: list[dict[str, Any]], items_per_shard: int = 512) -> Plan:
    seen: set[str] = set()
    for item in items:
        for key in ("item_id", "speaker_id", "split"):
            if key not in item:
                raise ValueError(f"item {item!r} has no {key!r}")
        if item["split"] not in schema.SPLITS:
            raise ValueError(
                f"item {item['item_id']}: split {item['split']!r} is not one of {schema.SPLITS}"
            )
        if item["item_id"] in seen:
            raise ValueError(f"duplicate item_id {item['item_id']!r}")
        seen.add(item["item_id"])
    speakers = {s: i for i, s in enumerate(sorted({it["speaker_id"] for it in items}))}
    shards: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for split in schema.SPLITS:
        split_items = sorted(
            (it for it in items if it["split"] == split), key=lambda it: it["item_id"]
        )
        if not split_items:
            continue
        count = default_shards(len(split_items), items_per_shard)
        for i in range(count):
            shards[(split, i, count)] = []
        for it in split_items:
            shards[(split, stable_hash(it["item_id"]) % count, count)].append(it)
    return Plan(shards=shards, speakers=speakers)


def _read_json(path: str) -> Any:
    return json.loads(storage.read_text(path))


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Compute face/feature for every clip: a VGG-Face Keras HDF5 weights file and the FaceEncoder
    constructor arguments it fits (picklable: the encoder itself is built once per worker)."""

    weights: str
    encoder_kwargs: dict

    @property
    def feature_dim(self) -> int:
        return int(self.encoder_kwargs.get("fc_units", 4096))


_ENCODERS: dict = {}


def _face_features(spec: FeatureSpec, clips: list[schema.Clip], batch_size: int = 32) -> None:
    """Fills clip.feature in place: PNG -> [B, S, S, 3] -> the face encoder's fc7 feature."""
    import io as _io

    from PIL import Image

    from s2f_tf.models.face_encoder import FaceEncoder, load_vggface_weights

    key = (spec.weights, json.dumps(spec.encoder_kwargs, sort_keys=True))
    if key not in _ENCODERS:
        encoder = FaceEncoder(**spec.encoder_kwargs)
        with storage.local_copy(spec.weights) as weights:
            load_vggface_weights(encoder, weights)
        _ENCODERS[key] = tf.function(lambda x: encoder(x, training=False)["feature"])
    encode = _ENCODERS[key]
    for start in range(0, len(clips), batch_size):
        chunk = clips[start : start + batch_size]
        images = np.stack(
            [np.asarray(Image.open(_io.BytesIO(c.face_png)).convert("RGB")) for c in chunk]
        )
        features = encode(tf.constant(images, tf.float32)).numpy()  # [B, D]
        for clip, feature in zip(chunk, features):
            clip.feature = feature


def process_shard(
    source: Source,
    out_dir: str,
    key: tuple[str, int, int],
    items: list[dict[str, Any]],
    speakers: dict[str, int],
    textures: TextureSpec,
    features: FeatureSpec | None = None,
) -> dict[str, Any]:
    """Processes and writes one shard; returns its summary (also written as <shard>.done.json)."""
    split, index, count = key
    name = shard_name(split, index, count)
    done_path = storage.join(out_dir, name.replace(".tfrecord", ".done.json"))
    if storage.exists(done_path) and storage.exists(storage.join(out_dir, name)):
        return _read_json(done_path)  # finished by an earlier run
    statuses, clips = [], []
    max_samples, speakers_seen = 0, set()
    for item in sorted(items, key=lambda it: it["item_id"]):
        try:
            clip = fill_targets(source.process(item, speakers[item["speaker_id"]]), textures)
            schema.encode(clip)  # validates before it is kept
            clips.append(clip)
        except ItemError as e:
            statuses.append(
                {
                    "item_id": item["item_id"],
                    "status": "failed",
                    "reason": e.reason,
                    "detail": e.detail,
                    "speaker_id": item["speaker_id"],
                }
            )
            continue
        # Never crash the job on one item; keep the traceback in the manifest.
        except Exception as e:  # noqa: BLE001
            statuses.append(
                {
                    "item_id": item["item_id"],
                    "status": "failed",
                    "reason": UNEXPECTED,
                    "detail": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(limit=5),
                    "speaker_id": item["speaker_id"],
                }
            )
            continue
        statuses.append(
            {
                "item_id": item["item_id"],
                "status": "ok",
                "clip_id": clip.clip_id,
                "speaker_id": clip.speaker_id,
                "samples": int(clip.pcm.size),
            }
        )
        speakers_seen.add(clip.speaker_id)
        max_samples = max(max_samples, int(clip.pcm.size))
    if features is not None and clips:
        _face_features(features, clips)
    records = [schema.encode(clip) for clip in clips]
    with storage.local_output(storage.join(out_dir, name)) as path:
        schema.write_records(path, records)
    summary = {
        "shard": name,
        "split": split,
        "items": statuses,
        "clips": len(records),
        "speakers": sorted(speakers_seen),
        "max_samples": max_samples,
    }
    storage.write_atomic(done_path, json.dumps(summary, sort_keys=True))
    return summary


class _ProcessShard:
    """Beam step: one line of plan.jsonl -> process and write that shard (a plain picklable class)."""

    def __init__(
        self,
        source: Source,
        out_dir: str,
        speakers: dict[str, int],
        textures: TextureSpec,
        features: FeatureSpec | None,
    ):
        self.source, self.out_dir, self.speakers = source, out_dir, speakers
        self.textures, self.features = textures, features

    def __call__(self, line: str):
        task = json.loads(line)
        summary = process_shard(
            self.source,
            self.out_dir,
            tuple(task["key"]),
            task["items"],
            self.speakers,
            self.textures,
            self.features,
        )
        metrics.count_shard(summary, schema.SAMPLE_RATE)
        return summary


def _run_beam(
    plan: Plan,
    source: Source,
    out_dir: str,
    runner: str,
    beam_args: list[str],
    num_workers: int,
    textures: TextureSpec,
    features: FeatureSpec | None = None,
) -> dict[str, Any] | None:
    """Runs the pipeline; returns its metrics (pipelines/metrics.py), None when the runner reports
    none."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    loud = logging.getLogger().getEffectiveLevel() <= logging.INFO
    args = runners.pipeline_args(runner, beam_args, num_workers, len(plan.shards), loud)
    logging.getLogger("apache_beam").setLevel(logging.ERROR if loud else logging.CRITICAL)
    # The plan travels as a file, not inside the pipeline graph (runners cap the graph's size).
    plan_path = storage.join(out_dir, "plan.jsonl")
    lines = [
        json.dumps({"key": list(key), "items": items}, sort_keys=True)
        for key, items in sorted(plan.shards.items())
    ]
    storage.write_atomic(plan_path, (line + "\n" for line in lines))
    fn = _ProcessShard(source, out_dir, plan.speakers, textures, features)
    with local_workers.workers_stderr(loud):
        options = PipelineOptions(args)
        p = beam.Pipeline(runner=runners.local_runner(runner, options), options=options)
        if runners.full_name(runner) == runners.DASK:
            # Beam's Dask runner runs no Read transform and no Reshuffle: the plan's lines go into
            # the graph (the client holds it; no service caps its size), one Dask partition each.
            tasks = p | "plan" >> beam.Create(lines)
        else:
            tasks = p | "plan" >> beam.io.ReadFromText(plan_path) | "spread" >> beam.Reshuffle()
        _ = tasks | "process_and_write" >> beam.Map(fn)
        result = p.run()
        result.wait_until_finish()
    return metrics.collect(result)


def run_prepare(
    source: Source,
    out_dir: str,
    items_per_shard: int = 512,
    runner: str = "DirectRunner",
    beam_args: Iterable[str] = (),
    num_workers: int = 2,
    arguments: dict | None = None,
    log=print,
    features: FeatureSpec | None = None,
    texture_warp: dict | None = None,
) -> schema.DatasetInfo:
    """Prepares `source` into `out_dir` (idempotent; see module docstring). Returns the DatasetInfo.

    texture_warp: {'border_points', 'regularization', 'interpolation'} of the face decoder's warp
    (s2f_tf.factory.texture_warp(config)), used to make target/texture.
    """
    started = time.time()
    storage.configure(beam_args)
    storage.makedirs(out_dir)
    layout = source.info().get("mean_landmarks")
    if not layout:
        raise ValueError(
            f"source {source.name!r} gives no mean_landmarks in info(): the layout the face "
            "decoder's textures are aligned to"
        )
    textures = TextureSpec(
        tuple(tuple(float(v) for v in p) for p in layout), **(texture_warp or {})
    )
    _record_preparation(out_dir, source.name, arguments, items_per_shard, textures, features)
    items = source.list_items()
    if not items:
        raise ValueError(f"{source.name}: nothing to prepare (no items found)")
    plan = make_plan(items, items_per_shard)
    done = _finished(out_dir, plan)
    log(
        f"prepare {source.name}: {len(items)} items, {len(plan.speakers)} speakers, "
        f"{len(plan.shards)} shards ({done} already done) -> {out_dir}"
    )
    # Every shard done and counted by an earlier run: nothing to run. Otherwise the pipeline runs,
    # and shards finished earlier only report their metrics again.
    counted = _stored_metrics(out_dir) if done == len(plan.shards) else None
    origin = "kept from the run that finished the dataset"
    if counted is None:
        with local_workers.stopping_cleanly(
            out_dir, lambda: _finished(out_dir, plan), len(plan.shards)
        ):
            counted = _run_beam(
                plan, source, out_dir, runner, list(beam_args), num_workers, textures, features
            )
        local_workers.remove_temporaries(out_dir)
        origin = "Beam" if counted else "the shards' summaries: the runner reports no metrics"
    info = _finalize(
        plan, source, out_dir, textures, features.feature_dim if features else 0, counted
    )
    failed = sum(1 for _ in _iter_failures(out_dir))
    log(
        f"prepare {source.name}: {sum(info.counts.values())} clips written "
        f"({', '.join(f'{s} {n}' for s, n in info.counts.items())}), {failed} failed items "
        f"(see {schema.MANIFEST_FILE}), {time.time() - started:.1f} s"
    )
    log(
        f"prepare {source.name}: metrics ({metrics.NAMESPACE}, {origin}): "
        f"{metrics.describe(info.prepare_metrics)}"
    )
    return info


def _record_preparation(
    out_dir: str,
    source_name: str,
    arguments: dict | None,
    items_per_shard: int,
    textures: TextureSpec,
    features: FeatureSpec | None,
) -> None:
    """prepare.json: what this preparation is; a rerun must be the same one (or a new --data)."""
    fingerprint = {
        "source": source_name,
        "arguments": arguments or {},
        "items_per_shard": items_per_shard,
        "schema_version": schema.SCHEMA_VERSION,
        "texture_warp": textures.warp_settings(),
    }
    if features is not None:
        if not storage.exists(features.weights):
            raise FileNotFoundError(f"face encoder weights {features.weights!r} do not exist")
        fingerprint["features"] = dataclasses.asdict(features)
    prep_path = storage.join(out_dir, PREPARE_FILE)
    if storage.exists(prep_path):
        previous = _read_json(prep_path)
        if previous != fingerprint:
            raise ValueError(
                f"{out_dir} holds a different preparation ({prep_path}: {previous}); "
                "use a new --data directory or delete it"
            )
    else:
        storage.write_atomic(prep_path, json.dumps(fingerprint, sort_keys=True))


def _finished(out_dir: str, plan: Plan) -> int:
    """The plan's shards that are complete (their .done.json is written last): one listing, not a
    request per shard (an object store's thousands)."""
    done = set(storage.glob(storage.join(out_dir, "*.done.json")))
    return sum(
        storage.join(out_dir, shard_name(*k).replace(".tfrecord", ".done.json")) in done
        for k in plan.shards
    )


def _stored_metrics(out_dir: str) -> dict[str, Any] | None:
    """The metrics dataset.json keeps from the run that finished it, if any."""
    path = storage.join(out_dir, schema.INFO_FILE)
    if not storage.exists(path):
        return None
    return _read_json(path).get("prepare_metrics") or None


def _iter_failures(out_dir: str):
    for line in storage.read_text(storage.join(out_dir, schema.MANIFEST_FILE)).splitlines():
        row = json.loads(line)
        if row["status"] != "ok":
            yield row


def _finalize(
    plan: Plan,
    source: Source,
    out_dir: str,
    textures: TextureSpec,
    feature_dim: int,
    prepare_metrics: dict[str, Any] | None,
) -> schema.DatasetInfo:
    summaries = []
    for key in sorted(plan.shards):
        path = storage.join(out_dir, shard_name(*key).replace(".tfrecord", ".done.json"))
        if not storage.exists(path):
            raise RuntimeError(
                f"shard {shard_name(*key)} was not completed by the pipeline (no {path})"
            )
        summaries.append(_read_json(path))
    rows = sorted((row for s in summaries for row in s["items"]), key=lambda r: r["item_id"])
    storage.write_atomic(
        storage.join(out_dir, schema.MANIFEST_FILE),
        (json.dumps(row, sort_keys=True) + "\n" for row in rows),
    )
    shards: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    speakers: dict[str, set] = {}
    for s in summaries:
        shards.setdefault(s["split"], []).append(s["shard"])
        counts[s["split"]] = counts.get(s["split"], 0) + s["clips"]
        speakers.setdefault(s["split"], set()).update(s["speakers"])
    if prepare_metrics is None:
        prepare_metrics = metrics.from_summaries(summaries, schema.SAMPLE_RATE)
    info = schema.DatasetInfo(
        source=source.name,
        num_speakers=len(plan.speakers),
        speakers=plan.speakers,
        shards=shards,
        counts=counts,
        speaker_counts={k: len(v) for k, v in speakers.items()},
        texture_warp=textures.warp_settings(),
        feature_dim=feature_dim,
        prepare_metrics=prepare_metrics,
        **source.info(),
    )
    info.extra["max_samples"] = max([s["max_samples"] for s in summaries] + [0])
    storage.write_atomic(storage.join(out_dir, schema.INFO_FILE), info.to_json())
    return info
