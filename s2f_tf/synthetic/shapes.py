"""Face geometry in normalised image coordinates (x right, y down), before any pose.

_landmarks(identity, expr)   float [68, 2]: the identity's iBUG-68 landmarks (jaw, brows, nose, eyes, mouth)
_skull_arc, _hairline        outlines of the skull and the front hairline
_ellipse, _smooth_curve      polygon helpers (ellipse; Catmull-Rom through given points)
_darker(rgb, f)              a colour scaled towards black
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from s2f_tf.synthetic.identity import Identity
from s2f_tf.synthetic.params import EYE_Y, FACE_CX, HEAD_TOP_DY, JAW_TOP_DY, NUM_LANDMARKS


def _superellipse_jaw(identity: Identity, cy: float) -> np.ndarray:
    """float [17, 2]: jaw points 0-16 (image-left ear -> chin -> image-right ear)."""
    a, b, n = identity.face_half_width, identity.jaw_length, identity.jaw_squareness
    phi = np.linspace(0.0, math.pi, 17)
    c, s = np.cos(phi), np.sin(phi)
    xs = np.sign(c) * np.abs(c) ** (2.0 / n)
    ys = np.abs(s) ** (2.0 / n)
    taper = 1.0 - identity.chin_taper * ys**2
    bulge = 1.0 + identity.cheek_fullness / a * np.sin(phi * 2.0) ** 2  # fuller lower cheeks
    x = FACE_CX - a * xs * taper * bulge
    y = cy + b * ys
    return np.stack([x, y], axis=1)


def _landmarks(identity: Identity, expr: dict[str, float]) -> np.ndarray:
    """float [68, 2]: the identity's iBUG-68 landmarks in the canonical (un-posed) frame."""
    pts = np.zeros([NUM_LANDMARKS, 2])
    pts[0:17] = _superellipse_jaw(identity, EYE_Y + JAW_TOP_DY)
    _eyes(identity, pts)
    _brows(identity, expr["brow_raise"], pts)
    tip_y = _nose(identity, pts)
    _mouth(identity, expr, tip_y, pts)
    return pts


def _eyes(identity: Identity, pts: np.ndarray) -> None:
    """Eye points into `pts`: 36-41 image-left (outer corner 36 on the left), 42-47 image-right
    (outer corner 45 on the right)."""
    cx, ey = FACE_CX, EYE_Y
    w, h, d = identity.eye_width, identity.eye_height, identity.eye_half_spacing
    for side, base in ((-1, 36), (1, 42)):
        ecx = cx + side * d
        outer = (ecx + side * w / 2, ey + identity.eye_tilt)
        inner = (ecx - side * w / 2, ey + 0.002)
        up_o = (ecx + side * w / 6, ey - h / 2)
        up_i = (ecx - side * w / 6, ey - h / 2 + 0.002)
        lo_i = (ecx - side * w / 6, ey + h * 0.38)
        lo_o = (ecx + side * w / 6, ey + h * 0.38)
        ring = (
            [outer, up_o, up_i, inner, lo_i, lo_o]
            if side < 0
            else [inner, up_i, up_o, outer, lo_o, lo_i]
        )
        pts[base : base + 6] = ring


def _brows(identity: Identity, brow_raise: float, pts: np.ndarray) -> None:
    """Brow points into `pts`: 17-21 image-left outer -> inner, 22-26 image-right inner -> outer."""
    cx, ey, d = FACE_CX, EYE_Y, identity.eye_half_spacing
    by = ey - identity.brow_gap - brow_raise
    for side, base in ((-1, 17), (1, 22)):
        ecx = cx + side * d
        t = np.linspace(0.0, 1.0, 5)  # 0 = outer end, 1 = inner end
        x = ecx + side * (0.075 - t * 0.13)
        y = by + 0.012 * (1 - t) ** 2 - identity.brow_arch * np.sin(math.pi * (0.15 + 0.75 * t))
        if side < 0:
            pts[base : base + 5] = np.stack([x, y], axis=1)
        else:
            pts[base : base + 5] = np.stack([x, y], axis=1)[::-1]


def _nose(identity: Identity, pts: np.ndarray) -> float:
    """Nose points into `pts`: 27-30 bridge, 31-35 base (image-left -> right). Returns the tip's y."""
    cx, ey = FACE_CX, EYE_Y
    tip_y = ey + identity.nose_length
    pts[27:31] = np.stack([np.full(4, cx), np.linspace(ey - 0.004, tip_y, 4)], axis=1)
    nw = identity.nose_half_width
    pts[31:36] = [
        (cx - nw, tip_y + 0.004),
        (cx - nw * 0.5, tip_y + 0.014),
        (cx, tip_y + 0.019),
        (cx + nw * 0.5, tip_y + 0.014),
        (cx + nw, tip_y + 0.004),
    ]
    return tip_y


