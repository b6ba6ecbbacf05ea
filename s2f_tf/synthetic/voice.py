"""Voices: an identity speaks a text through espeak-ng, then post-processing makes it its own.

  synthesize_voice(identity, text, rng) -> int16 [samples] mono at SAMPLE_RATE

espeak-ng speaks at F0 / k and rate / k with the identity's voice-variant file; resampling by the
vocal-tract factor k (soxr "HQ") then scales formants, F0 and tempo by k. Then: spectral tilt
(pre-emphasis or a 1-pole low-pass), silence trimming (TRIM_PAD_SECONDS kept), RMS normalisation
with per-clip gain jitter, a white-noise floor, a hard peak limit.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

from s2f_tf.contract import PCM_SCALE, SAMPLE_RATE
from s2f_tf.synthetic.espeak import _engine, _variant_text
from s2f_tf.synthetic.identity import Identity
from s2f_tf.synthetic.params import (
    ESPEAK_F0_RANGE_POS,
    F0_CLIP_SIGMA,
    GAIN_CLIP_SIGMA_DB,
    NOISE_SNR_DB,
    PEAK_LIMIT,
    PITCH_RANGE_CLIP_SIGMA,
    RATE_CLIP_SIGMA,
    RATE_LIMITS,
    TARGET_RMS_DBFS,
    TRIM_FRAME_SECONDS,
    TRIM_PAD_SECONDS,
    TRIM_THRESHOLD_DB,
)


def _frame_rms(x: np.ndarray, frame: int) -> np.ndarray:
    """float [frames]: RMS of consecutive non-overlapping frames of x (last partial frame dropped)."""
    n = len(x) // frame
    if n == 0:
        return np.zeros([0])
    return np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1))


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
    if (
        end - start < (active[-1] + 1 - active[0]) * frame + 2 * pad
    ):  # pad with zeros where the source ran out
        before = max(0, pad - active[0] * frame)
        after = max(0, (active[-1] + 1) * frame + pad - len(x))
        out = np.concatenate([np.zeros([before], x.dtype), out, np.zeros([after], x.dtype)])
    return out


def synthesize_voice(
    identity: Identity, text: str, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Speaks `text` with `identity`'s voice. Returns int16 [samples] mono at `sample_rate`.

    Per-clip small jitter (F0, range, rate, gain, noise floor) comes from `rng`. Leading and
    trailing silence is trimmed to TRIM_PAD_SECONDS.
    """
    # scipy.signal takes over a second to import; only synthesis needs it, not make_identity,
    # split_of or draw_face.
    from scipy.signal import lfilter

    engine = _engine()
    k = identity.vtl_factor
    f0 = identity.f0_hz * math.exp(rng.normal(0.0, F0_CLIP_SIGMA))
    prange = float(
        np.clip(identity.pitch_range + rng.normal(0.0, PITCH_RANGE_CLIP_SIGMA), 0.1, 0.9)
    )
    rate = identity.rate_wpm * math.exp(rng.normal(0.0, RATE_CLIP_SIGMA))
    # espeak speaks at F0/k and rate/k; resampling by k then scales formants, F0 and tempo by k.
    base = f0 / k / (1.0 + ESPEAK_F0_RANGE_POS * prange)
    variant = _variant_text(
        base,
        prange,
        identity.flutter,
        identity.roughness,
        identity.breath,
        identity.formant_freq,
        identity.formant_height,
        identity.formant_width,
        female=bool(identity.sex),
    )
    espeak_rate = int(round(np.clip(rate / k, *RATE_LIMITS)))
    raw = engine.synthesize(
        variant,
        text,
        espeak_rate,
        noise_seed=int(rng.integers(1, 2**31 - 1)),
        voice=identity.accent,
    )  # int16 [n] at espeak's rate
    if raw.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {text!r}")
    x = raw.astype(np.float64) * PCM_SCALE  # exact: PCM_SCALE is 2**-15
    x = soxr.resample(x, engine.sample_rate * k, sample_rate, quality="HQ")  # [m] at sample_rate
    if identity.tilt >= 0:  # bright: pre-emphasis
        x = lfilter([1.0, -identity.tilt], [1.0], x)
    else:  # dark: 1-pole low-pass
        a = -identity.tilt
        x = lfilter([1.0 - a], [1.0, -a], x)
    x = _trim(x, sample_rate)
    frame = max(1, int(TRIM_FRAME_SECONDS * sample_rate))
    rms = _frame_rms(x, frame)
    speech_rms = (
        float(np.sqrt(np.mean(np.square(rms[rms > rms.max() * 0.1]))))
        if rms.size and rms.max() > 0
        else 1.0
    )
    gain_db = TARGET_RMS_DBFS + rng.normal(0.0, GAIN_CLIP_SIGMA_DB)
    x = x * (10.0 ** (gain_db / 20.0) / max(speech_rms, 1e-9))
    snr = rng.uniform(*NOISE_SNR_DB)
    noise_rng = np.random.default_rng(rng.integers(0, 2**63 - 1))
    x = x + noise_rng.normal(0.0, 10.0 ** ((gain_db - snr) / 20.0), size=x.shape)
    x = np.clip(x, -PEAK_LIMIT, PEAK_LIMIT)
    # Not contract.float_to_pcm (x 32768, clipped): this quantiser (x 32767) defines the corpus bytes.
    return np.round(x * 32767.0).astype(np.int16)
