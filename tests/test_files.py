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


def test_storage_faults_are_named_with_their_path():
    import errno

    from s2f_tf.files import storage_fault

    def os_error(code, path):
        return OSError(code, os.strerror(code), path)

    assert storage_fault(os_error(errno.ENOSPC, "/d/a.json")) == (
        "no space left on device writing /d/a.json"
    )
    assert storage_fault(os_error(errno.EROFS, "/ro/x")) == "read-only file system writing /ro/x"
    assert storage_fault(os_error(errno.EDQUOT, "/q/x")) == "disk quota exceeded writing /q/x"
    # TensorFlow's text (SaveV2, gfile, TFRecordWriter), a temporary name told as the file it becomes
    tf_text = "/run/train-00001-of-00004.tfrecord.tmp-123; No space left on device [Op:SaveV2]"
    assert storage_fault(RuntimeError(tf_text)) == (
        "no space left on device writing /run/train-00001-of-00004.tfrecord"
    )
    # Beam: a worker's traceback inside the runner's exception; source files are not the path
    beam = RuntimeError(
        'Traceback:\n  File "/venv/beam/common.py", line 1\n'
        "ResourceExhaustedError: /data/test-00000-of-00001.tfrecord.tmp-9; No space left on device"
        " [while running 'process_and_write']"
    )
    assert (
        storage_fault(beam) == "no space left on device writing /data/test-00000-of-00001.tfrecord"
    )
    # h5py: errno 28, the file named on another line of its message
    h5 = OSError(
        28, "Can't write data (file write failed: time = ...\n, filename = '/w/b.tmp-7.h5'"
    )
    assert storage_fault(h5) == "no space left on device writing /w/b.h5"
    # the fault as the cause of another exception; the output location removed mid-run
    try:
        try:
            raise os_error(errno.ENOSPC, "/d/b")
        except OSError as e:
            raise ValueError("saving failed") from e
    except ValueError as e:
        assert storage_fault(e) == "no space left on device writing /d/b"
    gone = RuntimeError("Failed to create a directory: /run/ckpt_temp; No such file or directory")
    assert storage_fault(gone) == "the output location is gone writing /run/ckpt_temp"
    # not storage faults: a missing input, a bad value
    assert storage_fault(FileNotFoundError(errno.ENOENT, "No such file", "/in.wav")) is None
    assert storage_fault(ValueError("bad --set")) is None
