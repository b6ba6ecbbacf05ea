"""The figures `s2f evaluate` reports, as plain functions of arrays (numpy; no model, no TF).

  similarity_figures(v_s, v_f)            angle, L2, L1 between unit-normalised features
  galleries(speakers, size)               per query: its own clip + one clip of G-1 other speakers
  retrieval_figures(queries, faces, ...)  recall@K of each query's own face in its gallery, with
                                          the gallery size and chance; used for features from the
                                          voice and for decoded faces re-encoded by the face encoder
  mean_squared_laplacian(images)          the fine-detail energy of each image (grey, interior pixels)
  sharpness_figures(decoded, references)  decoded faces' fine-detail energy relative to references
"""

from __future__ import annotations

import numpy as np

KS = (1, 2, 5, 10)
LUMA = (0.299, 0.587, 0.114)             # ITU-R BT.601 grey from RGB


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def similarity_figures(v_s: np.ndarray, v_f: np.ndarray) -> dict:
  """[N, D] x2 -> angle (deg), L2, L1 between unit-normalised features: mean and std."""
  a, b = _unit(v_s), _unit(v_f)
  cos = np.clip(np.sum(a * b, axis=1), -1.0, 1.0)
  angle = np.degrees(np.arccos(cos))
  l2 = np.linalg.norm(a - b, axis=1)
  l1 = np.abs(a - b).sum(axis=1)
  return {name: {"mean": float(v.mean()), "std": float(v.std())}
          for name, v in (("cosine_angle_degrees", angle), ("l2", l2), ("l1", l1))}


def galleries(speakers: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
  """Per query i: [own clip i, one clip of each of G-1 other speakers] -> int [N, G]."""
  rng = np.random.default_rng(seed)
  unique = np.unique(speakers)
  size = min(size, len(unique))
  first = {s: int(np.flatnonzero(speakers == s)[0]) for s in unique}
  rows = []
  for i, s in enumerate(speakers):
    others = [first[o] for o in unique if o != s]
    picks = rng.choice(len(others), size=size - 1, replace=False) if size > 1 else []
    rows.append([i] + [others[j] for j in picks])
  return np.asarray(rows, np.int64)


def retrieval_figures(v_s: np.ndarray, v_f: np.ndarray, speakers: np.ndarray, gallery_size: int = 100,
                      seed: int = 0) -> dict:
  """Recall@K of each query's own face within its gallery, by cosine, L1 and L2 distance."""
  gal = galleries(speakers, gallery_size, seed)                                # [N, G]
  g = gal.shape[1]
  out = {"gallery_size": int(g), "queries": int(len(v_s)),
         "chance": {f"R@{k}": min(k, g) / g for k in KS}}
  q = _unit(v_s)
  faces = _unit(v_f)
  for metric in ("cosine", "l2", "l1"):
    cand = faces[gal]                                                          # [N, G, D]
    if metric == "cosine":
      dist = -np.einsum("nd,ngd->ng", q, cand)
    elif metric == "l2":
      dist = np.linalg.norm(cand - q[:, None], axis=-1)
    else:
      dist = np.abs(cand - q[:, None]).sum(-1)
    rank = (dist < dist[:, :1]).sum(axis=1)                                    # own face is column 0
    out[metric] = {f"R@{k}": float(np.mean(rank < k)) for k in KS}
  return out


def mean_squared_laplacian(images: np.ndarray) -> np.ndarray:
  """RGB images [N, S, S, 3] (any scale) -> [N]: the mean over interior pixels of the squared
  4-neighbour Laplacian of the grey image, in the images' own units squared. A blur lowers it; an
  image that copies its reference's detail matches the reference's value."""
  from scipy import ndimage
  grey = np.asarray(images, np.float64) @ np.asarray(LUMA)                  # [N, S, S]
  lap = np.stack([ndimage.laplace(g) for g in grey])                        # [N, S, S]
  return np.mean(np.square(lap[:, 1:-1, 1:-1]), axis=(1, 2))


def sharpness_figures(decoded: np.ndarray, references: dict[str, np.ndarray]) -> dict:
  """Fine-detail energy of decoded faces [N, S, S, 3] relative to each set of reference faces (same
  scale): {name: mean MSL(decoded) / mean MSL(reference)} plus the raw means (1.0: as detailed as
  the reference; the blur of an average face gives a small fraction)."""
  d = mean_squared_laplacian(decoded)
  out = {"decoded_mean_squared_laplacian": float(d.mean())}
  for name, images in references.items():
    r = mean_squared_laplacian(images)
    out[f"{name}_mean_squared_laplacian"] = float(r.mean())
    out[f"relative_to_{name}"] = float(d.mean() / max(r.mean(), 1e-12))
  return out
