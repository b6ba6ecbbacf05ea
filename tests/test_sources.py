"""pipelines/avspeech.py and pipelines/folders.py end to end (in-process Beam): typed failures in
the manifest, records the input pipeline reads, splits and VoxCeleb meta. Fixtures are made here."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import math

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from PIL import Image
from test_media import face_frame, ffmpeg, make_video, peak_hz, sine, synthetic_face

from pipelines import common
from pipelines import folders as pipelines_folders
from pipelines.avspeech import AVSpeechSource, index_videos, read_csv
from pipelines.folders import FoldersSource, read_meta
from s2f_tf.data import schema
from s2f_tf.data.dataset import InputOptions, make_dataset
from s2f_tf.media import faces

IN_PROCESS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _manifest(out_dir) -> dict[str, dict]:
    return {
        r["item_id"]: r for r in map(json.loads, open(os.path.join(out_dir, schema.MANIFEST_FILE)))
    }


def _records(out_dir) -> list[schema.Clip]:
    info = schema.DatasetInfo.read(str(out_dir))
    clips = []
    for split in info.shards:
        for path in info.files(str(out_dir), split):
            clips += [schema.decode_numpy(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    return clips


# ---------------------------------------------------------------------------------------------
# AVSpeech
# ---------------------------------------------------------------------------------------------

FACE_ID = "fAce_Vid-01"  # youtube ids may hold '_' and '-'
SEGMENT_ID = "seg_Vid-02"


@pytest.fixture(scope="module")
def avspeech(tmp_path_factory):
    root = tmp_path_factory.mktemp("avspeech")
    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    frame = face_frame(identity=0, size=100, x=150, y=70)  # face centre ~ (0.62, 0.5)
    make_video(videos / f"{FACE_ID}.mp4", frame, 4.0, freq=440.0)
    make_video(
        videos / "sub" / f"{SEGMENT_ID}_10.5_13.000000.mkv",
        face_frame(identity=10),
        2.5,
        freq=880.0,
    )
    make_video(
        videos / "noFace.mov",
        np.random.default_rng(0).integers(90, 130, (240, 320, 3), np.uint8),
        3.0,
    )
    two = np.full((240, 320, 3), 120, np.uint8)
    two[70:170, 70:170] = synthetic_face(7, 100)
    two[70:170, 150:250] = synthetic_face(10, 100)
    make_video(videos / "twoFaces.mp4", two, 3.0)
    (videos / "garbage.mp4").write_bytes(
        np.random.default_rng(1).integers(0, 256, 40000, np.uint8).tobytes()
    )
    (videos / "truncated.mp4").write_bytes(open(videos / f"{FACE_ID}.mp4", "rb").read()[:15000])
    (videos / "notes.txt").write_text("not a video")
    rows = [
        f"{FACE_ID},0.5,3.0,0.62,0.5",  # ok
        f"{FACE_ID},1.0,3.5,0.05,0.9",  # centre far from the face
        f"{FACE_ID},0.0,1.0,0.62,0.5",  # shorter than min_seconds
        f"{SEGMENT_ID},10.500000,13.0,0.61,0.5",  # ok, from a segment file
        "noFace,0.0,2.5,0.5,0.5",
        "twoFaces,0.0,2.5,0.5,0.5",
        "garbage,0.0,2.5,0.5,0.5",
        "truncated,0.0,2.5,0.5,0.5",
        "notDownloaded,0.0,2.5,0.5,0.5",
        "",
    ]
    csv_path = root / "avspeech_train.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    out = root / "out"
    source = AVSpeechSource(
        str(csv_path), str(videos), image_size=64, split="train", min_seconds=2.0
    )
    info = common.run_prepare(
        source, str(out), items_per_shard=4, beam_args=IN_PROCESS, log=lambda *_: None
    )
    return {
        "root": root,
        "videos": str(videos),
        "csv": str(csv_path),
        "out": str(out),
        "info": info,
    }


def test_avspeech_manifest_has_typed_reasons(avspeech):
    rows = _manifest(avspeech["out"])
    reason = {k: r.get("reason", "ok") for k, r in rows.items()}
    assert reason == {
        f"{FACE_ID}_0.500_3.000": "ok",
        f"{FACE_ID}_1.000_3.500": "no_face_near_center",
        f"{FACE_ID}_0.000_1.000": "too_short",
        f"{SEGMENT_ID}_10.500_13.000": "ok",
        "noFace_0.000_2.500": "no_face",
        "twoFaces_0.000_2.500": "several_faces",
        "garbage_0.000_2.500": "undecodable",
        "truncated_0.000_2.500": "undecodable",
        "notDownloaded_0.000_2.500": "missing_file",
    }
    assert all(r["detail"] for r in rows.values() if r["status"] != "ok")


def test_prepare_reports_beam_metrics_of_the_whole_dataset(avspeech):
    """The Beam metrics (pipelines/metrics.py) in dataset.json agree with the manifest: failures by
    reason and split, clips and audio written, the clip-length distribution; a second run, with every
    shard done, keeps them."""
    from collections import Counter

    rows = _manifest(avspeech["out"]).values()
    ok = [r for r in rows if r["status"] == "ok"]
    ms = [round(1000 * r["samples"] / schema.SAMPLE_RATE) for r in ok]
    failed = Counter(f"failed.{r['reason']}" for r in rows if r["status"] != "ok")
    expected = {
        **failed,
        "failed_items.train": sum(failed.values()),
        "clips_written.train": len(ok),
        "milliseconds_written.train": sum(ms),
        "shards.train": len(avspeech["info"].shards["train"]),
    }
    stored = json.load(open(os.path.join(avspeech["out"], schema.INFO_FILE)))["prepare_metrics"]
    assert stored["counters"] == dict(sorted(expected.items()))
    lengths = stored["distributions"]["clip_milliseconds"]
    assert (lengths["count"], lengths["min"], lengths["max"]) == (len(ms), min(ms), max(ms))
    lines = []
    again = common.run_prepare(
        AVSpeechSource(
            avspeech["csv"], avspeech["videos"], image_size=64, split="train", min_seconds=2.0
        ),
        avspeech["out"],
        items_per_shard=4,
        beam_args=IN_PROCESS,
        log=lines.append,
    )
    assert again.prepare_metrics == stored
    assert "failed " in lines[-1] and "no_face 1" in lines[-1] and "undecodable 2" in lines[-1]


def test_avspeech_records(avspeech):
    info = avspeech["info"]
    assert info.source == "avspeech" and info.image_size == 64 and info.num_landmarks == 5
    assert info.counts == {"train": 2} and np.asarray(info.mean_landmarks).shape == (5, 2)
    clips = {c.clip_id: c for c in _records(avspeech["out"])}
    whole, segment = clips[f"{FACE_ID}_0.500_3.000"], clips[f"{SEGMENT_ID}_10.500_13.000"]
    assert whole.speaker_id == FACE_ID and whole.split == "train"
    assert abs(whole.pcm.size - 40000) <= 160 and abs(peak_hz(whole.pcm) - 440) < 3
    assert abs(segment.pcm.size - 40000) <= 800 and abs(peak_hz(segment.pcm) - 880) < 3
    assert whole.source_path.endswith(f"{FACE_ID}.mp4") and (
        whole.source_start,
        whole.source_end,
    ) == (0.5, 3.0)
    assert segment.source_path.endswith(".mkv") and segment.source_start == 10.5
    for clip in (whole, segment):
        assert clip.landmarks.shape == (5, 2) and clip.face_size == 64
        assert abs(clip.landmarks[0, 1] - clip.landmarks[1, 1]) < 0.02  # eyes level
        assert 0.25 < clip.landmarks[0, 0] < 0.45 and 0.55 < clip.landmarks[1, 0] < 0.75
    opts = InputOptions(
        batch_size=2,
        clip_samples=16000,
        training=False,
        fields=("pcm", "image", "landmarks", "speaker", "clip_id"),
    )
    batch = next(iter(make_dataset(avspeech["out"], "train", opts)))
    assert batch["pcm"].shape == (2, 16000) and batch["image"].shape == (2, 64, 64, 3)
    assert batch["landmarks"].shape == (2, 5, 2)
    assert float(tf.reduce_mean(tf.cast(batch["image"], tf.float32))) > 20  # a face, not black


def test_avspeech_listing(avspeech, tmp_path):
    whole, segments = index_videos(avspeech["videos"])
    assert set(whole) == {
        FACE_ID,
        "noFace",
        "twoFaces",
        "garbage",
        "truncated",
        f"{SEGMENT_ID}_10.5_13.000000",
    }
    assert list(segments) == [(SEGMENT_ID, 10500, 13000)]
    source = AVSpeechSource(avspeech["csv"], avspeech["videos"], image_size=64)
    items = source.list_items()
    assert len(items) == 9
    assert all(it["split"] == common.split_for_speaker(it["speaker_id"]) for it in items)
    skipping = AVSpeechSource(avspeech["csv"], avspeech["videos"], image_size=64, skip_missing=True)
    assert len(skipping.list_items()) == 8
    assert source.info() == {
        "image_size": 64,
        "num_landmarks": 5,
        "attribute_names": [],
        "mean_landmarks": [list(p) for p in faces.CANONICAL_LANDMARKS],
        "decoder_target": "clip",
    }
    with pytest.raises(ValueError, match="split"):
        AVSpeechSource(avspeech["csv"], avspeech["videos"], image_size=64, split="dev")
    with pytest.raises(ValueError, match="is not a directory"):
        AVSpeechSource(avspeech["csv"], str(tmp_path / "nope"), image_size=64)


@pytest.mark.parametrize(
    "line,message",
    [
        ("abc,1.0,2.0,0.5", "expected 5 fields"),
        ("abc,one,2.0,0.5,0.5", "must be numbers"),
        ("abc,3.0,2.0,0.5,0.5", "start < end"),
        ("abc,1.0,2.0,1.5,0.5", "outside"),
        ("abc,1.0,nan,0.5,0.5", "non-finite"),
        ("abc,1.0,4.0,0.5,0.5", "repeats line 1"),
    ],
)
def test_avspeech_malformed_csv_names_the_line(tmp_path, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"abc,1.0,4.0,0.5,0.5\n\n{line}\n")
    with pytest.raises(ValueError, match=f"bad.csv:3: .*{message}"):
        read_csv(str(path))


# ---------------------------------------------------------------------------------------------
# speaker folders
# ---------------------------------------------------------------------------------------------


def _save_face(path, identity, size=128):
    Image.fromarray(synthetic_face(identity, size)).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    spk = {
        name: root / "speakers" / name for name in ("id10001", "id10002", "id10003", "spk_nofaces")
    }
    for d in spk.values():
        d.mkdir(parents=True)
    # id10001: a VoxCeleb-style nested clip (44.1 kHz stereo WAV) with its own image, a FLAC at 22.05 kHz
    (spk["id10001"] / "yt1").mkdir()
    sf.write(spk["id10001"] / "yt1" / "00001.wav", np.stack([sine(500, 44100, 1.5)] * 2, 1), 44100)
    _save_face(spk["id10001"] / "yt1" / "00001.png", 0)
    sf.write(spk["id10001"] / "b.flac", sine(500, 22050, 1.2), 22050, subtype="PCM_16")
    _save_face(spk["id10001"] / "portrait.jpg", 7)
    # id10002: OGG 48 kHz, MP3 8 kHz, M4A (ffmpeg) and a too-short WAV; one image
    sf.write(spk["id10002"] / "a.ogg", sine(300, 48000, 1.5), 48000, subtype="VORBIS")
    wav8k = root / "tmp8k.wav"
    sf.write(wav8k, sine(300, 8000, 1.5), 8000)
    ffmpeg("-i", str(wav8k), "-c:a", "libmp3lame", str(spk["id10002"] / "b.mp3"))
    ffmpeg("-i", str(wav8k), "-c:a", "aac", str(spk["id10002"] / "c.m4a"))
    sf.write(spk["id10002"] / "short.wav", sine(300, 16000, 0.3), 16000)
    _save_face(spk["id10002"] / "face.jpeg", 10)
    # id10003: the image has no face
    sf.write(spk["id10003"] / "a.wav", sine(300, 16000, 1.5), 16000)
    Image.fromarray(np.full((128, 128, 3), 100, np.uint8)).save(spk["id10003"] / "a.png")
    # spk_nofaces: audio only
    sf.write(spk["spk_nofaces"] / "a.wav", sine(300, 16000, 1.5), 16000)
    (root / "speakers" / "stray.wav").write_bytes(b"ignored: not in a speaker folder")
    meta = root / "vox1_meta.csv"
    meta.write_text(
        "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
        "id10001\tA.J._Buckley\tm\tIreland\tdev\n"
        "id10002\tA.R._Rahman\tf\tNew Zealand\ttest\n"
        "id10009\tAdam_Beach\tm\tCanada\tdev\n"
    )
    out = root / "out"
    source = FoldersSource(str(root / "speakers"), image_size=48, meta_path=str(meta))
    info = common.run_prepare(
        source, str(out), items_per_shard=3, beam_args=IN_PROCESS, log=lambda *_: None
    )
    return {
        "root": root,
        "speakers": str(root / "speakers"),
        "meta": str(meta),
        "out": str(out),
        "info": info,
        "source": source,
    }


def test_folders_manifest_and_splits(folders):
    rows = _manifest(folders["out"])
    reason = {k: r.get("reason", "ok") for k, r in rows.items()}
    assert reason == {
        "id10001/yt1/00001.wav": "ok",
        "id10001/b.flac": "ok",
        "id10002/a.ogg": "ok",
        "id10002/b.mp3": "ok",
        "id10002/c.m4a": "ok",
        "id10002/short.wav": "too_short",
        "id10003/a.wav": "no_face",
        "spk_nofaces/a.wav": "missing_file",
    }
    items = {it["item_id"]: it for it in folders["source"].list_items()}
    assert items["id10001/yt1/00001.wav"]["image"].endswith("yt1/00001.png")  # same stem
    pick = ["portrait.jpg", "yt1/00001.png"][
        common.stable_hash("id10001/b.flac") % 2
    ]  # deterministic pick
    assert items["id10001/b.flac"]["image"] == os.path.join(folders["speakers"], "id10001", pick)
    splits = {it["speaker_id"]: it["split"] for it in items.values()}
    assert splits["id10001"] == "train" and splits["id10002"] == "test"
    assert splits["id10003"] == common.split_for_speaker("id10003")  # not in the meta file


def test_folders_records(folders):
    info = folders["info"]
    assert (
        info.source == "folders"
        and info.num_landmarks == 5
        and info.attribute_names == ["nationality", "sex"]
    )
    assert info.attribute_classes == {
        "sex": ["male", "female"],
        "nationality": ["Canada", "Ireland", "New Zealand"],
    }
    assert info.num_speakers == 4
    clips = {c.clip_id: c for c in _records(folders["out"])}
    assert set(clips) == {
        "id10001/yt1/00001.wav",
        "id10001/b.flac",
        "id10002/a.ogg",
        "id10002/b.mp3",
        "id10002/c.m4a",
    }
    for clip_id, clip in clips.items():
        assert (
            clip.pcm.dtype == np.int16 and clip.landmarks.shape == (5, 2) and clip.face_size == 48
        )
        expected_hz = 500 if clip_id.startswith("id10001") else 300
        assert abs(peak_hz(clip.pcm) - expected_hz) < 3, clip_id
        assert clip.attributes["sex"] == (0.0 if clip.speaker_id == "id10001" else 1.0)
        assert clip.attributes["nationality"] == (
            1.0 if clip.speaker_id == "id10001" else 2.0
        )  # Ireland, NZ
        assert clip.split == ("train" if clip.speaker_id == "id10001" else "test")
    assert abs(clips["id10001/yt1/00001.wav"].pcm.size - 24000) <= 24
    opts = InputOptions(
        batch_size=2,
        clip_samples=8000,
        training=False,
        fields=("pcm", "image", "landmarks", "attributes"),
    )
    batch = next(iter(make_dataset(folders["out"], "test", opts)))
    assert batch["image"].shape == (2, 48, 48, 3) and batch["attributes"].shape == (2, 2)


def test_folders_without_meta_and_unknown_sex(folders, tmp_path):
    source = FoldersSource(folders["speakers"], image_size=48)
    assert source.info()["attribute_names"] == []
    items = source.list_items()
    assert all(it["split"] == common.split_for_speaker(it["speaker_id"]) for it in items)
    clip = source.process(next(it for it in items if it["item_id"] == "id10002/a.ogg"), 0)
    assert clip.attributes == {}
    with_meta = FoldersSource(folders["speakers"], image_size=48, meta_path=folders["meta"])
    item = next(it for it in with_meta.list_items() if it["speaker_id"] == "id10003")
    item["image"] = os.path.join(folders["speakers"], "id10001", "portrait.jpg")
    unknown = with_meta.process(item, 0).attributes  # not in the meta file
    assert math.isnan(unknown["sex"]) and math.isnan(unknown["nationality"])


def test_frontality_by_hand():
    frontal = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.57], [0.376, 0.74], [0.624, 0.74]])
    assert faces.frontality(frontal) == pytest.approx(
        0.5 * abs(0.17 / 0.34 - 0.5)
    )  # 0: nose half-way
    turned = frontal.copy()
    turned[2, 0] += 0.06  # the nose 0.2 eye distances off the axis
    assert faces.frontality(turned) == pytest.approx(faces.frontality(frontal) + 0.2)
    rolled = frontal.copy()
    rolled[1, 1] += 0.03  # the right eye 0.1 eye distances lower
    assert faces.frontality(rolled) > faces.frontality(frontal) + 0.09
    np.testing.assert_allclose(
        faces.frontality(frontal * 100 + 7), faces.frontality(frontal), atol=1e-9
    )


def test_folders_most_frontal_target_is_one_face_per_speaker(folders, tmp_path):
    """decoder_target=most_frontal: every clip of a speaker learns the same target, the speaker's most
    frontal face among all their images; the clips' own faces stay as they are."""
    source = FoldersSource(folders["speakers"], image_size=48, decoder_target="most_frontal")
    out = common.run_prepare(
        source, str(tmp_path / "out"), items_per_shard=3, beam_args=IN_PROCESS, log=lambda *_: None
    )
    assert out.decoder_target == "most_frontal"
    clips = [c for c in _records(tmp_path / "out") if c.speaker_id == "id10001"]
    assert len(clips) == 2 and len({c.target_png for c in clips}) == 1
    assert len({c.face_png for c in clips}) == 2  # two different photos
    folder = os.path.join(folders["speakers"], "id10001")
    candidates = [
        (faces.frontality(lm), crop)
        for crop, lm in (
            pipelines_folders._face_crop(os.path.join(folder, rel), *source._detection())
            for rel in ("portrait.jpg", "yt1/00001.png")
        )
    ]
    best = min(candidates, key=lambda c: c[0])[1]
    target = np.asarray(Image.open(__import__("io").BytesIO(clips[0].target_png)).convert("RGB"))
    np.testing.assert_array_equal(target, best)
    with pytest.raises(ValueError, match="decoder_target"):
        FoldersSource(folders["speakers"], image_size=48, decoder_target="best")


