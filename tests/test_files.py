"""write_atomic (s2f_tf/files.py): whole files or none, from a string, bytes or streamed chunks."""

import os

import pytest

from s2f_tf.files import write_atomic


def test_writes_text_bytes_and_streamed_chunks_whole(tmp_path):
    assert write_atomic(tmp_path / "a.txt", "héllo") == str(tmp_path / "a.txt")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    write_atomic(str(tmp_path / "b.bin"), b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    write_atomic(str(tmp_path / "c.jsonl"), (f"{i}\n" for i in range(3)))
    assert (tmp_path / "c.jsonl").read_text() == "0\n1\n2\n"
    write_atomic(str(tmp_path / "a.txt"), "replaced")  # an old file is replaced whole
    assert (tmp_path / "a.txt").read_text() == "replaced"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin", "c.jsonl"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text("old\n")

    def rows():
        yield "new 1\n"
        raise RuntimeError("the writer died half way")

    with pytest.raises(RuntimeError, match="half way"):
        write_atomic(str(path), rows())
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["manifest.jsonl"]
