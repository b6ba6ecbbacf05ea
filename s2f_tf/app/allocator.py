"""The memory allocator the `s2f` command runs under: TCMalloc when the machine has it.

TensorFlow on the CPU takes every tensor's memory from malloc. glibc's malloc serves large blocks
(above its mmap threshold, which grows only to 32 MB) with fresh pages from the kernel and returns
them on free, so each batch's buffers are faulted in again. On a virtual machine where a page
fault is slow this dominates the input pipeline: on the 2-core AMD EPYC of BUILD.md's measured
figures, a first write to fresh memory ran at 0.5 GB/s against 26 GB/s for memory already mapped.
TCMalloc keeps freed pages for reuse (TensorFlow's own performance guide recommends it on CPUs).
Measured there, same corpora, interleaved: `s2f bench input` at 6 s +50-65%, the paper voice step
+11%; the development server unchanged.

  reexec_with_tcmalloc(argv)   called first by the `s2f` command: when TCMalloc is installed
                               (Debian: libtcmalloc-minimal4) and not yet loaded, re-executes the
                               same command with it preloaded (same process id, same arguments,
                               children such as Beam workers inherit it); otherwise returns
  loaded()                     "tcmalloc" or "system": every `s2f bench` figure says which
S2F_ALLOCATOR=system keeps glibc's malloc. A library user loads it the same way:
LD_PRELOAD=<path of libtcmalloc_minimal.so.4> python ...
"""

from __future__ import annotations

import os
import sys

LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
DIRECTORIES = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)
SWITCH = "S2F_ALLOCATOR"  # "system": never preload


def find_tcmalloc() -> str | None:
    """The first TCMalloc shared library in the usual places, or None."""
    for directory in DIRECTORIES:
        for name in LIBRARIES:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
    return None


def preload_env(env: dict[str, str], library: str) -> dict[str, str] | None:
    """The environment to re-execute with, or None when nothing is to change (the switch says
    system, or TCMalloc is already preloaded)."""
    if env.get(SWITCH, "").lower() == "system":
        return None
    preloaded = env.get("LD_PRELOAD", "")
    if any(
        os.path.basename(p).startswith("libtcmalloc") for p in preloaded.replace(":", " ").split()
    ):
        return None
    out = dict(env)
    out["LD_PRELOAD"] = f"{library} {preloaded}".strip()
    # TCMalloc reports each allocation over 1 GB on stderr; the paper preset makes such blocks.
    out.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    return out


def loaded() -> str:
    """Which allocator this process runs under: "tcmalloc" (mapped into it) or "system"."""
    try:
        with open("/proc/self/maps") as f:
            return "tcmalloc" if "libtcmalloc" in f.read() else "system"
    except OSError:
        return "system"


def reexec_with_tcmalloc(argv: list[str]) -> None:
    """Replaces this process with `python -m s2f_tf.app.cli argv...` under TCMalloc, when it applies
    (Linux, TCMalloc found, not yet loaded, not switched off). Returns only when it does not."""
    if not sys.platform.startswith("linux"):
        return
    library = find_tcmalloc()
    env = preload_env(dict(os.environ), library) if library else None
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "s2f_tf.app.cli", *argv], env)
    except OSError:
        return  # cannot re-execute: run on with glibc's malloc
