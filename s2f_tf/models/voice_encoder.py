"""Voice encoder, Speech2Face paper Table 1: spectrogram [B, T, 257, 2] -> face feature [B, D].

| block | layers                                          | channels (width 1) | stride |
| 1-3   | CONV-ReLU-BN x3, MAXPOOL 2x1 (time)              | 64, 64, 128        | 1      |
| 4-6   | CONV-ReLU-BN, MAXPOOL 2x1 (time)                 | 128, 128, 256      | 1      |
| 7     | CONV-ReLU-BN                                     | 512                | 1      |
| 8     | CONV-ReLU-BN                                     | 512                | 2      |
| 9     | CONV, AVGPOOL over all time, ReLU, BN            | 512                | 2      |
| 10-11 | FC-ReLU (fc_units), FC (feature_dim)             |                    |        |
All convs 4x4. With 'valid' padding a 6 s clip (598 x 257) gives 1 x 57 x 512 before the FCs.
The average over time lets the encoder take any clip length above `min_frames()`.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from s2f_tf.models.checks import check_voice_encoder
from s2f_tf.models.norm import FusedBatchNormalization

# Which blocks end with a 2x1 max pool over time, and which convs use stride 2 (Table 1).
_POOL_AFTER = (2, 3, 4, 5)  # zero-based conv index: after blocks 3, 4, 5, 6
_STRIDE2 = (7, 8)  # blocks 8 and 9


def scaled_channels(channels, width: float) -> tuple[int, ...]:
    return tuple(max(1, int(round(c * width))) for c in channels)


def output_length(length: int, kernel_size: int, padding: str, num_convs: int = 9) -> int:
    """Length of an axis after the Table 1 conv/pool stack ('time' if pools=True-style axis).

    Used for the time axis (with pools) by `min_frames`; returns <= 0 when the input is too short.
    """
    n = length
    for i in range(num_convs):
        stride = 2 if i in _STRIDE2 else 1
        if padding == "valid":
            n = (n - kernel_size) // stride + 1 if n >= kernel_size else 0
        else:
            n = -(-n // stride)
        if i in _POOL_AFTER:
            n //= 2
    return n


def min_frames(kernel_size: int = 4, padding: str = "valid") -> int:
    """The fewest spectrogram frames the encoder accepts (paper, valid: 259 frames = 2.6 s)."""
    t = 1
    while output_length(t, kernel_size, padding) < 1:
        t += 1
    return t


def frequency_bins_out(bins: int, kernel_size: int, padding: str) -> int:
    """Frequency bins left before the FC layers (no pooling on frequency); paper: 257 -> 57."""
    n = bins
    for i in range(9):
        stride = 2 if i in _STRIDE2 else 1
        n = (n - kernel_size) // stride + 1 if padding == "valid" else -(-n // stride)
    return n


@keras.saving.register_keras_serializable(package="s2f")
class VoiceEncoder(keras.Model):
    """Paper Table 1 voice encoder. call(spectrogram [B, T, F, 2]) -> feature [B, feature_dim] float32.

    batchnorm_synchronized: batch-norm statistics of the global batch when several replicas train in
    sync (models/norm.py); no effect with one replica or at inference."""

    def __init__(
        self,
        channels=(64, 64, 128, 128, 128, 256, 512, 512, 512),
        width: float = 1.0,
        kernel_size: int = 4,
        padding: str = "valid",
        fc_units: int = 4096,
        feature_dim: int = 4096,
        batchnorm_momentum: float = 0.99,
        batchnorm_epsilon: float = 1e-3,
        batchnorm_synchronized: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_voice_encoder(channels, padding)
        self.channels = tuple(int(c) for c in channels)
        self.width = float(width)
        self.kernel_size = int(kernel_size)
        self.padding = padding
        self.fc_units = int(fc_units)
        self.feature_dim = int(feature_dim)
        self.batchnorm_momentum = float(batchnorm_momentum)
        self.batchnorm_epsilon = float(batchnorm_epsilon)
        self.batchnorm_synchronized = bool(batchnorm_synchronized)
        bn = dict(
            momentum=self.batchnorm_momentum,
            epsilon=self.batchnorm_epsilon,
            synchronized=self.batchnorm_synchronized,
        )
        self.convs, self.norms = [], []
        for i, c in enumerate(scaled_channels(self.channels, self.width)):
            stride = (2, 2) if i in _STRIDE2 else (1, 1)
            self.convs.append(
                layers.Conv2D(
                    c, self.kernel_size, strides=stride, padding=padding, name=f"conv{i + 1}"
                )
            )
            self.norms.append(FusedBatchNormalization(name=f"bn{i + 1}", **bn))
        self.pool = layers.MaxPooling2D(pool_size=(2, 1), strides=(2, 1), name="pool_time")
        self.fc10 = layers.Dense(self.fc_units, activation="relu", name="fc10")
        self.fc11 = layers.Dense(
            self.feature_dim, name="fc11", dtype="float32"
        )  # output stays float32

    def min_frames(self) -> int:
        return min_frames(self.kernel_size, self.padding)

    def call(self, spectrogram, training=None):
        shape = spectrogram.shape
        if shape.rank != 4 or shape[-1] != 2:
            raise ValueError(f"voice encoder input must be [batch, frames, bins, 2], got {shape}")
        if shape[1] is not None and shape[1] < self.min_frames():
            raise ValueError(
                f"voice encoder input has {shape[1]} frames; this encoder ({self.padding} "
                f"padding) needs at least {self.min_frames()}"
            )
        x = ops.cast(spectrogram, self.compute_dtype)  # [B, T, F, 2]
        for i in range(8):  # blocks 1-8: CONV-ReLU-BN
            x = ops.relu(self.convs[i](x))
            x = self.norms[i](x, training=training)
            if i in _POOL_AFTER:
                x = self.pool(x)  # time / 2
        # paper, 6 s: [B, 598, 257, 2] -> ... -> [B, 14, 117, 512] after block 8
        x = self.convs[8](x)  # [B, 6, 57, 512]
        x = ops.mean(x, axis=1)  # [B, 57, 512] average over time
        x = self.norms[8](ops.relu(x), training=training)
        x = ops.reshape(x, (-1, x.shape[1] * x.shape[2]))  # [B, 57 * 512]
        x = self.fc10(x)  # [B, fc_units]
        return self.fc11(x)  # [B, feature_dim] float32

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=list(self.channels),
            width=self.width,
            kernel_size=self.kernel_size,
            padding=self.padding,
            fc_units=self.fc_units,
            feature_dim=self.feature_dim,
            batchnorm_momentum=self.batchnorm_momentum,
            batchnorm_epsilon=self.batchnorm_epsilon,
            batchnorm_synchronized=self.batchnorm_synchronized,
        )
        return config
