"""Quiet by default: what the `s2f` command does before TensorFlow loads.

TensorFlow 2.21 writes C++ log lines to stderr before its logging is initialised ("All log messages
before absl::InitializeLog() ...", "Could not find cuda drivers", "failed call to cuInit"), and no
environment variable silences those; Apache Beam workers print "apitools not found" and "Logging
handler created." lines a user cannot act on. So at verbosity 0 the command:
  - sets TF_CPP_MIN_LOG_LEVEL=1 (TensorFlow's C++ INFO lines; its warnings reach the filter, so
    that a GPU library's load failure can be seen) before TensorFlow is imported;
  - sends its stderr (file descriptor 2, which child processes such as Beam workers inherit)
    through a filter that drops the NOISE lines below: C++ INFO and WARNING lines, the
    "oneDNN supports DT_STRING only on platforms with AVX-512" error (TF then uses its own kernel), and
    Beam's chatter; everything else passes unchanged (errors, tracebacks, our own messages), one
    whole line at a time;
  - never drops a GPU failure (GPU_FAILURES: no CUDA driver, a failed cuInit, a GPU library that does
    not load) on a machine that looks meant to use a GPU (`gpu_expected`: an NVIDIA driver or device
    node, or CUDA_VISIBLE_DEVICES; on any other machine they are the normal CPU-only case and dropped):
    the first one becomes one readable warning line (`gpu_warning`), and the ones that
    follow it (the same failure, told again) are dropped, so a run that meant to use a GPU says why
    it cannot, in one line;
  - sets Python logging to WARNING (absl, Beam) and ERROR for Beam's own chatter.
`--verbosity=1` (or more) skips all of it and shows every line.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import sys
import threading

NOISE = tuple(
    re.compile(p)
    for p in (
        rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
        rb"^[IW]\d{4} [\d:. ]+\d+ \S+\.(cc|h):\d+\] ",  # C++ INFO / WARNING lines
        rb"^E\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] oneDNN supports DT_STRING only on",  # falls back to Eigen
        rb"apitools not found, and bigquery client libraries are not available",
        rb"^INFO:__main__:Logging handler created\.",
        rb"^oneDNN custom operations are on",
        rb"^To enable the following instructions: .* in other operations, rebuild TensorFlow",
        rb"^This TensorFlow binary is optimized to use available CPU instructions",
    )
)


# TensorFlow's lines saying it cannot use a GPU (checked before NOISE: never dropped unseen).
GPU_FAILURES = tuple(
    re.compile(p)
    for p in (
        rb"Could not find cuda drivers on your machine",
        rb"failed call to cuInit",
        rb"Cannot dlopen some GPU libraries",
        rb"Could not load dynamic library '?lib(cu|nv)",
        rb"^Skipping registering GPU devices",  # the second line of "Cannot dlopen ..."
    )
)
_CPP_PREFIX = re.compile(rb"^[IWEF]\d{4} [\d:. ]+\d+ \S+\.(cc|h):\d+\] ")


def is_noise(line: bytes) -> bool:
    return any(p.search(line) for p in NOISE)


def is_gpu_failure(line: bytes) -> bool:
    return any(p.search(line) for p in GPU_FAILURES)


def gpu_warning(line: bytes) -> bytes:
    """A GPU failure line of TensorFlow's -> one readable warning line (with its newline)."""
    cause = _CPP_PREFIX.sub(b"", line.strip())
    cause = cause.split(b". Please make sure")[0].rstrip(b".")
    return (
        b"s2f: warning: TensorFlow cannot use a GPU (" + cause + b"): it runs on the CPU; "
        b"BUILD.md (GPUs) says how to set one up, and --require_accelerator stops instead\n"
    )


def gpu_expected() -> bool:
    """Whether this machine looks meant to run on an NVIDIA GPU: its driver is loaded, a device node
    exists, or CUDA_VISIBLE_DEVICES names a device. Without any of these, TensorFlow's "could not find
    cuda drivers" and cuInit lines are the normal state of a CPU-only machine, not a failure."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return (
        os.path.exists("/proc/driver/nvidia")
        or os.path.exists("/dev/nvidia0")
        or visible not in ("", "-1")
    )


class _Filter:
    """One stream's filter: NOISE dropped, the first GPU failure turned into `gpu_warning` where a
    GPU is expected (`gpu_expected`; dropped as noise where none is)."""

    def __init__(self, expect_gpu: bool | None = None):
        self.warned = False
        self.expect_gpu = gpu_expected() if expect_gpu is None else expect_gpu

    def __call__(self, line: bytes, end: bytes = b"\n") -> bytes:
        """What to write for `line` (`end`: its newline, none for a partial line)."""
        if is_gpu_failure(line):
            if self.warned or not self.expect_gpu:
                return b""
            self.warned = True
            return gpu_warning(line)
        return b"" if is_noise(line) else line + end


def _pump(
    read_fd: int, write_fd: int, partial_seconds: float = 0.5, expect_gpu: bool | None = None
) -> None:
    """Copies `read_fd` to `write_fd` line by line through `_Filter`. A partial line (a prompt,
    a carriage-return redraw) is passed on once nothing more has come for `partial_seconds`."""
    pending = b""
    keep = _Filter(expect_gpu)
    while True:
        ready, _, _ = select.select([read_fd], [], [], partial_seconds if pending else None)
        if not ready:  # a partial line, and a pause
            os.write(write_fd, keep(pending, end=b""))
            pending = b""
            continue
        try:
            chunk = os.read(read_fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(keep(line) for line in lines)
        if kept:
            os.write(write_fd, kept)
    if pending:
        os.write(write_fd, keep(pending, end=b""))
    os.close(read_fd)


def install(verbosity: int = 0) -> None:
    """Call once, first thing, before TensorFlow, Keras or Beam are imported."""
    if verbosity > 0:
        logging.basicConfig(level=logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    try:
        real = os.dup(2)
        read_fd, write_fd = os.pipe()
    except OSError:
        return  # no stderr to filter
    sys.stderr.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, real), name="s2f-stderr", daemon=True)
    pump.start()

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # closes this process's write end: the pump sees EOF ...
        pump.join(timeout=5.0)  # ... once child processes holding it have exited

    atexit.register(restore)
