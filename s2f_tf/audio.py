"""Where audio becomes a spectrogram: the one waveform -> spectrogram front end.

Training, evaluation and the exported SavedModel all call `SpectrogramFrontEnd`, inside the model
graph (so it runs on the accelerator and is part of every export). The host only parses and
batches int16 PCM; this layer converts it.

  waveform [batch, samples] (int16 PCM or float in [-1, 1], 16 kHz)
    -> tile clips shorter than `tile_to_samples` (repeat, as the paper does)
    -> STFT (Hann `window_samples`, hop `hop_samples`, FFT `fft_length`, no centring/padding)
    -> keep the lowest `max_bins` bins (0: all; the paper keeps all 257)
    -> real, imaginary parts, each sign(x) * |x| ** power
    -> [batch, frames, bins, 2]

Always float32, whatever the mixed-precision policy (docs/DESIGN.md).

`mfcc_frames` is the other way audio becomes a spectrogram here: MFCCs of a whole recording on the
host, for telling its speakers apart (s2f_tf/recording.py), not for the model.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from s2f_tf import contract

MFCC_HOP_SAMPLES = 160  # 10 ms at 16 kHz


def mfcc_frames(
    pcm: np.ndarray,
    coefficients: int = 12,
    sample_rate: int = contract.SAMPLE_RATE,
    chunk_frames: int = 6000,
) -> np.ndarray:
    """int16 [N] -> float64 [frames, coefficients]: MFCCs 1..coefficients (c0, the loudness, left
    out) of 25 ms Hann frames every MFCC_HOP_SAMPLES, 40 mel bands from 60 Hz to 7.6 kHz. Computed
    `chunk_frames` frames at a time (the same frames as at once), so an hour of audio needs the
    memory of a minute."""
    window = 400
    mel = tf.signal.linear_to_mel_weight_matrix(
        40, 257, sample_rate, 60.0, min(7600.0, sample_rate / 2)
    )
    total = num_frames(len(pcm), window, MFCC_HOP_SAMPLES) if len(pcm) >= window else 0
    out = [np.zeros([0, coefficients])]
    for first in range(0, total, chunk_frames):
        count = min(chunk_frames, total - first)
        start = first * MFCC_HOP_SAMPLES
        x = tf.constant(
            contract.pcm_to_float(pcm[start : start + (count - 1) * MFCC_HOP_SAMPLES + window])
        )
        power = tf.abs(tf.signal.stft(x, window, MFCC_HOP_SAMPLES, 512)) ** 2  # [count, 257]
        log_mel = tf.math.log(tf.matmul(power, mel) + 1e-6)  # [count, 40]
        out.append(
            tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[:, 1 : coefficients + 1]
            .numpy()
            .astype(np.float64)
        )
    return np.concatenate(out)


def num_frames(samples: int, window_samples: int, hop_samples: int) -> int:
    """STFT frames without padding: 1 + (samples - window) // hop (docs/SPEC.md: 96000 -> 598)."""
    return 1 + (samples - window_samples) // hop_samples


def power_law(x: tf.Tensor, power: float) -> tf.Tensor:
    """sign(x) * |x| ** power, elementwise (docs/SPEC.md: the compression of real and imaginary parts)."""
    return tf.sign(x) * tf.pow(tf.abs(x), power)


