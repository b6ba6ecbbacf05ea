"""`s2f prepare` and `s2f train` on an object store: an emulated GCS bucket on 127.0.0.1
(tests/gcs_emulator.py) that Beam's and TensorFlow's gs:// clients both use. The speaker-folders
source read from the bucket: tests/test_sources.py."""

import hashlib
import json
import uuid

import pytest
from conftest import run_s2f

from pipelines import storage
from s2f_tf.data import schema
from s2f_tf.media.errors import UNDECODABLE, MediaError


def test_storage_on_gcs(gcs_env):
    root = f"{gcs_env.url}/{uuid.uuid4().hex}"
    for rel in ("b.wav", "a/z.wav", "a/b/c.wav", "a/a.wav"):
        storage.write_atomic(f"{root}/in/{rel}", rel)
    assert storage.list_files(f"{root}/in") == ["b.wav", "a/a.wav", "a/z.wav", "a/b/c.wav"]
    assert storage.is_dir(f"{root}/in/a") and not storage.is_dir(f"{root}/nothing")
    assert storage.read_text(f"{root}/in/a/b/c.wav") == "a/b/c.wav"

    with pytest.raises(RuntimeError), storage.local_output(f"{root}/out/shard") as local:
        open(local, "wb").write(b"half")
        raise RuntimeError("killed mid-shard")
    assert not storage.exists(f"{root}/out/shard")
    with storage.local_output(f"{root}/out/shard") as local:
        open(local, "wb").write(b"whole")
    assert storage.read_bytes(f"{root}/out/shard") == b"whole"
    assert storage.glob(f"{root}/out/*") == [f"{root}/out/shard"]  # no temporary left

    with pytest.raises(MediaError) as e, storage.local_copy(f"{root}/in/b.wav") as local:
        assert open(local).read() == "b.wav" and local.endswith("/b.wav")
        raise MediaError(UNDECODABLE, f"{local}: not audio")
    assert e.value.detail == f"{root}/in/b.wav: not audio"  # the user's path, not the copy's
    with pytest.raises(MediaError, match="no such file"), storage.local_copy(f"{root}/in/x.wav"):
        pass


def _sha256(path: str) -> str:
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()


def test_prepare_to_gcs_then_train_from_it(gcs_env, tiny_corpus, tmp_path):
    """The tiny corpus prepared by `s2f prepare` straight into the bucket is byte-identical to the
    local one, and a stage trains from the bucket (TensorFlow's gs:// reads it)."""
    data = f"{gcs_env.url}/{uuid.uuid4().hex}/tiny"
    r = run_s2f(
        "prepare", "synthetic", "--identities=8", "--clips_per_identity=3", "--image_size=32",
        "--seed=24", "--config=tiny", "--items_per_shard=8", f"--data={data}",
        "--beam_arg=--direct_running_mode=in_memory", "--beam_arg=--direct_num_workers=1",
        env=gcs_env.env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    local = schema.DatasetInfo.read(tiny_corpus)
    info = json.loads(storage.read_text(f"{data}/{schema.INFO_FILE}"))
    assert info["shards"] == local.shards and info["counts"] == local.counts
    for names in local.shards.values():
        for name in names:
            assert _sha256(f"{data}/{name}") == _sha256(f"{tiny_corpus}/{name}"), name
    assert storage.read_text(f"{data}/{schema.MANIFEST_FILE}") == storage.read_text(
        f"{tiny_corpus}/{schema.MANIFEST_FILE}"
    )
    assert storage.glob(f"{data}/*.tmp-*") == []

    r = run_s2f(
        "train", "--config=tiny", "--stage=face_encoder", f"--workdir={tmp_path}/run",
        f"--data={data}", "--set=train.face_encoder_steps=4", env=gcs_env.env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 4


@pytest.mark.parametrize("url", ["s3://bucket/data", "hdfs://namenode/data", "azfs://a/c/data"])
def test_training_names_a_scheme_tensorflow_cannot_read(url):
    """Beam writes these, TensorFlow 2.21 reads none of them: one line, not "does not exist"."""
    with pytest.raises(ValueError, match=r"TensorFlow has no filesystem for \w+://"):
        schema.DatasetInfo.read(url)
