"""The face decoder's targets, made once in `prepare` instead of at every training step.

  target/image      the face the decoder learns to draw: the source's choice (synthetic: the
                    identity's canonical face; real data: the clip's own aligned crop)
  target/landmarks  its landmarks
  target/texture    target/image warped from target/landmarks to the dataset's mean landmarks, with
                    the decoder's own spline warp (s2f_tf.models.warp.sparse_image_warp, the border
                    points and regularization of config.face_decoder) sampled with the quintic
                    B-spline (s2f_tf.factory.TEXTURE_INTERPOLATION); dataset.json's texture_warp
                    records the three

The decoder's texture loss compares its texture with target/texture, so training decodes a PNG
where it used to solve a spline and warp every image of every batch.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import numpy as np

from s2f_tf.data import schema


@dataclasses.dataclass(frozen=True)
class TextureSpec:
    """How target/texture is made (picklable: Beam ships it to the workers)."""

    mean_landmarks: tuple[tuple[float, float], ...]  # [K, 2] normalised (x, y)
    border_points: int = 4
    regularization: float = 1e-4
    interpolation: str = "bilinear"

    def warp_settings(self) -> dict:
        return {
            "border_points": self.border_points,
            "regularization": self.regularization,
            "interpolation": self.interpolation,
        }


@functools.lru_cache(maxsize=4)
def _warp_fn(spec: TextureSpec):
    import tensorflow as tf

    from s2f_tf.models.warp import sparse_image_warp

    mean = tf.constant(spec.mean_landmarks, tf.float32)[None]  # [1, K, 2]

    @tf.function(reduce_retracing=True)
    def warp(image, landmarks):  # [1, S, S, 3] 0..1, [1, K, 2]
        warped, _ = sparse_image_warp(
            image,
            landmarks,
            mean,
            num_border_points=spec.border_points,
            regularization=spec.regularization,
            interpolation=spec.interpolation,
        )
        return warped

    return warp


def warp_to_mean(image: np.ndarray, landmarks: np.ndarray, spec: TextureSpec) -> np.ndarray:
    """uint8 [S, S, 3] with its landmarks [K, 2] -> uint8 [S, S, 3] aligned to spec.mean_landmarks."""
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.shape != (len(spec.mean_landmarks), 2):
        raise ValueError(
            f"target landmarks {landmarks.shape} do not match the mean layout "
            f"[{len(spec.mean_landmarks)}, 2]"
        )
    warped = _warp_fn(spec)(np.asarray(image, np.float32)[None] / 255.0, landmarks[None]).numpy()[0]
    return np.clip(np.round(warped * 255.0), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=2048)  # synthetic: every clip of an identity shares its target
def _texture_png(target_png: bytes, landmarks: bytes, spec: TextureSpec) -> bytes:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(target_png)).convert("RGB"))
    return schema.encode_png(
        warp_to_mean(image, np.frombuffer(landmarks, np.float32).reshape(-1, 2), spec)
    )


def fill_targets(clip: schema.Clip, spec: TextureSpec) -> schema.Clip:
    """Completes a source's clip: the target defaults to the clip's own face; adds target/texture."""
    if not clip.target_png:
        clip.target_png, clip.target_landmarks = clip.face_png, clip.landmarks
    clip.target_landmarks = np.asarray(clip.target_landmarks, np.float32)
    clip.texture_png = _texture_png(clip.target_png, clip.target_landmarks.tobytes(), spec)
    return clip