def test_voxceleb_meta_formats(tmp_path):
    vox2 = tmp_path / "vox2_meta.csv"
    vox2.write_text(
        "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n"
        "id00012 ,n000012 ,m ,dev \nid00017 ,n000017 ,f ,test \n"
    )
    meta = read_meta(str(vox2))
    assert meta["id00012"] == {"set": "dev", "sex": 0.0, "nationality": None}
    assert meta["id00017"] == {"set": "test", "sex": 1.0, "nationality": None}
    assert meta["n000017"] is meta["id00017"]  # folders may use VGGFace2 ids
    vox1 = tmp_path / "vox1_meta.csv"
    vox1.write_text(
        "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
        "id10001\tA.J._Buckley\tm\tIreland\tdev\n"
    )
    assert read_meta(str(vox1))["A.J._Buckley"] == {
        "set": "dev",
        "sex": 0.0,
        "nationality": "Ireland",
    }
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\nid10001\tX\tq\tIreland\tdev\n"
    )
    with pytest.raises(ValueError, match="bad.csv:2: Gender 'q'"):
        read_meta(str(bad))
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="neither a 'Gender' nor a 'Set'"):
        read_meta(str(bad))


def test_folders_validation_fraction(folders):
    source = FoldersSource(
        folders["speakers"], image_size=48, meta_path=folders["meta"], validation_fraction=0.5
    )
    splits = {source._split(f"id{i}", {"set": "dev", "sex": None}) for i in range(40)}
    assert splits == {"train", "validation"}
    assert source._split("x", {"set": "test", "sex": None}) == "test"


