"""The embedded default corpus: synthetic speakers whose voice and face share hidden attributes.

No real paired voice/face corpus is available offline, so this module draws one. Every synthetic
identity has hidden attributes (`ATTRIBUTE_NAMES`) that drive BOTH sides:

| attribute | voice (espeak-ng + post-processing)                         | face (procedural drawing)                          |
|-----------|-------------------------------------------------------------|----------------------------------------------------|
| sex       | F0 ~118 Hz male / ~210 Hz female; formants x1.15 (shorter   | jaw squareness/width, chin taper, hair length and  |
|           | vocal tract); breathier female phonation; wider F0 range    | style, beard (some males), brow thickness/arch,    |
|           |                                                             | eyeliner, lipstick (some females), lip fullness    |
| age       | slower speaking rate, F0 drift (male up, female down),      | grey hair, forehead/nasolabial/crow's-feet lines,  |
|           | more flutter (F0 wobble), roughness and breath, less range  | eye bags, receding hairline (males), jowls         |
| size      | vocal-tract length: formants scaled by resampling, lower F0 | face width and jaw length, cheek fullness, neck    |
| timbre    | formant peak heights/widths (dark <-> bright), spectral tilt| hair base colour (blond -> black), eye colour      |
| rasp      | roughness (creak), flutter, breath noise                    | brow thickness, nose width, cheek ruddiness        |
| ancestry  | accent: one of ACCENTS (espeak-ng English variants), for    | skin-tone range: group k centres on SKIN_PALETTE   |
|           | P_ACCENT_OF_ANCESTRY of people, else a uniform draw         | at (k + 0.5) / groups, private spread around it    |

`ancestry` is a group index 0..len(ACCENTS)-1, an ordinal along skin tone. It stands in for the
third demographic attribute the Speech2Face paper reads from voices besides sex and age, ethnicity,
which its authors note is carried largely by language and accent. The pairing of groups with
accents is arbitrary. Skin tone is the largest cue a face-identity network sees; while it was
private, the true attributes could explain only a small part of the face feature (a regression from
them retrieved 11-14% at gallery 70; with skin tone added, 37%).

On top of that each identity has private variation on each side that the other side cannot see
(F0/rate/formant offsets; skin tone within its group, eye spacing, nose/mouth shape, hair style),
so the voice -> face link is real but partial. Per clip, the sentence, prosody (small F0/rate
jitter), gain, noise floor, head pose, expression, lighting, background and clothes vary.

Voices come from the espeak-ng library shipped in the `espeakng_loader` wheel, driven via ctypes:
the identity's accent (an espeak-ng English voice) with a per-identity voice-variant file (pitch,
formants, flutter, roughness, breath) written into a private mirror of espeak-ng-data. espeak-ng
keeps function-static synthesis state (e.g. its flutter phase) across utterances, so for
byte-identical output the library (a private copy of the .so) is loaded fresh for every utterance
and unloaded afterwards; this costs well under 1 ms. espeak_Initialize also seeds its breath-noise
generator from the clock, so every utterance reseeds it (espeak_ng_SetRandSeed) from the clip's
rng.

Everything is deterministic in its arguments: all randomness comes from
`np.random.default_rng([seed, index, ..., STREAM_TAG])`, never from a global RNG.

  identity = make_identity(seed, index)
  clip = make_clip(seed, index, clip_index, image_size=64)
  clip["pcm"]        int16 [samples] at 16 kHz
  clip["face"]       uint8 [S, S, 3]
  clip["landmarks"]  float32 [68, 2] (x, y) in [0, 1]
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import math
import os
import shutil
import tempfile
import threading
from typing import Any, Sequence

import numpy as np

# ---------------------------------------------------------------------------------------------
# Tunables. Every number that shapes the corpus lives here.
# ---------------------------------------------------------------------------------------------

NUM_LANDMARKS = 68                  # iBUG-68 order: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67
ATTRIBUTE_NAMES = ("sex", "age", "size", "timbre", "rasp", "ancestry")  # sex 0 male / 1 female; age years;
                                    # ancestry a group index; the others in [0, 1]
SAMPLE_RATE = 16000                 # output audio rate (Hz)
SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

# Stream tags: the last element of every rng seed sequence, so the streams never coincide.
_TAG_IDENTITY = 11
_TAG_SPLIT = 12
_TAG_TEXT = 21
_TAG_VOICE = 22
_TAG_FACE = 23
_TAG_NOISE = 24

# --- hidden attributes -------------------------------------------------------------------------
P_FEMALE = 0.5                      # P(sex == 1)
AGE_RANGE = (18.0, 78.0)            # age ~ U(AGE_RANGE), years
SIZE_BETA = 1.6                     # size ~ Beta(SIZE_BETA, SIZE_BETA) in [0, 1]
AGE_REF = 40.0                      # age at which the age slopes below are zero
ACCENTS = ("en-us", "en-029", "en-gb-scotland", "en-gb-x-gbcwmd")  # espeak-ng voice per ancestry group
P_ACCENT_OF_ANCESTRY = 0.85         # P(accent drawn as the group's); else a uniform draw over ACCENTS
SKIN_GROUP_SIGMA = 0.07             # private skin-tone spread within a group (palette units, 0..1)

# --- voice: pitch --------------------------------------------------------------------------------
F0_BASE_HZ = (118.0, 210.0)         # median F0 (male, female) at AGE_REF and size 0.5
F0_AGE_SLOPE = (0.0015, -0.0020)    # relative F0 change per year from AGE_REF (male, female)
F0_SIZE_SLOPE = -0.10               # relative F0 change across size 0 -> 1 (centred at 0.5)
F0_ID_SIGMA = 0.05                  # per-identity log-F0 noise (private to the voice)
F0_CLAMP_HZ = ((95.0, 145.0), (175.0, 250.0))  # (male, female) clamp on the identity's median F0
F0_CLIP_SIGMA = 0.025               # per-clip log-F0 jitter
PITCH_RANGE_BASE = (0.42, 0.50)     # espeak pitch range: top = base * (1 + range), (male, female)
PITCH_RANGE_AGE = -0.15             # range change across age AGE_RANGE (young -> old)
PITCH_RANGE_ID_SIGMA = 0.06         # per-identity range noise
PITCH_RANGE_CLIP_SIGMA = 0.04       # per-clip range jitter
# espeak's median F0 is about base * (1 + ESPEAK_F0_RANGE_POS * range) (calibrated on this build,
# measured over 40 identities with an autocorrelation F0 tracker; flutter barely moves it).
ESPEAK_F0_RANGE_POS = 0.62

# --- voice: vocal tract, rate, phonation ----------------------------------------------------------
VTL_SEX = (1.00, 1.15)              # formant scale factor (male, female); > 1 = shorter tract
VTL_SIZE_SLOPE = -0.12              # formant scale change across size 0 -> 1 (centred at 0.5)
VTL_ID_SIGMA = 0.015                # per-identity formant-scale noise
RATE_BASE_WPM = 168.0               # speaking rate at AGE_REF (words per minute)
RATE_AGE_SLOPE = -0.9               # wpm per year
RATE_ID_SIGMA = 12.0                # per-identity rate noise (wpm)
RATE_CLIP_SIGMA = 0.04              # per-clip relative rate jitter
RATE_LIMITS = (90.0, 400.0)         # espeak accepts 80..450 wpm
FLUTTER_BASE = 1.0                  # espeak 'flutter' (F0 wobble): base + age + rasp terms
FLUTTER_AGE = 11.0
FLUTTER_RASP = 5.0
ROUGHNESS_BASE = 1.0                # espeak 'roughness' 0..7 (creaky amplitude modulation)
ROUGHNESS_RASP = 4.5
ROUGHNESS_AGE = 1.5
BREATH_SEX = (0.0, 1.5)             # espeak 'breath' level (aspiration noise) per sex
BREATH_AGE = 2.0
BREATH_RASP = 2.0
# Formant peak shapes (espeak 'formant N freq% height% width%') for timbre 0 (dark) and 1 (bright).
FORMANT_HEIGHT_DARK = (100, 112, 92, 78, 68, 62)
FORMANT_HEIGHT_BRIGHT = (100, 92, 104, 112, 112, 104)
FORMANT_WIDTH_DARK = (100, 125, 120, 120, 120, 120)
FORMANT_WIDTH_BRIGHT = (100, 90, 90, 95, 95, 95)
FORMANT_FREQ_ID_SIGMA = 0.035       # per-identity relative offset of F1..F3 (private to the voice)
TILT_MAX = 0.55                     # spectral tilt: pre-emphasis (bright) or 1-pole low-pass (dark) coefficient
TILT_ID_SIGMA = 0.08                # per-identity tilt noise

# --- audio clip ----------------------------------------------------------------------------------
MIN_SECONDS = 2.0                   # make_clip extends the text until the speech is at least this long
MAX_SECONDS = 6.0                   # ... and redraws (then truncates) above this
MAX_TEXT_TRIES = 6                  # attempts at drawing a text that fits [MIN_SECONDS, MAX_SECONDS]
TRIM_PAD_SECONDS = 0.1              # silence kept before/after speech
TRIM_THRESHOLD_DB = -40.0           # frame energy below max-frame - 40 dB counts as silence
TRIM_FRAME_SECONDS = 0.01
TARGET_RMS_DBFS = -21.0             # speech RMS after normalisation
GAIN_CLIP_SIGMA_DB = 2.0            # per-clip gain jitter
PEAK_LIMIT = 0.97                   # hard peak limit (fraction of full scale)
NOISE_SNR_DB = (32.0, 50.0)         # per-clip white-noise floor, SNR range
ESPEAK_BUFFER_MS = 500              # espeak callback buffer length

# --- face: geometry (normalised image coordinates, x right, y down) -------------------------------
FACE_CX = 0.5
EYE_Y = 0.415                       # eye line
JAW_TOP_DY = 0.025                  # jaw points 0/16 sit this far below the eye line
HEAD_TOP_DY = 0.285                 # skull top above the jaw-top line
FACE_HALF_WIDTH = (0.300, 0.262)    # (male, female) half distance between jaw points 0 and 16
FACE_WIDTH_SIZE = 0.050             # +- across size 0 -> 1
FACE_WIDTH_SIGMA = 0.008
JAW_LENGTH = (0.425, 0.405)         # (male, female) jaw-top line to chin
JAW_LENGTH_SIZE = 0.025
JAW_LENGTH_SIGMA = 0.010
JAW_SQUARENESS = (3.3, 2.3)         # superellipse exponent of the jaw (male squarer)
JAW_SQUARENESS_SIGMA = 0.25
CHIN_TAPER = (0.10, 0.24)           # narrowing of the lower jaw towards the chin (female more V)
CHIN_TAPER_SIGMA = 0.03
CHEEK_FULLNESS_SIZE = 0.025         # lower-cheek bulge across size 0 -> 1
EYE_HALF_SPACING = 0.132            # eye centre offset from the midline
EYE_SPACING_SIGMA = 0.007
EYE_WIDTH = (0.098, 0.104)          # (male, female)
EYE_HEIGHT = (0.034, 0.040)
EYE_SIZE_SIGMA = 0.06               # relative
EYE_AGE_NARROW = 0.15               # relative eye-height loss across age range
BROW_GAP = (0.058, 0.074)           # brow baseline above the eye line (male lower)
BROW_ARCH = (0.010, 0.022)
BROW_THICKNESS = (0.021, 0.011)     # drawn thickness at the inner end
BROW_THICKNESS_RASP = 0.008
NOSE_LENGTH = (0.160, 0.145)        # eye line to nose tip
NOSE_LENGTH_SIGMA = 0.010
NOSE_HALF_WIDTH = (0.044, 0.038)
NOSE_WIDTH_RASP = 0.010
NOSE_WIDTH_SIGMA = 0.004
MOUTH_DY = 0.095                    # nose tip to mouth line
MOUTH_DY_SIGMA = 0.008
MOUTH_HALF_WIDTH = (0.078, 0.074)
MOUTH_WIDTH_SIGMA = 0.007
UPPER_LIP = (0.014, 0.020)          # lip thickness (male, female)
LOWER_LIP = (0.018, 0.025)
LIP_AGE_THIN = 0.25                 # relative lip thinning across the age range
NECK_HALF_WIDTH = (0.135, 0.110)
NECK_WIDTH_SIZE = 0.040

# --- face: appearance ------------------------------------------------------------------------------
SKIN_PALETTE = (                    # skin tone range, light -> dark (by ancestry group + private spread)
    (250, 222, 200), (236, 192, 160), (205, 150, 110), (150, 100, 68), (96, 62, 42))
HAIR_PALETTE = (                    # hair base colour along timbre 0 -> 1
    (226, 196, 132),                # platinum/golden blond
    (186, 140, 78),                 # dark blond
    (160, 82, 45),                  # auburn
    (110, 70, 40),                  # brown
    (60, 40, 28),                   # dark brown
    (22, 18, 16),                   # black
)
EYE_PALETTE = (                     # eye (iris) colour along timbre 0 -> 1
    (90, 140, 200), (90, 150, 120), (130, 120, 60), (110, 70, 35), (60, 38, 24))
GREY_HAIR = (200, 200, 198)
GREY_AGE_START = 36.0               # grey fraction ramps from here ...
GREY_AGE_FULL = 72.0                # ... to (nearly) fully grey here
WRINKLE_AGE_START = 32.0            # wrinkle strength ramps from here to the oldest age
P_BEARD_MALE = 0.70                 # P(some facial hair | male), grows with age below
P_BEARD_AGE = 0.15
P_LONG_HAIR = (0.05, 0.95)          # (male, female): hair past the jaw
P_LIPSTICK = 0.80                   # | female
P_BALDING_AGE = 0.75                # P(receding hairline | male) scales with this times age fraction
SUPERSAMPLE = 4                     # draw at this multiple of the output size, then box-downsample
MAX_CANVAS = 1024                   # ... but never larger than this

# --- face: per-clip variation ------------------------------------------------------------------------
POSE_ROT_DEG = 2.5                  # sigma of in-plane rotation (clipped at 2 sigma)
POSE_SHIFT = 0.012                  # sigma of translation (image fractions)
POSE_SCALE_SIGMA = 0.025            # sigma of log scale
SMILE_RANGE = (-0.2, 1.0)           # expression: mouth-corner lift
MOUTH_OPEN_MAX = 0.022              # expression: inner-lip gap
BROW_RAISE_SIGMA = 0.005
LIGHT_GRADIENT = 0.16               # max relative brightness change across the image
LIGHT_GAIN_SIGMA = 0.06             # global exposure jitter
KEY_LIGHT = 0.09                    # soft brightening of the face centre (fake 3-D shading)
PIXEL_NOISE_SIGMA = 1.5             # sensor noise, in 8-bit levels

# ---------------------------------------------------------------------------------------------
# Identities.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Identity:
  """Everything about one synthetic person, drawn deterministically by `make_identity`."""
  index: int
  seed: int
  # hidden attributes (shared by voice and face)
  sex: int                          # 0 male, 1 female
  age: float                        # years
  size: float                       # [0, 1], body/head size
  timbre: float                     # [0, 1], dark -> bright voice; blond -> black hair, blue -> brown eyes
  rasp: float                       # [0, 1], smooth -> rough voice; thin -> thick brows, narrow -> wide nose
  ancestry: int                     # group 0..len(ACCENTS)-1: accent of the voice, skin-tone range of the face
  accent: str                       # espeak-ng voice name (one of ACCENTS)
  # voice
  f0_hz: float                      # median F0 of the final audio
  pitch_range: float                # espeak range: top = base * (1 + range)
  rate_wpm: float                   # speaking rate of the final audio
  vtl_factor: float                 # formant scale (> 1: shorter vocal tract)
  flutter: int                      # espeak voice-file parameters
  roughness: int
  breath: int
  formant_freq: tuple[int, ...]     # espeak formant 0..5 frequency / height / width, percent
  formant_height: tuple[int, ...]
  formant_width: tuple[int, ...]
  tilt: float                       # > 0 pre-emphasis (bright), < 0 low-pass (dark)
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
  hair_rgb: tuple[int, int, int]    # after greying
  brow_rgb: tuple[int, int, int]
  eye_rgb: tuple[int, int, int]
  lip_rgb: tuple[int, int, int]
  hair_style: str                   # short | crew | bald | long | bob | bun | bangs
  hair_length: float                # y of the hair ends (long styles)
  hair_volume: float                # hair thickness over the skull
  hairline: float                   # hairline height above the eye line
  hair_part: float                  # -1 .. 1, side of the parting
  recede: float                     # [0, 1] temple recession (M-shape)
  beard: str                        # none | stubble | moustache | goatee | full
  beard_alpha: float
  wrinkles: float                   # [0, 1]
  eyeliner: float                   # [0, 1]
  blush: float                      # [0, 1] cheek redness

  def attributes(self) -> dict[str, float]:
    """The hidden attributes, as stored with every clip for evaluation."""
    return {"sex": float(self.sex), "age": float(self.age), "size": float(self.size),
            "timbre": float(self.timbre), "rasp": float(self.rasp), "ancestry": float(self.ancestry)}


def _lerp(a: float, b: float, t: float) -> float:
  return a + (b - a) * t


def _mix_rgb(a: Sequence[float], b: Sequence[float], t: float) -> tuple[int, int, int]:
  """Linear blend of two RGB colours, t=0 -> a, t=1 -> b, clipped to uint8."""
  return tuple(int(round(min(255.0, max(0.0, _lerp(float(x), float(y), t))))) for x, y in zip(a, b))


def _palette(palette: Sequence[Sequence[int]], t: float) -> tuple[int, int, int]:
  """Piecewise-linear colour along a palette, t in [0, 1]."""
  t = min(1.0, max(0.0, t)) * (len(palette) - 1)
  i = min(int(t), len(palette) - 2)
  return _mix_rgb(palette[i], palette[i + 1], t - i)


def make_identity(seed: int, index: int) -> Identity:
  """Draws identity `index` of corpus `seed`: hidden attributes, then voice and face parameters."""
  rng = np.random.default_rng([seed, index, _TAG_IDENTITY])
  sex = int(rng.random() < P_FEMALE)
  age = float(rng.uniform(*AGE_RANGE))
  size = float(rng.beta(SIZE_BETA, SIZE_BETA))
  timbre = float(rng.random())
  rasp = float(rng.random())
  ancestry = int(rng.integers(len(ACCENTS)))
  accent = ACCENTS[ancestry] if rng.random() < P_ACCENT_OF_ANCESTRY else ACCENTS[int(rng.integers(len(ACCENTS)))]
  age01 = (age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0])   # 0 youngest .. 1 oldest

  # --- voice --------------------------------------------------------------------------------------
  f0 = F0_BASE_HZ[sex] * (1.0 + F0_AGE_SLOPE[sex] * (age - AGE_REF)) * (1.0 + F0_SIZE_SLOPE * (size - 0.5))
  f0 *= math.exp(rng.normal(0.0, F0_ID_SIGMA))
  f0 = float(np.clip(f0, *F0_CLAMP_HZ[sex]))
  pitch_range = PITCH_RANGE_BASE[sex] + PITCH_RANGE_AGE * age01 + rng.normal(0.0, PITCH_RANGE_ID_SIGMA)
  pitch_range = float(np.clip(pitch_range, 0.15, 0.8))
  rate = RATE_BASE_WPM + RATE_AGE_SLOPE * (age - AGE_REF) + rng.normal(0.0, RATE_ID_SIGMA)
  rate = float(np.clip(rate, 115.0, 215.0))
  vtl = VTL_SEX[sex] * (1.0 + VTL_SIZE_SLOPE * (size - 0.5)) * math.exp(rng.normal(0.0, VTL_ID_SIGMA))
  flutter = int(round(FLUTTER_BASE + FLUTTER_AGE * age01 ** 1.5 + FLUTTER_RASP * rasp))
  roughness = int(np.clip(round(ROUGHNESS_BASE + ROUGHNESS_RASP * rasp + ROUGHNESS_AGE * age01), 0, 7))
  breath = int(round(BREATH_SEX[sex] + BREATH_AGE * age01 + BREATH_RASP * rasp))
  freq_noise = np.exp(rng.normal(0.0, FORMANT_FREQ_ID_SIGMA, size=3))
  formant_freq = (100, *(int(round(100 * f)) for f in freq_noise), 100, 100)
  formant_height = tuple(int(round(_lerp(d, b, timbre))) for d, b in zip(FORMANT_HEIGHT_DARK, FORMANT_HEIGHT_BRIGHT))
  formant_width = tuple(int(round(_lerp(d, b, timbre))) for d, b in zip(FORMANT_WIDTH_DARK, FORMANT_WIDTH_BRIGHT))
  tilt = float(np.clip(TILT_MAX * (2.0 * timbre - 1.0) + rng.normal(0.0, TILT_ID_SIGMA), -TILT_MAX, TILT_MAX))

  # --- face geometry --------------------------------------------------------------------------------
  def g(pair: Sequence[float]) -> float:
    return float(pair[sex])

  face_half_width = g(FACE_HALF_WIDTH) + FACE_WIDTH_SIZE * (size - 0.5) + rng.normal(0, FACE_WIDTH_SIGMA)
  jaw_length = g(JAW_LENGTH) + JAW_LENGTH_SIZE * (size - 0.5) + rng.normal(0, JAW_LENGTH_SIGMA)
  jaw_squareness = max(1.8, g(JAW_SQUARENESS) + 0.4 * (size - 0.5) + rng.normal(0, JAW_SQUARENESS_SIGMA))
  chin_taper = float(np.clip(g(CHIN_TAPER) + rng.normal(0, CHIN_TAPER_SIGMA) - 0.05 * (size - 0.5), 0.0, 0.4))
  cheek_fullness = CHEEK_FULLNESS_SIZE * (size - 0.5) + rng.normal(0, 0.005)
  eye_scale = math.exp(rng.normal(0, EYE_SIZE_SIGMA))
  eye_width = g(EYE_WIDTH) * eye_scale
  eye_height = g(EYE_HEIGHT) * eye_scale * (1.0 - EYE_AGE_NARROW * age01) * math.exp(rng.normal(0, 0.05))
  brow_thickness = g(BROW_THICKNESS) + BROW_THICKNESS_RASP * (rasp - 0.5) + rng.normal(0, 0.002)
  nose_half_width = g(NOSE_HALF_WIDTH) + NOSE_WIDTH_RASP * (rasp - 0.5) + rng.normal(0, NOSE_WIDTH_SIGMA)
  lip_thin = 1.0 - LIP_AGE_THIN * age01

  # --- face appearance ----------------------------------------------------------------------------
  skin_t = float(np.clip((ancestry + 0.5) / len(ACCENTS) + rng.normal(0, SKIN_GROUP_SIGMA), 0, 1))
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
  lip = _mix_rgb(natural_lip, (185 + 40 * rng.random(), 30 + 30 * rng.random(), 60 + 40 * rng.random()), 0.75) \
      if lipstick else natural_lip

  # hair style
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
    style = str(rng.choice(["long", "bangs", "long"])) if long_hair else str(rng.choice(["bob", "short", "bun"]))
  hair_length = float(rng.uniform(0.78, 1.08) if style in ("long", "bangs") else rng.uniform(0.70, 0.80))
  hair_volume = float(rng.uniform(0.015, 0.035) if style in ("crew", "bald") else rng.uniform(0.03, 0.06))
  hairline = float(rng.uniform(0.145, 0.175) + 0.09 * recede)
  beard = "none"
  if sex == 0 and rng.random() < P_BEARD_MALE + P_BEARD_AGE * age01:
    beard = str(rng.choice(["stubble", "moustache", "goatee", "full", "full"]))
  beard_alpha = {"none": 0.0, "stubble": 0.30, "moustache": 0.92, "goatee": 0.92, "full": 0.93}[beard]
  beard_alpha *= float(rng.uniform(0.85, 1.0))

  return Identity(
      index=int(index), seed=int(seed), sex=sex, age=age, size=size, timbre=timbre, rasp=rasp,
      ancestry=ancestry, accent=accent,
      f0_hz=f0, pitch_range=pitch_range, rate_wpm=rate, vtl_factor=float(vtl), flutter=flutter,
      roughness=roughness, breath=breath, formant_freq=formant_freq, formant_height=formant_height,
      formant_width=formant_width, tilt=tilt,
      face_half_width=float(face_half_width), jaw_length=float(jaw_length),
      jaw_squareness=float(jaw_squareness), chin_taper=chin_taper, cheek_fullness=float(cheek_fullness),
      eye_half_spacing=float(EYE_HALF_SPACING + rng.normal(0, EYE_SPACING_SIGMA)),
      eye_width=float(eye_width), eye_height=float(eye_height), eye_tilt=float(rng.normal(0, 0.004)),
      brow_gap=float(g(BROW_GAP) + rng.normal(0, 0.005)), brow_arch=float(g(BROW_ARCH) + rng.normal(0, 0.003)),
      brow_thickness=float(max(0.006, brow_thickness)),
      nose_length=float(g(NOSE_LENGTH) + rng.normal(0, NOSE_LENGTH_SIGMA)),
      nose_half_width=float(nose_half_width), mouth_dy=float(MOUTH_DY + rng.normal(0, MOUTH_DY_SIGMA)),
      mouth_half_width=float(g(MOUTH_HALF_WIDTH) + rng.normal(0, MOUTH_WIDTH_SIGMA)),
      upper_lip=float(g(UPPER_LIP) * lip_thin * math.exp(rng.normal(0, 0.12))),
      lower_lip=float(g(LOWER_LIP) * lip_thin * math.exp(rng.normal(0, 0.12))),
      neck_half_width=float(g(NECK_HALF_WIDTH) + NECK_WIDTH_SIZE * (size - 0.5)),
      ear_size=float(rng.uniform(0.9, 1.15)),
      skin_rgb=skin, hair_rgb=hair, brow_rgb=brow, eye_rgb=eye_rgb, lip_rgb=lip,
      hair_style=style, hair_length=hair_length, hair_volume=hair_volume, hairline=hairline,
      hair_part=float(rng.uniform(-1, 1)), recede=recede, beard=beard, beard_alpha=beard_alpha,
      wrinkles=float(np.clip((age - WRINKLE_AGE_START) / (AGE_RANGE[1] - WRINKLE_AGE_START), 0, 1)),
      eyeliner=float(rng.uniform(0.5, 1.0) if sex == 1 else 0.0),
      blush=float(np.clip(0.25 * sex + 0.5 * rasp + rng.normal(0, 0.1), 0, 1)),
  )


def split_of(seed: int, index: int, fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS) -> str:
  """The split of identity `index`: decided per identity, so splits are speaker-disjoint."""
  fr = np.asarray(fractions, np.float64)
  if fr.shape != (3,) or np.any(fr < 0) or fr.sum() <= 0:
    raise ValueError(f"fractions must be 3 non-negative numbers, got {fractions!r}")
  u = np.random.default_rng([seed, index, _TAG_SPLIT]).random() * fr.sum()
  edges = np.cumsum(fr)
  return SPLITS[int(min(np.searchsorted(edges, u, side="right"), 2))]


# ---------------------------------------------------------------------------------------------
# Text.
# ---------------------------------------------------------------------------------------------

_SUBJECTS = (
    "the old farmer", "my neighbour", "a young teacher", "the doctor", "our captain", "the tall stranger",
    "my little brother", "her grandmother", "the baker", "a quiet student", "the mayor", "his best friend",
    "the gardener", "a tired driver", "the new manager", "my aunt", "the fisherman", "a clever girl",
    "the postman", "our guide", "the painter", "a busy nurse", "the young pilot", "my cousin",
    "the shopkeeper", "the scientist", "a friendly dog", "the musician", "the chef", "our landlord",
    "Anna", "Peter", "Maria", "Thomas", "Sarah", "David", "Emily", "James", "Laura", "Daniel",
)
_VERBS_PAST = (
    "found", "painted", "carried", "cleaned", "bought", "forgot", "opened", "fixed", "sold", "borrowed",
    "watched", "repaired", "moved", "lost", "ordered", "wrapped", "checked", "delivered", "measured",
    "described", "noticed", "collected", "hid", "returned", "brought", "picked up", "packed", "counted",
)
_VERBS_BASE = (
    "find", "paint", "carry", "clean", "buy", "open", "fix", "sell", "borrow", "watch", "repair", "move",
    "order", "wrap", "check", "deliver", "measure", "describe", "collect", "return", "bring", "pack",
)
_OBJECTS = (
    "the red bicycle", "a wooden chair", "the heavy box", "some fresh bread", "the broken window",
    "an old map", "the blue kettle", "a small boat", "the garden gate", "a basket of apples",
    "the silver key", "a warm blanket", "the kitchen table", "a pair of boots", "the yellow kite",
    "a stack of letters", "the green umbrella", "a bottle of milk", "the piano", "a long ladder",
    "the picture frame", "a bag of rice", "the winter coat", "a bunch of flowers", "the radio",
    "a jar of honey", "the camera", "a cup of tea", "the travel guide", "a set of tools",
)
_PLACES = (
    "in the garden", "near the river", "at the station", "behind the church", "on the bridge",
    "in the kitchen", "at the market", "by the lake", "in the old barn", "outside the library",
    "on the top shelf", "under the stairs", "at the harbour", "in the village square", "near the school",
    "on the hill", "at the corner shop", "in the back room", "by the fence", "across the street",
)
_TIMES = (
    "this morning", "last night", "on Sunday", "before dinner", "after lunch", "yesterday",
    "early today", "last winter", "in the evening", "at noon", "two days ago", "on Friday",
    "every week", "last summer", "just now", "at sunrise",
)
_REASONS = (
    "it was raining", "the shop was closed", "nobody else could", "it was getting late",
    "the road was blocked", "we needed it", "the weather was fine", "the bus was late",
    "it looked useful", "everyone was busy",
)
_TEMPLATES = (
    "{S} {V} {O} {P} {T}.",
    "{S} {V} {O} {T}.",
    "{Tc}, {s} {V} {O} {P}.",
    "Did you know that {s} {V} {O} {P}?",
    "I think {s} {V} {O} because {R}.",
    "We should {B} {O} {P} {T}.",
    "Please {B} {O} before {t}.",
    "{S} wanted to {B} {O}, but {R}.",
    "Why did {s} {B} {O} {P}?",
    "When {R}, {s} {V} {O}.",
    "{S} will {B} {O} {P}.",
    "After {t}, {s} {V} {O} and {V} {O}.",
)


def _cap(s: str) -> str:
  return s[:1].upper() + s[1:]


def sentence(rng: np.random.Generator) -> str:
  """One varied English sentence (about 6-16 words) from built-in templates and word lists."""
  template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]

  def pick(words: Sequence[str]) -> str:
    return words[int(rng.integers(len(words)))]

  out = []
  i = 0
  while i < len(template):              # left-to-right so each {X} gets a fresh draw
    if template[i] == "{":
      j = template.index("}", i)
      key = template[i + 1:j]
      word = {"S": lambda: _cap(pick(_SUBJECTS)), "s": lambda: pick(_SUBJECTS), "V": lambda: pick(_VERBS_PAST),
              "B": lambda: pick(_VERBS_BASE), "O": lambda: pick(_OBJECTS), "P": lambda: pick(_PLACES),
              "T": lambda: pick(_TIMES), "t": lambda: pick(_TIMES), "Tc": lambda: _cap(pick(_TIMES)),
              "R": lambda: pick(_REASONS)}[key]()
      out.append(word)
      i = j + 1
    else:
      out.append(template[i])
      i += 1
  return _cap("".join(out))


# ---------------------------------------------------------------------------------------------
# espeak-ng via ctypes.
# ---------------------------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2       # espeak_AUDIO_OUTPUT
_POS_CHARACTER = 1                  # espeak_POSITION_TYPE
_ESPEAK_CHARS_UTF8 = 1              # espeak_Synth flags
_ESPEAK_RATE = 1                    # espeak_PARAMETER
_ESPEAK_VOLUME = 2
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
_VARIANT_NAME = "s2fvoice"          # our voice-variant file in <mirror>/espeak-ng-data/voices/!v/
_BASE_VOICE = ACCENTS[0]            # the probe utterance's voice; identities speak with their accent

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
  """A private, lazily prepared espeak-ng: its own copy of the .so and a mirror of espeak-ng-data.

  espeak-ng is process-global and keeps static state between utterances, so `synthesize` loads the
  private library copy, synthesises one utterance and unloads it again, all under a lock.
  """

  def __init__(self):
    try:
      import espeakng_loader
    except ImportError as e:  # pragma: no cover - the venv has it
      raise RuntimeError("s2f_tf.data.synthetic needs the 'espeakng-loader' package (espeak-ng library + data)") from e
    src_lib = espeakng_loader.get_library_path()
    src_data = espeakng_loader.get_data_path()
    if not os.path.isfile(src_lib):
      raise RuntimeError(f"espeak-ng shared library not found at {src_lib}")
    self.pid = os.getpid()                 # forked children build their own (they must not share the variant file)
    self.root = tempfile.mkdtemp(prefix="s2f_espeak_")
    atexit.register(self._cleanup)
    self.lib_path = os.path.join(self.root, "libespeak-ng-s2f.so")
    shutil.copyfile(src_lib, self.lib_path)
    data = os.path.join(self.root, "espeak-ng-data")
    os.makedirs(os.path.join(data, "voices", "!v"))
    for name in os.listdir(src_data):
      if name == "voices":
        continue
      try:
        os.symlink(os.path.join(src_data, name), os.path.join(data, name))
      except OSError:
        srcp = os.path.join(src_data, name)
        (shutil.copytree if os.path.isdir(srcp) else shutil.copyfile)(srcp, os.path.join(data, name))
    self.variant_path = os.path.join(data, "voices", "!v", _VARIANT_NAME)
    self.lock = threading.Lock()
    self.sample_rate = 0
    self._chunks: list[np.ndarray] = []
    self._callback = _SYNTH_CALLBACK(self._on_audio)   # kept alive as long as this object
    # One probe utterance: fails early (with the path) if the library cannot be used.
    self.synthesize(_variant_text(100.0, 0.4, 2, 2, 0, (100,) * 6, (100,) * 6, (100,) * 6), "test", 175)

  def _cleanup(self) -> None:
    if os.getpid() == self.pid:
      shutil.rmtree(self.root, ignore_errors=True)

  def _on_audio(self, wav, numsamples, events) -> int:
    if wav and numsamples > 0:
      # string_at, not np.ctypeslib.as_array: the latter caches a ctypes array type per length (a leak)
      self._chunks.append(np.frombuffer(ctypes.string_at(wav, 2 * numsamples), dtype=np.int16).copy())
    return 0

  def _load(self) -> ctypes.CDLL:
    try:
      lib = ctypes.CDLL(self.lib_path)
    except OSError as e:
      raise RuntimeError(f"cannot load the espeak-ng library {self.lib_path} "
                         f"(copied from espeakng_loader.get_library_path()): {e}") from e
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
    return lib

  def synthesize(self, variant: str, text: str, rate_wpm: int, noise_seed: int = 1,
                 voice: str = _BASE_VOICE) -> np.ndarray:
    """int16 [samples] at `self.sample_rate` for `text` spoken by espeak-ng `voice` + `variant`.

    `noise_seed` seeds espeak's breath-noise generator (espeak_Initialize seeds it from the clock).
    """
    import _ctypes
    with self.lock:
      with open(self.variant_path, "w") as f:
        f.write(variant)
      lib = self._load()
      try:
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, ESPEAK_BUFFER_MS, self.root.encode(), 0)
        if rate <= 0:
          raise RuntimeError(f"espeak_Initialize failed (library {self.lib_path}, data {self.root}/espeak-ng-data)")
        self.sample_rate = rate
        lib.espeak_SetSynthCallback(self._callback)
        if lib.espeak_SetVoiceByName(f"{voice}+{_VARIANT_NAME}".encode()) != 0:
          raise RuntimeError(f"espeak-ng: cannot select voice {voice}+{_VARIANT_NAME}")
        lib.espeak_SetParameter(_ESPEAK_RATE, int(rate_wpm), 0)
        lib.espeak_SetParameter(_ESPEAK_VOLUME, 100, 0)
        lib.espeak_SetParameter(_ESPEAK_PITCH, 50, 0)
        lib.espeak_SetParameter(_ESPEAK_RANGE, 50, 0)
        lib.espeak_ng_SetRandSeed(int(noise_seed) & 0x7FFFFFFF)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        if err != 0:
          raise RuntimeError(f"espeak_Synth failed with error {err}")
        lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
      finally:
        lib.espeak_Terminate()
        handle = lib._handle
        del lib
        _ctypes.dlclose(handle)
    if not chunks:
      return np.zeros([0], np.int16)
    return np.concatenate(chunks).astype(np.int16)


_ENGINE: _Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Espeak:
  """The process's espeak-ng, prepared on first use."""
  global _ENGINE
  with _ENGINE_LOCK:
    if _ENGINE is None or _ENGINE.pid != os.getpid():
      _ENGINE = _Espeak()
    return _ENGINE


