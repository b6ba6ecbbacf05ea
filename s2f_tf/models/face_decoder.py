"""Face decoder after Cole et al. (CVPR 2017): face feature -> canonical face image.

feature [B, D]  (optionally rescaled to v / |v| * sqrt(D): the decoder then reads its direction only)
  -> FC bottleneck + ReLU                         [B, 1000]   (f_dec in the Speech2Face loss)
  -> landmarks: ReLU MLP -> mean + offsets        [B, K, 2]   normalised (x, y) in [0, 1]
  -> texture: FC -> [B, s, s, 256] -> upsampling blocks, each doubling the size (ReLU, channels
     max(256 / 2**i, 32)) -> 1x1 conv + sigmoid   [B, S, S, 3] in [0, 1]
     upsample="transposed" (Cole et al.): one 5x5 transposed conv, stride 2, per block;
     upsample="resize_conv": nearest-neighbour x2, then a 5x5 conv (no checkerboard: every
     output pixel sees the same number of input pixels, Odena et al., Distill 2016)
     (the face's texture aligned to the MEAN landmarks)
  -> spline warp of the texture from the mean landmarks to the predicted ones  [B, S, S, 3]
     (sampled bilinearly as Cole et al., or with a cubic or quintic kernel: warp_interpolation; the spline is
     evaluated at every pixel, or on a warp_flow_grid x warp_flow_grid grid and interpolated)
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from s2f_tf.models.checks import check_face_decoder
from s2f_tf.models.warp import SplineWarp


def default_mean_landmarks(num_landmarks: int) -> np.ndarray:
    """A neutral placeholder layout (an ellipse) until `set_mean_landmarks` is given the data's mean."""
    angle = np.linspace(0.0, 2.0 * np.pi, num_landmarks, endpoint=False)
    return np.stack([0.5 + 0.3 * np.cos(angle), 0.5 + 0.35 * np.sin(angle)], axis=1).astype(
        np.float32
    )


