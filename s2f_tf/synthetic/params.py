"""Tunables of the synthetic corpus. Every number that shapes the corpus lives here.

Changing any of them changes the corpus bytes (and every figure made from it).
"""

NUM_LANDMARKS = 68  # iBUG-68 order: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67
ATTRIBUTE_NAMES = (
    "sex",
    "age",
    "size",
    "timbre",
    "rasp",
    "ancestry",
)  # sex 0 male / 1 female; age years;
# ancestry a group index; the others in [0, 1]

# The output audio rate (SAMPLE_RATE), the splits (SPLITS) and their default shares
# (SPLIT_FRACTIONS) are facts shared with the rest of s2f: they live in s2f_tf.contract.

# Stream tags: the last element of every rng seed sequence, so the streams never coincide.
TAG_IDENTITY = 11
TAG_SPLIT = 12
TAG_TEXT = 21
TAG_VOICE = 22
TAG_FACE = 23
TAG_NOISE = 24  # reserved (no stream uses it today: the noise rng is drawn from the voice rng)

# --- hidden attributes -------------------------------------------------------------------------
P_FEMALE = 0.5  # P(sex == 1)
AGE_RANGE = (18.0, 78.0)  # age ~ U(AGE_RANGE), years
SIZE_BETA = 1.6  # size ~ Beta(SIZE_BETA, SIZE_BETA) in [0, 1]
AGE_REF = 40.0  # age at which the age slopes below are zero
ACCENTS = (
    "en-us",
    "en-029",
    "en-gb-scotland",
    "en-gb-x-gbcwmd",
)  # espeak-ng voice per ancestry group
ATTRIBUTE_CLASSES = {
    "sex": ["male", "female"],  # the categorical attributes' class names (value = index)
    "ancestry": [f"group {k} ({accent})" for k, accent in enumerate(ACCENTS)],
}
P_ACCENT_OF_ANCESTRY = 0.85  # P(accent drawn as the group's); else a uniform draw over ACCENTS
SKIN_GROUP_SIGMA = 0.07  # private skin-tone spread within a group (palette units, 0..1)

# --- voice: pitch --------------------------------------------------------------------------------
F0_BASE_HZ = (118.0, 210.0)  # median F0 (male, female) at AGE_REF and size 0.5
F0_AGE_SLOPE = (0.0015, -0.0020)  # relative F0 change per year from AGE_REF (male, female)
F0_SIZE_SLOPE = -0.10  # relative F0 change across size 0 -> 1 (centred at 0.5)
F0_ID_SIGMA = 0.05  # per-identity log-F0 noise (private to the voice)
F0_CLAMP_HZ = ((95.0, 145.0), (175.0, 250.0))  # (male, female) clamp on the identity's median F0
F0_CLIP_SIGMA = 0.025  # per-clip log-F0 jitter
PITCH_RANGE_BASE = (0.42, 0.50)  # espeak pitch range: top = base * (1 + range), (male, female)
PITCH_RANGE_AGE = -0.15  # range change across age AGE_RANGE (young -> old)
PITCH_RANGE_ID_SIGMA = 0.06  # per-identity range noise
PITCH_RANGE_CLIP_SIGMA = 0.04  # per-clip range jitter
# espeak's median F0 is about base * (1 + ESPEAK_F0_RANGE_POS * range) (calibrated on this build,
# measured over 40 identities with an autocorrelation F0 tracker; flutter barely moves it).
ESPEAK_F0_RANGE_POS = 0.62

