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

This module holds what every stage shares (`Stage`, the Task the Trainer and the Controller drive,
and the cache of frozen face features); the stages themselves are in face_stages.py (1, 2) and
voice_stage.py (3), and loop.py's STAGE_CLASSES names them.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tensorflow as tf

from s2f_tf.configs import Config
from s2f_tf.data.dataset import InputOptions, make_dataset
from s2f_tf.data.schema import DatasetInfo
from s2f_tf.workdir import (
    Workdir,
    load_frozen_face_decoder,
    load_frozen_face_encoder,
    new_face_decoder,
    new_face_encoder,
    save_weights_atomic,
)


def images_float(images: tf.Tensor) -> tf.Tensor:
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
        return getattr(self.config.train, f"{self.name}_steps")  # train.<stage>_steps

    @property
    def learning_rate(self) -> float:
        """train.<stage>_learning_rate (the voice stage has none: it overrides this)."""
        return getattr(self.config.train, f"{self.name}_learning_rate")

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
        return self.face_encoder(images_float(batch["image"]), training=False)["feature"]

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
            lambda images: self.face_encoder(images_float(images), training=False)["feature"],
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


def grid(columns: list[tf.Tensor], rows: int = 4) -> tf.Tensor:
    """[B, S, S, 3] images in [0, 1], one per column -> one [1, rows*S, cols*S, 3] picture."""
    cols = [tf.clip_by_value(tf.cast(c[:rows], tf.float32), 0.0, 1.0) for c in columns]
    row_images = tf.concat(cols, axis=2)  # [R, S, C*S, 3]
    return tf.reshape(row_images, [1, -1, row_images.shape[2], 3])  # [1, R*S, C*S, 3]
