"""Clips: one identity's voice and face, paired.

  make_clip(seed, identity_index, clip_index, image_size) -> {"pcm", "face", "landmarks", "text", ...}

The text is redrawn or extended until the speech lasts [min_seconds, max_seconds] (at most
MAX_TEXT_TRIES texts; then it is truncated with a fade).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from s2f_tf.contract import SAMPLE_RATE, SPLIT_FRACTIONS
from s2f_tf.synthetic.face import draw_face
from s2f_tf.synthetic.identity import make_identity, split_of
from s2f_tf.synthetic.params import (
    MAX_SECONDS,
    MAX_TEXT_TRIES,
    MIN_SECONDS,
    TAG_FACE,
    TAG_TEXT,
    TAG_VOICE,
)
from s2f_tf.synthetic.text import sentence
from s2f_tf.synthetic.voice import synthesize_voice


def make_clip(
    seed: int,
    identity_index: int,
    clip_index: int,
    image_size: int,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
) -> dict[str, Any]:
    """One paired clip of identity `identity_index`; deterministic in all arguments.

    Returns {"pcm": int16 [samples] (16 kHz), "face": uint8 [S, S, 3], "landmarks": float32 [68, 2],
    "text": str, "identity": int, "clip": int, "split": str, "attributes": dict[str, float]}.
    """
    identity = make_identity(seed, identity_index)
    text_rng = np.random.default_rng([seed, identity_index, clip_index, TAG_TEXT])
    face_rng = np.random.default_rng([seed, identity_index, clip_index, TAG_FACE])
    pcm = np.zeros([0], np.int16)
    text = ""
    for attempt in range(MAX_TEXT_TRIES):
        text = sentence(text_rng)
        for extension in range(4):  # too short: add a sentence
            voice_rng = np.random.default_rng(
                [seed, identity_index, clip_index, TAG_VOICE, attempt, extension]
            )
            pcm = synthesize_voice(identity, text, voice_rng)
            if len(pcm) >= min_seconds * SAMPLE_RATE:
                break
            text = text + " " + sentence(text_rng)
        if len(pcm) <= max_seconds * SAMPLE_RATE:
            break
    if len(pcm) > max_seconds * SAMPLE_RATE:  # still too long: truncate with a fade
        n = int(max_seconds * SAMPLE_RATE)
        fade = np.linspace(1.0, 0.0, int(0.05 * SAMPLE_RATE))
        pcm = pcm[:n].astype(np.float64)
        pcm[-len(fade) :] *= fade
        pcm = np.round(pcm).astype(np.int16)
    face, landmarks = draw_face(identity, image_size, face_rng)
    return {
        "pcm": pcm,
        "face": face,
        "landmarks": landmarks,
        "text": text,
        "identity": int(identity_index),
        "clip": int(clip_index),
        "split": split_of(seed, identity_index, fractions),
        "attributes": identity.attributes(),
    }
