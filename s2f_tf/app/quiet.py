"""Quiet by default: what the `s2f` command does before TensorFlow loads.

TensorFlow 2.21 writes C++ log lines to stderr before its logging is initialised ("All log messages
before absl::InitializeLog() ...", "Could not find cuda drivers", "failed call to cuInit"), and no
environment variable silences those; Apache Beam workers print "apitools not found" and "Logging
handler created." lines a user cannot act on. So at verbosity 0 the command:
  - sets TF_CPP_MIN_LOG_LEVEL=2 (TensorFlow's C++ INFO and WARNING lines; errors still show)
    before TensorFlow is imported;
  - sends its stderr (file descriptor 2, which child processes such as Beam workers inherit)
    through a filter that drops the NOISE lines below: C++ INFO and WARNING lines (the ones
    written before TensorFlow's logging starts), the cuInit error of a machine without a GPU, the
    "oneDNN supports DT_STRING only on platforms with AVX-512" error (TF then uses its own kernel), and
    Beam's chatter; everything else passes unchanged (errors, tracebacks, our own messages), one
    whole line at a time;
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
        rb"^E\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] failed call to cuInit",  # no GPU on this machine
        rb"^E\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] oneDNN supports DT_STRING only on",  # falls back to Eigen
        rb"apitools not found, and bigquery client libraries are not available",
        rb"^INFO:__main__:Logging handler created\.",
        rb"^oneDNN custom operations are on",
        rb"^To enable the following instructions: .* in other operations, rebuild TensorFlow",
        rb"^This TensorFlow binary is optimized to use available CPU instructions",
    )
)


def is_noise(line: bytes) -> bool:
    return any(p.search(line) for p in NOISE)


def _pump(read_fd: int, write_fd: int, partial_seconds: float = 0.5) -> None:
    """Copies `read_fd` to `write_fd` line by line, dropping NOISE lines. A partial line (a prompt,
    a carriage-return redraw) is passed on once nothing more has come for `partial_seconds`."""
    pending = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], partial_seconds if pending else None)
        if not ready:  # a partial line, and a pause
            if not is_noise(pending):
                os.write(write_fd, pending)
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
        kept = b"".join(line + b"\n" for line in lines if not is_noise(line))
        if kept:
            os.write(write_fd, kept)
    if pending and not is_noise(pending):
        os.write(write_fd, pending)
    os.close(read_fd)


def install(verbosity: int = 0) -> None:
    """Call once, first thing, before TensorFlow, Keras or Beam are imported."""
    if verbosity > 0:
        logging.basicConfig(level=logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
