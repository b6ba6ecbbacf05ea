"""tf.data input pipeline over prepared TFRecord shards (schema: s2f_tf/data/schema.py).

  shard files -> (shard per worker) -> per epoch: shard order and record shuffle seeded by
    (seed, epoch) -> parallel interleave of TFRecordDataset -> shuffle records -> number them
    -> batch serialized records -> parse_example on the whole batch (vectorised)
    -> PCM: crop the raw bytes (train: random offset; eval: centred) with one vectorised substr,
       decode_raw -> [B, clip_samples] int16; tile short clips (only batches that have one)
    -> faces: decode PNG -> [B, S, S, 3] uint8 (only the images asked for: the face, the decoder's
       target face and its precomputed texture)
    -> prefetch
PCM stays int16 all the way to the device; the STFT runs in the model (s2f_tf/frontend.py).

The input position is two numbers, (epoch, records of that epoch already read): training asks for
the "position" field (int64 [B, 2], the epoch and index of every record in the batch) and saves the
last one + 1; `InputOptions.start` resumes there. Each epoch's order is a pure function of (seed,
epoch), so a resumed pipeline re-reads at most one epoch of this worker's records (without parsing
them) and continues exactly where it stopped, with `deterministic=True` (parallel interleave and map
otherwise finish in any order).
"""

from __future__ import annotations

import dataclasses
import logging

import tensorflow as tf

from s2f_tf.data.schema import SCHEMA_VERSION, DatasetInfo, feature_spec

FIELDS = (
    "pcm",
    "image",
    "landmarks",
    "speaker",
    "feature",
    "attributes",
    "clip_id",
    "position",
    "target_image",
    "target_landmarks",
    "target_texture",
)  # target_*: the face decoder's (schema.py)
_TARGETS = ("target_image", "target_landmarks", "target_texture")
_MAX_EPOCHS = 1 << 30
_EPOCH_SHIFT = 32  # a record's position travels as one int64: epoch << 32 | index


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """What to read and how; everything the trainer/evaluator/bench may vary."""

    batch_size: int
    clip_samples: int
    training: bool = True  # random crop + shuffle + repeat; else fixed crop, one pass
    fields: tuple[str, ...] = ("pcm", "image", "landmarks", "speaker")
    shuffle_buffer: int = 2048  # records
    interleave_cycle: int = 8  # shards read at once
    seed: int | None = None
    deterministic: bool = False  # reproducible order (slower); training resume wants True
    skip_corrupt: bool = False  # drop unreadable records (logged and counted) instead of failing
    drop_remainder: bool = True  # static batch shapes (needed under tf.distribute / XLA)
    repeat: bool | None = None  # default: = training
    prefetch: int = tf.data.AUTOTUNE
    # "grpc://host:port" of a tf.data service dispatcher: reading, parsing and batching run on its
    # workers (s2f_tf/data/service.py; BUILD.md, "Input from a tf.data service")
    service_address: str | None = None
    service_job: str | None = None  # shared job name: consumers split one stream between them
    start: tuple[int, int] = (0, 0)  # training: (epoch, records of that epoch already read)


