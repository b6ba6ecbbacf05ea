"""The three training stages: what each builds, reads, trains and writes.

  1 face_encoder   images -> identities (softmax CE)             writes face_encoder.weights.h5
  2 face_decoder   frozen face encoder feature of the clip's face  writes face_decoder.weights.h5
                   (from the records or computed once, as in stage 3)
                   -> the decoder's target face (synthetic: the identity's canonical face):
                   texture L1 vs target/texture (the target warped to the mean landmarks, made
                   by `prepare`), landmark MSE vs target/landmarks, and negative cosine between
                   the face-encoder features of the decoded face and of the input face;
                   optionally (loss.decoder_adversarial) a patch critic's hinge term, the critic
                   training beside the decoder and kept in the stage's checkpoints only
  3 voice_encoder  waveform -> feature, the paper's loss against   writes voice_encoder.weights.h5
                   the frozen face encoder (fc7, fc8) and decoder (FC bottleneck); the face
                   features come from the records or are computed once when the stage starts
Each stage's weights land in the workdir (s2f_tf/workdir.py says where); later stages load the
earlier ones from there, or the face encoder from a VGG-Face HDF5 file (then stage 1 is not needed).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tensorflow as tf

from s2f_tf import contract, factory, losses
from s2f_tf.configs import Config
from s2f_tf.data.dataset import InputOptions, make_dataset
from s2f_tf.data.schema import DatasetInfo
from s2f_tf.train import attributes
from s2f_tf.workdir import (
    Workdir,
    load_frozen_face_decoder,
    load_frozen_face_encoder,
    new_face_decoder,
    new_face_encoder,
    save_weights_atomic,
)


def _images_float(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images, tf.float32)  # [B, S, S, 3] in [0, 255]


# The frozen face encoder's features of a split are computed once and kept in memory (Stage.dataset)
# while they take at most this much; above it (a million clips of 4096-D features) every step runs
# the face encoder on its batch's faces.
TEACHER_CACHE_BYTES = 1 << 30


class Stage:
    name = ""
    fields: tuple[str, ...] = ()
    validation_losses = True  # its loss terms mean something on held-out speakers
    keep_best_by = "figure"  # what picks its best weights: its figure, or a loss term (lowest)

    def __init__(
        self,
        config: Config,
        info: DatasetInfo,
        workdir: str,
        vgg_face_weights: str | None = None,
        log=print,
    ):
        self.config, self.info, self.workdir, self.vgg_face_weights = (
            config,
            info,
            workdir,
            vgg_face_weights,
        )
        self.log = log

    @property
    def steps(self) -> int:
        raise NotImplementedError

    @property
    def learning_rate(self) -> float:
        raise NotImplementedError

    def _face_encoder(self, trainable: bool):
        if trainable:
            return new_face_encoder(self.config)
        return load_frozen_face_encoder(self.config, self.workdir, self.vgg_face_weights)

    def _face_decoder(self, trainable: bool):
        if trainable:
            return new_face_decoder(self.config, mean_landmarks=self.info.mean_landmarks)
        return load_frozen_face_decoder(self.config, self.workdir)

    # Interface used by the Trainer and the Controller (trainer.py, controller.py) --------------------
    def build(self) -> None:
        raise NotImplementedError

    def dataset(
        self,
        data_dir: str,
        split: str,
        options: InputOptions,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """The batches (options.fields) this stage trains, previews and validates on; a 'feature' field
        the records lack comes from the cache of frozen face features (below)."""
        if self.teacher_cache is None or "feature" not in options.fields:
            return make_dataset(
                data_dir, split, options, input_context=input_context, info=self.info
            )
        if options.service_address:  # remote tf.data workers cannot see an in-process table:
            faces = tuple(dict.fromkeys("image" if f == "feature" else f for f in options.fields))
            return make_dataset(
                data_dir,
                split,
                dataclasses.replace(options, fields=faces),
                input_context=input_context,
                info=self.info,
            )
        lookup = self._teacher_lookup(data_dir, split, options)
        keep_id = "clip_id" in options.fields
        read = dataclasses.replace(
            options,
            fields=tuple(
                dict.fromkeys([f for f in options.fields if f != "feature"] + ["clip_id"])
            ),
        )

        def add_feature(batch):
            batch = dict(batch)
            batch["feature"] = lookup(
                batch["clip_id"] if keep_id else batch.pop("clip_id")
            )  # [B, D]
            return batch

        return make_dataset(data_dir, split, read, input_context=input_context, info=self.info).map(
            add_feature
        )

    # The model a stage trains and saves is the attribute named like the stage (self.face_encoder,
    # ...); a stage may train others beside it that only its checkpoints keep (the decoder's critic).
    def trained_models(self) -> dict:
        """Checkpoint key -> every model this stage trains, its output model first."""
        return {self.name: getattr(self, self.name)}

    def trainable_variables(self) -> list:
        return [v for model in self.trained_models().values() for v in model.trainable_variables]

    def checkpoint_items(self) -> dict:
        # Every variable by its path, BatchNorm's moving statistics included: Keras 3 models keep layers
        # in plain lists, which tf.train.Checkpoint does not follow (it saved only the trainable
        # variables, through the optimizer, so a resumed run lost the moving statistics).
        return {
            key: {v.path: v for v in model.variables}
            for key, model in self.trained_models().items()
        }

    def compute_loss(self, batch: dict, training: bool) -> dict[str, tf.Tensor]:
        """Per-example loss terms [per-replica batch], including 'total'."""
        raise NotImplementedError

    @property
    def preview_fields(self) -> tuple[str, ...]:
        """Fields the preview batch (summaries, start_report) reads besides `fields`."""
        return ()

    def summaries(self, batch: dict, step: int) -> None:
        """Writes image/audio summaries for a preview batch (chief only, default strategy scope)."""

    def start_report(self, batch: dict) -> dict | None:
        """Figures about the loss at the start of a run (kept in result.json), or None."""
        return None

    def describe_start(self, report: dict) -> str:
        """start_report's figures as one log line."""
        return ", ".join(f"{k} {v}" for k, v in report.items())

    def validation_outputs(self, batch: dict) -> dict[str, tf.Tensor]:
        """Features for the stage's held-out figure (train/validation.py), inference mode."""
        raise NotImplementedError

    def save_outputs(self) -> list[str]:
        path = Workdir(self.workdir).weights(self.name)
        save_weights_atomic(getattr(self, self.name), path)
        return [path]

    # Frozen face features (stages 2 and 3) ---------------------------------------------------------
    # The frozen face encoder's feature of each clip's face: read from the records when `prepare`
    # stored them (VGG-Face weights given), otherwise computed ONCE per split when the stage starts
    # (inference mode, so they are the numbers every step would compute) and looked up by clip id in
    # the input pipeline; a step then neither decodes the face PNG nor runs the face encoder on it.
    teacher_cache: dict | None = None  # split -> lookup, while the features fit TEACHER_CACHE_BYTES

    def _cache_face_features(self) -> None:
        """Called by build() once self.face_encoder is the frozen one."""
        clips = sum(self.info.counts.get(split, 0) for split in ("train", "validation"))
        fits = clips * self.config.feature_dim * 4 <= TEACHER_CACHE_BYTES
        self.teacher_cache = {} if not self.info.feature_dim and fits else None
        if not self.info.feature_dim and not fits:
            self.log(
                f"[{self.name}] the face features of {clips} clips would take more than "
                f"{TEACHER_CACHE_BYTES >> 20} MiB: the face encoder runs on every batch"
            )

    @property
    def face_feature_field(self) -> str:
        """'feature' (stored or cached) or 'image' (the face encoder runs on every batch)."""
        return "feature" if self.info.feature_dim or self.teacher_cache is not None else "image"

    def _face_features(self, batch) -> tf.Tensor:
        """The frozen face encoder's features [B, D] float32 of a batch's faces."""
        if "feature" in batch:
            return tf.cast(batch["feature"], tf.float32)
        return self.face_encoder(_images_float(batch["image"]), training=False)["feature"]

    def _teacher_lookup(self, data_dir, split, options):
        """clip ids [B] -> the frozen face encoder's features [B, D] of their faces, for `split`."""
        if split in self.teacher_cache:
            return self.teacher_cache[split]
        started = time.time()
        read = InputOptions(
            batch_size=256,
            clip_samples=options.clip_samples,
            training=False,
            fields=("image", "clip_id"),
            repeat=False,
            drop_remainder=False,
            deterministic=True,
            skip_corrupt=options.skip_corrupt,
        )
        encode = tf.function(  # traced once: every batch size (a split's last is smaller)
            lambda images: self.face_encoder(_images_float(images), training=False)["feature"],
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
        )
        ids, features = [], []
        for batch in make_dataset(data_dir, split, read, info=self.info):
            ids.append(batch["clip_id"].numpy())
            features.append(encode(batch["image"]).numpy())
        ids, features = np.concatenate(ids), np.concatenate(features)  # [N], [N, D]
        if len(np.unique(ids)) != len(ids):
            raise ValueError(
                f"the {split} split of {data_dir} has repeated clip ids: re-run `s2f prepare`"
            )
        with tf.init_scope(), tf.device("/cpu:0"):
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    tf.constant(ids), tf.range(len(ids), dtype=tf.int64)
                ),
                -1,
            )
            matrix = tf.Variable(features, trainable=False, name=f"teacher_{split}")

        def lookup(clip_id):
            return tf.gather(matrix, table.lookup(clip_id))

        self.teacher_cache[split] = lookup
        self.log(
            f"[{self.name}] face features of the {len(ids)} {split} clips, computed once "
            f"({time.time() - started:.1f} s)"
        )
        return lookup


