"""pipelines/storage.py on local paths: the listing order the sources rely on, whole-or-nothing
writes, local copies. The same functions on an object store: tests/test_object_store.py."""

import pytest

from pipelines import storage


def test_list_files_in_sorted_walk_order(tmp_path):
    for rel in ("b.wav", "a/z.wav", "a/b/c.wav", "a/a.wav", ".hidden/x.wav", "c/.d.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    # a folder's files come before its folders, each in name order (os.walk, sorted)
    assert storage.list_files(str(tmp_path)) == [
        "b.wav",
        ".hidden/x.wav",
        "a/a.wav",
        "a/z.wav",
        "a/b/c.wav",
        "c/.d.wav",
    ]
    assert storage.is_dir(str(tmp_path / "a")) and not storage.is_dir(str(tmp_path / "b.wav"))


def test_write_atomic_is_whole_or_nothing(tmp_path):
    path = str(tmp_path / "out" / "x.json")
    storage.makedirs(str(tmp_path / "out"))
    storage.write_atomic(path, ["a", b"b"])
    assert storage.read_text(path) == "ab"

    def broken():
        yield "new"
        raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError):
        storage.write_atomic(path, broken())
    assert storage.read_text(path) == "ab"  # the old file, and no temporary beside it
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.json"]


def test_local_output_appears_only_when_complete(tmp_path):
    path = str(tmp_path / "shard.tfrecord")
    with pytest.raises(RuntimeError), storage.local_output(path) as local:
        open(local, "wb").write(b"half")
        raise RuntimeError("killed mid-shard")
    assert list(tmp_path.iterdir()) == []
    with storage.local_output(path) as local:
        open(local, "wb").write(b"whole")
    assert storage.read_bytes(path) == b"whole"
    assert storage.glob(str(tmp_path / "*.tmp-*")) == []


def test_local_copy_of_a_local_file_is_the_file(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    with storage.local_copy(str(tmp_path / "a.wav")) as local:
        assert local == str(tmp_path / "a.wav")
    assert storage.absolute("rel/a.wav").startswith("/")
    assert storage.absolute("gs://b/rel/a.wav") == "gs://b/rel/a.wav"


def test_a_scheme_without_its_filesystem_is_one_clear_error():
    with pytest.raises(ValueError, match=r"no filesystem for nosuch:// is installed"):
        storage.exists("nosuch://bucket/a.wav")
    with pytest.raises(ValueError, match=r"azfs://.*pip install 'apache-beam\[azure\]'"):
        storage.list_files("azfs://account/container/speakers")
