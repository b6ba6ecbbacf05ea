"""`s2f predict AUDIO`: a face from any audio file, through a server or a local SavedModel.

  audio file (WAV/FLAC/OGG/MP3/M4A, any rate and channels) -> 16 kHz mono int16 (s2f_tf/media/audio.py)
    -> float32 [1, samples] (the centre `max_samples` kept if longer) -> serving_default
    -> face_image PNG (+ face_feature .npy on request)
A predictor is anything with `predict(waveform float32 [B, N]) -> {output name: array}`: the gRPC
and REST clients (serving/client.py) or `LocalModel` here, which checks its input against the
export's contract (s2f_tf/contract.py) the way the server does, so both paths fail with the same
short message.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from s2f_tf import contract
from s2f_tf.media.audio import load_audio


def waveform_from_file(path: str, max_samples: int | None = None) -> np.ndarray:
  """Audio file -> float32 [1, samples] in [-1, 1] at 16 kHz (the centre part if too long)."""
  pcm = load_audio(path)                                                   # int16 [N]
  if max_samples:
    pcm = contract.center_crop(pcm, max_samples)
  return contract.pcm_to_float(pcm)[None, :]                               # [1, N]


class LocalModel:
  """The SavedModel called in-process, with the same predict() (and the same input checks and
  error messages) as the serving clients."""

  def __init__(self, model_dir: str):
    self.path = contract.newest_version_dir(model_dir)
    try:
      signatures = tf.saved_model.load(self.path).signatures
    except (OSError, ValueError, tf.errors.OpError) as e:
      raise contract.S2FError(f"{self.path} is not a loadable SavedModel: {e}") from None
    if contract.SIGNATURE not in signatures:
      raise contract.S2FError(f"{self.path} has no {contract.SIGNATURE!r} signature (has {sorted(signatures)})")
    self.fn = signatures[contract.SIGNATURE]
    self.info = contract.read_model_info(self.path)

  def predict(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
    """float32 [B, N] -> outputs; raises contract.InputError (an S2FError) for input the export
    does not take, and S2FError for a failure inside the model."""
    array = contract.as_waveform(waveform)
    contract.check_waveform(self.info, array.dtype.name, array.shape)
    contract.check_finite(self.info, array)
    try:
      out = self.fn(**{contract.INPUT: tf.constant(array)})
    except tf.errors.OpError as e:
      raise contract.S2FError(f"model error: {contract.clean_tf_message(e.message)}") from None
    return {k: v.numpy() for k, v in out.items()}


def save_face(image: np.ndarray, path: str, scale: int = 1) -> None:
  """uint8 [S, S, 3] -> PNG at `path`, written under a temporary name and renamed."""
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
    feature_out = feature_out if feature_out.endswith(".npy") else feature_out + ".npy"   # as np.save
    tmp = f"{feature_out}.tmp-{os.getpid()}.npy"
    np.save(tmp, np.asarray(out["face_feature"][0], np.float32))
    os.replace(tmp, feature_out)
  return {"audio": audio_path, "seconds": contract.seconds(wave.shape[1]), "face": out_path,
          "feature": feature_out, "feature_dim": int(out["face_feature"].shape[-1])}