# --- voice: vocal tract, rate, phonation ----------------------------------------------------------
VTL_SEX = (1.00, 1.15)  # formant scale factor (male, female); > 1 = shorter tract
VTL_SIZE_SLOPE = -0.12  # formant scale change across size 0 -> 1 (centred at 0.5)
VTL_ID_SIGMA = 0.015  # per-identity formant-scale noise
RATE_BASE_WPM = 168.0  # speaking rate at AGE_REF (words per minute)
RATE_AGE_SLOPE = -0.9  # wpm per year
RATE_ID_SIGMA = 12.0  # per-identity rate noise (wpm)
RATE_CLIP_SIGMA = 0.04  # per-clip relative rate jitter
RATE_LIMITS = (90.0, 400.0)  # espeak accepts 80..450 wpm
FLUTTER_BASE = 1.0  # espeak 'flutter' (F0 wobble): base + age + rasp terms
FLUTTER_AGE = 11.0
FLUTTER_RASP = 5.0
ROUGHNESS_BASE = 1.0  # espeak 'roughness' 0..7 (creaky amplitude modulation)
ROUGHNESS_RASP = 4.5
ROUGHNESS_AGE = 1.5
BREATH_SEX = (0.0, 1.5)  # espeak 'breath' level (aspiration noise) per sex
BREATH_AGE = 2.0
BREATH_RASP = 2.0
# Formant peak shapes (espeak 'formant N freq% height% width%') for timbre 0 (dark) and 1 (bright).
FORMANT_HEIGHT_DARK = (100, 112, 92, 78, 68, 62)
FORMANT_HEIGHT_BRIGHT = (100, 92, 104, 112, 112, 104)
FORMANT_WIDTH_DARK = (100, 125, 120, 120, 120, 120)
FORMANT_WIDTH_BRIGHT = (100, 90, 90, 95, 95, 95)
FORMANT_FREQ_ID_SIGMA = 0.035  # per-identity relative offset of F1..F3 (private to the voice)
TILT_MAX = 0.55  # spectral tilt: pre-emphasis (bright) or 1-pole low-pass (dark) coefficient
TILT_ID_SIGMA = 0.08  # per-identity tilt noise

# --- audio clip ----------------------------------------------------------------------------------
MIN_SECONDS = 2.0  # make_clip extends the text until the speech is at least this long
MAX_SECONDS = 6.0  # ... and redraws (then truncates) above this
MAX_TEXT_TRIES = 6  # attempts at drawing a text that fits [MIN_SECONDS, MAX_SECONDS]
TRIM_PAD_SECONDS = 0.1  # silence kept before/after speech
TRIM_THRESHOLD_DB = -40.0  # frame energy below max-frame - 40 dB counts as silence
TRIM_FRAME_SECONDS = 0.01
TARGET_RMS_DBFS = -21.0  # speech RMS after normalisation
GAIN_CLIP_SIGMA_DB = 2.0  # per-clip gain jitter
PEAK_LIMIT = 0.97  # hard peak limit (fraction of full scale)
NOISE_SNR_DB = (32.0, 50.0)  # per-clip white-noise floor, SNR range
ESPEAK_BUFFER_MS = 500  # espeak callback buffer length

# --- face: geometry (normalised image coordinates, x right, y down) -------------------------------
FACE_CX = 0.5
EYE_Y = 0.415  # eye line
JAW_TOP_DY = 0.025  # jaw points 0/16 sit this far below the eye line
HEAD_TOP_DY = 0.285  # skull top above the jaw-top line
FACE_HALF_WIDTH = (0.300, 0.262)  # (male, female) half distance between jaw points 0 and 16
FACE_WIDTH_SIZE = 0.050  # +- across size 0 -> 1
FACE_WIDTH_SIGMA = 0.008
JAW_LENGTH = (0.425, 0.405)  # (male, female) jaw-top line to chin
JAW_LENGTH_SIZE = 0.025
JAW_LENGTH_SIGMA = 0.010
JAW_SQUARENESS = (3.3, 2.3)  # superellipse exponent of the jaw (male squarer)
JAW_SQUARENESS_SIGMA = 0.25
CHIN_TAPER = (0.10, 0.24)  # narrowing of the lower jaw towards the chin (female more V)
CHIN_TAPER_SIGMA = 0.03
CHEEK_FULLNESS_SIZE = 0.025  # lower-cheek bulge across size 0 -> 1
EYE_HALF_SPACING = 0.132  # eye centre offset from the midline
EYE_SPACING_SIGMA = 0.007
EYE_WIDTH = (0.098, 0.104)  # (male, female)
EYE_HEIGHT = (0.034, 0.040)
EYE_SIZE_SIGMA = 0.06  # relative
EYE_AGE_NARROW = 0.15  # relative eye-height loss across age range
BROW_GAP = (0.058, 0.074)  # brow baseline above the eye line (male lower)
BROW_ARCH = (0.010, 0.022)
BROW_THICKNESS = (0.021, 0.011)  # drawn thickness at the inner end
BROW_THICKNESS_RASP = 0.008
NOSE_LENGTH = (0.160, 0.145)  # eye line to nose tip
NOSE_LENGTH_SIGMA = 0.010
NOSE_HALF_WIDTH = (0.044, 0.038)
NOSE_WIDTH_RASP = 0.010
NOSE_WIDTH_SIGMA = 0.004
MOUTH_DY = 0.095  # nose tip to mouth line
MOUTH_DY_SIGMA = 0.008
MOUTH_HALF_WIDTH = (0.078, 0.074)
MOUTH_WIDTH_SIGMA = 0.007
UPPER_LIP = (0.014, 0.020)  # lip thickness (male, female)
LOWER_LIP = (0.018, 0.025)
LIP_AGE_THIN = 0.25  # relative lip thinning across the age range
NECK_HALF_WIDTH = (0.135, 0.110)
NECK_WIDTH_SIZE = 0.040

