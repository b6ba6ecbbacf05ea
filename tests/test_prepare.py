"""Beam preparation: a tiny synthetic corpus end to end, manifest, idempotent byte-identical
re-runs, typed failures that never crash the job, and refusing to mix preparations."""

import dataclasses
import glob
import json
import os

import numpy as np
import pytest

from pipelines import common
from pipelines.synthetic import SyntheticSource
from s2f_tf import synthetic
from s2f_tf.data import schema
from s2f_tf.data.dataset import InputOptions, make_dataset
from s2f_tf.media.errors import NO_FACE

IN_PROCESS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
WARP = {"border_points": 4, "regularization": 1e-4, "interpolation": "bspline5"}  # the demo's


def _digest(out_dir):
    return {
        os.path.basename(p): open(p, "rb").read()
        for p in sorted(glob.glob(f"{out_dir}/*.tfrecord"))
    }


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    source = SyntheticSource(identities=10, clips_per_identity=2, image_size=32, seed=3)
    common.run_prepare(
        source,
        out,
        items_per_shard=6,
        arguments={"test": 1},
        log=lambda *_: None,  # 2 processes
        texture_warp=WARP,
    )
    return out


@pytest.mark.slow
def test_synthetic_corpus_layout(synthetic_dir):
    info = schema.DatasetInfo.read(synthetic_dir)
    assert info.source == "synthetic" and info.image_size == 32 and info.num_landmarks == 68
    assert sum(info.counts.values()) == 20 and info.num_speakers == 10
    assert "sex" in info.attribute_names and np.asarray(info.mean_landmarks).shape == (68, 2)
    rows = [json.loads(line) for line in open(os.path.join(synthetic_dir, schema.MANIFEST_FILE))]
    assert len(rows) == 20 and all(r["status"] == "ok" for r in rows)
    # speaker-disjoint splits, checked on the records themselves
    speakers = {}
    for split in info.shards:
        for path in info.files(synthetic_dir, split):
            import tensorflow as tf

            for raw in tf.data.TFRecordDataset(path):
                clip = schema.decode_numpy(raw.numpy())
                assert (
                    clip.split == split
                    and clip.pcm.dtype == np.int16
                    and clip.landmarks.shape == (68, 2)
                )
                speakers.setdefault(clip.speaker_id, set()).add(split)
    assert len(speakers) == 10 and all(len(s) == 1 for s in speakers.values())


@pytest.mark.slow
def test_decoder_targets_are_canonical_faces_and_textures_equal_the_in_graph_warp(synthetic_dir):
    """target/image is the identity's canonical face; target/texture is what the decoder's own warp
    makes of it in the graph (within PNG rounding)."""
    import io

    import tensorflow as tf
    from PIL import Image

    from s2f_tf.models.warp import sparse_image_warp

    info = schema.DatasetInfo.read(synthetic_dir)
    assert info.decoder_target == "canonical" and info.texture_warp == WARP
    train_ids = [i for i in range(10) if synthetic.split_of(3, i) == "train"]
    expected_mean = np.mean(
        [synthetic.canonical_landmarks(synthetic.make_identity(3, i)) for i in train_ids], 0
    )
    np.testing.assert_allclose(info.mean_landmarks, expected_mean, atol=1e-6)
    clips = [
        schema.decode_numpy(raw.numpy())
        for split in info.shards
        for path in info.files(synthetic_dir, split)
        for raw in tf.data.TFRecordDataset(path)
    ]
    png = lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))  # noqa: E731
    for clip in clips[:6]:
        identity = synthetic.make_identity(3, int(clip.speaker_id[2:]))
        face, landmarks = synthetic.draw_canonical_face(identity, 32)
        np.testing.assert_array_equal(png(clip.target_png), face)
        np.testing.assert_array_equal(clip.target_landmarks, landmarks)
        assert png(clip.face_png).tobytes() != face.tobytes()  # the clip's face is posed
        warped, _ = sparse_image_warp(
            face[None].astype(np.float32) / 255.0,
            landmarks[None],
            np.asarray(info.mean_landmarks, np.float32)[None],
            num_border_points=4,
            regularization=1e-4,
            interpolation=WARP["interpolation"],
        )
        diff = np.abs(
            png(clip.texture_png).astype(np.float32) - np.clip(warped.numpy()[0] * 255.0, 0, 255)
        )
        assert diff.max() <= 0.5 + 1e-3, diff.max()  # PNG holds the rounded warp
    # all clips of one identity share one target
    by_speaker = {}
    for clip in clips:
        by_speaker.setdefault(clip.speaker_id, set()).add(clip.texture_png)
    assert all(len(t) == 1 for t in by_speaker.values())


