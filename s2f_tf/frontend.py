"""The model's front end: the one place a waveform becomes the spectrogram the networks read.

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
"""

from __future__ import annotations

import keras
import tensorflow as tf

from s2f_tf import contract


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
