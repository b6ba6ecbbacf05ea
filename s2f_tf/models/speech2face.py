"""Speech2Face composition: waveform -> face feature -> face image (what is exported and served).

  waveform [B, N] float32 (or int16 PCM) at 16 kHz
    -> SpectrogramFrontEnd  [B, T, 257, 2]  (s2f_tf/frontend.py; float32)
    -> VoiceEncoder         [B, D]          face feature (VGG-Face fc7 space)
    -> FaceDecoder          [B, S, S, 3] image in [0, 1], [B, K, 2] landmarks
The face encoder (VGG-Face) is a training-time teacher only and is not part of this model.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="s2f")
class Speech2Face(keras.Model):
    """call(waveform) -> {'face_feature', 'face_image', 'landmarks'} (float32)."""

    def __init__(self, front_end, voice_encoder, face_decoder, **kwargs):
        super().__init__(**kwargs)
        self.front_end = front_end
        self.voice_encoder = voice_encoder
        self.face_decoder = face_decoder

    def encode(self, waveform, training=None):
        """waveform [B, N] -> face feature [B, D] (the voice encoder's prediction v_s)."""
        return self.voice_encoder(self.front_end(waveform), training=training)

    def call(self, waveform, training=None):
        feature = self.encode(waveform, training=training)  # [B, D]
        decoded = self.face_decoder(feature, training=False)  # frozen in stage 3
        return {
            "face_feature": feature,
            "face_image": decoded["image"],
            "landmarks": decoded["landmarks"],
        }

    def get_config(self):
        config = super().get_config()
        for name in ("front_end", "voice_encoder", "face_decoder"):
            config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("front_end", "voice_encoder", "face_decoder"):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
