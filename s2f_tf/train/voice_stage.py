"""Stage 3 (stages.py's table): the voice encoder, trained with the paper's loss against the frozen
face encoder and face decoder."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from s2f_tf import contract, factory, losses
from s2f_tf.train.stages import Stage, grid, images_float


class VoiceEncoderStage(Stage):
    """Trains the voice encoder against the frozen face encoder's features of each clip's face: read
    from the records when `prepare` stored them (VGG-Face weights given), otherwise computed by the
    stage-1 face encoder ONCE per split when the stage starts (inference mode, so they are the same
    numbers every step would compute) and looked up by clip id in the input pipeline; a step then
    neither decodes a face PNG nor runs VGG."""

    name = "voice_encoder"

    @property
    def learning_rate(self):
        return self.config.optimizer.learning_rate  # the paper's optimiser (docs/SPEC.md)

    @property
    def fields(self):
        return ("pcm", self.face_feature_field)

    def build(self):
        if self.info.feature_dim and self.info.feature_dim != self.config.feature_dim:
            raise ValueError(
                f"dataset stores {self.info.feature_dim}-D face features, the config's face "
                f"encoder gives {self.config.feature_dim}-D"
            )
        self.face_encoder = self._face_encoder(trainable=False)
        self.face_decoder = self._face_decoder(trainable=False)
        self.front_end = factory.build_front_end(self.config)
        self.voice_encoder = factory.build_voice_encoder(self.config)
        self.voice_encoder(
            self.front_end(np.zeros((1, self.config.audio.clip_samples), np.float32))
        )
        self._cache_face_features()

    def _teacher(self, batch):
        v_f = self._face_features(batch)
        return v_f, self.face_encoder.logits_from_feature(v_f)

    def _loss(self, v_f, logits_f, v_s):
        """The paper's loss of a predicted feature v_s against the teacher's (v_f, fc8 logits)."""
        dec = self.face_decoder
        c = self.config.loss
        return losses.speech2face_loss(
            dec.bottleneck_features(v_f),
            dec.bottleneck_features(v_s),
            v_f,
            v_s,
            logits_f,
            self.face_encoder.logits_from_feature(v_s),
            c.lambda_feature,
            c.lambda_distill,
            c.temperature,
        )

    def compute_loss(self, batch, training):
        v_f, logits_f = self._teacher(batch)  # [B, D], [B, C]
        v_s = self.voice_encoder(self.front_end(batch["pcm"]), training=training)  # [B, D]
        return self._loss(v_f, logits_f, v_s)

    def start_report(self, batch):
        """The paper's three terms on a preview batch before the first step, each as weighted in the
        total and as the norm of its gradient with respect to v_s (what pushes the voice encoder: the
        distillation's value holds the teacher's entropy, which no gradient can lower), and how peaked
        the teacher's softmax(fc8 / T) is (a top probability near 1 leaves the distillation nothing soft
        to teach). The paper balances the three with lambda1 = 0.025 and lambda2 = 200 for VGG-Face."""
        c = self.config.loss
        v_f, logits_f = self._teacher(batch)
        v_s = self.voice_encoder(self.front_end(batch["pcm"]), training=False)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(v_s)
            terms = self._loss(v_f, logits_f, v_s)
            weighted = {
                "decoder_l1": tf.reduce_mean(terms["decoder_l1"]),
                "feature_l2": c.lambda_feature * tf.reduce_mean(terms["feature_l2"]),
                "distill": c.lambda_distill * tf.reduce_mean(terms["distill"]),
            }
        teacher = tf.nn.softmax(logits_f / c.temperature, axis=-1)
        entropy = -tf.reduce_sum(teacher * tf.math.log(teacher + 1e-30), axis=-1)
        report = {
            "weighted_terms": {k: float(v) for k, v in weighted.items()},
            "gradient_norms": {
                k: float(tf.norm(tape.gradient(v, v_s))) for k, v in weighted.items()
            },
            "teacher_top_probability": float(tf.reduce_mean(tf.reduce_max(teacher, axis=-1))),
            "teacher_entropy": float(tf.reduce_mean(entropy)),
            "feature_norm": {
                "true": float(tf.reduce_mean(tf.norm(v_f, axis=-1))),
                "predicted": float(tf.reduce_mean(tf.norm(v_s, axis=-1))),
            },
        }
        del tape
        return report

    def describe_start(self, report):
        terms = ", ".join(
            f"{k} {v:.3g} (gradient {report['gradient_norms'][k]:.3g})"
            for k, v in report["weighted_terms"].items()
        )
        top = report["teacher_top_probability"]
        return f"loss terms (weighted) {terms}; teacher softmax top probability {top:.3f}" + (
            " (saturated: the distillation has little to teach)" if top > 0.99 else ""
        )

    def validation_outputs(self, batch):
        v_f, _ = self._teacher(batch)
        return {
            "feature": v_f,
            "voice": self.voice_encoder(self.front_end(batch["pcm"]), training=False),
        }

    def summaries(self, batch, step):
        v_f, _ = self._teacher(batch)
        spec = self.front_end(batch["pcm"][:2])  # [2, T, F, 2]
        v_s = self.voice_encoder(self.front_end(batch["pcm"]), training=False)
        from_true = self.face_decoder(v_f, training=False)["image"]
        from_voice = self.face_decoder(v_s, training=False)["image"]
        columns = [from_true, from_voice]
        if "image" in batch:
            columns.insert(0, images_float(batch["image"]) / 255.0)
        tf.summary.image("faces/true|from_true_feature|from_voice", grid(columns), step=step)
        rate = self.config.audio.sample_rate
        tf.summary.audio(
            "voice",
            tf.cast(batch["pcm"][:2], tf.float32)[:, :, None] * contract.PCM_SCALE,
            rate,
            step=step,
            max_outputs=2,
        )
        magnitude = tf.sqrt(tf.reduce_sum(tf.square(spec), axis=-1))  # [2, T, F] compressed
        picture = tf.transpose(magnitude, [0, 2, 1])[:, ::-1, :, None]  # [2, F, T, 1] low at bottom
        picture = picture / (tf.reduce_max(picture, axis=[1, 2, 3], keepdims=True) + 1e-6)
        tf.summary.image("spectrogram", picture, step=step, max_outputs=2)
