"""`demo`: CPU-sized Speech2Face, big enough to learn the synthetic corpus in minutes.

2 s clips (198 x 257 x 2), 'same' padding so the short clip survives the Table 1 stack, channels
at 1/4 width, a 256-D face feature, 64 x 64 faces, 68 landmarks (the synthetic faces' layout).

  make demo            # prepares the synthetic corpus and runs every stage with this preset
  s2f describe --config=demo
"""

from s2f_tf.configs.base import (AudioConfig, Config, FaceDecoderConfig, FaceEncoderConfig,
                                 TrainConfig, VoiceEncoderConfig)


def get_config() -> Config:
  return Config(
      name="demo",
      audio=AudioConfig(clip_seconds=2.0, min_seconds=0.5, max_seconds=30.0),
      voice_encoder=VoiceEncoderConfig(width=0.25, padding="same", fc_units=256),
      face_encoder=FaceEncoderConfig(image_size=64, width=0.25, fc_units=256, num_identities=200,
                                     dropout=0.2),
      face_decoder=FaceDecoderConfig(bottleneck=256, num_landmarks=68, landmark_hidden=(256,),
                                     texture_start_size=8, texture_base_channels=128,
                                     texture_min_channels=32),
      train=TrainConfig(batch_size=16, face_encoder_steps=600, face_decoder_steps=600,
                        voice_encoder_steps=1500, log_every=50, image_every=500,
                        checkpoint_every=500, shuffle_buffer=512),
  )
