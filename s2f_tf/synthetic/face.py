"""Faces: draws an identity's face, with per-clip pose, expression, lighting, background and clothes,
or its canonical face (the face decoder's target).

  draw_face(identity, image_size, rng)
      -> (uint8 [S, S, 3] RGB, float32 [68, 2] landmarks (x, y) in [0, 1])
  draw_canonical_face(identity, image_size)   -> the same for CANONICAL_LOOK (frontal, neutral, even
                                                 light, plain background, a fixed shirt, no noise)
  render_face(identity, image_size, look)     -> both of the above: one drawing, a `Look` apart

Drawn with PIL at SUPERSAMPLE x the output size (at most MAX_CANVAS px) in normalised coordinates
through a pose transform (_Canvas), box-downsampled, then lit and noised.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from s2f_tf.synthetic.identity import Identity
from s2f_tf.synthetic.params import (
    BACKGROUND_GRADIENT,
    BROW_RAISE_SIGMA,
    CANONICAL_BACKGROUND_RGB,
    CANONICAL_SHIRT_RGB,
    EYE_Y,
    FACE_CX,
    HEAD_TOP_DY,
    JAW_TOP_DY,
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
from s2f_tf.synthetic.shapes import (
    _darker,
    _ellipse,
    _hairline,
    _landmarks,
    _skull_arc,
    _smooth_curve,
)


class _Canvas:
    """A supersampled PIL canvas addressed in normalised coordinates through a pose transform."""

    def __init__(self, size: int, scale: int, background: np.ndarray, pose: np.ndarray):
        self.size, self.scale = size, scale
        self.px = size * scale
        self.image = Image.fromarray(background)
        self.draw = ImageDraw.Draw(self.image, "RGBA")
        self.pose = pose  # [2, 3] affine on normalised coords

    def xy(self, pts: np.ndarray) -> list[tuple[float, float]]:
        """Normalised (un-posed) points [n, 2] -> posed PIL pixel coordinates on the canvas."""
        p = np.asarray(pts, np.float64) @ self.pose[:, :2].T + self.pose[:, 2]
        p = p * self.px - 0.5  # PIL: integer coords at pixel centres
        return [(float(x), float(y)) for x, y in p]

    def poly(self, pts: np.ndarray, fill: Sequence[int], alpha: float = 1.0) -> None:
        self.draw.polygon(self.xy(pts), fill=(*[int(c) for c in fill], int(round(255 * alpha))))

    def line(self, pts: np.ndarray, fill: Sequence[int], width: float, alpha: float = 1.0) -> None:
        w = max(1, int(round(width * self.px)))
        self.draw.line(
            self.xy(pts),
            fill=(*[int(c) for c in fill], int(round(255 * alpha))),
            width=w,
            joint="curve",
        )


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
    idt = identity
    rot, shift, scale = look.rotation, np.asarray(look.shift), look.scale
    expr = {"smile": look.smile, "open": look.mouth_open, "brow_raise": look.brow_raise}
    gaze = np.asarray(look.gaze)

    # pose: rotate/scale about the image centre, then shift (normalised coordinates)
    c, s = math.cos(rot) * scale, math.sin(rot) * scale
    A = np.array([[c, -s], [s, c]])
    centre = np.array([0.5, 0.5])
    pose = np.concatenate([A, (centre - A @ centre + shift)[:, None]], axis=1)  # [2, 3]

    scale_px = max(1, min(SUPERSAMPLE, MAX_CANVAS // S))
    P = S * scale_px
    # background: vertical gradient of a muted colour
    bg = np.array(look.background_rgb)
    yy = np.linspace(-0.5, 0.5, P)[:, None, None]
    background = np.clip(
        bg[None, None, :] * (1.0 - look.background_gradient * yy), 0, 255
    ) * np.ones([1, P, 1])
    cv = _Canvas(S, scale_px, background.astype(np.uint8), pose)

    lm = _landmarks(idt, expr)  # [68, 2] canonical
    cy = EYE_Y + JAW_TOP_DY
    a = idt.face_half_width
    skin = idt.skin_rgb
    skin_shadow = _darker(skin, 0.8)
    hair = idt.hair_rgb
    hair_dark = _darker(hair, 0.75)
    long_styles = ("long", "bangs")

    # ---- shirt, back hair, neck ------------------------------------------------------------------
    nw = idt.neck_half_width
    shirt = np.array(
        [
            (-0.2, 1.2),
            (-0.2, 1.0),
            (FACE_CX - 0.40, 0.955),
            (FACE_CX - nw - 0.03, 0.925),
            (FACE_CX, 0.985 + 0.02 * (idt.sex == 1)),
            (FACE_CX + nw + 0.03, 0.925),
            (FACE_CX + 0.40, 0.955),
            (1.2, 1.0),
            (1.2, 1.2),
        ]
    )
    cv.poly(shirt, look.shirt_rgb)

    # ---- back hair (behind head and shoulders) ---------------------------------------------------
    if idt.hair_style in long_styles or idt.hair_style == "bob":
        v = idt.hair_volume
        top = _skull_arc(idt, 20, grow=v + 0.01, grow_top=v)  # right -> left over the top
        end = idt.hair_length
        spread = 0.06 if idt.hair_style in long_styles else 0.03
        left_side = np.array(
            [
                (FACE_CX - a - v - spread * 0.5, cy + 0.12),
                (FACE_CX - a - v - spread, end - 0.05),
                (FACE_CX - a * 0.7, end),
            ]
        )
        right_side = np.array(
            [
                (FACE_CX + a * 0.7, end),
                (FACE_CX + a + v + spread, end - 0.05),
                (FACE_CX + a + v + spread * 0.5, cy + 0.12),
            ]
        )
        cv.poly(
            _smooth_curve(np.concatenate([top, left_side, right_side]), 4, closed=True),
            _darker(hair, 0.85),
        )

    # ---- neck and shirt --------------------------------------------------------------------------
    neck = np.array(
        [
            (FACE_CX - nw, cy + 0.18),
            (FACE_CX - nw * 1.02, 0.96),
            (FACE_CX - nw * 1.3, 1.05),
            (FACE_CX + nw * 1.3, 1.05),
            (FACE_CX + nw * 1.02, 0.96),
            (FACE_CX + nw, cy + 0.18),
        ]
    )
    cv.poly(neck, skin_shadow)
    # ---- ears ------------------------------------------------------------------------------------
    ear_r = 0.028 * idt.ear_size
    ear_y = EYE_Y + 0.07
    for side in (-1, 1):
        jaw_x = lm[2 if side < 0 else 14, 0]
        ex = jaw_x + side * 0.012
        cv.poly(_ellipse(ex, ear_y, ear_r, ear_r * 2.0, 20, rot=side * 0.15), skin)
        cv.poly(
            _ellipse(ex + side * 0.004, ear_y, ear_r * 0.45, ear_r * 1.3, 16, rot=side * 0.15),
            skin_shadow,
            0.8,
        )

    # ---- face ------------------------------------------------------------------------------------
    face_outline = np.concatenate(
        [lm[0:17], _skull_arc(idt, 24)[1:-1]]
    )  # jaw then skull (right -> left)
    cv.poly(_smooth_curve(face_outline, 3, closed=True), skin)
    # soft shading: darker rim, lighter centre
    cv.line(_smooth_curve(face_outline, 3, closed=True), skin_shadow, 0.012, 0.35)
    # under-chin shadow on the neck is implied by the darker neck colour
    # cheeks
    cheek_col = (210, 90, 90)
    for side in (-1, 1):
        cv.poly(
            _ellipse(FACE_CX + side * (idt.eye_half_spacing + 0.02), EYE_Y + 0.13, 0.055, 0.04, 20),
            cheek_col,
            0.03 + 0.17 * idt.blush,
        )

    # ---- wrinkles and age marks ------------------------------------------------------------------
    wr = idt.wrinkles
    line_col = _darker(skin, 0.62)
    if wr > 0:
        fh_top = EYE_Y - idt.hairline + 0.03
        fh_bottom = lm[19, 1] - 0.025
        n_lines = 1 + int(3 * wr)
        for i in range(n_lines):
            y = fh_bottom - (i + 0.5) * (fh_bottom - fh_top) / (n_lines + 1.0)
            xs = np.linspace(FACE_CX - a * 0.45, FACE_CX + a * 0.45, 7)
            ys = y + 0.006 * np.sin(np.linspace(0, math.pi, 7)) * (-1) ** i
            cv.line(np.stack([xs, ys], 1), line_col, 0.004, 0.25 + 0.5 * wr)
        for side, nose_i, mouth_i in ((-1, 31, 48), (1, 35, 54)):  # nasolabial folds
            p0 = lm[nose_i] + np.array([side * 0.012, -0.012])
            p2 = lm[mouth_i] + np.array([side * 0.018, 0.012])
            p1 = (p0 + p2) / 2 + np.array([side * 0.014, 0.0])
            cv.line(_smooth_curve(np.array([p0, p1, p2]), 5), line_col, 0.0045, 0.15 + 0.6 * wr)
        for side, corner in ((-1, 36), (1, 45)):  # crow's feet
            for k in (-1, 0, 1):
                p0 = lm[corner] + np.array([side * 0.012, 0.0])
                cv.line(
                    np.array([p0, p0 + np.array([side * 0.022, k * 0.012])]),
                    line_col,
                    0.003,
                    0.6 * wr**1.5,
                )
        for _side, (i0, i1) in ((-1, (36, 39)), (1, (42, 45))):  # eye bags
            xs = np.linspace(lm[i0, 0] + 0.005, lm[i1, 0] - 0.005, 6)
            ys = EYE_Y + idt.eye_height * 0.9 + 0.008 * np.sin(np.linspace(0, math.pi, 6))
            cv.line(np.stack([xs, ys], 1), line_col, 0.004, 0.5 * wr)
        for side, j in ((-1, 5), (1, 11)):  # jowls
            p = lm[j] + np.array([-side * 0.02, -0.03])
            cv.line(np.array([p, p + np.array([side * 0.01, 0.03])]), line_col, 0.004, 0.5 * wr**2)

    # ---- beard -----------------------------------------------------------------------------------
    beard_col = _darker(hair, 0.8)
    if idt.beard != "none":
        tip_y = lm[33, 1]
        jaw_out = (lm[2:15] - np.array([FACE_CX, cy])) * 1.015 + np.array([FACE_CX, cy])
        if idt.beard in ("full", "stubble"):
            top_edge = np.array(
                [
                    (lm[14, 0] - 0.02, lm[29, 1] + 0.01),
                    (lm[54, 0] + 0.03, tip_y + 0.02),
                    (lm[35, 0] + 0.005, tip_y + 0.01),
                    (lm[33, 0], tip_y + 0.005),
                    (lm[31, 0] - 0.005, tip_y + 0.01),
                    (lm[48, 0] - 0.03, tip_y + 0.02),
                    (lm[2, 0] + 0.02, lm[29, 1] + 0.01),
                ]
            )
            cv.poly(np.concatenate([jaw_out, top_edge]), beard_col, idt.beard_alpha)
        if idt.beard in ("moustache", "goatee"):
            mo = np.array(
                [
                    lm[48] + (-0.012, 0.004),
                    lm[31] + (-0.004, 0.006),
                    lm[33] + (0, 0.004),
                    lm[35] + (0.004, 0.006),
                    lm[54] + (0.012, 0.004),
                    lm[53] + (0, -0.002),
                    lm[51] + (0, -0.001),
                    lm[49] + (0, -0.002),
                ]
            )
            cv.poly(_smooth_curve(mo, 3, closed=True), beard_col, idt.beard_alpha)
        if idt.beard == "goatee":
            gt = np.array(
                [
                    lm[59] + (-0.01, 0.004),
                    lm[57] + (0, 0.004),
                    lm[55] + (0.01, 0.004),
                    lm[10] + (-0.015, -0.005),
                    lm[8] + (0, 0.006),
                    lm[6] + (0.015, -0.005),
                ]
            )
            cv.poly(_smooth_curve(gt, 3, closed=True), beard_col, idt.beard_alpha)

    # ---- nose ------------------------------------------------------------------------------------
    nose_col = _darker(skin, 0.72)
    for side in (-1, 1):
        bridge = np.array(
            [
                lm[27] + (side * 0.022, 0.01),
                lm[29] + (side * 0.018, 0.0),
                lm[31 if side < 0 else 35],
            ]
        )
        cv.line(_smooth_curve(bridge, 5), nose_col, 0.004, 0.25)
        ala = np.array(
            [
                lm[31 if side < 0 else 35],
                lm[31 if side < 0 else 35] + (side * 0.006, -0.02),
                lm[30] + (side * 0.012, -0.01),
            ]
        )
        cv.line(_smooth_curve(ala, 5), nose_col, 0.0045, 0.55)
    cv.line(_smooth_curve(lm[31:36], 4), nose_col, 0.005, 0.6)
    for side, j in ((-1, 32), (1, 34)):
        cv.poly(
            _ellipse(lm[j, 0] + side * 0.002, lm[j, 1] - 0.004, 0.009, 0.005, 12),
            _darker(skin, 0.4),
            0.8,
        )
    cv.poly(_ellipse(lm[30, 0], lm[30, 1] - 0.008, 0.012, 0.008, 12), (255, 255, 255), 0.12)

    # ---- eyes ------------------------------------------------------------------------------------
    eye_polys = [_smooth_curve(lm[36:42], 4, closed=True), _smooth_curve(lm[42:48], 4, closed=True)]
    for ep in eye_polys:  # socket shadow
        cv.poly(ep + np.array([0.0, -0.006]), _darker(skin, 0.75), 0.35)
    sclera = (238, 234, 228)
    for ep in eye_polys:
        cv.poly(ep, sclera)
    # iris and pupil, clipped to the eye openings
    layer = cv.image.copy()
    ldraw = ImageDraw.Draw(layer, "RGBA")
    mask = Image.new("L", cv.image.size, 0)
    mdraw = ImageDraw.Draw(mask)
    iris_r = idt.eye_height * 0.58
    for _side, (i0, i1) in ((-1, (36, 39)), (1, (42, 45))):
        ecx = (lm[i0, 0] + lm[i1, 0]) / 2 + gaze[0] * idt.eye_width * 0.12
        ecy = EYE_Y + 0.001 + gaze[1] * idt.eye_height * 0.1
        ldraw.polygon(cv.xy(_ellipse(ecx, ecy, iris_r, iris_r, 20)), fill=(*idt.eye_rgb, 255))
        ldraw.polygon(
            cv.xy(_ellipse(ecx, ecy, iris_r * 0.45, iris_r * 0.45, 16)), fill=(15, 12, 12, 255)
        )
        ldraw.polygon(
            cv.xy(
                _ellipse(ecx + iris_r * 0.3, ecy - iris_r * 0.3, iris_r * 0.18, iris_r * 0.18, 10)
            ),
            fill=(255, 255, 255, 200),
        )
    for ep in eye_polys:
        mdraw.polygon(cv.xy(ep), fill=255)
    cv.image.paste(layer, (0, 0), mask)
    lid_col = (35, 25, 22)
    for side, ring in ((-1, lm[36:42]), (1, lm[42:48])):
        upper = ring[0:4]
        lower = np.concatenate([ring[3:6], ring[0:1]])
        cv.line(_smooth_curve(upper, 5), lid_col, 0.004 + 0.004 * idt.eyeliner, 0.9)
        cv.line(_smooth_curve(lower, 5), _darker(skin, 0.6), 0.003, 0.6)
        if idt.eyeliner > 0:  # outer-corner lash flick
            corner = ring[0] if side < 0 else ring[3]
            cv.line(
                np.array([corner, corner + np.array([side * 0.012, -0.008])]),
                lid_col,
                0.004,
                0.8 * idt.eyeliner,
            )
        crease = (upper - np.array([FACE_CX, EYE_Y])) * np.array([1.0, 1.0]) + np.array(
            [FACE_CX, EYE_Y - idt.eye_height * 0.45]
        )
        cv.line(_smooth_curve(crease, 5), _darker(skin, 0.7), 0.003, 0.35)

    # ---- brows -----------------------------------------------------------------------------------
    for _side, brow in ((-1, lm[17:22]), (1, lm[22:27][::-1])):  # both ordered outer -> inner
        t = np.linspace(0.35, 1.0, 5)
        thick = idt.brow_thickness * t
        upper = brow - np.stack([np.zeros(5), thick * 0.6], 1)
        lower = brow + np.stack([np.zeros(5), thick * 0.4], 1)
        outline = np.concatenate([_smooth_curve(upper, 4), _smooth_curve(lower[::-1], 4)])
        cv.poly(outline, idt.brow_rgb, 0.92)

    # ---- mouth -----------------------------------------------------------------------------------
    lip = idt.lip_rgb
    cv.poly(_smooth_curve(lm[48:60], 4, closed=True), lip)
    upper_lip = np.concatenate([lm[48:55], lm[64:59:-1]])  # 48..54 then inner 64..60
    cv.poly(upper_lip, _darker(lip, 0.88))
    if expr["open"] > 0.004:
        inner = _smooth_curve(lm[60:68], 4, closed=True)
        cv.poly(inner, (70, 25, 30))
        teeth = np.array(
            [
                lm[60],
                lm[61],
                lm[62],
                lm[63],
                lm[64],
                lm[63] + (0, 0.006),
                lm[62] + (0, 0.007),
                lm[61] + (0, 0.006),
            ]
        )
        cv.poly(teeth, (235, 230, 220), 0.95)
    cv.line(_smooth_curve(lm[60:65], 4), _darker(lip, 0.5), 0.004, 0.9)
    cv.poly(
        _ellipse(
            lm[57, 0],
            lm[57, 1] - idt.lower_lip * 0.45,
            idt.mouth_half_width * 0.35,
            idt.lower_lip * 0.2,
            12,
        ),
        (255, 255, 255),
        0.12,
    )

    # ---- front hair ------------------------------------------------------------------------------
    v = idt.hair_volume
    if idt.hair_style != "bald":
        line_pts = _hairline(idt)  # left -> right
        short = idt.hair_style in ("crew", "short", "bun")
        outer = _skull_arc(
            idt, 24, grow=v * (0.3 if short else 0.8) + 0.003, grow_top=v
        )  # right -> left
        if short:  # sideburns down to the ear
            sb_y = EYE_Y + (0.05 if idt.sex == 0 else 0.02)
            right_down = np.array(
                [
                    (FACE_CX + a + 0.004, sb_y),
                    (FACE_CX + a - 0.016, sb_y),
                    (FACE_CX + a * 0.93, EYE_Y - 0.03),
                ]
            )
            left_down = np.array(
                [
                    (FACE_CX - a * 0.93, EYE_Y - 0.03),
                    (FACE_CX - a + 0.016, sb_y),
                    (FACE_CX - a - 0.004, sb_y),
                ]
            )
            cap = np.concatenate([outer, left_down[::-1], line_pts, right_down[::-1]])
        else:
            side_drop = 0.06
            right_down = np.array(
                [(FACE_CX + a + 0.006, cy + side_drop), (FACE_CX + a - 0.012, cy + side_drop)]
            )
            left_down = np.array(
                [(FACE_CX - a + 0.012, cy + side_drop), (FACE_CX - a - 0.006, cy + side_drop)]
            )
            cap = np.concatenate([outer, left_down, line_pts, right_down])
        cap = _smooth_curve(cap, 3, closed=True)
        cv.poly(cap, hair, 0.8 if idt.hair_style == "crew" else 1.0)
        for k in range(-3, 4):  # strands for texture
            x0 = FACE_CX + k * a * 0.2
            strand = np.array(
                [
                    (x0 * 0.9 + FACE_CX * 0.1, EYE_Y - HEAD_TOP_DY + 0.01),
                    (x0, EYE_Y - idt.hairline - 0.02),
                ]
            )
            cv.line(strand, hair_dark, 0.003, 0.35)
    else:
        for side in (-1, 1):  # horseshoe of side hair
            band = np.array(
                [
                    (FACE_CX + side * (a + v), cy + 0.05),
                    (FACE_CX + side * (a + v * 0.8), cy - 0.10),
                    (FACE_CX + side * (a * 0.7), cy - 0.20),
                    (FACE_CX + side * (a * 0.62), cy - 0.18),
                    (FACE_CX + side * (a - 0.02), cy - 0.08),
                    (FACE_CX + side * (a - 0.01), cy + 0.05),
                ]
            )
            cv.poly(_smooth_curve(band, 3, closed=True), hair, 0.95)
    if idt.hair_style in long_styles or idt.hair_style == "bob":  # locks framing the face
        end = idt.hair_length if idt.hair_style in long_styles else cy + 0.30
        for side in (-1, 1):
            jx = lm[1 if side < 0 else 15, 0]
            lock = np.array(
                [
                    (FACE_CX + side * (a + v + 0.005), cy - 0.12),
                    (FACE_CX + side * (a - 0.035), cy - 0.1),
                    (jx - side * 0.012, cy + 0.05),
                    (jx - side * 0.0, cy + 0.16),
                    (FACE_CX + side * (a * 0.97), end - 0.01),
                    (FACE_CX + side * (a + v * 0.5 + 0.012), end),
                    (FACE_CX + side * (a + v + 0.02), end - 0.06),
                    (FACE_CX + side * (a + v + 0.015), cy + 0.1),
                ]
            )
            cv.poly(_smooth_curve(lock, 3, closed=True), hair)
    if idt.hair_style == "bun":
        cv.poly(_ellipse(FACE_CX, EYE_Y - HEAD_TOP_DY - v - 0.01, 0.075, 0.05, 24), hair)

    # ---- downsample, lighting, noise -------------------------------------------------------------
    img = cv.image.reduce(scale_px) if scale_px > 1 else cv.image
    out = np.asarray(img, np.float32)  # [S, S, 3]
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
    face = np.clip(np.round(out), 0, 255).astype(np.uint8)
    posed = lm @ A.T + pose[:, 2]  # [68, 2]
    return face, posed.astype(np.float32)