def crop_or_tile(
    pcm_bytes: tf.Tensor,
    lengths: tf.Tensor,
    clip_samples: int,
    training: bool,
    seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """Raw little-endian int16 PCM bytes [B] with lengths [B] -> int16 [B, clip_samples].

    Clips longer than `clip_samples` are cropped (random offset when training, centred otherwise)
    on the BYTES, before decoding (one vectorised substr, no per-sample index work). Clips shorter
    than `clip_samples` are tiled (repeated from the start, as the paper does), also on the bytes:
    each short string is doubled until it covers the window, which keeps its period. Only the
    short clips of a batch are doubled and copied, and only when a batch holds one.
    """
    lengths = tf.maximum(tf.cast(lengths, tf.int32), 1)  # [B]
    room = tf.maximum(lengths - clip_samples, 0)  # [B]
    if training:
        if seed is None:
            u = tf.random.uniform(tf.shape(room), 0.0, 1.0)
        else:
            u = tf.random.stateless_uniform(tf.shape(room), seed=seed)
        offset = tf.minimum(tf.cast(tf.floor(u * tf.cast(room + 1, tf.float32)), tf.int32), room)
    else:
        offset = room // 2  # [B]
    window_bytes = 2 * clip_samples

    def cropped(pcm, offset):  # [N] strings of at least a window, their offsets -> windows
        return tf.strings.substr(pcm, offset * 2, tf.fill(tf.shape(offset), window_bytes))

    def tiled():  # [B]: the long clips' windows, and the short clips doubled until they cover one
        short = tf.cast(lengths < clip_samples, tf.int32)
        long_at, short_at = tf.dynamic_partition(tf.range(tf.size(lengths)), short, 2)
        clips = tf.gather(pcm_bytes, short_at)
        clips = tf.where(tf.strings.length(clips) == 0, tf.constant(b"\0\0"), clips)
        too_short = lambda b: tf.strings.length(b) < window_bytes  # noqa: E731
        clips = tf.while_loop(
            lambda b: tf.reduce_any(too_short(b)),
            lambda b: [tf.where(too_short(b), tf.strings.join([b, b]), b)],
            [clips],
        )[0]
        long = cropped(tf.gather(pcm_bytes, long_at), tf.gather(offset, long_at))
        return tf.dynamic_stitch([long_at, short_at], [long, clips])

    windows = tf.cond(
        tf.reduce_any(lengths < clip_samples), tiled, lambda: cropped(pcm_bytes, offset)
    )  # [B]; a tiled clip starts at offset 0 and decoding keeps its first window_bytes
    return tf.io.decode_raw(
        windows, tf.int16, little_endian=True, fixed_length=window_bytes
    )  # [B, C]


def _parse_batch(
    serialized: tf.Tensor,
    info: DatasetInfo,
    options: InputOptions,
    position: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Serialized records [B] (and their (epoch, index) [B, 2] when training) -> the batch dict."""
    fields = set(options.fields)
    seed = None
    if position is not None and options.seed is not None:  # crop offsets: a function of the batch
        seed = tf.stack([position[0, 0] + options.seed, position[0, 1]])
    spec = feature_spec(
        info.num_landmarks,
        info.feature_dim if "feature" in fields else 0,
        len(info.attribute_names) if "attributes" in fields else 0,
        targets=bool(fields & set(_TARGETS)),
    )
    ex = tf.io.parse_example(serialized, spec)  # dict of [B, ...]
    check = tf.debugging.assert_equal(
        ex["schema_version"],
        tf.constant(SCHEMA_VERSION, tf.int64),
        message=f"record schema_version differs from {SCHEMA_VERSION}: re-run `s2f prepare`",
    )
    out: dict[str, tf.Tensor] = {}
    with tf.control_dependencies([check]):
        if "pcm" in fields:
            out["pcm"] = crop_or_tile(
                ex["audio/pcm"],
                ex["audio/num_samples"],
                options.clip_samples,
                options.training,
                seed,
            )  # [B, C] int16
    s = info.image_size
    for name, key in (
        ("image", "face/image"),
        ("target_image", "target/image"),
        ("target_texture", "target/texture"),
    ):
        if name in fields:
            out[name] = tf.map_fn(
                lambda b: tf.ensure_shape(tf.io.decode_png(b, channels=3), [s, s, 3]),
                ex[key],
                fn_output_signature=tf.TensorSpec([s, s, 3], tf.uint8),
            )  # [B, S, S, 3]
    for name, key in (("landmarks", "face/landmarks"), ("target_landmarks", "target/landmarks")):
        if name in fields:
            out[name] = tf.reshape(ex[key], [-1, info.num_landmarks, 2])  # [B, K, 2]
    if "speaker" in fields:
        out["speaker"] = tf.cast(ex["speaker_index"], tf.int32)  # [B]
    if "feature" in fields:
        out["feature"] = ex["face/feature"]  # [B, D]
    if "attributes" in fields:
        out["attributes"] = ex["attributes/values"]  # [B, A]
    if "clip_id" in fields:
        out["clip_id"] = ex["clip_id"]  # [B] string
    if "position" in fields and position is not None:
        out["position"] = position  # [B, 2] (epoch, index)
    return out


def _training_records(files: list[str], options: InputOptions) -> tf.data.Dataset:
    """(packed position, serialized record) forever, from `options.start` on; each epoch's order is a
    function of (seed, epoch) only."""
    seed = (
        options.seed if options.seed is not None else int(tf.random.uniform([], 0, 2**31, tf.int64))
    )
    names = tf.constant(files)

    def epoch_records(epoch):  # int64 scalar
        order = tf.random.experimental.stateless_shuffle(
            names, seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        ds = tf.data.Dataset.from_tensor_slices(order).interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(options.interleave_cycle, len(files)),
            block_length=16,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=options.deterministic,
        )
        if options.skip_corrupt:
            ds = ds.ignore_errors(log_warning=True)
        # A fixed seed (TF's seed handling takes no tensor): every epoch's buffer draws the same random
        # sequence, from that epoch's own shard order, so the order is still a function of (seed, epoch).
        ds = ds.shuffle(options.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
        return ds.enumerate(start=epoch * (1 << _EPOCH_SHIFT))  # (position, record), no map

    epoch, offset = (int(x) for x in options.start)
    first = epoch_records(tf.constant(epoch, tf.int64)).skip(offset)
    rest = tf.data.Dataset.range(epoch + 1, _MAX_EPOCHS).flat_map(epoch_records)
    return first.concatenate(rest)


def _unpack_positions(packed: tf.Tensor) -> tf.Tensor:
    """int64 [B] (epoch << 32 | index) -> int64 [B, 2] (epoch, index)."""
    return tf.stack(
        [
            tf.bitwise.right_shift(packed, _EPOCH_SHIFT),
            tf.bitwise.bitwise_and(packed, (1 << _EPOCH_SHIFT) - 1),
        ],
        axis=-1,
    )


def make_dataset(
    data_dir: str,
    split: str,
    options: InputOptions,
    input_context: tf.distribute.InputContext | None = None,
    info: DatasetInfo | None = None,
) -> tf.data.Dataset:
    """Batches of dicts (keys from `options.fields`) from `data_dir`'s `split`.

    With `input_context` (tf.distribute), shards are split across input pipelines and the batch
    is the per-replica batch (options.batch_size is the GLOBAL batch).
    """
    unknown = set(options.fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown input fields {sorted(unknown)}; known: {', '.join(FIELDS)}")
    info = info or DatasetInfo.read(data_dir)
    files = info.files(data_dir, split)
    if "feature" in options.fields and not info.feature_dim:
        raise ValueError(
            f"{data_dir}: no face features stored (feature_dim 0); prepare with a face "
            "encoder weights file, or read 'image' and run the face encoder"
        )
    batch_size = options.batch_size
    repeat = options.training if options.repeat is None else options.repeat
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(options.batch_size)
        if len(files) >= input_context.num_input_pipelines:
            files = files[input_context.input_pipeline_id :: input_context.num_input_pipelines]
    if options.training and repeat:
        ds = _training_records(files, options).batch(
            batch_size, drop_remainder=options.drop_remainder
        )
        ds = ds.map(
            lambda packed, s: _parse_batch(s, info, options, _unpack_positions(packed)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=options.deterministic,
        )
    else:
        ds = tf.data.Dataset.from_tensor_slices(files)
        if options.training:
            ds = ds.shuffle(len(files), seed=options.seed)
        if repeat:
            ds = ds.repeat()
        ds = ds.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(options.interleave_cycle, len(files)),
            block_length=16,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=options.deterministic,
        )
        if options.skip_corrupt:
            ds = ds.ignore_errors(log_warning=True)
        if options.training:
            ds = ds.shuffle(options.shuffle_buffer, seed=options.seed)
        ds = ds.batch(batch_size, drop_remainder=options.drop_remainder)
        ds = ds.map(
            lambda s: _parse_batch(s, info, options),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=options.deterministic,
        )
    if options.skip_corrupt:
        ds = ds.ignore_errors(log_warning=True)
    if options.service_address:
        ds = ds.apply(
            tf.data.experimental.service.distribute(
                processing_mode=tf.data.experimental.service.ShardingPolicy.OFF,
                service=options.service_address,
                job_name=options.service_job,
            )
        )
    opts = tf.data.Options()
    opts.deterministic = options.deterministic
    opts.experimental_optimization.map_parallelization = True
    if input_context is None:
        opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.FILE
    ds = ds.with_options(opts)
    return ds.prefetch(options.prefetch)


def find_corrupt_shards(files: list[str]) -> list[tuple[str, str]]:
    """Reads every shard to the end; returns [(file, error)] for those that fail (used on failure
    to name the file behind a DataLossError, which TF's reader does not)."""
    bad = []
    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path).batch(1024):
                pass
        except (
            tf.errors.DataLossError,
            tf.errors.InvalidArgumentError,
            tf.errors.OutOfRangeError,
        ) as e:
            bad.append((path, e.message.splitlines()[0]))
    return bad


def explain_read_error(error: Exception, files: list[str]) -> str:
    """A message naming the corrupt shard(s) behind a tf.data read error."""
    bad = find_corrupt_shards(files)
    if not bad:
        return f"input pipeline failed: {error}"
    lines = [f"corrupt data in {len(bad)} shard(s) (re-run `s2f prepare`, or pass --skip_corrupt):"]
    lines += [f"  {path}: {msg}" for path, msg in bad]
    logging.error("\n".join(lines))
    return "\n".join(lines)
