"""Faces: draws an identity's face, with per-clip pose, expression, lighting, background and clothes,
or its canonical face (the face decoder's target).

  draw_face(identity, image_size, rng)
      -> (uint8 [S, S, 3] RGB, float32 [68, 2] landmarks (x, y) in [0, 1])
  draw_canonical_face(identity, image_size)   -> the same for CANONICAL_LOOK (frontal, neutral, even
                                                 light, plain background, a fixed shirt, no noise)
  render_face(identity, image_size, look)     -> both of the above: one drawing, a `Look` apart

Drawn with PIL at SUPERSAMPLE x the output size (at most MAX_CANVAS px) in normalised coordinates
through a pose transform (parts.py's _Canvas, which also draws each part), box-downsampled, then lit
and noised.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math

import numpy as np

from s2f_tf.synthetic.identity import Identity
from s2f_tf.synthetic.params import (
    BACKGROUND_GRADIENT,
    BROW_RAISE_SIGMA,
    CANONICAL_BACKGROUND_RGB,
    CANONICAL_SHIRT_RGB,
    EYE_Y,
    FACE_CX,
    KEY_LIGHT,
    LIGHT_GAIN_SIGMA,
    LIGHT_GRADIENT,
    MAX_CANVAS,
    MOUTH_OPEN_MAX,
    PIXEL_NOISE_SIGMA,
    POSE_ROT_DEG,
    POSE_SCALE_SIGMA,
    POSE_SHIFT,
    SMILE_RANGE,
    SUPERSAMPLE,
)
from s2f_tf.synthetic.parts import (
    _Canvas,
    _draw_back_hair,
    _draw_beard,
    _draw_brows,
    _draw_ears,
    _draw_eyes,
    _draw_front_hair,
    _draw_mouth,
    _draw_neck,
    _draw_nose,
    _draw_shirt,
    _draw_skin,
    _draw_wrinkles,
)
from s2f_tf.synthetic.shapes import _landmarks


@dataclasses.dataclass(frozen=True)
class Look:
    """What changes between two photos of one person: pose, expression, gaze, light, background, clothes."""

    rotation: float = 0.0  # in-plane, radians
    shift: tuple[float, float] = (0.0, 0.0)  # normalised image fractions
    scale: float = 1.0
    smile: float = 0.0
    mouth_open: float = 0.0
    brow_raise: float = 0.0
    gaze: tuple[float, float] = (0.0, 0.0)
    background_rgb: tuple[float, float, float] = CANONICAL_BACKGROUND_RGB
    background_gradient: float = 0.0  # relative darkening from top to bottom
    light_direction: float = 0.0  # radians
    light_gradient: float = 0.0
    light_gain: float = 1.0
    noise_seed: int | None = None  # None: no sensor noise
    shirt_rgb: tuple[int, int, int] = CANONICAL_SHIRT_RGB


CANONICAL_LOOK = Look()  # frontal, neutral, even light, plain background


def random_look(rng: np.random.Generator) -> Look:
    """One clip's look, drawn from `rng` (a fixed number of draws, in a fixed order)."""
    rot = math.radians(
        float(np.clip(rng.normal(0, POSE_ROT_DEG), -2 * POSE_ROT_DEG, 2 * POSE_ROT_DEG))
    )
    shift = np.clip(rng.normal(0, POSE_SHIFT, size=2), -2 * POSE_SHIFT, 2 * POSE_SHIFT)
    scale = math.exp(
        float(np.clip(rng.normal(0, POSE_SCALE_SIGMA), -2 * POSE_SCALE_SIGMA, 2 * POSE_SCALE_SIGMA))
    )
    smile, mouth_open = float(rng.uniform(*SMILE_RANGE)), float(MOUTH_OPEN_MAX * rng.random() ** 2)
    brow_raise = float(rng.normal(0, BROW_RAISE_SIGMA))
    gaze = rng.normal(0, 0.15, size=2)
    bg_hsv = (rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.35, 0.92))
    light_dir = rng.uniform(0, 2 * math.pi)
    light_amp = rng.uniform(0, LIGHT_GRADIENT)
    light_gain = math.exp(rng.normal(0, LIGHT_GAIN_SIGMA))
    noise_seed = int(rng.integers(0, 2**63 - 1))
    shirt_rgb = tuple(
        int(c) for c in rng.integers(20, 236, size=3)
    )  # clothes change between videos
    return Look(
        rotation=rot,
        shift=(float(shift[0]), float(shift[1])),
        scale=scale,
        smile=smile,
        mouth_open=mouth_open,
        brow_raise=brow_raise,
        gaze=(float(gaze[0]), float(gaze[1])),
        background_rgb=tuple(float(c) * 255.0 for c in colorsys.hsv_to_rgb(*bg_hsv)),
        background_gradient=BACKGROUND_GRADIENT,
        light_direction=float(light_dir),
        light_gradient=float(light_amp),
        light_gain=light_gain,
        noise_seed=noise_seed,
        shirt_rgb=shirt_rgb,
    )


