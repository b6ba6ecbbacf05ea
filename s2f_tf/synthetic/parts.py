"""The parts of a face, each drawn from the landmarks on a posed, supersampled canvas (face.py's
render_face draws them in this order, back to front).

  _Canvas                          a PIL canvas addressed in normalised coordinates through a pose
  _draw_shirt, _draw_back_hair, _draw_neck, _draw_ears, _draw_skin, _draw_wrinkles, _draw_beard,
  _draw_nose, _draw_eyes, _draw_brows, _draw_mouth, _draw_front_hair
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from s2f_tf.synthetic.identity import Identity
from s2f_tf.synthetic.params import EYE_Y, FACE_CX, HEAD_TOP_DY, JAW_TOP_DY
from s2f_tf.synthetic.shapes import _darker, _ellipse, _hairline, _skull_arc, _smooth_curve

_CY = EYE_Y + JAW_TOP_DY  # the jaw-top line
_LONG_STYLES = ("long", "bangs")


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


def _draw_shirt(cv: _Canvas, idt: Identity, shirt_rgb: Sequence[int]) -> None:
    """The shirt: a collar around the neck, over the shoulders."""
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
    cv.poly(shirt, shirt_rgb)


def _draw_back_hair(cv: _Canvas, idt: Identity) -> None:
    """Long and bob styles: the hair behind the head and shoulders."""
    cy, a, hair, long_styles = _CY, idt.face_half_width, idt.hair_rgb, _LONG_STYLES
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


def _draw_neck(cv: _Canvas, idt: Identity) -> None:
    """The neck, in the skin's shadow colour."""
    cy, nw, skin_shadow = _CY, idt.neck_half_width, _darker(idt.skin_rgb, 0.8)
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


def _draw_ears(cv: _Canvas, idt: Identity, lm: np.ndarray) -> None:
    """Both ears, beside the jaw's top."""
    skin = idt.skin_rgb
    skin_shadow = _darker(skin, 0.8)
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


def _draw_skin(cv: _Canvas, idt: Identity, lm: np.ndarray) -> None:
    """The face's outline (jaw then skull) in skin colour, a darker rim and the cheeks."""
    skin = idt.skin_rgb
    skin_shadow = _darker(skin, 0.8)
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


def _draw_wrinkles(cv: _Canvas, idt: Identity, lm: np.ndarray) -> None:
    """Age: forehead lines, nasolabial folds, crow's feet, eye bags and jowls."""
    a, skin = idt.face_half_width, idt.skin_rgb
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


def _draw_beard(cv: _Canvas, idt: Identity, lm: np.ndarray) -> None:
    """Full beard or stubble, moustache, goatee (which has a moustache too)."""
    cy, hair = _CY, idt.hair_rgb
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


def _draw_nose(cv: _Canvas, idt: Identity, lm: np.ndarray) -> None:
    """Bridge and alae lines, the base, nostrils and a highlight on the tip."""
    skin = idt.skin_rgb
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


def _draw_eyes(cv: _Canvas, idt: Identity, lm: np.ndarray, gaze: np.ndarray) -> None:
    """Sockets, whites, irises and pupils clipped to the openings, lids, liner and creases."""
    skin = idt.skin_rgb
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


def _draw_brows(cv: _Canvas, idt: Identity, lm: np.ndarray) -> None:
    """Both brows, thickening from the outer to the inner end."""
    for _side, brow in ((-1, lm[17:22]), (1, lm[22:27][::-1])):  # both ordered outer -> inner
        t = np.linspace(0.35, 1.0, 5)
        thick = idt.brow_thickness * t
        upper = brow - np.stack([np.zeros(5), thick * 0.6], 1)
        lower = brow + np.stack([np.zeros(5), thick * 0.4], 1)
        outline = np.concatenate([_smooth_curve(upper, 4), _smooth_curve(lower[::-1], 4)])
        cv.poly(outline, idt.brow_rgb, 0.92)


def _draw_mouth(cv: _Canvas, idt: Identity, lm: np.ndarray, mouth_open: float) -> None:
    """Lips (the upper one darker), the opening and teeth when open, the lips' line, a highlight."""
    lip = idt.lip_rgb
    cv.poly(_smooth_curve(lm[48:60], 4, closed=True), lip)
    upper_lip = np.concatenate([lm[48:55], lm[64:59:-1]])  # 48..54 then inner 64..60
    cv.poly(upper_lip, _darker(lip, 0.88))
    if mouth_open > 0.004:
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


def _draw_front_hair(cv: _Canvas, idt: Identity, lm: np.ndarray) -> None:
    """The hair over the forehead (or a bald head's side hair), locks framing the face, a bun."""
    hair = idt.hair_rgb
    if idt.hair_style != "bald":
        cv.poly(_hair_cap(idt), hair, 0.8 if idt.hair_style == "crew" else 1.0)
        _draw_strands(cv, idt)
    else:
        _draw_side_hair(cv, idt)
    if idt.hair_style in _LONG_STYLES or idt.hair_style == "bob":  # locks framing the face
        _draw_locks(cv, idt, lm)
    if idt.hair_style == "bun":
        cv.poly(
            _ellipse(FACE_CX, EYE_Y - HEAD_TOP_DY - idt.hair_volume - 0.01, 0.075, 0.05, 24), hair
        )


def _hair_cap(idt: Identity) -> np.ndarray:
    """The closed outline of the hair over the skull, from the skull arc down to the hairline
    (short styles: with sideburns down to the ears)."""
    cy, a, v = _CY, idt.face_half_width, idt.hair_volume
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
    return _smooth_curve(cap, 3, closed=True)


def _draw_strands(cv: _Canvas, idt: Identity) -> None:
    """Darker strands over the hair, for texture."""
    a, hair_dark = idt.face_half_width, _darker(idt.hair_rgb, 0.75)
    for k in range(-3, 4):  # strands for texture
        x0 = FACE_CX + k * a * 0.2
        strand = np.array(
            [
                (x0 * 0.9 + FACE_CX * 0.1, EYE_Y - HEAD_TOP_DY + 0.01),
                (x0, EYE_Y - idt.hairline - 0.02),
            ]
        )
        cv.line(strand, hair_dark, 0.003, 0.35)


def _draw_side_hair(cv: _Canvas, idt: Identity) -> None:
    """A bald head's horseshoe of side hair."""
    cy, a, v, hair = _CY, idt.face_half_width, idt.hair_volume, idt.hair_rgb
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


def _draw_locks(cv: _Canvas, idt: Identity, lm: np.ndarray) -> None:
    """Long and bob styles: a lock down each side of the face."""
    cy, a, v, hair = _CY, idt.face_half_width, idt.hair_volume, idt.hair_rgb
    end = idt.hair_length if idt.hair_style in _LONG_STYLES else cy + 0.30
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
