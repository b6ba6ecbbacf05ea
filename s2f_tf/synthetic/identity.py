"""Synthetic identities: the hidden attributes and every voice and face parameter of one person.

make_identity(seed, index) -> Identity     drawn from np.random.default_rng([seed, index, TAG_IDENTITY])
split_of(seed, index)      -> "train" | "validation" | "test", per identity (speaker-disjoint)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from s2f_tf.contract import SPLIT_FRACTIONS, SPLITS
from s2f_tf.synthetic.params import (
    ACCENTS,
    AGE_RANGE,
    AGE_REF,
    BREATH_AGE,
    BREATH_RASP,
    BREATH_SEX,
    BROW_ARCH,
    BROW_GAP,
    BROW_THICKNESS,
    BROW_THICKNESS_RASP,
    CHEEK_FULLNESS_SIZE,
    CHIN_TAPER,
    CHIN_TAPER_SIGMA,
    EYE_AGE_NARROW,
    EYE_HALF_SPACING,
    EYE_HEIGHT,
    EYE_PALETTE,
    EYE_SIZE_SIGMA,
    EYE_SPACING_SIGMA,
    EYE_WIDTH,
    F0_AGE_SLOPE,
    F0_BASE_HZ,
    F0_CLAMP_HZ,
    F0_ID_SIGMA,
    F0_SIZE_SLOPE,
    FACE_HALF_WIDTH,
    FACE_WIDTH_SIGMA,
    FACE_WIDTH_SIZE,
    FLUTTER_AGE,
    FLUTTER_BASE,
    FLUTTER_RASP,
    FORMANT_FREQ_ID_SIGMA,
    FORMANT_HEIGHT_BRIGHT,
    FORMANT_HEIGHT_DARK,
    FORMANT_WIDTH_BRIGHT,
    FORMANT_WIDTH_DARK,
    GREY_AGE_FULL,
    GREY_AGE_START,
    GREY_HAIR,
    HAIR_PALETTE,
    JAW_LENGTH,
    JAW_LENGTH_SIGMA,
    JAW_LENGTH_SIZE,
    JAW_SQUARENESS,
    JAW_SQUARENESS_SIGMA,
    LIP_AGE_THIN,
    LOWER_LIP,
    MOUTH_DY,
    MOUTH_DY_SIGMA,
    MOUTH_HALF_WIDTH,
    MOUTH_WIDTH_SIGMA,
    NECK_HALF_WIDTH,
    NECK_WIDTH_SIZE,
    NOSE_HALF_WIDTH,
    NOSE_LENGTH,
    NOSE_LENGTH_SIGMA,
    NOSE_WIDTH_RASP,
    NOSE_WIDTH_SIGMA,
    P_ACCENT_OF_ANCESTRY,
    P_BALDING_AGE,
    P_BEARD_AGE,
    P_BEARD_MALE,
    P_FEMALE,
    P_LIPSTICK,
    P_LONG_HAIR,
    PITCH_RANGE_AGE,
    PITCH_RANGE_BASE,
    PITCH_RANGE_ID_SIGMA,
    RATE_AGE_SLOPE,
    RATE_BASE_WPM,
    RATE_ID_SIGMA,
    ROUGHNESS_AGE,
    ROUGHNESS_BASE,
    ROUGHNESS_RASP,
    SIZE_BETA,
    SKIN_GROUP_SIGMA,
    SKIN_PALETTE,
    TAG_IDENTITY,
    TAG_SPLIT,
    TILT_ID_SIGMA,
    TILT_MAX,
    UPPER_LIP,
    VTL_ID_SIGMA,
    VTL_SEX,
    VTL_SIZE_SLOPE,
    WRINKLE_AGE_START,
)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Everything about one synthetic person, drawn deterministically by `make_identity`."""

    index: int
    seed: int
    # hidden attributes (shared by voice and face)
    sex: int  # 0 male, 1 female
    age: float  # years
    size: float  # [0, 1], body/head size
    timbre: float  # [0, 1], dark -> bright voice; blond -> black hair, blue -> brown eyes
    rasp: float  # [0, 1], smooth -> rough voice; thin -> thick brows, narrow -> wide nose
    ancestry: int  # group 0..len(ACCENTS)-1: accent of the voice, skin-tone range of the face
    accent: str  # espeak-ng voice name (one of ACCENTS)
    # voice
    f0_hz: float  # median F0 of the final audio
    pitch_range: float  # espeak range: top = base * (1 + range)
    rate_wpm: float  # speaking rate of the final audio
    vtl_factor: float  # formant scale (> 1: shorter vocal tract)
    flutter: int  # espeak voice-file parameters
    roughness: int
    breath: int
    formant_freq: tuple[int, ...]  # espeak formant 0..5 frequency / height / width, percent
    formant_height: tuple[int, ...]
    formant_width: tuple[int, ...]
    tilt: float  # > 0 pre-emphasis (bright), < 0 low-pass (dark)
    # face geometry
    face_half_width: float
    jaw_length: float
    jaw_squareness: float
    chin_taper: float
    cheek_fullness: float
    eye_half_spacing: float
    eye_width: float
    eye_height: float
    eye_tilt: float
    brow_gap: float
    brow_arch: float
    brow_thickness: float
    nose_length: float
    nose_half_width: float
    mouth_dy: float
    mouth_half_width: float
    upper_lip: float
    lower_lip: float
    neck_half_width: float
    ear_size: float
    # face appearance
    skin_rgb: tuple[int, int, int]
    hair_rgb: tuple[int, int, int]  # after greying
    brow_rgb: tuple[int, int, int]
    eye_rgb: tuple[int, int, int]
    lip_rgb: tuple[int, int, int]
    hair_style: str  # short | crew | bald | long | bob | bun | bangs
    hair_length: float  # y of the hair ends (long styles)
    hair_volume: float  # hair thickness over the skull
    hairline: float  # hairline height above the eye line
    hair_part: float  # -1 .. 1, side of the parting
    recede: float  # [0, 1] temple recession (M-shape)
    beard: str  # none | stubble | moustache | goatee | full
    beard_alpha: float
    wrinkles: float  # [0, 1]
    eyeliner: float  # [0, 1]
    blush: float  # [0, 1] cheek redness

    def attributes(self) -> dict[str, float]:
        """The hidden attributes, as stored with every clip for evaluation."""
        return {
            "sex": float(self.sex),
            "age": float(self.age),
            "size": float(self.size),
            "timbre": float(self.timbre),
            "rasp": float(self.rasp),
            "ancestry": float(self.ancestry),
        }


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _mix_rgb(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, int, int]:
    """Linear blend of two RGB colours, t=0 -> a, t=1 -> b, clipped to uint8."""
    return tuple(
        int(round(min(255.0, max(0.0, _lerp(float(x), float(y), t))))) for x, y in zip(a, b)
    )


