"""`s2f prepare synthetic`: the embedded default corpus (s2f_tf/synthetic/) as TFRecords.

One item per (identity, clip); the split is decided per identity (speaker-disjoint). The face
decoder's target is the identity's canonical face (frontal, neutral, even light, plain background),
while face/image is the clip's own (posed, lit, dressed) face the face encoder learns from.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from s2f_tf import synthetic
from s2f_tf.data import schema


@dataclasses.dataclass
class SyntheticSource:
    identities: int
    clips_per_identity: int
    image_size: int
    seed: int = 0
    name: str = "synthetic"

    def __post_init__(self):
        if self.identities < 1 or self.clips_per_identity < 1:
            raise ValueError(
                f"need at least 1 identity and 1 clip per identity, got "
                f"{self.identities} x {self.clips_per_identity}"
            )
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")

    def list_items(self) -> list[dict[str, Any]]:
        items = []
        for i in range(self.identities):
            split = synthetic.split_of(self.seed, i)
            for c in range(self.clips_per_identity):
                items.append(
                    {
                        "item_id": f"id{i:06d}/{c:04d}",
                        "speaker_id": f"id{i:06d}",
                        "split": split,
                        "identity": i,
                        "clip": c,
                    }
                )
        return items

    def process(self, item: dict[str, Any], speaker_index: int) -> schema.Clip:
        d = synthetic.make_clip(self.seed, item["identity"], item["clip"], self.image_size)
        return schema.Clip(
            clip_id=item["item_id"],
            speaker_id=item["speaker_id"],
            speaker_index=speaker_index,
            split=item["split"],
            pcm=d["pcm"],
            face_png=schema.encode_png(d["face"]),
            face_size=self.image_size,
            landmarks=d["landmarks"],
            target_png=self._canonical(item["identity"]),
            target_landmarks=self._canonical_landmarks(item["identity"]),
            attributes={k: float(v) for k, v in d["attributes"].items()},
            source_path=f"synthetic:seed={self.seed}",
            source_start=0.0,
            source_end=len(d["pcm"]) / schema.SAMPLE_RATE,
            text=d["text"],
        )

    def _canonical(self, identity: int) -> bytes:
        """The identity's canonical face as PNG (drawn once per worker: every clip shares it)."""
        cache = self.__dict__.setdefault("_canonical_pngs", {})
        if identity not in cache:
            face, _ = synthetic.draw_canonical_face(
                synthetic.make_identity(self.seed, identity), self.image_size
            )
            cache[identity] = schema.encode_png(face)
        return cache[identity]

    def _canonical_landmarks(self, identity: int) -> np.ndarray:
        return synthetic.canonical_landmarks(synthetic.make_identity(self.seed, identity))

    @functools.cached_property
    def _mean_landmarks(self) -> list[list[float]]:
        """The mean of the train identities' canonical landmarks (all identities if none is in train)."""
        train = [i for i in range(self.identities) if synthetic.split_of(self.seed, i) == "train"]
        return np.mean(
            [self._canonical_landmarks(i) for i in train or range(self.identities)],
            axis=0,
            dtype=np.float64,
        ).tolist()

    def info(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "num_landmarks": synthetic.NUM_LANDMARKS,
            "attribute_names": sorted(synthetic.ATTRIBUTE_NAMES),
            "attribute_classes": synthetic.ATTRIBUTE_CLASSES,
            "mean_landmarks": self._mean_landmarks,
            "decoder_target": "canonical",
        }
