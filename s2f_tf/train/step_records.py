"""What a checkpointed step leaves beside its checkpoint, and how runs are compared.

StepRecords        each worker's record of each checkpointed step (input position, losses,
                   precision policy, weights' digest), the last K, as small JSON files
replica_digests    a hash of the trained variables on each local replica
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from s2f_tf.files import write_atomic


class StepRecords:
    """What each checkpointed step leaves beside the checkpoint, one small JSON file per step (the
    last `keep`), one directory per worker: <dir>/position-<step>.json =
      {"step": N, "epoch": E, "offset": R,    the worker's input position (dataset.py resumes there)
       "losses": {...},                       that step's loss terms (a run resumed at its end reports them)
       "precision": "...",                    the policy it trained in (a resumed "auto" keeps it)
       "replica_digests": [...]}              its trained variables' hash (compare runs step by step)
    Written before the checkpoint, so every checkpoint has its record."""

    def __init__(self, directory: str, keep: int):
        self.directory, self.keep = directory, max(1, keep)

    def _steps(self) -> list[int]:
        names = tf.io.gfile.listdir(self.directory) if tf.io.gfile.isdir(self.directory) else []
        return sorted(
            int(n[len("position-") : -len(".json")])
            for n in names
            if n.startswith("position-") and n.endswith(".json") and n[9:-5].isdigit()
        )

    def _path(self, step: int) -> str:
        return os.path.join(self.directory, f"position-{step}.json")

    def save(
        self, step: int, position: tuple[int, int], losses: dict, precision: str, variables
    ) -> None:
        tf.io.gfile.makedirs(self.directory)
        write_atomic(
            self._path(step),
            json.dumps(
                {
                    "step": step,
                    "epoch": position[0],
                    "offset": position[1],
                    "losses": losses,
                    "precision": precision,
                    "replica_digests": replica_digests(variables),
                }
            ),
        )
        for old in self._steps()[: -self.keep]:
            tf.io.gfile.remove(self._path(old))

    def latest(self, at_most: int) -> dict | None:
        """The record of the largest step <= `at_most`, or None."""
        usable = [n for n in self._steps() if n <= at_most]
        if not usable:
            return None
        with tf.io.gfile.GFile(self._path(max(usable))) as f:
            return json.load(f)


def replica_digests(variables) -> list[str]:
    """A hash of the trained variables' values on each local replica (identical when in sync)."""
    copies: list[list] = []
    for v in variables:
        value = getattr(v, "value", v)
        parts = getattr(value, "values", None) or (value,)  # MirroredVariable -> per-device copies
        for i, part in enumerate(parts):
            if len(copies) <= i:
                copies.append([])
            copies[i].append(np.asarray(part.numpy()))
    digests = []
    for arrays in copies:
        h = hashlib.sha256()
        for a in arrays:
            h.update(a.tobytes())
        digests.append(h.hexdigest()[:16])
    return digests
