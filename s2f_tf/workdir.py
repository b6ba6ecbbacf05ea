"""A training workdir: its layout, stated once, and how a trained model is loaded from it.

  <workdir>/config.json                        the resolved config every stage trains with
  <workdir>/<stage>/<stage>.weights.h5         a finished stage's weights (written atomically)
  <workdir>/<stage>/checkpoints/ckpt-N         model + optimizer + step (the chief's, last K kept)
  <workdir>/<stage>/input/worker-W/position-N.json  worker W's record of step N: its input position,
                                               the step's losses, precision and weights' digest
  <workdir>/<stage>/best/                      the weights at the best validation figure + best.json
  <workdir>/<stage>/validation.json            every validation pass so far (survives a restart)
  <workdir>/<stage>/result.json                the stage's final figures
  <workdir>/tensorboard/<stage>/               TensorBoard logs (and profiles)
  <workdir>/eval/                              `s2f evaluate`'s default output
Stages, in training order: STAGES. A later stage reads the earlier ones' weights from here (the
face encoder may come from a VGG-Face HDF5 file instead). `s2f export` and `s2f evaluate` build the
model from config.json and never re-derive it, in float32 whatever the mixed-precision policy a
training stage in the same process used (`float32_policy`).

All file access goes through tf.io.gfile, so a workdir may be local or on gs://, hdfs://, ...
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import tensorflow as tf

from s2f_tf import factory
from s2f_tf.configs import Config, from_dict
from s2f_tf.files import write_atomic
from s2f_tf.models.face_encoder import load_vggface_weights

STAGES = ("face_encoder", "face_decoder", "voice_encoder")
CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"


class Workdir:
    """Paths inside one workdir (nothing is created until something is written)."""

    def __init__(self, path: str):
        self.path = path

    @property
    def config_path(self) -> str:
        return os.path.join(self.path, CONFIG_FILE)

    def stage_dir(self, stage: str) -> str:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
        return os.path.join(self.path, stage)

    def weights(self, stage: str) -> str:
        return os.path.join(self.stage_dir(stage), f"{stage}.weights.h5")

    def checkpoints(self, stage: str) -> str:
        return os.path.join(self.stage_dir(stage), "checkpoints")

    def input_positions(self, stage: str, worker: int) -> str:
        return os.path.join(self.stage_dir(stage), "input", f"worker-{worker}")

    def best_weights(self, stage: str) -> str:
        """The stage's weights at its best validation figure so far (train.keep_best)."""
        return os.path.join(self.stage_dir(stage), "best", f"{stage}.weights.h5")

    def best_record(self, stage: str) -> str:
        return os.path.join(self.stage_dir(stage), "best", "best.json")

    def validation_history(self, stage: str) -> str:
        return os.path.join(self.stage_dir(stage), "validation.json")

    def result(self, stage: str) -> str:
        return os.path.join(self.stage_dir(stage), RESULT_FILE)

    def tensorboard(self, stage: str | None = None) -> str:
        root = os.path.join(self.path, "tensorboard")
        return os.path.join(root, stage) if stage else root

    @property
    def eval_dir(self) -> str:
        return os.path.join(self.path, "eval")


def write_config(config: Config, workdir: str) -> None:
    write_atomic(Workdir(workdir).config_path, config.to_json())


def stored_config(workdir: str) -> Config | None:
    """The config.json of `workdir`, or None if no stage has run there yet."""
    path = Workdir(workdir).config_path
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return from_dict(json.load(f))


def load_config(workdir: str) -> Config:
    config = stored_config(workdir)
    if config is None:
        raise FileNotFoundError(
            f"{Workdir(workdir).config_path} is missing: {workdir!r} is not a training "
            "workdir (run `s2f train` there first)"
        )
    return config


def save_weights_atomic(model, path: str) -> None:
    """Keras .weights.h5, built in memory and written whole (`files.write_atomic`). h5py never writes
    to the disk itself, so a full disk is one failed write, not an HDF5 file h5py is left holding
    half-flushed (it flushes again at exit, and crashes the process there). Keras' public
    `save_weights` takes only a path: its own weight store (pinned Keras) takes a BytesIO."""
    from keras.src.saving import saving_lib

    if not model.built:
        raise ValueError(f"cannot save the weights of {model.name!r}: it has not been built")
    image = io.BytesIO()
    store = saving_lib.H5IOStore(image, mode="w")
    saving_lib._save_state(  # what Keras' save_weights_only does between opening and closing
        model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set()
    )
    store.close()
    write_atomic(path, image.getvalue())


def load_stage_weights(model, workdir: str, stage: str) -> None:
    """Loads a finished stage's weights into a built `model`; a clear error if they are missing."""
    path = Workdir(workdir).weights(stage)
    if not tf.io.gfile.exists(path):
        hint = " or pass --vgg_face_weights=FILE" if stage == "face_encoder" else ""
        raise FileNotFoundError(f"{path} is missing: train --stage={stage} first{hint}")
    model.load_weights(path)


def new_face_encoder(config: Config):
    """A new face encoder, its weights built (trainable): stage 1 trains it."""
    fe = factory.build_face_encoder(config)
    size = config.face_encoder.image_size
    fe(np.zeros((1, size, size, 3), np.float32))  # build
    return fe


def load_frozen_face_encoder(config: Config, workdir: str, vgg_face_weights: str | None = None):
    """The trained face encoder, frozen: from a VGG-Face HDF5 file, or from stage 1's weights."""
    fe = new_face_encoder(config)
    if vgg_face_weights:
        load_vggface_weights(fe, vgg_face_weights)
    else:
        load_stage_weights(fe, workdir, "face_encoder")
    fe.trainable = False
    return fe


def new_face_decoder(config: Config, mean_landmarks=None):
    """A new face decoder, its weights built (trainable), starting from `mean_landmarks` [K, 2] if
    given: stage 2 trains it."""
    dec = factory.build_face_decoder(config)
    dec(np.zeros((1, config.feature_dim), np.float32))  # build
    if mean_landmarks is not None and len(mean_landmarks):
        dec.set_mean_landmarks(np.asarray(mean_landmarks, np.float32))
    return dec


def load_frozen_face_decoder(config: Config, workdir: str):
    """The trained face decoder (stage 2's weights), frozen."""
    dec = new_face_decoder(config)
    load_stage_weights(dec, workdir, "face_decoder")
    dec.trainable = False
    return dec


@contextlib.contextmanager
def float32_policy():
    """Inside, Keras builds layers in float32 (evaluation, export and inference are float32 by
    design); the global mixed-precision policy is restored afterwards."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def load_trained_model(workdir: str):
    """Speech2Face (front end + voice encoder + face decoder) from a workdir's resolved config and
    stage weights, in float32; returns (model, config)."""
    config = load_config(workdir)
    with float32_policy():
        model = factory.build_speech2face(config)
        model(np.zeros((1, config.audio.clip_samples), np.float32))  # build
    load_stage_weights(model.voice_encoder, workdir, "voice_encoder")
    load_stage_weights(model.face_decoder, workdir, "face_decoder")
    return model, config