def tile_to_length(waveform: tf.Tensor, length: int) -> tf.Tensor:
    """Repeats each clip along time until it has at least `length` samples; [B, N] -> [B, max(N, length)].

    Longer clips pass unchanged. Static shapes are kept where the input has them.
    """
    n_static = waveform.shape[-1]
    if n_static is not None:
        if n_static >= length:
            return waveform
        reps = -(-length // n_static)
        return tf.tile(waveform, [1, reps])[:, :length]
    n = tf.shape(waveform)[-1]
    reps = (length + n - 1) // n
    out_len = tf.maximum(n, length)
    return tf.tile(waveform, [1, reps])[:, :out_len]


@keras.saving.register_keras_serializable(package="s2f")
class SpectrogramFrontEnd(keras.layers.Layer):
    """Waveform -> compressed complex spectrogram, [batch, samples] -> [batch, frames, bins, 2].

    Args:
      sample_rate: expected rate in Hz (used in error messages and by callers; no resampling here).
      window_samples, hop_samples, fft_length: STFT geometry (docs/SPEC.md: 400, 160, 512).
      power: exponent of the power-law compression (docs/SPEC.md: 0.3).
      tile_to_samples: clips shorter than this are tiled up to it (0: never tile).
      min_samples, max_samples: inputs outside [min, max] samples raise InvalidArgumentError.
      periodic_window: periodic Hann (scipy/librosa `get_window('hann', n, fftbins=True)`).
      validate: check length and finiteness in the graph (cheap; keep on outside benchmarks).
      max_bins: keep only the lowest `max_bins` frequency bins (a band limit); 0 keeps all.
    """

    def __init__(
        self,
        sample_rate: int = contract.SAMPLE_RATE,
        window_samples: int = 400,
        hop_samples: int = 160,
        fft_length: int = 512,
        power: float = 0.3,
        tile_to_samples: int = 96000,
        min_samples: int = 400,
        max_samples: int = 480000,
        periodic_window: bool = True,
        validate: bool = True,
        max_bins: int = 0,
        **kwargs,
    ):
        kwargs["dtype"] = "float32"  # never mixed precision: STFT and power law in float32
        super().__init__(**kwargs)
        if fft_length < window_samples:
            raise ValueError(
                f"fft_length ({fft_length}) must be >= window_samples ({window_samples})"
            )
        if min_samples < window_samples:
            raise ValueError(
                f"min_samples ({min_samples}) must be >= window_samples ({window_samples})"
            )
        if max_samples < max(min_samples, tile_to_samples):
            raise ValueError(
                f"max_samples ({max_samples}) must be >= min_samples and tile_to_samples"
            )
        self.sample_rate = sample_rate
        self.window_samples = window_samples
        self.hop_samples = hop_samples
        self.fft_length = fft_length
        self.power = power
        self.tile_to_samples = tile_to_samples
        self.min_samples = min_samples
        self.max_samples = max_samples
        self.periodic_window = periodic_window
        self.validate = validate
        full = fft_length // 2 + 1
        if not 0 <= max_bins <= full:
            raise ValueError(f"max_bins must be in [0, {full}], got {max_bins}")
        self.max_bins = max_bins
        self.num_bins = max_bins or full
        window = tf.signal.hann_window(window_samples, periodic=periodic_window, dtype=tf.float32)
        self._window = window

    def output_samples(self, samples: int) -> int:
        return max(samples, self.tile_to_samples)

    def compute_output_shape(self, input_shape):
        n = input_shape[-1]
        frames = (
            None
            if n is None
            else num_frames(self.output_samples(n), self.window_samples, self.hop_samples)
        )
        return (input_shape[0], frames, self.num_bins, 2)

    def _check_static(self, waveform) -> None:
        shape = waveform.shape
        if shape.rank != 2:
            raise ValueError(
                f"waveform must be rank 2 [batch, samples] at {self.sample_rate} Hz, "
                f"got rank {shape.rank} with shape {shape}"
            )
        n = shape[-1]
        if n is not None and n == 0:
            raise ValueError("waveform is empty (0 samples)")
        if n is not None and n < self.min_samples:
            raise ValueError(
                f"waveform too short: {n} samples, need at least {self.min_samples} "
                f"({self.min_samples / self.sample_rate:g} s at {self.sample_rate} Hz)"
            )
        if n is not None and n > self.max_samples:
            raise ValueError(
                f"waveform too long: {n} samples, at most {self.max_samples} "
                f"({self.max_samples / self.sample_rate:g} s at {self.sample_rate} Hz)"
            )
        if not (waveform.dtype.is_floating or waveform.dtype == tf.int16):
            raise ValueError(
                f"waveform dtype must be float or int16 PCM, got {waveform.dtype.name}"
            )

    def call(self, waveform):
        waveform = tf.convert_to_tensor(waveform)
        self._check_static(waveform)
        if waveform.dtype == tf.int16:
            x = tf.cast(waveform, tf.float32) * contract.PCM_SCALE  # [B, N] in [-1, 1)
        else:
            x = tf.cast(waveform, tf.float32)  # [B, N]
        if self.validate:
            n = tf.shape(x)[-1]
            checks = [
                tf.debugging.assert_greater_equal(
                    n,
                    self.min_samples,
                    message=f"waveform too short: need at least {self.min_samples} samples "
                    f"({self.min_samples / self.sample_rate:g} s at {self.sample_rate} Hz)",
                ),
                tf.debugging.assert_less_equal(
                    n,
                    self.max_samples,
                    message=f"waveform too long: at most {self.max_samples} samples "
                    f"({self.max_samples / self.sample_rate:g} s at {self.sample_rate} Hz)",
                ),
            ]
            if waveform.dtype.is_floating:
                checks.append(
                    tf.debugging.assert_equal(
                        tf.reduce_all(tf.math.is_finite(x)),
                        True,
                        message="waveform has NaN or Inf samples",
                    )
                )
            with tf.control_dependencies(checks):
                x = tf.identity(x)
        if self.tile_to_samples:
            x = tile_to_length(x, self.tile_to_samples)  # [B, max(N, tile)]
        stft = tf.signal.stft(
            x,
            frame_length=self.window_samples,
            frame_step=self.hop_samples,
            fft_length=self.fft_length,
            window_fn=self._window_fn,
            pad_end=False,
        )  # [B, T, F] complex64
        if self.max_bins:
            stft = stft[..., : self.max_bins]  # [B, T, max_bins]
        parts = tf.stack([tf.math.real(stft), tf.math.imag(stft)], axis=-1)  # [B, T, F, 2]
        return power_law(parts, self.power)  # [B, T, F, 2]

    def _window_fn(self, length, dtype):
        del length, dtype
        return self._window

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.update(
            sample_rate=self.sample_rate,
            window_samples=self.window_samples,
            hop_samples=self.hop_samples,
            fft_length=self.fft_length,
            power=self.power,
            tile_to_samples=self.tile_to_samples,
            min_samples=self.min_samples,
            max_samples=self.max_samples,
            periodic_window=self.periodic_window,
            validate=self.validate,
            max_bins=self.max_bins,
        )
        return config


def spectrogram_numpy(
    waveform: np.ndarray,
    window_samples: int = 400,
    hop_samples: int = 160,
    fft_length: int = 512,
    power: float = 0.3,
    tile_to_samples: int = 0,
    periodic_window: bool = True,
    max_bins: int = 0,
) -> np.ndarray:
    """Plain numpy reference of `SpectrogramFrontEnd` (float64), for tests and for users to check.

    [batch, samples] -> [batch, frames, bins, 2]
    """
    x = np.asarray(waveform)
    if x.dtype == np.int16:
        x = x.astype(np.float64) * contract.PCM_SCALE
    x = x.astype(np.float64)
    if tile_to_samples and x.shape[1] < tile_to_samples:
        reps = -(-tile_to_samples // x.shape[1])
        x = np.tile(x, (1, reps))[:, :tile_to_samples]
    n = np.arange(window_samples)
    denom = window_samples if periodic_window else window_samples - 1
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / denom)  # [W]
    frames = num_frames(x.shape[1], window_samples, hop_samples)
    idx = np.arange(frames)[:, None] * hop_samples + n[None, :]  # [T, W]
    spec = np.fft.rfft(x[:, idx] * window, n=fft_length, axis=-1)  # [B, T, F]
    if max_bins:
        spec = spec[..., :max_bins]
    parts = np.stack([spec.real, spec.imag], axis=-1)  # [B, T, F, 2]
    return np.sign(parts) * np.abs(parts) ** power
