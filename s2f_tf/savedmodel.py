"""An export of `s2f export`, loaded and called the one way `s2f predict` (s2f_tf/predict.py) and the
development server (serving/servable.py) both use:

  load(path)                    one version directory -> the loaded SavedModel; S2FError when it is
                                not a loadable SavedModel or has no contract.SIGNATURE
  call(fn, input_name, array)   one signature on a checked input -> {output name: ndarray}; a failure
                                inside the model is a ModelError (an S2FError that keeps TF's error
                                code), "model error: " and TF's message without its preamble
  clean_tf_message(message)     that cleaning

Imports only the contract of s2f's (serving may import it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from s2f_tf import contract


class ModelError(contract.S2FError):
    """A failure inside the model (a graph assertion, ...); `error_code` is TF's (tf.errors)."""

    def __init__(self, message: str, error_code: int):
        super().__init__(message)
        self.error_code = error_code


def load(path: str) -> Any:
    """The SavedModel in `path` (one version directory), checked to have contract.SIGNATURE."""
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise contract.S2FError(f"{path} is not a loadable SavedModel: {e}") from None
    if contract.SIGNATURE not in loaded.signatures:
        raise contract.S2FError(
            f"{path} has no {contract.SIGNATURE!r} signature (has {sorted(loaded.signatures)})"
        )
    return loaded


def call(fn, input_name: str, array: np.ndarray) -> dict[str, np.ndarray]:
    """One signature (`loaded.signatures[name]`) on a checked input [B, ...] -> {output name:
    ndarray}; raises ModelError for a failure inside the model."""
    try:
        out = fn(**{input_name: tf.constant(array)})
    except tf.errors.OpError as e:
        raise ModelError(f"model error: {clean_tf_message(e.message)}", e.error_code) from None
    return {k: v.numpy() for k, v in out.items()}


def clean_tf_message(message: str) -> str:
    """The useful part of a TensorFlow graph error ("assertion failed: [waveform too short ...]"),
    without TF's "Graph execution error: Detected at node ..." preamble."""
    lines = [line.strip() for line in str(message).splitlines()]
    noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[", "Op:")
    lines = [line for line in lines if line and not line.startswith(noise)]
    return " ".join(lines)[:2000] or str(message)[:2000]
