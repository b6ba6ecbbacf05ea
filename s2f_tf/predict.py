"""`s2f predict AUDIO`: a face from any audio file, through a server or a local SavedModel.

  audio file (WAV/FLAC/OGG/MP3/M4A, any rate and channels) -> 16 kHz mono (s2f_tf/data/media.py)
    -> float32 [1, samples] (centre `max_samples` kept if longer) -> serving_default
    -> face_image PNG (+ face_feature .npy on request)
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from s2f_tf.export import MODEL_INFO_FILE, SIGNATURE, versions


def newest_version_dir(model_dir: str) -> str:
  """`model_dir` itself if it is a SavedModel, else its newest integer version directory."""
  if tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
    return model_dir
  found = versions(model_dir)
  if not found:
    raise FileNotFoundError(f"{model_dir!r} holds no SavedModel (expected saved_model.pb or <version>/ dirs)")
  return os.path.join(model_dir, str(found[-1]))


def waveform_from_file(path: str, max_samples: int | None = None) -> np.ndarray:
  """Audio file -> float32 [1, samples] in [-1, 1] at 16 kHz (the centre part if too long)."""
  from s2f_tf.data.media import load_audio
  pcm = load_audio(path)                                                   # int16 [N]
  if max_samples and len(pcm) > max_samples:
    start = (len(pcm) - max_samples) // 2
    pcm = pcm[start:start + max_samples]
  return (pcm.astype(np.float32) / 32768.0)[None, :]                      # [1, N]


class LocalModel:
  """The SavedModel called in-process, with the same predict() as the serving clients."""

  def __init__(self, model_dir: str):
    self.path = newest_version_dir(model_dir)
    self.fn = tf.saved_model.load(self.path).signatures[SIGNATURE]
    info_path = os.path.join(self.path, "assets.extra", MODEL_INFO_FILE)
    self.info = json.load(tf.io.gfile.GFile(info_path)) if tf.io.gfile.exists(info_path) else {}

  def predict(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in self.fn(waveform=tf.constant(waveform, tf.float32)).items()}


def save_face(image: np.ndarray, path: str, scale: int = 1) -> None:
  from PIL import Image
  picture = Image.fromarray(np.asarray(image, np.uint8))
  if scale > 1:
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
  tmp = f"{path}.tmp-{os.getpid()}.png"
  picture.save(tmp)
  os.replace(tmp, path)


def predict_file(audio_path: str, out_path: str, predictor, feature_out: str | None = None,
                 max_samples: int | None = None) -> dict:
  wave = waveform_from_file(audio_path, max_samples)
  out = predictor.predict(wave)
  save_face(out["face_image"][0], out_path)
  if feature_out:
    np.save(feature_out, np.asarray(out["face_feature"][0], np.float32))
  return {"audio": audio_path, "seconds": wave.shape[1] / 16000, "face": out_path,
          "feature": feature_out, "feature_dim": int(out["face_feature"].shape[-1])}