def _palette(palette: Sequence[Sequence[int]], t: float) -> tuple[int, int, int]:
    """Piecewise-linear colour along a palette, t in [0, 1]."""
    t = min(1.0, max(0.0, t)) * (len(palette) - 1)
    i = min(int(t), len(palette) - 2)
    return _mix_rgb(palette[i], palette[i + 1], t - i)


def make_identity(seed: int, index: int) -> Identity:
    """Draws identity `index` of corpus `seed`: hidden attributes, then voice and face parameters.

    All from one rng, in a fixed order (the corpus is defined by it): hidden attributes, voice, face
    geometry, colours, hair and beard, then the rest of the face geometry."""
    rng = np.random.default_rng([seed, index, TAG_IDENTITY])
    hidden = _hidden_attributes(rng)
    age01 = (hidden["age"] - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0])  # 0 youngest .. 1 oldest
    voice = _voice(rng, hidden, age01)
    geometry = _face_geometry(rng, hidden, age01)
    colours = _colours(rng, hidden, age01)
    hair = _hair_and_beard(rng, hidden["sex"], age01)
    rest = _face_geometry_drawn_last(rng, hidden, age01)
    return Identity(
        index=int(index), seed=int(seed), **hidden, **voice, **geometry, **colours, **hair, **rest
    )


def _hidden_attributes(rng: np.random.Generator) -> dict[str, Any]:
    """sex, age, size, timbre, rasp, ancestry and the accent (mostly the ancestry's)."""
    sex = int(rng.random() < P_FEMALE)
    age = float(rng.uniform(*AGE_RANGE))
    size = float(rng.beta(SIZE_BETA, SIZE_BETA))
    timbre = float(rng.random())
    rasp = float(rng.random())
    ancestry = int(rng.integers(len(ACCENTS)))
    accent = (
        ACCENTS[ancestry]
        if rng.random() < P_ACCENT_OF_ANCESTRY
        else ACCENTS[int(rng.integers(len(ACCENTS)))]
    )
    return {
        "sex": sex,
        "age": age,
        "size": size,
        "timbre": timbre,
        "rasp": rasp,
        "ancestry": ancestry,
        "accent": accent,
    }


