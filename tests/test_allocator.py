"""The `s2f` command re-executes itself under TCMalloc when the machine has it (s2f_tf/app/allocator.py)."""

import json

import pytest
from conftest import run_s2f

from s2f_tf.app import allocator

LIB = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def test_preload_env_adds_the_library_once_and_keeps_what_was_preloaded():
    env = allocator.preload_env({"PATH": "/bin"}, LIB)
    assert env["LD_PRELOAD"] == LIB and env["PATH"] == "/bin"
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40  # no "large alloc" lines
    assert allocator.preload_env(env, LIB) is None  # already loaded: no loop
    both = allocator.preload_env({"LD_PRELOAD": "/opt/libfoo.so"}, LIB)
    assert both["LD_PRELOAD"] == f"{LIB} /opt/libfoo.so"
    assert allocator.preload_env({"LD_PRELOAD": "/x/libtcmalloc.so.4:/y/libbar.so"}, LIB) is None
    assert allocator.preload_env({allocator.SWITCH: "system"}, LIB) is None
    assert allocator.preload_env({allocator.SWITCH: "SYSTEM"}, LIB) is None


def test_find_tcmalloc_looks_in_the_library_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(allocator, "DIRECTORIES", (str(tmp_path / "none"), str(tmp_path)))
    assert allocator.find_tcmalloc() is None
    (tmp_path / "libtcmalloc.so.4").write_bytes(b"")
    assert allocator.find_tcmalloc() == str(tmp_path / "libtcmalloc.so.4")


@pytest.mark.skipif(
    allocator.find_tcmalloc() is None,
    reason="TCMalloc not installed: apt-get install libtcmalloc-minimal4 (.ci/run does)",
)
@pytest.mark.slow
def test_the_command_runs_under_tcmalloc_unless_told_not_to(tiny_corpus):
    args = (
        "bench",
        "input",
        f"--data={tiny_corpus}",
        "--json",
        "--steps=2",
        "--batch_size=4",
        "--clip_seconds=1",
    )
    r = run_s2f(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["allocator"] == "tcmalloc"
    assert "tcmalloc: large alloc" not in r.stderr
    r = run_s2f(*args, env={allocator.SWITCH: "system"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["allocator"] == "system"