def _grid(columns: list[tf.Tensor], rows: int = 4) -> tf.Tensor:
    """[B, S, S, 3] images in [0, 1], one per column -> one [1, rows*S, cols*S, 3] picture."""
    cols = [tf.clip_by_value(tf.cast(c[:rows], tf.float32), 0.0, 1.0) for c in columns]
    row_images = tf.concat(cols, axis=2)  # [R, S, C*S, 3]
    return tf.reshape(row_images, [1, -1, row_images.shape[2], 3])  # [1, R*S, C*S, 3]


class FaceEncoderStage(Stage):
    name = "face_encoder"
    validation_losses = False  # a softmax over training identities; validation speakers are others

    @property
    def fields(self):
        heads = bool(self.config.loss.face_encoder_attributes)
        return ("image", "speaker") + (("attributes",) if heads else ())

    @property
    def steps(self):
        return self.config.train.face_encoder_steps

    @property
    def learning_rate(self):
        return self.config.train.face_encoder_learning_rate

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
        out = self.face_encoder(_images_float(batch["image"]), training=training)
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
            "feature": self.face_encoder(_images_float(batch["image"]), training=False)["feature"]
        }


class FaceDecoderStage(Stage):
    name = "face_decoder"
    keep_best_by = (
        "loss/fidelity"  # held-out fidelity to the targets (train/validation.py says why)
    )

    @property
    def steps(self):
        return self.config.train.face_decoder_steps

    @property
    def learning_rate(self):
        return self.config.train.face_decoder_learning_rate

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
        texture_true = _images_float(batch["target_texture"]) / 255.0  # [B, S, S, 3] 0..1
        decoded = out["image"] * 255.0  # [B, S, S, 3] 0..255
        c = self.config.loss
        perceptual = c.perceptual_blocks if c.decoder_perceptual else ()
        encoded = self.face_encoder(decoded, training=False, blocks=perceptual)  # one pass for both
        decoded_feature = encoded["feature"]
        blocks = {}
        if perceptual:
            blocks = {
                "blocks_true": self.face_encoder.block_outputs(
                    _images_float(batch["target_image"]), perceptual
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
                self._adversarial(_images_float(batch["target_image"]) / 255.0, out["image"])
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
            _grid(
                [
                    _images_float(batch["image"]) / 255.0,
                    _images_float(batch["target_image"]) / 255.0,
                    out["image"],
                    _images_float(batch["target_texture"]) / 255.0,
                    out["texture"],
                ]
            ),
            step=step,
        )


class VoiceEncoderStage(Stage):
    """Trains the voice encoder against the frozen face encoder's features of each clip's face: read
    from the records when `prepare` stored them (VGG-Face weights given), otherwise computed by the
    stage-1 face encoder ONCE per split when the stage starts (inference mode, so they are the same
    numbers every step would compute) and looked up by clip id in the input pipeline; a step then
    neither decodes a face PNG nor runs VGG."""

    name = "voice_encoder"

    @property
    def steps(self):
        return self.config.train.voice_encoder_steps

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
            columns.insert(0, _images_float(batch["image"]) / 255.0)
        tf.summary.image("faces/true|from_true_feature|from_voice", _grid(columns), step=step)
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


STAGE_CLASSES = {cls.name: cls for cls in (FaceEncoderStage, FaceDecoderStage, VoiceEncoderStage)}