def test_folders_read_from_and_written_to_gcs(folders, gcs_env):
    """The same speaker folders and meta file in a GCS bucket, prepared into the bucket: the same
    manifest, dataset.json and clips as from local paths (each clip's source path is its URL)."""
    import uuid

    from pipelines import storage

    root = f"{gcs_env.url}/{uuid.uuid4().hex}"
    local = folders["speakers"]
    for rel in storage.list_files(local):
        storage.write_atomic(f"{root}/speakers/{rel}", storage.read_bytes(f"{local}/{rel}"))
    storage.write_atomic(f"{root}/vox1_meta.csv", storage.read_bytes(folders["meta"]))
    source = FoldersSource(f"{root}/speakers", image_size=48, meta_path=f"{root}/vox1_meta.csv")
    common.run_prepare(
        source, f"{root}/out", items_per_shard=3, beam_args=IN_PROCESS, log=lambda *_: None
    )
    out = f"{root}/out"
    assert storage.read_text(f"{out}/{schema.INFO_FILE}") == folders["info"].to_json()
    manifest = storage.read_text(f"{out}/{schema.MANIFEST_FILE}")
    assert f"{root}/speakers/id10002/short.wav: 0.300 s" in manifest  # failures name the URL
    rows = [json.loads(line) for line in manifest.replace(f"{root}/speakers", local).splitlines()]
    assert {r["item_id"]: r for r in rows} == _manifest(folders["out"])
    clips = {c.clip_id: c for c in _records(folders["out"])}
    for names in folders["info"].shards.values():
        for name in names:
            with storage.local_copy(f"{out}/{name}") as path:
                for record in tf.data.TFRecordDataset(path):
                    clip = schema.decode_numpy(record.numpy())
                    assert clip.source_path == f"{root}/speakers/{clip.clip_id}"
                    mine = clips[clip.clip_id]
                    np.testing.assert_array_equal(clip.pcm, mine.pcm)
                    assert clip.face_png == mine.face_png and clip.target_png == mine.target_png
                    assert clip.attributes == mine.attributes
    assert storage.glob(f"{out}/*.tmp-*") == []
