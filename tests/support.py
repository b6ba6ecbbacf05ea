"""Helpers only the tests use: `from support import free_port, spectrogram_numpy`."""

import socket

import numpy as np

from s2f_tf.contract import PCM_SCALE
from s2f_tf.frontend import num_frames


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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
    """Plain numpy reference of `SpectrogramFrontEnd` (float64).

    [batch, samples] -> [batch, frames, bins, 2]
    """
    x = np.asarray(waveform)
    if x.dtype == np.int16:
        x = x.astype(np.float64) * PCM_SCALE
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
