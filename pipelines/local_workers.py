"""A prepare run's worker processes on this machine, and what a stopped or lost worker leaves.

workers_stderr      the local workers' stderr away from the terminal unless logging is loud
stopping_cleanly    SIGTERM / SIGINT while the pipeline runs: stop the local workers, remove the
                    temporary files of the shards in flight, say how many shards were kept
remove_temporaries  the temporary files of writers that are gone (stopped, or killed remote
                    workers whose shards another worker wrote again)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from pipelines import storage
from s2f_tf.contract import StoppedError


@contextlib.contextmanager
def workers_stderr(loud: bool):
    """Unless logging is loud, the local workers' stderr (their tracebacks of a failure the pipeline
    raises anyway, their exit on a full disk) goes to an unnamed temporary file, not the terminal:
    file descriptor 2 is swapped while the pipeline starts and runs (workers inherit it)."""
    if loud:
        yield
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def remove_temporaries(out_dir: str) -> None:
    """The temporary files (storage.write_atomic's) of writers that are gone: stopped, or killed (a
    lost remote worker's shard was then written again by another)."""
    storage.remove(storage.glob(storage.join(out_dir, "*.tmp-*")))


class _Stop(BaseException):
    """SIGTERM in the driver, raised where the pipeline runs (BaseException: Beam does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stopping_cleanly(out_dir: str, finished: Callable[[], int], total: int):
    """SIGTERM (a scheduler's notice) or SIGINT while the pipeline runs: the local workers are told to
    stop, the temporary files of the shards in flight are removed once they have gone, and
    StoppedError says how many shards were finished (kept: `finished()` of `total`) and to rerun.
    A rerun then does only the shards that were not finished, and ends byte-identical to an
    uninterrupted run."""
    installed = threading.current_thread() is threading.main_thread()
    if installed:

        def stop(signum, frame):
            _quiet_stopped_workers()
            _signal_workers(signal.SIGTERM)
            raise _Stop(signum)

        previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except (_Stop, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, _Stop) else signal.SIGINT
        _quiet_stopped_workers()
        _signal_workers(signal.SIGTERM)
        _wait_for_workers()
        remove_temporaries(out_dir)
        raise StoppedError(
            f"stopped by {signal.Signals(signum).name}: {finished()} of {total} shards "
            f"finished and kept in {out_dir}, no temporary file left; rerun the same command to "
            "continue",
            signum,
        ) from None
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)


def _quiet_stopped_workers() -> None:
    """The runner's threads report the workers stopped here ("Worker subprocess exited with return
    code -15") as exceptions: not news once we stop them."""
    default = threading.excepthook

    def hook(args):
        if "Worker subprocess exited" not in str(args.exc_value):
            default(args)

    threading.excepthook = hook


def _workers() -> list[int]:
    """The process ids of this process's living descendants (the DirectRunner's workers; Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":  # a zombie has gone
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _signal_workers(signum: int) -> None:
    for pid in _workers():
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def _wait_for_workers(seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_workers(signal.SIGKILL)  # what is left after the grace period
    while _workers() and time.monotonic() < deadline + 5.0:
        time.sleep(0.1)
