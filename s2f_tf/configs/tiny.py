"""`tiny`: the smallest working Speech2Face, for tests (every network builds and steps in seconds).

  s2f describe --config=tiny

Expected figures: none; it checks that the code runs, not what it learns.
"""

from s2f_tf.configs.base import (
    AudioConfig,
    Config,
    FaceDecoderConfig,
    FaceEncoderConfig,
    TrainConfig,
    VoiceEncoderConfig,
)


def get_config() -> Config:
    return Config(
        name="tiny",
        audio=AudioConfig(clip_seconds=1.0, min_seconds=0.25, max_seconds=10.0),
        voice_encoder=VoiceEncoderConfig(width=1 / 16, padding="same", fc_units=32),
        face_encoder=FaceEncoderConfig(
            image_size=32, width=1 / 16, fc_units=32, num_identities=8, dropout=0.0, batchnorm=True
        ),
        face_decoder=FaceDecoderConfig(
            bottleneck=32,
            num_landmarks=68,
            landmark_hidden=(32,),
            texture_start_size=4,
            texture_base_channels=16,
            texture_min_channels=8,
            normalize_input=True,
            warp_interpolation="bicubic",
        ),
        train=TrainConfig(
            batch_size=4,
            face_encoder_steps=6,
            face_decoder_steps=6,
            voice_encoder_steps=6,
            log_every=2,
            image_every=3,
            checkpoint_every=3,
            shuffle_buffer=16,
            validate_every=3,
            validation_clips=16,
        ),
    )