@keras.saving.register_keras_serializable(package="s2f")
class FaceDecoder(keras.Model):
    """call(feature [B, D]) -> {'bottleneck', 'landmarks', 'texture', 'image'} (all float32)."""

    def __init__(
        self,
        image_size: int = 224,
        bottleneck: int = 1000,
        num_landmarks: int = 72,
        landmark_hidden=(1000,),
        texture_start_size: int = 14,
        texture_base_channels: int = 256,
        texture_min_channels: int = 32,
        kernel_size: int = 5,
        warp_border_points: int = 4,
        warp_regularization: float = 0.0,
        normalize_input: bool = False,
        upsample: str = "transposed",
        warp_interpolation: str = "bilinear",
        warp_flow_grid: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_face_decoder(image_size, texture_start_size, upsample)
        self.image_size = int(image_size)
        self.bottleneck = int(bottleneck)
        self.num_landmarks = int(num_landmarks)
        self.landmark_hidden = tuple(int(h) for h in landmark_hidden)
        self.texture_start_size = int(texture_start_size)
        self.texture_base_channels = int(texture_base_channels)
        self.texture_min_channels = int(texture_min_channels)
        self.kernel_size = int(kernel_size)
        self.warp_border_points = int(warp_border_points)
        self.warp_regularization = float(warp_regularization)
        self.normalize_input = bool(normalize_input)
        self.upsample = upsample
        self.num_upsamples = int(round(math.log2(self.image_size // self.texture_start_size)))

        self.fc_bottleneck = layers.Dense(self.bottleneck, activation="relu", name="fc_bottleneck")
        self.landmark_mlp = [
            layers.Dense(h, activation="relu", name=f"landmark_fc{i + 1}")
            for i, h in enumerate(self.landmark_hidden)
        ]
        self.landmark_out = layers.Dense(
            self.num_landmarks * 2,
            name="landmark_offsets",
            dtype="float32",
            kernel_initializer="zeros",
        )
        s, c = self.texture_start_size, self.texture_base_channels
        self.texture_fc = layers.Dense(s * s * c, activation="relu", name="texture_fc")
        self.texture_ups = [
            self._upsampler(max(c // 2 ** (i + 1), self.texture_min_channels), f"texture_up{i + 1}")
            for i in range(self.num_upsamples)
        ]
        self.texture_rgb = layers.Conv2D(
            3, 1, activation="sigmoid", name="texture_rgb", dtype="float32"
        )
        self.warp_interpolation = warp_interpolation
        self.warp_flow_grid = int(warp_flow_grid)
        self.warp = SplineWarp(
            num_border_points=self.warp_border_points,
            regularization=self.warp_regularization,
            interpolation=warp_interpolation,
            flow_grid=self.warp_flow_grid,
            name="warp",
        )
        self.mean_landmarks = self.add_weight(
            name="mean_landmarks",
            shape=(self.num_landmarks, 2),
            dtype="float32",
            trainable=False,
            autocast=False,  # layout math stays float32
            initializer=keras.initializers.Constant(default_mean_landmarks(self.num_landmarks)),
        )

    def _upsampler(self, channels: int, name: str) -> layers.Layer:
        """One block: [B, n, n, C] -> [B, 2n, 2n, channels], ReLU."""
        if self.upsample == "transposed":
            return layers.Conv2DTranspose(
                channels, self.kernel_size, strides=2, padding="same", activation="relu", name=name
            )
        return keras.Sequential(
            [
                layers.UpSampling2D(2, interpolation="nearest"),
                layers.Conv2D(channels, self.kernel_size, padding="same", activation="relu"),
            ],
            name=name,
        )

    def set_mean_landmarks(self, landmarks: np.ndarray) -> None:
        """Sets the mean face layout ([K, 2] normalised (x, y)) the texture is aligned to."""
        landmarks = np.asarray(landmarks, np.float32)
        if landmarks.shape != (self.num_landmarks, 2):
            raise ValueError(
                f"mean landmarks must be [{self.num_landmarks}, 2], got {landmarks.shape}"
            )
        self.mean_landmarks.assign(landmarks)

    def bottleneck_features(self, feature):
        """f_dec(v): the decoder's first layer, [B, D] -> [B, bottleneck] float32."""
        if feature.shape.rank != 2:
            raise ValueError(
                f"face decoder input must be a feature [batch, dim], got shape {feature.shape}"
            )
        if self.normalize_input:
            # The voice loss constrains v_s's direction (normalised-feature L2), not its length, and a
            # regressed v_s comes out shorter than a true face's feature: decode the direction only.
            v = ops.cast(feature, "float32")  # [B, D]
            feature = ops.normalize(v, axis=-1) * ops.sqrt(ops.cast(ops.shape(v)[-1], "float32"))
        return ops.cast(self.fc_bottleneck(feature), "float32")

    def call(self, feature, training=None):
        h = self.bottleneck_features(feature)  # [B, 1000]
        x = ops.cast(h, self.compute_dtype)
        for layer in self.landmark_mlp:
            x = layer(x)  # [B, hidden]
        offsets = ops.reshape(self.landmark_out(x), (-1, self.num_landmarks, 2))
        landmarks = self.mean_landmarks[None] + offsets  # [B, K, 2]
        s = self.texture_start_size
        t = self.texture_fc(ops.cast(h, self.compute_dtype))
        t = ops.reshape(t, (-1, s, s, self.texture_base_channels))  # [B, s, s, C]
        for up in self.texture_ups:
            t = up(t)  # [B, 2s, 2s, C / 2] ...
        texture = self.texture_rgb(t)  # [B, S, S, 3] in [0, 1]
        mean = ops.broadcast_to(self.mean_landmarks[None], ops.shape(landmarks))
        image = self.warp(texture, mean, landmarks)  # [B, S, S, 3]
        return {
            "bottleneck": h,
            "landmarks": landmarks,
            "texture": texture,
            "image": ops.clip(image, 0.0, 1.0),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size,
            bottleneck=self.bottleneck,
            num_landmarks=self.num_landmarks,
            landmark_hidden=list(self.landmark_hidden),
            texture_start_size=self.texture_start_size,
            texture_base_channels=self.texture_base_channels,
            texture_min_channels=self.texture_min_channels,
            kernel_size=self.kernel_size,
            warp_border_points=self.warp_border_points,
            warp_regularization=self.warp_regularization,
            normalize_input=self.normalize_input,
            upsample=self.upsample,
            warp_interpolation=self.warp_interpolation,
            warp_flow_grid=self.warp_flow_grid,
        )
        return config
