"""`paper`: the exact Speech2Face sizes (docs/SPEC.md).

6 s at 16 kHz -> 598 x 257 x 2 spectrogram -> Table 1 voice encoder (valid padding, 1 x 57 x 512
before the FC layers) -> 4096-D; VGG-Face at 224 x 224 (fc7 4096, fc8 2622); Cole et al. decoder
(FC 1000, 72 landmarks, 14 -> 224 texture). Adam(beta1=0.5, eps=1e-4), lr 1e-3 x 0.95 every 10k
steps, batch 8 (global: with several replicas the batch-norm statistics are the global batch's,
train.sync_batch_norm). Stage 1 (the face encoder) is VGG-Face: pass its weights and skip the stage.

  s2f describe --config=paper
  s2f train --stage=voice_encoder --config=paper --workdir=runs/paper \
      --vgg_face_weights=vgg_face.h5 --data=DATA   # needs GPUs and a prepared AVSpeech corpus

Expected (paper, AVSpeech test): 6 s cosine R@1 10.92 % against a 1 % chance (gallery 100);
feature cosine angle 45.75 +- 5.09 degrees.

Measured at paper size on two CPU cores (stage 1 from scratch: batch norm and a 1e-4 learning rate;
the decoder reads the feature's direction; a 50-step warm-up): docs/experiments/2026-12-01-paper-size-runs.md.
"""

from s2f_tf.configs.base import Config, FaceDecoderConfig, OptimizerConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="paper",
        face_decoder=FaceDecoderConfig(normalize_input=True),
        optimizer=OptimizerConfig(warmup_steps=50),
        train=TrainConfig(face_encoder_learning_rate=1e-4, sync_batch_norm=True),
    )