def draw_face(
    identity: Identity, image_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draws `identity`'s face as one clip shows it: (uint8 [S, S, 3] RGB, float32 [68, 2] landmarks).

    Per-clip variation (pose, expression, lighting, background, clothes) comes from `rng`.
    """
    return render_face(identity, image_size, random_look(rng))


def draw_canonical_face(identity: Identity, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`identity`'s canonical face: frontal, neutral expression, even light, plain background, a fixed
    shirt, no noise. Deterministic per identity; the face decoder's target."""
    return render_face(identity, image_size, CANONICAL_LOOK)


def canonical_landmarks(identity: Identity) -> np.ndarray:
    """float32 [68, 2]: the landmarks of `identity`'s canonical face (without drawing it)."""
    look = CANONICAL_LOOK
    return _landmarks(
        identity, {"smile": look.smile, "open": look.mouth_open, "brow_raise": look.brow_raise}
    ).astype(np.float32)


def render_face(identity: Identity, image_size: int, look: Look) -> tuple[np.ndarray, np.ndarray]:
    """Draws `identity` with `look`.

    Returns (uint8 [S, S, 3] RGB, float32 [68, 2] landmarks (x, y) in [0, 1]).

    Landmarks are exact for the drawn face (its features are drawn from them); pixel column j has
    x = (j + 0.5) / S.
    """
    S = int(image_size)
    if S < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    expr = {"smile": look.smile, "open": look.mouth_open, "brow_raise": look.brow_raise}
    pose = _pose(look)
    scale_px = max(1, min(SUPERSAMPLE, MAX_CANVAS // S))
    cv = _Canvas(S, scale_px, _background(look, S * scale_px), pose)
    lm = _landmarks(identity, expr)  # [68, 2] canonical
    _draw_parts(cv, identity, lm, look)
    img = cv.image.reduce(scale_px) if scale_px > 1 else cv.image
    face = _light_and_noise(np.asarray(img, np.float32), look, pose)
    posed = lm @ np.array(pose[:, :2]).T + pose[:, 2]  # [68, 2]
    return face, posed.astype(np.float32)


def _pose(look: Look) -> np.ndarray:
    """float [2, 3]: the affine pose on normalised coordinates: rotate/scale about the image centre,
    then shift."""
    rot, shift, scale = look.rotation, np.asarray(look.shift), look.scale
    c, s = math.cos(rot) * scale, math.sin(rot) * scale
    A = np.array([[c, -s], [s, c]])
    centre = np.array([0.5, 0.5])
    return np.concatenate([A, (centre - A @ centre + shift)[:, None]], axis=1)  # [2, 3]


def _background(look: Look, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: a vertical gradient of a muted colour."""
    P = size
    bg = np.array(look.background_rgb)
    yy = np.linspace(-0.5, 0.5, P)[:, None, None]
    background = np.clip(
        bg[None, None, :] * (1.0 - look.background_gradient * yy), 0, 255
    ) * np.ones([1, P, 1])
    return background.astype(np.uint8)


def _draw_parts(cv: _Canvas, idt: Identity, lm: np.ndarray, look: Look) -> None:
    """Every part of the face, back to front (parts.py)."""
    _draw_shirt(cv, idt, look.shirt_rgb)
    _draw_back_hair(cv, idt)  # behind head and shoulders
    _draw_neck(cv, idt)
    _draw_ears(cv, idt, lm)
    _draw_skin(cv, idt, lm)
    _draw_wrinkles(cv, idt, lm)
    _draw_beard(cv, idt, lm)
    _draw_nose(cv, idt, lm)
    _draw_eyes(cv, idt, lm, np.asarray(look.gaze))
    _draw_brows(cv, idt, lm)
    _draw_mouth(cv, idt, lm, look.mouth_open)
    _draw_front_hair(cv, idt, lm)


def _light_and_noise(out: np.ndarray, look: Look, pose: np.ndarray) -> np.ndarray:
    """float32 [S, S, 3] downsampled drawing -> uint8: a light gradient and a key light on the face,
    then sensor noise."""
    S = out.shape[0]
    grid = (np.arange(S) + 0.5) / S - 0.5
    gx, gy = np.meshgrid(grid, grid)
    light = look.light_gain * (
        1.0
        + look.light_gradient
        * (math.cos(look.light_direction) * gx + math.sin(look.light_direction) * gy)
        * 2.0
    )
    centre_xy = pose[:, :2] @ np.array([FACE_CX, EYE_Y + 0.08]) + pose[:, 2] - 0.5
    light *= 1.0 + KEY_LIGHT * np.exp(
        -(((gx - centre_xy[0]) / 0.22) ** 2 + ((gy - centre_xy[1]) / 0.28) ** 2)
    )
    out = out * light[:, :, None]
    if look.noise_seed is not None:
        out += np.random.default_rng(look.noise_seed).normal(0.0, PIXEL_NOISE_SIGMA, size=out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
