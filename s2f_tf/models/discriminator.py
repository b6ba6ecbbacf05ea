"""Patch discriminator for the face decoder's adversarial term (training only, never exported).

A PatchGAN critic (Isola et al., pix2pix, CVPR 2017): 4x4 convolutions of stride 2 with leaky ReLU
halve the face `layers` times (channels doubling from `channels`), then a 3x3 convolution gives one
unbounded score per patch:

  image [B, S, S, 3] in [0, 1] -> [B, S / 2**layers, S / 2**layers] float32 (real > 0 > decoded)

Each score sees a patch of about 2**(layers + 1) pixels, so the critic judges local texture (eye
corners, hair line, beard edges), which the L1 and feature terms average away, and leaves the
face's identity to them. No normalisation layers: the critic sees real and decoded faces in one
batch, and batch statistics would let it tell them apart by the mix.
"""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="s2f")
class PatchDiscriminator(keras.Model):
    """call(images [B, S, S, 3] in [0, 1]) -> patch scores [B, S / 2**layers, S / 2**layers] float32."""

    def __init__(self, channels: int = 32, layers_count: int = 3, **kwargs):
        super().__init__(**kwargs)
        if channels < 1 or layers_count < 1:
            raise ValueError(
                f"a patch discriminator needs channels >= 1 and layers >= 1, got {channels}, {layers_count}"
            )
        self.channels, self.layers_count = int(channels), int(layers_count)
        self.downs = [
            layers.Conv2D(self.channels * 2**i, 4, strides=2, padding="same", name=f"down{i + 1}")
            for i in range(self.layers_count)
        ]
        self.score = layers.Conv2D(1, 3, padding="same", name="score")

    def call(self, images):
        x = ops.cast(images, self.compute_dtype) * 2.0 - 1.0  # [B, S, S, 3] in [-1, 1]
        for down in self.downs:
            x = down(x)
            x = ops.maximum(x, 0.2 * x)  # leaky ReLU [B, S / 2, S / 2, C] ... (TF's fused LeakyRelu
            # op trips grappler's remapper on its gradient: an error line)
        return ops.cast(self.score(x)[..., 0], "float32")  # [B, P, P]

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "layers_count": self.layers_count,
        }