def _mouth(identity: Identity, expr: dict[str, float], tip_y: float, pts: np.ndarray) -> None:
    """Mouth points into `pts`, below the nose tip at `tip_y`: outer 48-59 (48 left corner, 51 top
    centre, 54 right corner, 57 bottom centre), inner 60-67; wider and lifted with a smile, apart
    when open."""
    cx = FACE_CX
    my = tip_y + identity.mouth_dy
    mw = identity.mouth_half_width * (1.0 + 0.08 * expr["smile"])
    lift = 0.012 * expr["smile"]
    opening = expr["open"]
    ul, ll = identity.upper_lip, identity.lower_lip

    def curve(u: float) -> float:  # corner lift profile, u in [-1, 1]
        return -lift * u**2

    outer = []
    for u, dy in (
        (-1.0, 0.0),
        (-0.6, -ul * 0.8),
        (-0.22, -ul),
        (0.0, -ul * 0.82),
        (0.22, -ul),
        (0.6, -ul * 0.8),
        (1.0, 0.0),
    ):
        outer.append((cx + u * mw, my + curve(u) + dy - (opening / 2 if abs(u) < 1 else 0.0)))
    for u, dy in ((0.6, ll * 0.8), (0.25, ll), (0.0, ll * 1.02), (-0.25, ll), (-0.6, ll * 0.8)):
        outer.append((cx + u * mw, my + curve(u) + dy + opening / 2))
    pts[48:60] = outer
    inner = []
    for u, sgn in (
        (-0.88, 0),
        (-0.4, -1),
        (0.0, -1),
        (0.4, -1),
        (0.88, 0),
        (0.4, 1),
        (0.0, 1),
        (-0.4, 1),
    ):
        inner.append((cx + u * mw, my + curve(u) + sgn * opening / 2 * (1.0 - 0.3 * abs(u))))
    pts[60:68] = inner


def _skull_arc(
    identity: Identity, n: int = 24, grow: float = 0.0, grow_top: float = 0.0
) -> np.ndarray:
    """float [n, 2]: the skull outline above the jaw-top line, from image-right to image-left."""
    cy = EYE_Y + JAW_TOP_DY
    a = identity.face_half_width + grow
    rv = HEAD_TOP_DY + grow_top
    t = np.linspace(0.0, math.pi, n)
    x = FACE_CX + a * np.cos(t) * (1.0 - 0.05 * np.sin(t))
    y = cy - rv * np.sin(t)
    return np.stack([x, y], axis=1)


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, n: int = 24, rot: float = 0.0
) -> np.ndarray:
    """float [n, 2]: polygon approximating an ellipse."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    cr, sr = math.cos(rot), math.sin(rot)
    return np.stack([cx + cr * x - sr * y, cy + sr * x + cr * y], axis=1)


def _hairline(identity: Identity, n: int = 15) -> np.ndarray:
    """float [n, 2]: front hairline from the image-left temple to the image-right temple."""
    cy = EYE_Y + JAW_TOP_DY
    a = identity.face_half_width
    top = EYE_Y - identity.hairline
    temple_y = cy - 0.07
    u = np.linspace(-1.0, 1.0, n)
    y = top + (temple_y - top) * np.abs(u) ** 3.5
    y -= identity.recede * 0.10 * np.exp(-(((np.abs(u) - 0.55) / 0.22) ** 2))  # M-shaped recession
    if identity.hair_style == "bangs":
        y = np.minimum(EYE_Y - 0.085 + 0.012 * np.abs(u) ** 2, temple_y) + 0.004 * np.cos(u * 23.0)
    elif identity.hair_style in ("long", "bob", "short") and identity.sex == 1:
        p = identity.hair_part * 0.5  # side-swept fringe
        y = y + 0.035 * np.exp(-(((u - (-np.sign(p) * 0.35 if p else 0.35)) / 0.45) ** 2))
    x = FACE_CX + u * a * 0.93
    return np.stack([x, y], axis=1)


def _smooth_curve(pts: np.ndarray, n: int = 8, closed: bool = False) -> np.ndarray:
    """Catmull-Rom interpolation through `pts` [k, 2] -> [m, 2] (passes through every input point):
    n points per segment, every segment at once (the same float64 operations, in the same order,
    as one segment and one t at a time)."""
    p = np.asarray(pts, np.float64)
    if closed:
        p = np.concatenate([p[-1:], p, p[:2]])
    else:
        p = np.concatenate([p[:1], p, p[-1:]])
    p0, p1, p2, p3 = (p[i : len(p) - 3 + i, None, :] for i in range(4))  # [segments, 1, 2]
    t = np.linspace(0.0, 1.0, n, endpoint=False)[None, :, None]  # [1, n, 1]
    t2, t3 = t * t, t * t * t
    out = 0.5 * (
        (2 * p1)
        + (-p0 + p2) * t
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
        + (-p0 + 3 * p1 - 3 * p2 + p3) * t3
    ).reshape(-1, 2)
    return out if closed else np.concatenate([out, p[-2:-1]])


def _darker(rgb: Sequence[int], f: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * f))) for c in rgb)
