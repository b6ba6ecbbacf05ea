"""`demo`: CPU-sized Speech2Face that learns the synthetic corpus in minutes on 2 cores.

The paper's front end with a 20 ms hop and a 0-4 kHz band (2 s -> 99 x 129 x 2), the Table 1 voice
encoder at 1/8 width, a 256-D face feature, VGG-Face at 1/4 width on 64 x 64 faces, and a decoder
that learns each identity's canonical face (68 landmarks, cubic B-spline warp, a patch critic).

  make demo            # 600 identities x 8 clips, every stage with this preset, then evaluate and serve
  s2f describe --config=demo

Expected on the 70 held-out speakers (bars: R@1 at least 5x chance, sex agreement at least 90%,
face to face R@1 at least 90%, sharpness at least 0.5, sex kept face to face at least 95% and 90%
for each sex). Stage 1 learns sex and age band beside the identities (loss.face_encoder_attributes):
without them its feature lost some women's sex, and the decoder drew them as men. Two fresh
clones of the final settings, 2026-12-06, 2-core Xeon with AMX-BF16, gave the same figures: R@1
11.4x chance, 1:2 matching 86.9%, sex agreement 99%, face to face R@1 93.9%, sharpness 0.70, sex
kept 97.9% (women 95.8%), age band 72.7%, in 10 min 57 s and 10 min 8 s. Of the five fresh clones
since the input is read in order, one trained a different decoder (the voice stage follows it).

Every stage trains in train.precision's auto choice (mixed_bfloat16 on CPUs with fast bfloat16):
the voice stage trained in float32 until TF's bfloat16 batch norm, 10-20x slow at its 8 channels,
was routed through float32 (models/norm.py); docs/experiments/2026-12-06-voice-stage-bfloat16.md.

Why each setting (loss balance, decoder, voice-stage precision, steps, attribute heads) and every run
measured with it: docs/experiments/2026-12-03-demo-preset-measurements.md,
docs/experiments/2026-12-03-decoder-canonical-faces.md and
docs/experiments/2026-12-06-decoder-attribute-loss.md.
"""

from s2f_tf.configs.base import (
    AudioConfig,
    Config,
    FaceDecoderConfig,
    FaceEncoderConfig,
    LossConfig,
    OptimizerConfig,
    TrainConfig,
    VoiceEncoderConfig,
)


def get_config() -> Config:
    return Config(
        name="demo",
        audio=AudioConfig(
            clip_seconds=2.0, min_seconds=0.5, max_seconds=30.0, hop_samples=320, max_bins=129
        ),
        voice_encoder=VoiceEncoderConfig(width=0.125, padding="same", fc_units=256),
        # num_identities (fc8) is replaced by the data's speaker count when training starts
        face_encoder=FaceEncoderConfig(
            image_size=64, width=0.25, fc_units=256, num_identities=200, dropout=0.2, batchnorm=True
        ),
        face_decoder=FaceDecoderConfig(
            bottleneck=256,
            num_landmarks=68,
            landmark_hidden=(256,),
            texture_start_size=8,
            texture_base_channels=128,
            texture_min_channels=32,
            normalize_input=True,
            warp_interpolation="bspline",
            warp_flow_grid=33,
        ),
        loss=LossConfig(
            # stage 1 also learns sex and age band from its feature, so the feature keeps them
            face_encoder_attributes=1.0,
            face_encoder_attribute_heads=("sex", "age_band"),
            lambda_feature=100.0,
            lambda_distill=10.0,
            decoder_texture=10.0,
            decoder_perceptual=3.0,
            decoder_edges=10.0,
            decoder_adversarial=0.03,
        ),
        optimizer=OptimizerConfig(cooldown_steps=300),
        train=TrainConfig(
            batch_size=32,
            face_encoder_steps=1100,
            face_decoder_steps=900,
            voice_encoder_steps=1000,
            face_encoder_learning_rate=1e-3,
            face_decoder_learning_rate=3e-3,
            log_every=25,
            image_every=100,
            checkpoint_every=200,
            shuffle_buffer=512,
            validate_every=500,
            validation_clips=256,
        ),
    )