def _variant_text(pitch_base: float, pitch_range: float, flutter: int, roughness: int, breath: int,
                  formant_freq: Sequence[int], formant_height: Sequence[int], formant_width: Sequence[int],
                  female: bool = False) -> str:
  """An espeak-ng voice-variant file (see espeak-ng docs/voices.md)."""
  lo = max(20, int(round(pitch_base)))
  hi = max(lo + 1, int(round(pitch_base * (1.0 + pitch_range))))
  lines = ["language variant", f"name {_VARIANT_NAME}", f"gender {'female' if female else 'male'}",
           f"pitch {lo} {hi}", f"flutter {int(flutter)}", f"roughness {int(np.clip(roughness, 0, 7))}"]
  for k in range(6):
    lines.append(f"formant {k} {int(formant_freq[k])} {int(formant_height[k])} {int(formant_width[k])}")
  if breath > 0:
    b = int(breath)
    lines.append(f"breath {max(0, b - 1)} {b} {b + 1} {b + 1} {b + 1} {b + 1} {b} {max(0, b - 1)}")
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Voice.
# ---------------------------------------------------------------------------------------------


def _frame_rms(x: np.ndarray, frame: int) -> np.ndarray:
  """float [frames]: RMS of consecutive non-overlapping frames of x (last partial frame dropped)."""
  n = len(x) // frame
  if n == 0:
    return np.zeros([0])
  return np.sqrt(np.mean(np.square(x[:n * frame].reshape(n, frame)), axis=1))


