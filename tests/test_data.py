"""TFRecord schema round trip and the tf.data pipeline: crop/tile vs numpy, eager and in tf.data,
shapes, determinism, corrupt shards (fail naming the file, or skipped when asked)."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from s2f_tf.data import schema
from s2f_tf.data.dataset import InputOptions, crop_or_tile, explain_read_error, make_dataset

K = 5


def _clip(i, n, split="train", size=16):
    rng = np.random.default_rng(i)
    img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return schema.Clip(
        clip_id=f"spk{i % 3}/{i}",
        speaker_id=f"spk{i % 3}",
        speaker_index=i % 3,
        split=split,
        pcm=(np.arange(n) % 1000 + i).astype(np.int16),
        face_png=schema.encode_png(img),
        face_size=size,
        landmarks=rng.random((K, 2)).astype(np.float32),
        texture_png=schema.encode_png(255 - img),
        feature=rng.standard_normal(4).astype(np.float32),
        attributes={"sex": float(i % 2), "age": 30.0 + i},
        source_path=f"/src/{i}.wav",
        text=f"clip {i}",
    )


@pytest.fixture
def data_dir(tmp_path):
    lengths = [800, 1200, 300, 1000, 950, 1600, 500, 1100]
    shards = []
    for s in range(2):
        name = f"train-{s:05d}-of-00002.tfrecord"
        schema.write_records(
            str(tmp_path / name), [schema.encode(_clip(i, lengths[i])) for i in range(s, 8, 2)]
        )
        shards.append(name)
    info = schema.DatasetInfo(
        source="test",
        image_size=16,
        num_landmarks=K,
        feature_dim=4,
        attribute_names=["age", "sex"],
        num_speakers=3,
        shards={"train": shards},
        counts={"train": 8},
    )
    (tmp_path / schema.INFO_FILE).write_text(info.to_json())
    return str(tmp_path)


def test_schema_round_trip():
    clip = _clip(3, 700)
    back = schema.decode_numpy(schema.encode(clip))
    np.testing.assert_array_equal(back.pcm, clip.pcm)
    np.testing.assert_allclose(back.landmarks, clip.landmarks)
    np.testing.assert_allclose(back.feature, clip.feature)
    assert back.attributes == {"sex": 1.0, "age": 33.0}
    assert (back.clip_id, back.speaker_index, back.split, back.text) == (
        clip.clip_id,
        0,
        "train",
        "clip 3",
    )
    # no target given: the decoder's target is the clip's own face
    assert back.target_png == clip.face_png and back.texture_png == clip.texture_png
    np.testing.assert_array_equal(back.target_landmarks, back.landmarks)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(pcm=np.zeros(0, np.int16)), "non-empty int16"),
        (dict(pcm=np.zeros(5, np.float32)), "int16"),
        (dict(split="dev"), "split"),
        (dict(landmarks=np.zeros((3, 3), np.float32)), "landmarks"),
        (dict(target_landmarks=np.zeros((3, 2), np.float32)), "target landmarks"),
        (dict(texture_png=b""), "target texture"),
    ],
)
def test_schema_rejects_bad_clips(bad, match):
    clip = _clip(0, 100)
    for k, v in bad.items():
        setattr(clip, k, v)
    with pytest.raises(ValueError, match=match):
        schema.encode(clip)


def _crop_tile_numpy(pcm, clip, offset):
    n = len(pcm)
    if n >= clip:
        return pcm[offset : offset + clip]
    return np.resize(pcm, clip)  # repeats from the start


def test_crop_or_tile_eval_matches_numpy_eager_and_tf_data():
    pcms = [np.arange(n, dtype=np.int16) + 7 for n in (10, 25, 4, 16)]
    raw = tf.constant([p.astype("<i2").tobytes() for p in pcms])
    lengths = tf.constant([len(p) for p in pcms])
    out = crop_or_tile(raw, lengths, 16, training=False).numpy()
    expect = [_crop_tile_numpy(p, 16, max(len(p) - 16, 0) // 2) for p in pcms]
    np.testing.assert_array_equal(out, np.stack(expect))
    assert out.dtype == np.int16
    ds = tf.data.Dataset.from_tensors((raw, lengths)).map(
        lambda r, n: crop_or_tile(r, n, 16, False)
    )
    np.testing.assert_array_equal(next(iter(ds)).numpy(), out)


def test_crop_or_tile_repeats_very_short_and_empty_clips():
    pcms = [
        np.arange(3, dtype=np.int16) - 1,
        np.zeros([0], np.int16),
        np.arange(40, dtype=np.int16),
    ]
    raw = tf.constant([p.astype("<i2").tobytes() for p in pcms])
    out = crop_or_tile(raw, tf.constant([3, 0, 40]), 16, training=False).numpy()
    np.testing.assert_array_equal(out[0], np.resize(pcms[0], 16))
    np.testing.assert_array_equal(out[1], np.zeros(16, np.int16))
    np.testing.assert_array_equal(out[2], pcms[2][12:28])


def test_crop_or_tile_training_random_windows_are_contiguous():
    pcm = np.arange(100, dtype=np.int16)
    raw = tf.constant([pcm.tobytes()] * 64)
    out = crop_or_tile(raw, tf.fill([64], 100), 30, training=True, seed=tf.constant([1, 2])).numpy()
    starts = out[:, 0]
    assert np.all(np.diff(out, axis=1) == 1)  # contiguous windows
    assert starts.min() >= 0 and starts.max() <= 70 and len(set(starts)) > 5
    again = crop_or_tile(
        raw, tf.fill([64], 100), 30, training=True, seed=tf.constant([1, 2])
    ).numpy()
    np.testing.assert_array_equal(out, again)  # stateless seed -> reproducible


def test_crop_or_tile_training_batch_of_short_and_long_clips():
    lengths = [5, 100, 30, 0, 77, 1, 29, 31] * 4
    pcms = [(np.arange(n) + 1000 * i).astype(np.int16) for i, n in enumerate(lengths)]
    raw = tf.constant([p.astype("<i2").tobytes() for p in pcms])
    out = crop_or_tile(raw, tf.constant(lengths), 30, training=True, seed=tf.constant([3, 4]))
    starts = set()
    for pcm, row in zip(pcms, out.numpy()):
        if len(pcm) < 30:  # tiled from the start
            np.testing.assert_array_equal(row, np.resize(pcm, 30) if len(pcm) else np.zeros(30))
        else:  # a contiguous window of this clip
            start = int(row[0]) - int(pcm[0])
            np.testing.assert_array_equal(row, pcm[start : start + 30])
            starts.add(start)
    assert len(starts) > 3  # random offsets, not all at the start


def test_pipeline_shapes_and_values(data_dir):
    opts = InputOptions(
        batch_size=4,
        clip_samples=1000,
        training=False,
        fields=("pcm", "image", "landmarks", "speaker", "feature", "attributes", "clip_id"),
    )
    batches = list(make_dataset(data_dir, "train", opts))
    assert len(batches) == 2
    b = batches[0]
    assert b["pcm"].dtype == tf.int16 and b["pcm"].shape == (4, 1000)
    assert b["image"].dtype == tf.uint8 and b["image"].shape == (4, 16, 16, 3)
    assert b["landmarks"].shape == (4, K, 2) and b["feature"].shape == (4, 4)
    assert b["attributes"].shape == (4, 2) and b["speaker"].dtype == tf.int32
    targets = next(
        iter(
            make_dataset(
                data_dir,
                "train",
                dataclasses.replace(
                    opts,
                    fields=(
                        "image",
                        "landmarks",
                        "target_image",
                        "target_landmarks",
                        "target_texture",
                    ),
                ),
            )
        )
    )
    np.testing.assert_array_equal(targets["target_image"], targets["image"])  # own face by default
    np.testing.assert_array_equal(targets["target_landmarks"], targets["landmarks"])
    np.testing.assert_array_equal(targets["target_texture"], 255 - targets["image"].numpy())
    seen = {}
    for batch in batches:
        for cid, pcm, attrs in zip(
            batch["clip_id"].numpy(), batch["pcm"].numpy(), batch["attributes"].numpy()
        ):
            i = int(cid.decode().split("/")[1])
            seen[i] = pcm
            ref = _clip(i, [800, 1200, 300, 1000, 950, 1600, 500, 1100][i])
            n = len(ref.pcm)
            np.testing.assert_array_equal(
                pcm, _crop_tile_numpy(ref.pcm, 1000, max(n - 1000, 0) // 2)
            )
            np.testing.assert_allclose(attrs, [ref.attributes["age"], ref.attributes["sex"]])
    assert sorted(seen) == list(range(8))


def test_pipeline_deterministic_switch(data_dir):
    def first_ids(seed):
        opts = InputOptions(
            batch_size=4,
            clip_samples=500,
            training=True,
            fields=("pcm", "clip_id"),
            seed=seed,
            deterministic=True,
            shuffle_buffer=8,
        )
        it = iter(make_dataset(data_dir, "train", opts))
        return [
            (next(it)["clip_id"].numpy().tolist(), next(it)["pcm"].numpy().tolist())
            for _ in range(3)
        ]

    assert first_ids(5) == first_ids(5)
    assert first_ids(5) != first_ids(6)


def test_missing_and_wrong_data(tmp_path, data_dir):
    opts = InputOptions(batch_size=2, clip_samples=100)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_dataset(str(tmp_path / "nope"), "train", opts)
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a prepared s2f dataset"):
        make_dataset(str(tmp_path / "empty"), "train", opts)
    with pytest.raises(ValueError, match="no shards for split 'test'"):
        make_dataset(data_dir, "test", opts)
    with pytest.raises(ValueError, match="unknown input fields"):
        make_dataset(
            data_dir, "train", InputOptions(batch_size=2, clip_samples=100, fields=("wave",))
        )
    info = json.load(open(os.path.join(data_dir, "dataset.json")))
    info["schema_version"] = 99
    json.dump(info, open(os.path.join(data_dir, "dataset.json"), "w"))
    with pytest.raises(ValueError, match="schema_version 99"):
        make_dataset(data_dir, "train", opts)


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 500])


def test_truncated_shard_fails_naming_the_file(data_dir):
    bad = os.path.join(data_dir, "train-00001-of-00002.tfrecord")
    _truncate(bad)
    opts = InputOptions(batch_size=1, clip_samples=500, training=False, fields=("pcm",))
    with pytest.raises(tf.errors.DataLossError) as info:
        list(make_dataset(data_dir, "train", opts))
    message = explain_read_error(
        info.value, schema.DatasetInfo.read(data_dir).files(data_dir, "train")
    )
    assert "train-00001-of-00002.tfrecord" in message and "train-00000" not in message


def test_truncated_shard_skipped_when_asked(data_dir, caplog):
    _truncate(os.path.join(data_dir, "train-00001-of-00002.tfrecord"))
    opts = InputOptions(
        batch_size=1, clip_samples=500, training=False, fields=("clip_id",), skip_corrupt=True
    )
    ids = [b["clip_id"].numpy()[0] for b in make_dataset(data_dir, "train", opts)]
    assert 4 <= len(ids) < 8  # the intact shard fully, the truncated one up to the damage


def test_distributed_input_context(data_dir):
    ctx = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2
    )
    opts = InputOptions(batch_size=4, clip_samples=300, training=False, fields=("clip_id",))
    batches = list(make_dataset(data_dir, "train", opts, input_context=ctx))
    ids = [int(c.decode().split("/")[1]) for b in batches for c in b["clip_id"].numpy()]
    assert all(b["clip_id"].shape == (2,) for b in batches)  # per-replica batch
    assert sorted(ids) == [1, 3, 5, 7]  # this worker's shard only


def test_tf_data_service_on_loopback(data_dir):
    """The same batches come back through a real tf.data service (dispatcher + worker on 127.0.0.1)."""
    dispatcher = tf.data.experimental.service.DispatchServer(
        tf.data.experimental.service.DispatcherConfig(port=0)
    )
    address = dispatcher.target.split("://")[1]
    worker = tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(
            dispatcher_address=address, worker_address="127.0.0.1:%port%", port=0
        )
    )
    try:
        opts = InputOptions(
            batch_size=4, clip_samples=500, training=False, fields=("pcm", "clip_id")
        )
        local = sorted(
            c for b in make_dataset(data_dir, "train", opts) for c in b["clip_id"].numpy()
        )
        served = make_dataset(
            data_dir,
            "train",
            InputOptions(**{**opts.__dict__, "service_address": dispatcher.target}),
        )
        remote = sorted(c for b in served for c in b["clip_id"].numpy())
        assert remote == local and len(local) == 8
    finally:
        worker._stop()
        dispatcher._stop()