@pytest.mark.slow
def test_synthetic_corpus_feeds_the_input_pipeline(synthetic_dir):
    opts = InputOptions(
        batch_size=4,
        clip_samples=16000,
        training=False,
        fields=("pcm", "image", "landmarks", "speaker", "attributes"),
    )
    batch = next(iter(make_dataset(synthetic_dir, "train", opts)))
    assert batch["pcm"].shape == (4, 16000) and batch["image"].shape == (4, 32, 32, 3)
    assert batch["attributes"].shape == (4, len(synthetic.ATTRIBUTE_NAMES)) == (4, 6)


@pytest.mark.slow
def test_rerun_is_idempotent_and_byte_identical(synthetic_dir, tmp_path):
    import shutil

    synthetic_dir = shutil.copytree(synthetic_dir, str(tmp_path / "synthetic"))  # not the module's
    before = _digest(synthetic_dir)
    manifest = open(os.path.join(synthetic_dir, schema.MANIFEST_FILE)).read()
    source = SyntheticSource(identities=10, clips_per_identity=2, image_size=32, seed=3)
    # remove one finished shard: the re-run redoes just that one, identically
    victim = sorted(glob.glob(f"{synthetic_dir}/train-*.tfrecord"))[0]
    os.remove(victim)
    os.remove(victim.replace(".tfrecord", ".done.json"))
    common.run_prepare(
        source,
        synthetic_dir,
        items_per_shard=6,
        arguments={"test": 1},
        beam_args=IN_PROCESS,
        log=lambda *_: None,
        texture_warp=WARP,
    )
    assert _digest(synthetic_dir) == before
    assert open(os.path.join(synthetic_dir, schema.MANIFEST_FILE)).read() == manifest
    assert not glob.glob(f"{synthetic_dir}/*.tmp-*")


@pytest.mark.slow
def test_different_arguments_are_refused(synthetic_dir):
    source = SyntheticSource(identities=11, clips_per_identity=2, image_size=32, seed=3)
    with pytest.raises(ValueError, match="different preparation"):
        common.run_prepare(
            source,
            synthetic_dir,
            items_per_shard=6,
            arguments={"test": 2},
            log=lambda *_: None,
            texture_warp=WARP,
        )
    with pytest.raises(ValueError, match="different preparation"):  # other decoder targets
        common.run_prepare(
            SyntheticSource(identities=10, clips_per_identity=2, image_size=32, seed=3),
            synthetic_dir,
            items_per_shard=6,
            arguments={"test": 1},
            log=lambda *_: None,
        )


@dataclasses.dataclass
class FlakySource:
    """Items 0-5; item 2 has a typed failure, item 4 crashes unexpectedly."""

    name: str = "flaky"

    def list_items(self):
        return [
            {"item_id": f"item{i}", "speaker_id": f"spk{i % 3}", "split": "train", "i": i}
            for i in range(6)
        ]

    def process(self, item, speaker_index):
        if item["i"] == 2:
            raise common.ItemError(NO_FACE, "no face near the given centre")
        if item["i"] == 4:
            raise ZeroDivisionError("boom")
        return schema.Clip(
            clip_id=item["item_id"],
            speaker_id=item["speaker_id"],
            speaker_index=speaker_index,
            split="train",
            pcm=np.full(100, item["i"], np.int16),
            face_png=schema.encode_png(np.zeros((16, 16, 3), np.uint8)),
            face_size=16,
            landmarks=np.full((3, 2), 0.5, np.float32),
        )

    def info(self):
        return {
            "image_size": 16,
            "num_landmarks": 3,
            "mean_landmarks": [[0.3, 0.4], [0.7, 0.4], [0.5, 0.7]],
            "decoder_target": "clip",
        }


