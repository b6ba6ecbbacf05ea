"""The `s2f` command: help per command, flags that mean one thing, --version, quiet output, progress."""

import io
import re

import pytest
from conftest import run_s2f

from s2f_tf import __version__
from s2f_tf.app import cli, quiet
from s2f_tf.progress import Progress


def _subparsers(parser):
    """(name, parser) of every command and sub-command."""
    found = []
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for sub in action.choices.values():
                found.append((sub.prog[len("s2f ") :], sub))  # "prepare synthetic", "train", ...
                found += _subparsers(sub)
    return found


def _leaves():
    return [
        (name, p)
        for name, p in _subparsers(cli.build_parser())
        if not any(a.__class__.__name__ == "_SubParsersAction" for a in p._actions)
    ]


def test_every_command_has_help_with_an_example():
    for name, parser in _leaves():
        text = parser.format_help()
        assert "example:" in text and f"s2f {name}" in text, name
        assert "--verbosity" in text, name


def test_a_flag_means_one_thing_everywhere():
    seen = {}
    for name, parser in _leaves():
        for action in parser._actions:
            for flag in action.option_strings:
                kind = (
                    action.type,
                    tuple(action.choices or ()),
                    action.nargs,
                    type(action).__name__,
                )
                if flag in seen:
                    assert seen[flag][1] == kind, (
                        f"{flag} differs between {seen[flag][0]} and {name}"
                    )
                seen.setdefault(flag, (name, kind))
    assert "--out" not in seen  # it used to mean four things


def test_help_and_version_from_the_command_line():
    r = run_s2f("train", "--help")
    assert r.returncode == 0 and "--stage" in r.stdout and "example:" in r.stdout
    assert "Try --helpfull" not in r.stdout
    r = run_s2f("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"s2f {__version__}"
    r = run_s2f("train", "--stage=face_encoder")
    assert (
        r.returncode == 2
        and "required: --workdir, --data" in r.stderr
        and "Traceback" not in r.stderr
    )


@pytest.mark.parametrize(
    "line, noise",
    [
        (
            b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
            True,
        ),
        (
            b"I0000 00:00:1796109316.034283    5004 cudart_stub.cc:31] Could not find cuda drivers on your machine, "  # noqa: E501
            b"GPU will not be used.",
            True,
        ),
        (
            b"E0000 00:00:1796109321.440327    5004 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",  # noqa: E501
            False,
        ),  # a GPU failure: never noise (quiet.gpu_warning rewrites it; tests/test_devices.py)
        (
            b"E0000 00:00:1796149147.435226    2128 util.cc:131] oneDNN supports DT_STRING only on platforms with "  # noqa: E501
            b"AVX-512. Falling back to the default Eigen-based implementation if present.",
            True,
        ),
        (
            b"WARNING:root:apitools not found, and bigquery client libraries are not available despite the import "  # noqa: E501
            b"not raising an ImportError.",
            True,
        ),
        (
            b"E0000 00:00:1796109321.440327    5004 some_op.cc:52] out of memory",
            False,
        ),  # real errors stay
        (b"Traceback (most recent call last):", False),
        (b"s2f train: corrupt data in 1 shard(s)", False),
    ],
)
def test_quiet_filters_exactly_the_noise(line, noise):
    assert quiet.is_noise(line) == noise


@pytest.mark.slow
def test_quiet_by_default_and_loud_on_request():
    q = run_s2f("describe", "--config=tiny")
    assert q.returncode == 0, q.stderr
    # no C++ INFO lines; on a machine without a usable GPU, one warning line saying so
    lines = q.stderr.splitlines()
    assert len(lines) <= 1 and all("cannot use a GPU" in line for line in lines), q.stderr
    loud = run_s2f("describe", "--config=tiny", "--verbosity=1")
    assert loud.returncode == 0 and q.stdout == loud.stdout
    assert len(loud.stderr) > 0  # TensorFlow's own lines come back


def test_progress_writes_plain_lines_off_a_terminal():
    out = io.StringIO()
    p = Progress(100, "stage", stream=out, every_seconds=3600)
    for step in range(1, 101):
        p.update(step, {"loss": 1.0 / step, "examples/s": 250.0})
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\b" not in out.getvalue()
    assert len(lines) == 2  # the first update and the last step
    assert re.fullmatch(r"\[stage\] step 100/100 \(100%\) loss 0\.01 examples/s 250", lines[-1]), (
        lines[-1]
    )
    out = io.StringIO()
    p = Progress(10, "stage", stream=out, every_seconds=0.0)
    for step in range(1, 11):
        p.update(step, {"loss": 2.0})
    assert len(out.getvalue().splitlines()) == 10 and "eta" in out.getvalue().splitlines()[1]
    out = io.StringIO()  # a slow machine: lines bounded
    p = Progress(1000, "stage", stream=out, every_seconds=0.0)
    for step in range(1, 1001):
        p.update(step, {"loss": 1.0})
    assert 20 <= len(out.getvalue().splitlines()) <= 26
    silent = io.StringIO()
    Progress(10, "stage", stream=silent, enabled=False).update(10, {})
    assert silent.getvalue() == ""


@pytest.mark.parametrize(
    "error, says",
    [
        (OSError(28, "No space left on device", "/out/face.png"), "no space left on device"),
        (OSError(30, "Read-only file system", "/out/face.png"), "read-only file system"),
        (RuntimeError("/out/face.png.tmp-4; No space left on device"), "no space left on device"),
    ],
)
def test_a_storage_fault_is_one_line_and_exit_1(monkeypatch, capsys, error, says):
    """The one shared error path (cli._storage_faults): whatever raises it, a storage fault is
    `s2f COMMAND: <fault> writing PATH (what was kept; how to continue)`, exit 1 (not 2, a bad path)."""

    def failing(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "describe", failing)
    assert cli.main(["describe", "--config=tiny"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"s2f describe: {says} writing /out/face.png (free space and rerun)"], err
    monkeypatch.setitem(cli.COMMANDS, "describe", lambda args: open("/nonexistent/x.wav"))
    assert cli.main(["describe", "--config=tiny"]) == 2  # a missing input stays a bad path