# --- face: appearance ------------------------------------------------------------------------------
SKIN_PALETTE = (  # skin tone range, light -> dark (by ancestry group + private spread)
    (250, 222, 200),
    (236, 192, 160),
    (205, 150, 110),
    (150, 100, 68),
    (96, 62, 42),
)
HAIR_PALETTE = (  # hair base colour along timbre 0 -> 1
    (226, 196, 132),  # platinum/golden blond
    (186, 140, 78),  # dark blond
    (160, 82, 45),  # auburn
    (110, 70, 40),  # brown
    (60, 40, 28),  # dark brown
    (22, 18, 16),  # black
)
EYE_PALETTE = (  # eye (iris) colour along timbre 0 -> 1
    (90, 140, 200),
    (90, 150, 120),
    (130, 120, 60),
    (110, 70, 35),
    (60, 38, 24),
)
GREY_HAIR = (200, 200, 198)
GREY_AGE_START = 36.0  # grey fraction ramps from here ...
GREY_AGE_FULL = 72.0  # ... to (nearly) fully grey here
WRINKLE_AGE_START = 32.0  # wrinkle strength ramps from here to the oldest age
P_BEARD_MALE = 0.70  # P(some facial hair | male), grows with age below
P_BEARD_AGE = 0.15
P_LONG_HAIR = (0.05, 0.95)  # (male, female): hair past the jaw
P_LIPSTICK = 0.80  # | female
P_BALDING_AGE = 0.75  # P(receding hairline | male) scales with this times age fraction
SUPERSAMPLE = 4  # draw at this multiple of the output size, then box-downsample
MAX_CANVAS = 1024  # ... but never larger than this

# --- face: per-clip variation ------------------------------------------------------------------------
POSE_ROT_DEG = 2.5  # sigma of in-plane rotation (clipped at 2 sigma)
POSE_SHIFT = 0.012  # sigma of translation (image fractions)
POSE_SCALE_SIGMA = 0.025  # sigma of log scale
SMILE_RANGE = (-0.2, 1.0)  # expression: mouth-corner lift
MOUTH_OPEN_MAX = 0.022  # expression: inner-lip gap
BROW_RAISE_SIGMA = 0.005
LIGHT_GRADIENT = 0.16  # max relative brightness change across the image
LIGHT_GAIN_SIGMA = 0.06  # global exposure jitter
KEY_LIGHT = 0.09  # soft brightening of the face centre (fake 3-D shading)
PIXEL_NOISE_SIGMA = 1.5  # sensor noise, in 8-bit levels
BACKGROUND_GRADIENT = 0.25  # the background darkens by this fraction from top to bottom

# --- face: the canonical face (the decoder's target: frontal, neutral, even light, no per-clip look) --
CANONICAL_BACKGROUND_RGB = (196.0, 196.0, 196.0)  # plain and flat
CANONICAL_SHIRT_RGB = (84, 84, 92)
