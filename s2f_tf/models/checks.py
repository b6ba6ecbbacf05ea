"""The networks' argument checks, each stated once and free of Keras: the model constructors call
them on their plain arguments, and `configs.validate` on a config's fields (`prefix` names the
config section in the message), so a config is checked without importing Keras or TensorFlow.

  check_voice_encoder(channels, padding)                      Table 1's 9 blocks; valid | same
  check_face_decoder(image_size, texture_start_size, upsample)  the texture doubles up to the image

Imports nothing (configs may import this module, and only this one, of the models).
"""

from __future__ import annotations

from collections.abc import Sequence

VOICE_ENCODER_BLOCKS = 9  # Table 1's conv blocks
PADDINGS = ("valid", "same")
UPSAMPLERS = ("transposed", "resize_conv")


def check_voice_encoder(channels: Sequence[int], padding: str, prefix: str = "") -> None:
    """Raises ValueError unless `channels` has one entry per Table 1 block and `padding` is known."""
    if len(channels) != VOICE_ENCODER_BLOCKS:
        raise ValueError(
            f"{prefix}channels needs {VOICE_ENCODER_BLOCKS} entries (Table 1 blocks "
            f"1-{VOICE_ENCODER_BLOCKS}), got {len(channels)}"
        )
    if padding not in PADDINGS:
        raise ValueError(f"{prefix}padding must be 'valid' or 'same', got {padding!r}")


def check_face_decoder(
    image_size: int,
    texture_start_size: int,
    upsample: str,
    prefix: str = "",
    image_size_name: str = "image_size",
) -> None:
    """Raises ValueError unless doubling `texture_start_size` gives `image_size` and `upsample` is
    known. `image_size_name`: what the message calls the image size (a config's is the face
    encoder's)."""
    ups = image_size // texture_start_size
    if image_size % texture_start_size or ups & (ups - 1):
        raise ValueError(
            f"{image_size_name} ({image_size}) must be {prefix}texture_start_size "
            f"({texture_start_size}) times a power of two"
        )
    if upsample not in UPSAMPLERS:
        raise ValueError(
            f"{prefix}upsample must be one of {', '.join(UPSAMPLERS)}, got {upsample!r}"
        )