def test_failures_land_in_the_manifest_and_never_crash(tmp_path):
    info = common.run_prepare(
        FlakySource(), str(tmp_path), items_per_shard=4, beam_args=IN_PROCESS, log=lambda *_: None
    )
    assert info.counts == {"train": 4}
    rows = {r["item_id"]: r for r in map(json.loads, open(tmp_path / schema.MANIFEST_FILE))}
    assert rows["item2"]["status"] == "failed" and rows["item2"]["reason"] == "no_face"
    assert (
        rows["item4"]["reason"] == "unexpected_error"
        and "ZeroDivisionError" in rows["item4"]["detail"]
    )
    assert sum(r["status"] == "ok" for r in rows.values()) == 4


def test_plan_checks_and_splits():
    with pytest.raises(ValueError, match="duplicate item_id"):
        common.make_plan([{"item_id": "a", "speaker_id": "s", "split": "train"}] * 2)
    with pytest.raises(ValueError, match="split 'dev'"):
        common.make_plan([{"item_id": "a", "speaker_id": "s", "split": "dev"}])
    with pytest.raises(ValueError, match="unknown .*failure reason"):
        common.ItemError("bad_reason", "x")
    splits = [common.split_for_speaker(f"speaker{i}") for i in range(2000)]
    assert 0.75 < splits.count("train") / 2000 < 0.85 and splits.count("test") > 150
    assert common.split_for_speaker("speaker7") == common.split_for_speaker("speaker7")


def test_feature_stage_stores_face_encoder_features(tmp_path):
    """With a weights file, prepare stores each face's fc7 feature; training then reads it."""
    from test_face_encoder import keras2_layer_list, random_vgg_weights, write_keras2_h5

    from s2f_tf.models.face_encoder import FaceEncoder, load_vggface_weights

    kwargs = dict(image_size=32, width=1 / 16, fc_units=16, num_identities=5, dropout=0.0)
    encoder = FaceEncoder(**kwargs)
    weights_file = str(tmp_path / "vgg.h5")
    write_keras2_h5(weights_file, keras2_layer_list(random_vgg_weights(encoder)))
    load_vggface_weights(encoder, weights_file)
    out = str(tmp_path / "data")
    source = SyntheticSource(identities=4, clips_per_identity=2, image_size=32, seed=5)
    info = common.run_prepare(
        source,
        out,
        beam_args=IN_PROCESS,
        log=lambda *_: None,
        features=common.FeatureSpec(weights_file, kwargs),
    )
    assert info.feature_dim == 16
    import io

    import tensorflow as tf
    from PIL import Image

    shard = info.files(out, sorted(info.shards)[0])[0]
    clip = schema.decode_numpy(next(iter(tf.data.TFRecordDataset(shard))).numpy())
    image = np.asarray(Image.open(io.BytesIO(clip.face_png)))[None].astype(np.float32)
    np.testing.assert_allclose(
        clip.feature, encoder(image)["feature"].numpy()[0], rtol=1e-4, atol=1e-4
    )
    batch = next(
        iter(
            make_dataset(
                out,
                sorted(info.shards)[0],
                InputOptions(
                    batch_size=1, clip_samples=8000, training=False, fields=("pcm", "feature")
                ),
            )
        )
    )
    assert batch["feature"].shape == (1, 16)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        common.run_prepare(
            source,
            str(tmp_path / "other"),
            log=lambda *_: None,
            features=common.FeatureSpec(str(tmp_path / "missing.h5"), kwargs),
        )