def _trim(x: np.ndarray, sample_rate: int) -> np.ndarray:
  """Trims leading/trailing silence, keeping TRIM_PAD_SECONDS on each side. float [n] -> [m]."""
  frame = max(1, int(TRIM_FRAME_SECONDS * sample_rate))
  rms = _frame_rms(x, frame)
  if rms.size == 0 or rms.max() <= 0:
    return x
  active = np.nonzero(rms > rms.max() * 10.0 ** (TRIM_THRESHOLD_DB / 20.0))[0]
  pad = int(TRIM_PAD_SECONDS * sample_rate)
  start = max(0, active[0] * frame - pad)
  end = min(len(x), (active[-1] + 1) * frame + pad)
  out = x[start:end]
  if end - start < (active[-1] + 1 - active[0]) * frame + 2 * pad:   # pad with zeros where the source ran out
    before = max(0, pad - active[0] * frame)
    after = max(0, (active[-1] + 1) * frame + pad - len(x))
    out = np.concatenate([np.zeros([before], x.dtype), out, np.zeros([after], x.dtype)])
  return out


def synthesize_voice(identity: Identity, text: str, rng: np.random.Generator,
                     sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Speaks `text` with `identity`'s voice. Returns int16 [samples] mono at `sample_rate`.

  Per-clip small jitter (F0, range, rate, gain, noise floor) comes from `rng`. Leading and
  trailing silence is trimmed to TRIM_PAD_SECONDS.
  """
  import soxr
  from scipy.signal import lfilter
  engine = _engine()
  k = identity.vtl_factor
  f0 = identity.f0_hz * math.exp(rng.normal(0.0, F0_CLIP_SIGMA))
  prange = float(np.clip(identity.pitch_range + rng.normal(0.0, PITCH_RANGE_CLIP_SIGMA), 0.1, 0.9))
  rate = identity.rate_wpm * math.exp(rng.normal(0.0, RATE_CLIP_SIGMA))
  # espeak speaks at F0/k and rate/k; resampling by k then scales formants, F0 and tempo by k.
  base = f0 / k / (1.0 + ESPEAK_F0_RANGE_POS * prange)
  variant = _variant_text(base, prange, identity.flutter, identity.roughness, identity.breath,
                          identity.formant_freq, identity.formant_height, identity.formant_width,
                          female=bool(identity.sex))
  espeak_rate = int(round(np.clip(rate / k, *RATE_LIMITS)))
  raw = engine.synthesize(variant, text, espeak_rate, noise_seed=int(rng.integers(1, 2 ** 31 - 1)),
                          voice=identity.accent)                           # int16 [n] at espeak's rate
  if raw.size == 0:
    raise RuntimeError(f"espeak-ng produced no audio for {text!r}")
  x = raw.astype(np.float64) / 32768.0
  x = soxr.resample(x, engine.sample_rate * k, sample_rate, quality="HQ")       # [m] at sample_rate
  if identity.tilt >= 0:                                                        # bright: pre-emphasis
    x = lfilter([1.0, -identity.tilt], [1.0], x)
  else:                                                                         # dark: 1-pole low-pass
    a = -identity.tilt
    x = lfilter([1.0 - a], [1.0, -a], x)
  x = _trim(x, sample_rate)
  frame = max(1, int(TRIM_FRAME_SECONDS * sample_rate))
  rms = _frame_rms(x, frame)
  speech_rms = float(np.sqrt(np.mean(np.square(rms[rms > rms.max() * 0.1])))) if rms.size and rms.max() > 0 else 1.0
  gain_db = TARGET_RMS_DBFS + rng.normal(0.0, GAIN_CLIP_SIGMA_DB)
  x = x * (10.0 ** (gain_db / 20.0) / max(speech_rms, 1e-9))
  snr = rng.uniform(*NOISE_SNR_DB)
  noise_rng = np.random.default_rng(rng.integers(0, 2 ** 63 - 1))
  x = x + noise_rng.normal(0.0, 10.0 ** ((gain_db - snr) / 20.0), size=x.shape)
  x = np.clip(x, -PEAK_LIMIT, PEAK_LIMIT)
  return np.round(x * 32767.0).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# Face.
# ---------------------------------------------------------------------------------------------


def _superellipse_jaw(identity: Identity, cy: float) -> np.ndarray:
  """float [17, 2]: jaw points 0-16 (image-left ear -> chin -> image-right ear)."""
  a, b, n = identity.face_half_width, identity.jaw_length, identity.jaw_squareness
  phi = np.linspace(0.0, math.pi, 17)
  c, s = np.cos(phi), np.sin(phi)
  xs = np.sign(c) * np.abs(c) ** (2.0 / n)
  ys = np.abs(s) ** (2.0 / n)
  taper = 1.0 - identity.chin_taper * ys ** 2
  bulge = 1.0 + identity.cheek_fullness / a * np.sin(phi * 2.0) ** 2          # fuller lower cheeks
  x = FACE_CX - a * xs * taper * bulge
  y = cy + b * ys
  return np.stack([x, y], axis=1)


def _landmarks(identity: Identity, expr: dict[str, float]) -> np.ndarray:
  """float [68, 2]: the identity's iBUG-68 landmarks in the canonical (un-posed) frame."""
  cx, ey = FACE_CX, EYE_Y
  pts = np.zeros([NUM_LANDMARKS, 2])
  pts[0:17] = _superellipse_jaw(identity, ey + JAW_TOP_DY)
  # eyes: 36-41 image-left (outer corner 36 on the left), 42-47 image-right (outer corner 45 on the right)
  w, h, d = identity.eye_width, identity.eye_height, identity.eye_half_spacing
  for side, base in ((-1, 36), (1, 42)):
    ecx = cx + side * d
    outer = (ecx + side * w / 2, ey + identity.eye_tilt)
    inner = (ecx - side * w / 2, ey + 0.002)
    up_o = (ecx + side * w / 6, ey - h / 2)
    up_i = (ecx - side * w / 6, ey - h / 2 + 0.002)
    lo_i = (ecx - side * w / 6, ey + h * 0.38)
    lo_o = (ecx + side * w / 6, ey + h * 0.38)
    ring = [outer, up_o, up_i, inner, lo_i, lo_o] if side < 0 else [inner, up_i, up_o, outer, lo_o, lo_i]
    pts[base:base + 6] = ring
  # brows: 17-21 image-left outer -> inner, 22-26 image-right inner -> outer
  by = ey - identity.brow_gap - expr["brow_raise"]
  for side, base in ((-1, 17), (1, 22)):
    ecx = cx + side * d
    t = np.linspace(0.0, 1.0, 5)                       # 0 = outer end, 1 = inner end
    x = ecx + side * (0.075 - t * 0.13)
    y = by + 0.012 * (1 - t) ** 2 - identity.brow_arch * np.sin(math.pi * (0.15 + 0.75 * t))
    if side < 0:
      pts[base:base + 5] = np.stack([x, y], axis=1)
    else:
      pts[base:base + 5] = np.stack([x, y], axis=1)[::-1]
  # nose: 27-30 bridge, 31-35 base (image-left -> right)
  tip_y = ey + identity.nose_length
  pts[27:31] = np.stack([np.full(4, cx), np.linspace(ey - 0.004, tip_y, 4)], axis=1)
  nw = identity.nose_half_width
  pts[31:36] = [(cx - nw, tip_y + 0.004), (cx - nw * 0.5, tip_y + 0.014), (cx, tip_y + 0.019),
                (cx + nw * 0.5, tip_y + 0.014), (cx + nw, tip_y + 0.004)]
  # mouth: outer 48-59 (48 left corner, 51 top centre, 54 right corner, 57 bottom centre), inner 60-67
  my = tip_y + identity.mouth_dy
  mw = identity.mouth_half_width * (1.0 + 0.08 * expr["smile"])
  lift = 0.012 * expr["smile"]
  opening = expr["open"]
  ul, ll = identity.upper_lip, identity.lower_lip

  def curve(u: float) -> float:          # corner lift profile, u in [-1, 1]
    return -lift * u ** 2

  outer = []
  for u, dy in ((-1.0, 0.0), (-0.6, -ul * 0.8), (-0.22, -ul), (0.0, -ul * 0.82), (0.22, -ul), (0.6, -ul * 0.8),
                (1.0, 0.0)):
    outer.append((cx + u * mw, my + curve(u) + dy - (opening / 2 if abs(u) < 1 else 0.0)))
  for u, dy in ((0.6, ll * 0.8), (0.25, ll), (0.0, ll * 1.02), (-0.25, ll), (-0.6, ll * 0.8)):
    outer.append((cx + u * mw, my + curve(u) + dy + opening / 2))
  pts[48:60] = outer
  inner = []
  for u, sgn in ((-0.88, 0), (-0.4, -1), (0.0, -1), (0.4, -1), (0.88, 0), (0.4, 1), (0.0, 1), (-0.4, 1)):
    inner.append((cx + u * mw, my + curve(u) + sgn * opening / 2 * (1.0 - 0.3 * abs(u))))
  pts[60:68] = inner
  return pts


def _skull_arc(identity: Identity, n: int = 24, grow: float = 0.0, grow_top: float = 0.0) -> np.ndarray:
  """float [n, 2]: the skull outline above the jaw-top line, from image-right to image-left."""
  cy = EYE_Y + JAW_TOP_DY
  a = identity.face_half_width + grow
  rv = HEAD_TOP_DY + grow_top
  t = np.linspace(0.0, math.pi, n)
  x = FACE_CX + a * np.cos(t) * (1.0 - 0.05 * np.sin(t))
  y = cy - rv * np.sin(t)
  return np.stack([x, y], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24, rot: float = 0.0) -> np.ndarray:
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
  y -= identity.recede * 0.10 * np.exp(-((np.abs(u) - 0.55) / 0.22) ** 2)        # M-shaped recession
  if identity.hair_style == "bangs":
    y = np.minimum(EYE_Y - 0.085 + 0.012 * np.abs(u) ** 2, temple_y) + 0.004 * np.cos(u * 23.0)
  elif identity.hair_style in ("long", "bob", "short") and identity.sex == 1:
    p = identity.hair_part * 0.5                                                  # side-swept fringe
    y = y + 0.035 * np.exp(-((u - (-np.sign(p) * 0.35 if p else 0.35)) / 0.45) ** 2)
  x = FACE_CX + u * a * 0.93
  return np.stack([x, y], axis=1)


class _Canvas:
  """A supersampled PIL canvas addressed in normalised coordinates through a pose transform."""

  def __init__(self, size: int, scale: int, background: np.ndarray, pose: np.ndarray):
    from PIL import Image, ImageDraw
    self.size, self.scale = size, scale
    self.px = size * scale
    self.image = Image.fromarray(background)
    self.draw = ImageDraw.Draw(self.image, "RGBA")
    self.pose = pose                                                # [2, 3] affine on normalised coords

  def xy(self, pts: np.ndarray) -> list[tuple[float, float]]:
    """Normalised (un-posed) points [n, 2] -> posed PIL pixel coordinates on the canvas."""
    p = np.asarray(pts, np.float64) @ self.pose[:, :2].T + self.pose[:, 2]
    p = p * self.px - 0.5                                          # PIL: integer coords at pixel centres
    return [(float(x), float(y)) for x, y in p]

  def poly(self, pts: np.ndarray, fill: Sequence[int], alpha: float = 1.0) -> None:
    self.draw.polygon(self.xy(pts), fill=(*[int(c) for c in fill], int(round(255 * alpha))))

  def line(self, pts: np.ndarray, fill: Sequence[int], width: float, alpha: float = 1.0) -> None:
    w = max(1, int(round(width * self.px)))
    self.draw.line(self.xy(pts), fill=(*[int(c) for c in fill], int(round(255 * alpha))), width=w, joint="curve")


def _smooth_curve(pts: np.ndarray, n: int = 8, closed: bool = False) -> np.ndarray:
  """Catmull-Rom interpolation through `pts` [k, 2] -> [m, 2] (passes through every input point)."""
  p = np.asarray(pts, np.float64)
  if closed:
    p = np.concatenate([p[-1:], p, p[:2]])
  else:
    p = np.concatenate([p[:1], p, p[-1:]])
  out = []
  for i in range(1, len(p) - 2):
    p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
    for t in np.linspace(0.0, 1.0, n, endpoint=False):
      t2, t3 = t * t, t * t * t
      out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
  if not closed:
    out.append(p[-2])
  return np.asarray(out)


def _darker(rgb: Sequence[int], f: float) -> tuple[int, int, int]:
  return tuple(int(max(0, min(255, c * f))) for c in rgb)


def draw_face(identity: Identity, image_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Draws `identity`'s face. Returns (uint8 [S, S, 3] RGB, float32 [68, 2] landmarks (x, y) in [0, 1]).

  Landmarks are exact for the drawn face (its features are drawn from them); pixel column j has
  x = (j + 0.5) / S. Per-clip variation (pose, expression, lighting, background) comes from `rng`.
  """
  from PIL import Image
  S = int(image_size)
  if S < 16:
    raise ValueError(f"image_size must be >= 16, got {image_size}")
  idt = identity
  # ---- per-clip draws (a fixed number, in a fixed order) ---------------------------------------------
  rot = math.radians(float(np.clip(rng.normal(0, POSE_ROT_DEG), -2 * POSE_ROT_DEG, 2 * POSE_ROT_DEG)))
  shift = np.clip(rng.normal(0, POSE_SHIFT, size=2), -2 * POSE_SHIFT, 2 * POSE_SHIFT)
  scale = math.exp(float(np.clip(rng.normal(0, POSE_SCALE_SIGMA), -2 * POSE_SCALE_SIGMA, 2 * POSE_SCALE_SIGMA)))
  expr = {"smile": float(rng.uniform(*SMILE_RANGE)), "open": float(MOUTH_OPEN_MAX * rng.random() ** 2),
          "brow_raise": float(rng.normal(0, BROW_RAISE_SIGMA))}
  gaze = rng.normal(0, 0.15, size=2)
  bg_hsv = (rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.35, 0.92))
  light_dir = rng.uniform(0, 2 * math.pi)
  light_amp = rng.uniform(0, LIGHT_GRADIENT)
  light_gain = math.exp(rng.normal(0, LIGHT_GAIN_SIGMA))
  noise_seed = int(rng.integers(0, 2 ** 63 - 1))
  shirt_rgb = tuple(int(c) for c in rng.integers(20, 236, size=3))  # clothes change between videos

  # pose: rotate/scale about the image centre, then shift (normalised coordinates)
  c, s = math.cos(rot) * scale, math.sin(rot) * scale
  A = np.array([[c, -s], [s, c]])
  centre = np.array([0.5, 0.5])
  pose = np.concatenate([A, (centre - A @ centre + shift)[:, None]], axis=1)    # [2, 3]

  scale_px = max(1, min(SUPERSAMPLE, MAX_CANVAS // S))
  P = S * scale_px
  # background: vertical gradient of a muted colour
  import colorsys
  bg = np.array(colorsys.hsv_to_rgb(*bg_hsv)) * 255.0
  yy = np.linspace(-0.5, 0.5, P)[:, None, None]
  background = np.clip(bg[None, None, :] * (1.0 - 0.25 * yy), 0, 255) * np.ones([1, P, 1])
  cv = _Canvas(S, scale_px, background.astype(np.uint8), pose)

  lm = _landmarks(idt, expr)                                           # [68, 2] canonical
  cy = EYE_Y + JAW_TOP_DY
  a = idt.face_half_width
  skin = idt.skin_rgb
  skin_shadow = _darker(skin, 0.8)
  hair = idt.hair_rgb
  hair_dark = _darker(hair, 0.75)
  long_styles = ("long", "bangs")

  # ---- shirt, back hair, neck ------------------------------------------------------------------------
  nw = idt.neck_half_width
  shirt = np.array([(-0.2, 1.2), (-0.2, 1.0), (FACE_CX - 0.40, 0.955), (FACE_CX - nw - 0.03, 0.925),
                    (FACE_CX, 0.985 + 0.02 * (idt.sex == 1)), (FACE_CX + nw + 0.03, 0.925), (FACE_CX + 0.40, 0.955),
                    (1.2, 1.0), (1.2, 1.2)])
  cv.poly(shirt, shirt_rgb)

  # ---- back hair (behind head and shoulders) ------------------------------------------------------------------
  if idt.hair_style in long_styles or idt.hair_style == "bob":
    v = idt.hair_volume
    top = _skull_arc(idt, 20, grow=v + 0.01, grow_top=v)                  # right -> left over the top
    end = idt.hair_length
    spread = 0.06 if idt.hair_style in long_styles else 0.03
    left_side = np.array([(FACE_CX - a - v - spread * 0.5, cy + 0.12), (FACE_CX - a - v - spread, end - 0.05),
                          (FACE_CX - a * 0.7, end)])
    right_side = np.array([(FACE_CX + a * 0.7, end), (FACE_CX + a + v + spread, end - 0.05),
                           (FACE_CX + a + v + spread * 0.5, cy + 0.12)])
    cv.poly(_smooth_curve(np.concatenate([top, left_side, right_side]), 4, closed=True), _darker(hair, 0.85))

  # ---- neck and shirt ------------------------------------------------------------------------------------------
  neck = np.array([(FACE_CX - nw, cy + 0.18), (FACE_CX - nw * 1.02, 0.96), (FACE_CX - nw * 1.3, 1.05),
                   (FACE_CX + nw * 1.3, 1.05), (FACE_CX + nw * 1.02, 0.96), (FACE_CX + nw, cy + 0.18)])
  cv.poly(neck, skin_shadow)
  # ---- ears ------------------------------------------------------------------------------------------------------
  ear_r = 0.028 * idt.ear_size
  ear_y = EYE_Y + 0.07
  for side in (-1, 1):
    jaw_x = lm[2 if side < 0 else 14, 0]
    ex = jaw_x + side * 0.012
    cv.poly(_ellipse(ex, ear_y, ear_r, ear_r * 2.0, 20, rot=side * 0.15), skin)
    cv.poly(_ellipse(ex + side * 0.004, ear_y, ear_r * 0.45, ear_r * 1.3, 16, rot=side * 0.15), skin_shadow, 0.8)

  # ---- face -----------------------------------------------------------------------------------------------------
  face_outline = np.concatenate([lm[0:17], _skull_arc(idt, 24)[1:-1]])       # jaw then skull (right -> left)
  cv.poly(_smooth_curve(face_outline, 3, closed=True), skin)
  # soft shading: darker rim, lighter centre
  cv.line(_smooth_curve(face_outline, 3, closed=True), skin_shadow, 0.012, 0.35)
  # under-chin shadow on the neck is implied by the darker neck colour
  # cheeks
  cheek_col = (210, 90, 90)
  for side in (-1, 1):
    cv.poly(_ellipse(FACE_CX + side * (idt.eye_half_spacing + 0.02), EYE_Y + 0.13, 0.055, 0.04, 20), cheek_col,
            0.03 + 0.17 * idt.blush)

  # ---- wrinkles and age marks ---------------------------------------------------------------------------------------------
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
    for side, nose_i, mouth_i in ((-1, 31, 48), (1, 35, 54)):               # nasolabial folds
      p0 = lm[nose_i] + np.array([side * 0.012, -0.012])
      p2 = lm[mouth_i] + np.array([side * 0.018, 0.012])
      p1 = (p0 + p2) / 2 + np.array([side * 0.014, 0.0])
      cv.line(_smooth_curve(np.array([p0, p1, p2]), 5), line_col, 0.0045, 0.15 + 0.6 * wr)
    for side, corner in ((-1, 36), (1, 45)):                                  # crow's feet
      for k in (-1, 0, 1):
        p0 = lm[corner] + np.array([side * 0.012, 0.0])
        cv.line(np.array([p0, p0 + np.array([side * 0.022, k * 0.012])]), line_col, 0.003, 0.6 * wr ** 1.5)
    for side, (i0, i1) in ((-1, (36, 39)), (1, (42, 45))):                    # eye bags
      xs = np.linspace(lm[i0, 0] + 0.005, lm[i1, 0] - 0.005, 6)
      ys = EYE_Y + idt.eye_height * 0.9 + 0.008 * np.sin(np.linspace(0, math.pi, 6))
      cv.line(np.stack([xs, ys], 1), line_col, 0.004, 0.5 * wr)
    for side, j in ((-1, 5), (1, 11)):                                       # jowls
      p = lm[j] + np.array([-side * 0.02, -0.03])
      cv.line(np.array([p, p + np.array([side * 0.01, 0.03])]), line_col, 0.004, 0.5 * wr ** 2)

  # ---- beard -----------------------------------------------------------------------------------------------------------
  beard_col = _darker(hair, 0.8)
  if idt.beard != "none":
    tip_y = lm[33, 1]
    jaw_out = (lm[2:15] - np.array([FACE_CX, cy])) * 1.015 + np.array([FACE_CX, cy])
    if idt.beard in ("full", "stubble"):
      top_edge = np.array([(lm[14, 0] - 0.02, lm[29, 1] + 0.01), (lm[54, 0] + 0.03, tip_y + 0.02),
                           (lm[35, 0] + 0.005, tip_y + 0.01), (lm[33, 0], tip_y + 0.005),
                           (lm[31, 0] - 0.005, tip_y + 0.01), (lm[48, 0] - 0.03, tip_y + 0.02),
                           (lm[2, 0] + 0.02, lm[29, 1] + 0.01)])
      cv.poly(np.concatenate([jaw_out, top_edge]), beard_col, idt.beard_alpha)
    if idt.beard in ("moustache", "goatee"):
      mo = np.array([lm[48] + (-0.012, 0.004), lm[31] + (-0.004, 0.006), lm[33] + (0, 0.004), lm[35] + (0.004, 0.006),
                     lm[54] + (0.012, 0.004), lm[53] + (0, -0.002), lm[51] + (0, -0.001), lm[49] + (0, -0.002)])
      cv.poly(_smooth_curve(mo, 3, closed=True), beard_col, idt.beard_alpha)
    if idt.beard == "goatee":
      gt = np.array([lm[59] + (-0.01, 0.004), lm[57] + (0, 0.004), lm[55] + (0.01, 0.004), lm[10] + (-0.015, -0.005),
                     lm[8] + (0, 0.006), lm[6] + (0.015, -0.005)])
      cv.poly(_smooth_curve(gt, 3, closed=True), beard_col, idt.beard_alpha)

  # ---- nose ------------------------------------------------------------------------------------------------------------
  nose_col = _darker(skin, 0.72)
  for side in (-1, 1):
    bridge = np.array([lm[27] + (side * 0.022, 0.01), lm[29] + (side * 0.018, 0.0), lm[31 if side < 0 else 35]])
    cv.line(_smooth_curve(bridge, 5), nose_col, 0.004, 0.25)
    ala = np.array([lm[31 if side < 0 else 35], lm[31 if side < 0 else 35] + (side * 0.006, -0.02),
                    lm[30] + (side * 0.012, -0.01)])
    cv.line(_smooth_curve(ala, 5), nose_col, 0.0045, 0.55)
  cv.line(_smooth_curve(lm[31:36], 4), nose_col, 0.005, 0.6)
  for side, j in ((-1, 32), (1, 34)):
    cv.poly(_ellipse(lm[j, 0] + side * 0.002, lm[j, 1] - 0.004, 0.009, 0.005, 12), _darker(skin, 0.4), 0.8)
  cv.poly(_ellipse(lm[30, 0], lm[30, 1] - 0.008, 0.012, 0.008, 12), (255, 255, 255), 0.12)

  # ---- eyes ------------------------------------------------------------------------------------------------------------
  eye_polys = [_smooth_curve(lm[36:42], 4, closed=True), _smooth_curve(lm[42:48], 4, closed=True)]
  for ep in eye_polys:                                                        # socket shadow
    cv.poly(ep + np.array([0.0, -0.006]), _darker(skin, 0.75), 0.35)
  sclera = (238, 234, 228)
  for ep in eye_polys:
    cv.poly(ep, sclera)
  # iris and pupil, clipped to the eye openings
  layer = cv.image.copy()
  from PIL import ImageDraw
  ldraw = ImageDraw.Draw(layer, "RGBA")
  mask = Image.new("L", cv.image.size, 0)
  mdraw = ImageDraw.Draw(mask)
  iris_r = idt.eye_height * 0.58
  for side, (i0, i1) in ((-1, (36, 39)), (1, (42, 45))):
    ecx = (lm[i0, 0] + lm[i1, 0]) / 2 + gaze[0] * idt.eye_width * 0.12
    ecy = EYE_Y + 0.001 + gaze[1] * idt.eye_height * 0.1
    ldraw.polygon(cv.xy(_ellipse(ecx, ecy, iris_r, iris_r, 20)), fill=(*idt.eye_rgb, 255))
    ldraw.polygon(cv.xy(_ellipse(ecx, ecy, iris_r * 0.45, iris_r * 0.45, 16)), fill=(15, 12, 12, 255))
    ldraw.polygon(cv.xy(_ellipse(ecx + iris_r * 0.3, ecy - iris_r * 0.3, iris_r * 0.18, iris_r * 0.18, 10)),
                  fill=(255, 255, 255, 200))
  for ep in eye_polys:
    mdraw.polygon(cv.xy(ep), fill=255)
  cv.image.paste(layer, (0, 0), mask)
  lid_col = (35, 25, 22)
  for side, ring in ((-1, lm[36:42]), (1, lm[42:48])):
    upper = ring[0:4]
    lower = np.concatenate([ring[3:6], ring[0:1]])
    cv.line(_smooth_curve(upper, 5), lid_col, 0.004 + 0.004 * idt.eyeliner, 0.9)
    cv.line(_smooth_curve(lower, 5), _darker(skin, 0.6), 0.003, 0.6)
    if idt.eyeliner > 0:                                                    # outer-corner lash flick
      corner = ring[0] if side < 0 else ring[3]
      cv.line(np.array([corner, corner + np.array([side * 0.012, -0.008])]), lid_col, 0.004, 0.8 * idt.eyeliner)
    crease = (upper - np.array([FACE_CX, EYE_Y])) * np.array([1.0, 1.0]) + np.array([FACE_CX, EYE_Y - idt.eye_height * 0.45])
    cv.line(_smooth_curve(crease, 5), _darker(skin, 0.7), 0.003, 0.35)

  # ---- brows -----------------------------------------------------------------------------------------------------------
  for side, brow in ((-1, lm[17:22]), (1, lm[22:27][::-1])):                 # both ordered outer -> inner
    t = np.linspace(0.35, 1.0, 5)
    thick = idt.brow_thickness * t
    upper = brow - np.stack([np.zeros(5), thick * 0.6], 1)
    lower = brow + np.stack([np.zeros(5), thick * 0.4], 1)
    outline = np.concatenate([_smooth_curve(upper, 4), _smooth_curve(lower[::-1], 4)])
    cv.poly(outline, idt.brow_rgb, 0.92)

  # ---- mouth -----------------------------------------------------------------------------------------------------------
  lip = idt.lip_rgb
  cv.poly(_smooth_curve(lm[48:60], 4, closed=True), lip)
  upper_lip = np.concatenate([lm[48:55], lm[64:59:-1]])                      # 48..54 then inner 64..60
  cv.poly(upper_lip, _darker(lip, 0.88))
  if expr["open"] > 0.004:
    inner = _smooth_curve(lm[60:68], 4, closed=True)
    cv.poly(inner, (70, 25, 30))
    teeth = np.array([lm[60], lm[61], lm[62], lm[63], lm[64], lm[63] + (0, 0.006), lm[62] + (0, 0.007),
                      lm[61] + (0, 0.006)])
    cv.poly(teeth, (235, 230, 220), 0.95)
  cv.line(_smooth_curve(lm[60:65], 4), _darker(lip, 0.5), 0.004, 0.9)
  cv.poly(_ellipse(lm[57, 0], lm[57, 1] - idt.lower_lip * 0.45, idt.mouth_half_width * 0.35, idt.lower_lip * 0.2, 12),
          (255, 255, 255), 0.12)

  # ---- front hair -------------------------------------------------------------------------------------------------------
  v = idt.hair_volume
  if idt.hair_style != "bald":
    line_pts = _hairline(idt)                                                   # left -> right
    short = idt.hair_style in ("crew", "short", "bun")
    outer = _skull_arc(idt, 24, grow=v * (0.3 if short else 0.8) + 0.003, grow_top=v)   # right -> left
    if short:                                                                   # sideburns down to the ear
      sb_y = EYE_Y + (0.05 if idt.sex == 0 else 0.02)
      right_down = np.array([(FACE_CX + a + 0.004, sb_y), (FACE_CX + a - 0.016, sb_y),
                             (FACE_CX + a * 0.93, EYE_Y - 0.03)])
      left_down = np.array([(FACE_CX - a * 0.93, EYE_Y - 0.03), (FACE_CX - a + 0.016, sb_y),
                            (FACE_CX - a - 0.004, sb_y)])
      cap = np.concatenate([outer, left_down[::-1], line_pts, right_down[::-1]])
    else:
      side_drop = 0.06
      right_down = np.array([(FACE_CX + a + 0.006, cy + side_drop), (FACE_CX + a - 0.012, cy + side_drop)])
      left_down = np.array([(FACE_CX - a + 0.012, cy + side_drop), (FACE_CX - a - 0.006, cy + side_drop)])
      cap = np.concatenate([outer, left_down, line_pts, right_down])
    cap = _smooth_curve(cap, 3, closed=True)
    cv.poly(cap, hair, 0.8 if idt.hair_style == "crew" else 1.0)
    for k in range(-3, 4):                                                    # strands for texture
      x0 = FACE_CX + k * a * 0.2
      strand = np.array([(x0 * 0.9 + FACE_CX * 0.1, EYE_Y - HEAD_TOP_DY + 0.01), (x0, EYE_Y - idt.hairline - 0.02)])
      cv.line(strand, hair_dark, 0.003, 0.35)
  else:
    for side in (-1, 1):                                                     # horseshoe of side hair
      band = np.array([(FACE_CX + side * (a + v), cy + 0.05), (FACE_CX + side * (a + v * 0.8), cy - 0.10),
                       (FACE_CX + side * (a * 0.7), cy - 0.20), (FACE_CX + side * (a * 0.62), cy - 0.18),
                       (FACE_CX + side * (a - 0.02), cy - 0.08), (FACE_CX + side * (a - 0.01), cy + 0.05)])
      cv.poly(_smooth_curve(band, 3, closed=True), hair, 0.95)
  if idt.hair_style in long_styles or idt.hair_style == "bob":            # locks framing the face
    end = idt.hair_length if idt.hair_style in long_styles else cy + 0.30
    for side in (-1, 1):
      jx = lm[1 if side < 0 else 15, 0]
      lock = np.array([(FACE_CX + side * (a + v + 0.005), cy - 0.12), (FACE_CX + side * (a - 0.035), cy - 0.1),
                       (jx - side * 0.012, cy + 0.05), (jx - side * 0.0, cy + 0.16),
                       (FACE_CX + side * (a * 0.97), end - 0.01), (FACE_CX + side * (a + v * 0.5 + 0.012), end),
                       (FACE_CX + side * (a + v + 0.02), end - 0.06), (FACE_CX + side * (a + v + 0.015), cy + 0.1)])
      cv.poly(_smooth_curve(lock, 3, closed=True), hair)
  if idt.hair_style == "bun":
    cv.poly(_ellipse(FACE_CX, EYE_Y - HEAD_TOP_DY - v - 0.01, 0.075, 0.05, 24), hair)

  # ---- downsample, lighting, noise ---------------------------------------------------------------------------------------
  img = cv.image.reduce(scale_px) if scale_px > 1 else cv.image
  out = np.asarray(img, np.float32)                                            # [S, S, 3]
  grid = (np.arange(S) + 0.5) / S - 0.5
  gx, gy = np.meshgrid(grid, grid)
  light = light_gain * (1.0 + light_amp * (math.cos(light_dir) * gx + math.sin(light_dir) * gy) * 2.0)
  centre_xy = pose[:, :2] @ np.array([FACE_CX, EYE_Y + 0.08]) + pose[:, 2] - 0.5
  light *= 1.0 + KEY_LIGHT * np.exp(-(((gx - centre_xy[0]) / 0.22) ** 2 + ((gy - centre_xy[1]) / 0.28) ** 2))
  out = out * light[:, :, None]
  out += np.random.default_rng(noise_seed).normal(0.0, PIXEL_NOISE_SIGMA, size=out.shape)
  face = np.clip(np.round(out), 0, 255).astype(np.uint8)
  posed = lm @ A.T + pose[:, 2]                                                 # [68, 2]
  return face, posed.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Clips.
# ---------------------------------------------------------------------------------------------


def make_clip(seed: int, identity_index: int, clip_index: int, image_size: int,
              min_seconds: float = MIN_SECONDS, max_seconds: float = MAX_SECONDS,
              fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS) -> dict[str, Any]:
  """One paired clip of identity `identity_index`; deterministic in all arguments.

  Returns {"pcm": int16 [samples] (16 kHz), "face": uint8 [S, S, 3], "landmarks": float32 [68, 2],
  "text": str, "identity": int, "clip": int, "split": str, "attributes": dict[str, float]}.
  """
  identity = make_identity(seed, identity_index)
  text_rng = np.random.default_rng([seed, identity_index, clip_index, _TAG_TEXT])
  face_rng = np.random.default_rng([seed, identity_index, clip_index, _TAG_FACE])
  pcm = np.zeros([0], np.int16)
  text = ""
  for attempt in range(MAX_TEXT_TRIES):
    text = sentence(text_rng)
    for extension in range(4):                                    # too short: add a sentence
      voice_rng = np.random.default_rng([seed, identity_index, clip_index, _TAG_VOICE, attempt, extension])
      pcm = synthesize_voice(identity, text, voice_rng)
      if len(pcm) >= min_seconds * SAMPLE_RATE:
        break
      text = text + " " + sentence(text_rng)
    if len(pcm) <= max_seconds * SAMPLE_RATE:
      break
  if len(pcm) > max_seconds * SAMPLE_RATE:                         # still too long: truncate with a fade
    n = int(max_seconds * SAMPLE_RATE)
    fade = np.linspace(1.0, 0.0, int(0.05 * SAMPLE_RATE))
    pcm = pcm[:n].astype(np.float64)
    pcm[-len(fade):] *= fade
    pcm = np.round(pcm).astype(np.int16)
  face, landmarks = draw_face(identity, image_size, face_rng)
  return {"pcm": pcm, "face": face, "landmarks": landmarks, "text": text, "identity": int(identity_index),
          "clip": int(clip_index), "split": split_of(seed, identity_index, fractions),
          "attributes": identity.attributes()}