def _voice(rng: np.random.Generator, hidden: dict[str, Any], age01: float) -> dict[str, Any]:
    """The voice's parameters: F0, pitch range, rate, vocal tract, espeak voice-file settings, tilt."""
    sex, age, size = hidden["sex"], hidden["age"], hidden["size"]
    timbre, rasp = hidden["timbre"], hidden["rasp"]
    f0 = (
        F0_BASE_HZ[sex]
        * (1.0 + F0_AGE_SLOPE[sex] * (age - AGE_REF))
        * (1.0 + F0_SIZE_SLOPE * (size - 0.5))
    )
    f0 *= math.exp(rng.normal(0.0, F0_ID_SIGMA))
    f0 = float(np.clip(f0, *F0_CLAMP_HZ[sex]))
    pitch_range = (
        PITCH_RANGE_BASE[sex] + PITCH_RANGE_AGE * age01 + rng.normal(0.0, PITCH_RANGE_ID_SIGMA)
    )
    pitch_range = float(np.clip(pitch_range, 0.15, 0.8))
    rate = RATE_BASE_WPM + RATE_AGE_SLOPE * (age - AGE_REF) + rng.normal(0.0, RATE_ID_SIGMA)
    rate = float(np.clip(rate, 115.0, 215.0))
    vtl = (
        VTL_SEX[sex]
        * (1.0 + VTL_SIZE_SLOPE * (size - 0.5))
        * math.exp(rng.normal(0.0, VTL_ID_SIGMA))
    )
    flutter = int(round(FLUTTER_BASE + FLUTTER_AGE * age01**1.5 + FLUTTER_RASP * rasp))
    roughness = int(
        np.clip(round(ROUGHNESS_BASE + ROUGHNESS_RASP * rasp + ROUGHNESS_AGE * age01), 0, 7)
    )
    breath = int(round(BREATH_SEX[sex] + BREATH_AGE * age01 + BREATH_RASP * rasp))
    freq_noise = np.exp(rng.normal(0.0, FORMANT_FREQ_ID_SIGMA, size=3))
    formant_freq = (100, *(int(round(100 * f)) for f in freq_noise), 100, 100)
    formant_height = tuple(
        int(round(_lerp(d, b, timbre))) for d, b in zip(FORMANT_HEIGHT_DARK, FORMANT_HEIGHT_BRIGHT)
    )
    formant_width = tuple(
        int(round(_lerp(d, b, timbre))) for d, b in zip(FORMANT_WIDTH_DARK, FORMANT_WIDTH_BRIGHT)
    )
    tilt = float(
        np.clip(
            TILT_MAX * (2.0 * timbre - 1.0) + rng.normal(0.0, TILT_ID_SIGMA), -TILT_MAX, TILT_MAX
        )
    )
    return {
        "f0_hz": f0,
        "pitch_range": pitch_range,
        "rate_wpm": rate,
        "vtl_factor": float(vtl),
        "flutter": flutter,
        "roughness": roughness,
        "breath": breath,
        "formant_freq": formant_freq,
        "formant_height": formant_height,
        "formant_width": formant_width,
        "tilt": tilt,
    }


