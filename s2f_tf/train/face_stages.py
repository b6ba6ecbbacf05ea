"""Stages 1 and 2 (stages.py's table): the face encoder, trained on identities (and sex and age band
when loss.face_encoder_attributes asks), and the face decoder, trained against each identity's
canonical face from the frozen face encoder's feature, optionally with a patch critic."""

from __future__ import annotations

import tensorflow as tf

from s2f_tf import factory, losses
from s2f_tf.train import attributes
from s2f_tf.train.stages import Stage, grid, images_float


class FaceEncoderStage(Stage):
    name = "face_encoder"
    validation_losses = False  # a softmax over training identities; validation speakers are others

    @property
    def fields(self):
        heads = bool(self.config.loss.face_encoder_attributes)
        return ("image", "speaker") + (("attributes",) if heads else ())

    def build(self):
        if self.vgg_face_weights:
            raise ValueError(
                "stage face_encoder is not needed with --vgg_face_weights (VGG-Face is the "
                "face encoder); train --stage=face_decoder"
            )
        self.face_encoder = self._face_encoder(trainable=True)
        self.attribute_heads = factory.build_attribute_heads(
            self.config, attributes.head_classes(self.info)
        )

    def trained_models(self) -> dict:
        heads = {f"attribute_head_{n}": h for n, h in self.attribute_heads.items()}
        return {self.name: self.face_encoder, **heads}

    def compute_loss(self, batch, training):
        out = self.face_encoder(images_float(batch["image"]), training=training)
        ce = losses.identity_cross_entropy_per_example(batch["speaker"], out["logits"])
        correct = tf.cast(
            tf.equal(tf.argmax(out["logits"], -1, output_type=tf.int32), batch["speaker"]),
            tf.float32,
        )
        terms = {"cross_entropy": ce, "accuracy": correct}
        total = ce
        if self.attribute_heads:
            heads = attributes.head_terms(
                self.attribute_heads, batch["attributes"], self.info.attribute_names, out["feature"]
            )
            total += self.config.loss.face_encoder_attributes * tf.add_n(list(heads.values()))
            terms.update(heads)
        return {"total": total, **terms}

    def summaries(self, batch, step):
        tf.summary.image(
            "faces/input", tf.cast(batch["image"][:4], tf.float32) / 255.0, step=step, max_outputs=4
        )

    def validation_outputs(self, batch):
        return {
            "feature": self.face_encoder(images_float(batch["image"]), training=False)["feature"]
        }


class FaceDecoderStage(Stage):
    name = "face_decoder"
    keep_best_by = (
        "loss/fidelity"  # held-out fidelity to the targets (train/validation.py says why)
    )

    def build(self):
        # the textures must come from the same spline (any sampler: prepare's is the most faithful)
        spline = {
            k: v for k, v in factory.texture_warp(self.config).items() if k != "interpolation"
        }
        made_with = {k: v for k, v in self.info.texture_warp.items() if k != "interpolation"}
        if made_with != spline:
            raise ValueError(
                f"the dataset's decoder textures were made with the warp spline {made_with}, this "
                f"config's face decoder warps with {spline} (face_decoder.warp_border_points, "
                "warp_regularization): prepare the data with this config, or set those fields to match"
            )
        self.face_encoder = self._face_encoder(trainable=False)
        self.face_decoder = self._face_decoder(trainable=True)
        self.face_decoder.warp.compiled_sampling = True  # training only (models/sampling.py)
        self.critic = None
        if self.config.loss.decoder_adversarial:  # trained here, saved in checkpoints only
            self.critic = factory.build_critic(self.config)
        self._cache_face_features()

    def trained_models(self):
        # one optimizer for both players: the decoder's terms reach the critic only through its frozen
        # copy (_adversarial), the critic's reach the decoded faces with their gradient stopped
        return {
            **super().trained_models(),
            **({"critic": self.critic} if self.critic is not None else {}),
        }

    @property
    def fields(self):
        return (self.face_feature_field, "target_texture", "target_landmarks") + (
            ("target_image",)
            if self.config.loss.decoder_perceptual or self.config.loss.decoder_adversarial
            else ()
        )

    def compute_loss(self, batch, training):
        feature = self._face_features(batch)  # [B, D]
        out = self.face_decoder(feature, training=training)
        texture_true = images_float(batch["target_texture"]) / 255.0  # [B, S, S, 3] 0..1
        decoded = out["image"] * 255.0  # [B, S, S, 3] 0..255
        c = self.config.loss
        perceptual = c.perceptual_blocks if c.decoder_perceptual else ()
        encoded = self.face_encoder(decoded, training=False, blocks=perceptual)  # one pass for both
        decoded_feature = encoded["feature"]
        blocks = {}
        if perceptual:
            blocks = {
                "blocks_true": self.face_encoder.block_outputs(
                    images_float(batch["target_image"]), perceptual
                ),
                "blocks_pred": encoded["blocks"],
                "perceptual_weight": c.decoder_perceptual,
            }
        terms = losses.face_decoder_loss(
            texture_true,
            out["texture"],
            batch["target_landmarks"],
            out["landmarks"],
            feature,
            decoded_feature,
            c.decoder_texture,
            c.decoder_landmarks,
            c.decoder_feature,
            edge_weight=c.decoder_edges,
            **blocks,
        )
        terms["fidelity"] = terms["total"]  # what keeps the best weights
        if self.critic is not None:
            terms.update(
                self._adversarial(images_float(batch["target_image"]) / 255.0, out["image"])
            )
            terms["total"] = (
                terms["fidelity"] + c.decoder_adversarial * terms["adversarial"] + terms["critic"]
            )
        return terms

    def _adversarial(self, real, decoded) -> dict[str, tf.Tensor]:
        """The hinge game, per example: 'critic' trains the critic on target faces against decoded
        ones (their gradient stopped, so it does not reach the decoder); 'adversarial' trains the
        decoder against a copy of the critic whose variables are constants in this step."""
        scores = self.critic(tf.concat([real, tf.stop_gradient(decoded)], axis=0))  # [2B, P, P]
        real_scores, fake_scores = tf.split(scores, 2, axis=0)
        frozen = [tf.stop_gradient(v) for v in self.critic.trainable_variables]
        fooled, _ = self.critic.stateless_call(
            frozen, [v.value for v in self.critic.non_trainable_variables], decoded
        )
        return {
            "critic": losses.hinge_critic_per_example(real_scores, fake_scores),
            "adversarial": losses.hinge_generator_per_example(fooled),
        }

    @property
    def preview_fields(self):
        return ("image", "target_image")  # the faces beside the decoded ones in TensorBoard

    def validation_outputs(self, batch):
        feature = self._face_features(batch)
        decoded = self.face_decoder(feature, training=False)["image"] * 255.0
        return {
            "feature": feature,
            "reencoded": self.face_encoder(decoded, training=False)["feature"],
        }

    def summaries(self, batch, step):
        out = self.face_decoder(self._face_features(batch), training=False)
        tf.summary.image(
            "faces/input|target|decoded|target_texture|texture",
            grid(
                [
                    images_float(batch["image"]) / 255.0,
                    images_float(batch["target_image"]) / 255.0,
                    out["image"],
                    images_float(batch["target_texture"]) / 255.0,
                    out["texture"],
                ]
            ),
            step=step,
        )
