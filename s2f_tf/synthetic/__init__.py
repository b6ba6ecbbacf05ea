"""The embedded default corpus: synthetic speakers whose voice and face share hidden attributes.

No real paired voice/face corpus is available offline, so this package draws one. Every synthetic
identity has hidden attributes (`ATTRIBUTE_NAMES`) that drive BOTH sides:

What each attribute drives, in the voice (espeak-ng + post-processing) and in the face
(procedural drawing):

- sex: voice F0 ~118 Hz male / ~210 Hz female, formants x1.15 (shorter vocal tract), breathier
  female phonation, wider F0 range; face jaw squareness/width, chin taper, hair length and style,
  beard (some males), brow thickness/arch, eyeliner, lipstick (some females), lip fullness.
- age: voice slower speaking rate, F0 drift (male up, female down), more flutter (F0 wobble),
  roughness and breath, less range; face grey hair, forehead/nasolabial/crow's-feet lines, eye bags,
  receding hairline (males), jowls.
- size: voice vocal-tract length (formants scaled by resampling), lower F0; face width and jaw
  length, cheek fullness, neck.
- timbre: voice formant peak heights/widths (dark <-> bright), spectral tilt; face hair base colour
  (blond -> black), eye colour.
- rasp: voice roughness (creak), flutter, breath noise; face brow thickness, nose width, cheek
  ruddiness.
- ancestry: voice accent, one of ACCENTS (espeak-ng English variants) for P_ACCENT_OF_ANCESTRY of
  people, else a uniform draw; face skin-tone range, group k centres on SKIN_PALETTE at
  (k + 0.5) / groups, with a private spread around it.

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
  face, landmarks = draw_canonical_face(identity, 64)   # the face decoder's target (frontal, neutral,
                                                        # even light, plain background, no noise)

Where things are (imports point one way: params <- identity <- voice, face <- clip):
  params.py    every tunable number (the corpus is defined by them); SAMPLE_RATE, SPLITS and
               SPLIT_FRACTIONS come from s2f_tf.contract
  identity.py  Identity, make_identity, split_of, palette helpers
  text.py      the sentence grammar (sentence)
  espeak.py    the ctypes espeak-ng engine (private library copy, data mirror, voice-variant files)
  voice.py     synthesize_voice: espeak-ng, resampling, tilt, trimming, gain, noise, quantisation
  shapes.py    face geometry: iBUG-68 landmarks, skull, hairline, polygon helpers
  face.py      draw_face / draw_canonical_face: a Look (pose, expression, light, background,
               clothes), the pose, background and lighting
  parts.py     the supersampled canvas and one drawer per part (hair, ears, face, eyes, mouth ...)
  clip.py      make_clip: text, voice and face of one clip, and its split
"""

from s2f_tf.contract import SAMPLE_RATE, SPLIT_FRACTIONS, SPLITS
from s2f_tf.synthetic.clip import make_clip
from s2f_tf.synthetic.face import canonical_landmarks, draw_canonical_face, draw_face
from s2f_tf.synthetic.identity import Identity, make_identity, split_of
from s2f_tf.synthetic.params import (
    ACCENTS,
    AGE_RANGE,
    ATTRIBUTE_CLASSES,
    ATTRIBUTE_NAMES,
    MAX_SECONDS,
    MIN_SECONDS,
    NUM_LANDMARKS,
    P_ACCENT_OF_ANCESTRY,
    PEAK_LIMIT,
)
from s2f_tf.synthetic.text import sentence
from s2f_tf.synthetic.voice import synthesize_voice

__all__ = [
    "ACCENTS",
    "AGE_RANGE",
    "ATTRIBUTE_CLASSES",
    "ATTRIBUTE_NAMES",
    "Identity",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "NUM_LANDMARKS",
    "PEAK_LIMIT",
    "P_ACCENT_OF_ANCESTRY",
    "SAMPLE_RATE",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "canonical_landmarks",
    "draw_canonical_face",
    "draw_face",
    "make_clip",
    "make_identity",
    "sentence",
    "split_of",
    "synthesize_voice",
]