def _face_geometry(
    rng: np.random.Generator, hidden: dict[str, Any], age01: float
) -> dict[str, Any]:
    """The face's shape driven by sex, size, age and rasp: width, jaw, chin, cheeks, eyes, brows,
    nose."""
    sex, size, rasp = hidden["sex"], hidden["size"], hidden["rasp"]

    def g(pair: Sequence[float]) -> float:
        return float(pair[sex])

    face_half_width = (
        g(FACE_HALF_WIDTH) + FACE_WIDTH_SIZE * (size - 0.5) + rng.normal(0, FACE_WIDTH_SIGMA)
    )
    jaw_length = g(JAW_LENGTH) + JAW_LENGTH_SIZE * (size - 0.5) + rng.normal(0, JAW_LENGTH_SIGMA)
    jaw_squareness = max(
        1.8, g(JAW_SQUARENESS) + 0.4 * (size - 0.5) + rng.normal(0, JAW_SQUARENESS_SIGMA)
    )
    chin_taper = float(
        np.clip(g(CHIN_TAPER) + rng.normal(0, CHIN_TAPER_SIGMA) - 0.05 * (size - 0.5), 0.0, 0.4)
    )
    cheek_fullness = CHEEK_FULLNESS_SIZE * (size - 0.5) + rng.normal(0, 0.005)
    eye_scale = math.exp(rng.normal(0, EYE_SIZE_SIGMA))
    eye_width = g(EYE_WIDTH) * eye_scale
    eye_height = (
        g(EYE_HEIGHT) * eye_scale * (1.0 - EYE_AGE_NARROW * age01) * math.exp(rng.normal(0, 0.05))
    )
    brow_thickness = g(BROW_THICKNESS) + BROW_THICKNESS_RASP * (rasp - 0.5) + rng.normal(0, 0.002)
    nose_half_width = (
        g(NOSE_HALF_WIDTH) + NOSE_WIDTH_RASP * (rasp - 0.5) + rng.normal(0, NOSE_WIDTH_SIGMA)
    )
    return {
        "face_half_width": float(face_half_width),
        "jaw_length": float(jaw_length),
        "jaw_squareness": float(jaw_squareness),
        "chin_taper": chin_taper,
        "cheek_fullness": float(cheek_fullness),
        "eye_width": float(eye_width),
        "eye_height": float(eye_height),
        "brow_thickness": float(max(0.006, brow_thickness)),
        "nose_half_width": float(nose_half_width),
        "neck_half_width": float(g(NECK_HALF_WIDTH) + NECK_WIDTH_SIZE * (size - 0.5)),
    }


def _colours(rng: np.random.Generator, hidden: dict[str, Any], age01: float) -> dict[str, Any]:
    """Skin (from the ancestry's range), hair and brows (timbre, greying with age), eyes, lips."""
    sex, age, timbre = hidden["sex"], hidden["age"], hidden["timbre"]
    skin_t = float(
        np.clip((hidden["ancestry"] + 0.5) / len(ACCENTS) + rng.normal(0, SKIN_GROUP_SIGMA), 0, 1)
    )
    skin = _palette(SKIN_PALETTE, skin_t)
    skin = _mix_rgb(skin, (skin[0] * 0.92, skin[1] * 0.9, skin[2] * 0.9), 0.5 * age01)
    base_hair = _palette(HAIR_PALETTE, timbre + rng.normal(0, 0.06))
    grey = float(np.clip((age - GREY_AGE_START) / (GREY_AGE_FULL - GREY_AGE_START), 0, 1)) ** 1.2
    grey *= float(rng.uniform(0.75, 1.0))
    hair = _mix_rgb(base_hair, GREY_HAIR, grey)
    brow = _mix_rgb(_mix_rgb(base_hair, (20, 15, 12), 0.35), GREY_HAIR, 0.5 * grey)
    eye_rgb = _palette(EYE_PALETTE, timbre + rng.normal(0, 0.08))
    lipstick = sex == 1 and rng.random() < P_LIPSTICK
    natural_lip = _mix_rgb(skin, (170, 70, 70), 0.35 + 0.1 * rng.random())
    lip = (
        _mix_rgb(
            natural_lip,
            (185 + 40 * rng.random(), 30 + 30 * rng.random(), 60 + 40 * rng.random()),
            0.75,
        )
        if lipstick
        else natural_lip
    )
    return {
        "skin_rgb": skin,
        "hair_rgb": hair,
        "brow_rgb": brow,
        "eye_rgb": eye_rgb,
        "lip_rgb": lip,
    }


