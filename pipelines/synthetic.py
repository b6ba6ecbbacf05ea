"""`s2f prepare synthetic`: the embedded default corpus (s2f_tf/synthetic/) as TFRecords.

One item per (identity, clip); the split is decided per identity (speaker-disjoint).
"""

from __future__ import annotations

import dataclasses
from typing import Any

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
      raise ValueError(f"need at least 1 identity and 1 clip per identity, got "
                       f"{self.identities} x {self.clips_per_identity}")
    if self.image_size < 16:
      raise ValueError(f"image_size must be >= 16, got {self.image_size}")

  def list_items(self) -> list[dict[str, Any]]:
    items = []
    for i in range(self.identities):
      split = synthetic.split_of(self.seed, i)
      for c in range(self.clips_per_identity):
        items.append({"item_id": f"id{i:06d}/{c:04d}", "speaker_id": f"id{i:06d}", "split": split,
                      "identity": i, "clip": c})
    return items

  def process(self, item: dict[str, Any], speaker_index: int) -> schema.Clip:
    d = synthetic.make_clip(self.seed, item["identity"], item["clip"], self.image_size)
    return schema.Clip(
        clip_id=item["item_id"], speaker_id=item["speaker_id"], speaker_index=speaker_index,
        split=item["split"], pcm=d["pcm"], face_png=schema.encode_png(d["face"]),
        face_size=self.image_size, landmarks=d["landmarks"],
        attributes={k: float(v) for k, v in d["attributes"].items()},
        source_path=f"synthetic:seed={self.seed}", source_start=0.0,
        source_end=len(d["pcm"]) / schema.SAMPLE_RATE, text=d["text"])

  def info(self) -> dict[str, Any]:
    return {"image_size": self.image_size, "num_landmarks": synthetic.NUM_LANDMARKS,
            "attribute_names": sorted(synthetic.ATTRIBUTE_NAMES)}
