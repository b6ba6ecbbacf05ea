"""The one factory: a `Config` in, Keras objects out. Layers and models never read configs."""

from __future__ import annotations

from s2f_tf.audio import SpectrogramFrontEnd
from s2f_tf.configs.base import Config
from s2f_tf.models.face_decoder import FaceDecoder
from s2f_tf.models.face_encoder import FaceEncoder
from s2f_tf.models.speech2face import Speech2Face
from s2f_tf.models.voice_encoder import VoiceEncoder


def build_front_end(config: Config, validate: bool = True) -> SpectrogramFrontEnd:
  a = config.audio
  return SpectrogramFrontEnd(
      sample_rate=a.sample_rate, window_samples=a.window_samples, hop_samples=a.hop_samples,
      fft_length=a.fft_length, power=a.power, tile_to_samples=a.clip_samples,
      min_samples=a.min_samples, max_samples=a.max_samples, periodic_window=a.periodic_window,
      validate=validate, max_bins=a.max_bins, name="front_end")


def build_voice_encoder(config: Config) -> VoiceEncoder:
  v = config.voice_encoder
  return VoiceEncoder(channels=v.channels, width=v.width, kernel_size=v.kernel_size,
                      padding=v.padding, fc_units=v.fc_units, feature_dim=config.feature_dim,
                      batchnorm_momentum=v.batchnorm_momentum,
                      batchnorm_epsilon=v.batchnorm_epsilon, name="voice_encoder")


def build_face_encoder(config: Config) -> FaceEncoder:
  f = config.face_encoder
  return FaceEncoder(image_size=f.image_size, width=f.width, fc_units=f.fc_units,
                     num_identities=f.num_identities, channel_order=f.channel_order, mean=f.mean,
                     dropout=f.dropout, batchnorm=f.batchnorm, name="face_encoder")


def build_face_decoder(config: Config) -> FaceDecoder:
  d = config.face_decoder
  return FaceDecoder(image_size=config.face_encoder.image_size, bottleneck=d.bottleneck,
                     num_landmarks=d.num_landmarks, landmark_hidden=d.landmark_hidden,
                     texture_start_size=d.texture_start_size,
                     texture_base_channels=d.texture_base_channels,
                     texture_min_channels=d.texture_min_channels, kernel_size=d.kernel_size,
                     warp_border_points=d.warp_border_points,
                     warp_regularization=d.warp_regularization, normalize_input=d.normalize_input,
                     name="face_decoder")


def build_speech2face(config: Config, face_decoder: FaceDecoder | None = None) -> Speech2Face:
  """Front end + voice encoder + (given or new) face decoder."""
  return Speech2Face(build_front_end(config), build_voice_encoder(config),
                     face_decoder or build_face_decoder(config), name="speech2face")