def _hair_and_beard(rng: np.random.Generator, sex: int, age01: float) -> dict[str, Any]:
    """Hair style (receding and balding males with age), its length, volume and hairline; beard."""
    long_hair = rng.random() < P_LONG_HAIR[sex]
    recede = 0.0
    if sex == 0:
        recede = float(np.clip(rng.random() * P_BALDING_AGE * age01 * 1.6 - 0.1, 0.0, 1.0))
        if long_hair:
            style = "long"
        elif recede > 0.82:
            style = "bald"
        else:
            style = "short" if rng.random() < 0.6 else "crew"
    else:
        style = (
            str(rng.choice(["long", "bangs", "long"]))
            if long_hair
            else str(rng.choice(["bob", "short", "bun"]))
        )
    hair_length = float(
        rng.uniform(0.78, 1.08) if style in ("long", "bangs") else rng.uniform(0.70, 0.80)
    )
    hair_volume = float(
        rng.uniform(0.015, 0.035) if style in ("crew", "bald") else rng.uniform(0.03, 0.06)
    )
    hairline = float(rng.uniform(0.145, 0.175) + 0.09 * recede)
    beard = "none"
    if sex == 0 and rng.random() < P_BEARD_MALE + P_BEARD_AGE * age01:
        beard = str(rng.choice(["stubble", "moustache", "goatee", "full", "full"]))
    beard_alpha = {"none": 0.0, "stubble": 0.30, "moustache": 0.92, "goatee": 0.92, "full": 0.93}[
        beard
    ]
    beard_alpha *= float(rng.uniform(0.85, 1.0))
    return {
        "hair_style": style,
        "hair_length": hair_length,
        "hair_volume": hair_volume,
        "hairline": hairline,
        "recede": recede,
        "beard": beard,
        "beard_alpha": beard_alpha,
    }


def _face_geometry_drawn_last(
    rng: np.random.Generator, hidden: dict[str, Any], age01: float
) -> dict[str, Any]:
    """The face parameters drawn after the hair, in this order (their place in the rng stream is
    part of the corpus): eye spacing and tilt, brows, nose length, mouth, lips, ears, parting,
    eyeliner, blush; and the wrinkles (no draw)."""
    sex, age, rasp = hidden["sex"], hidden["age"], hidden["rasp"]
    lip_thin = 1.0 - LIP_AGE_THIN * age01

    def g(pair: Sequence[float]) -> float:
        return float(pair[sex])

    return {
        "eye_half_spacing": float(EYE_HALF_SPACING + rng.normal(0, EYE_SPACING_SIGMA)),
        "eye_tilt": float(rng.normal(0, 0.004)),
        "brow_gap": float(g(BROW_GAP) + rng.normal(0, 0.005)),
        "brow_arch": float(g(BROW_ARCH) + rng.normal(0, 0.003)),
        "nose_length": float(g(NOSE_LENGTH) + rng.normal(0, NOSE_LENGTH_SIGMA)),
        "mouth_dy": float(MOUTH_DY + rng.normal(0, MOUTH_DY_SIGMA)),
        "mouth_half_width": float(g(MOUTH_HALF_WIDTH) + rng.normal(0, MOUTH_WIDTH_SIGMA)),
        "upper_lip": float(g(UPPER_LIP) * lip_thin * math.exp(rng.normal(0, 0.12))),
        "lower_lip": float(g(LOWER_LIP) * lip_thin * math.exp(rng.normal(0, 0.12))),
        "ear_size": float(rng.uniform(0.9, 1.15)),
        "hair_part": float(rng.uniform(-1, 1)),
        "wrinkles": float(
            np.clip((age - WRINKLE_AGE_START) / (AGE_RANGE[1] - WRINKLE_AGE_START), 0, 1)
        ),
        "eyeliner": float(rng.uniform(0.5, 1.0) if sex == 1 else 0.0),
        "blush": float(np.clip(0.25 * sex + 0.5 * rasp + rng.normal(0, 0.1), 0, 1)),
    }


def split_of(seed: int, index: int, fractions: Sequence[float] = SPLIT_FRACTIONS) -> str:
    """The split of identity `index`: decided per identity, so splits are speaker-disjoint."""
    # Not contract.split_from_unit: that one compares u with cumsum(fr) / fr.sum(), this one u * fr.sum()
    # with cumsum(fr); for fractions that do not sum to exactly 1 the two differ in the last bit near an
    # edge, and the corpus's splits are defined by this arithmetic.
    fr = np.asarray(fractions, np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or fr.sum() <= 0:
        raise ValueError(f"fractions must be 3 non-negative numbers, got {fractions!r}")
    u = np.random.default_rng([seed, index, TAG_SPLIT]).random() * fr.sum()
    edges = np.cumsum(fr)
    return SPLITS[int(min(np.searchsorted(edges, u, side="right"), 2))]
