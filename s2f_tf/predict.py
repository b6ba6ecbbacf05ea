"""`s2f predict AUDIO`: faces from any audio file, through a server or a local SavedModel.

  audio file (WAV/FLAC/OGG/MP3/M4A, any rate, channels and length) -> 16 kHz mono int16, decoded a
    block at a time into a temporary file (s2f_tf/media/audio.py's open_audio), so memory stays
    bounded for any length
  -> s2f_tf/recording.py: speech (voice activity), speakers, model-length windows per speaker,
     each window through `serving_default`, one combined feature per speaker
  -> `decode_feature` -> one face PNG per speaker (+ its feature .npy on request), and a JSON
     report of the speech used and where (`predict_recording`)
With no usable speech it raises MediaError(no_speech) and writes nothing.
A predictor is anything with `predict(waveform float32 [B, N]) -> {output name: array}` and
`decode(feature float32 [B, D]) -> {"face_image", "landmarks"}`: the gRPC client
(serving/client.py) or `LocalModel` here, which checks its input against the export's contract
(s2f_tf/contract.py) and loads and calls the SavedModel (s2f_tf/savedmodel.py) the way the server
does, so both paths fail with the same short message.
"""

from __future__ import annotations

import io
import os

import numpy as np

from s2f_tf import contract, savedmodel
from s2f_tf.files import write_atomic
from s2f_tf.media.audio import open_audio


class LocalModel:
    """The SavedModel called in-process, with the same predict() (and the same input checks and
    error messages) as the serving clients."""

    def __init__(self, model_dir: str):
        self.path = contract.newest_version_dir(model_dir)
        signatures = savedmodel.load(self.path).signatures
        self.fn = signatures[contract.SIGNATURE]
        self.decoder = signatures.get(contract.DECODE_SIGNATURE)  # None: an export before it
        self.info = contract.read_model_info(self.path)

    def predict(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """float32 [B, N] -> outputs; raises contract.InputError (an S2FError) for input the export
        does not take, and S2FError for a failure inside the model."""
        array = contract.as_waveform(waveform)
        contract.check_waveform(self.info, array.dtype.name, array.shape)
        contract.check_finite(self.info, array)
        return savedmodel.call(self.fn, contract.INPUT, array)

    def decode(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """face features float32 [B, D] -> {"face_image", "landmarks"} (the DECODE_SIGNATURE)."""
        if self.decoder is None:
            raise contract.S2FError(
                f"{self.path} has no {contract.DECODE_SIGNATURE!r} signature: "
                f"export the model again with this version of s2f"
            )
        array = np.asarray(features, np.float32)
        contract.check_feature(self.info, array.dtype.name, array.shape)
        contract.check_finite(self.info, array, expected=contract.describe_feature(self.info))
        return savedmodel.call(self.decoder, contract.FEATURE_INPUT, array)


def save_face(image: np.ndarray, path: str, scale: int = 1) -> None:
    """uint8 [S, S, 3] -> PNG at `path`, written under a temporary name and renamed."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, np.uint8))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    png = io.BytesIO()
    picture.save(png, format="PNG")
    write_atomic(path, png.getvalue())


def numbered(path: str, index: int, count: int) -> str:
    """`path` itself for a single speaker; face.png -> face-1.png, face-2.png, ... for several."""
    if count <= 1:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}-{index}{ext}"


def save_feature(feature: np.ndarray, path: str) -> str:
    path = path if path.endswith(".npy") else path + ".npy"  # as np.save
    npy = io.BytesIO()
    np.save(npy, np.asarray(feature, np.float32))
    return write_atomic(path, npy.getvalue())


def _span_json(spans, sample_rate: int) -> list[list[float]]:
    return [[round(a / sample_rate, 2), round(b / sample_rate, 2)] for a, b in spans]


def predict_recording(
    audio_path: str,
    out_path: str,
    predictor,
    info: dict | None = None,
    feature_out: str | None = None,
    speakers: int | None = None,
) -> dict:
    """A whole recording -> one face per speaker (see the module docstring); returns the JSON report.
    `info` is the export's model info (LocalModel.info; for a server, `GrpcClient.model_info()`)."""
    from s2f_tf import recording
    from s2f_tf.media.errors import NO_SPEECH, MediaError

    info = info or {}
    sr = int(info.get("sample_rate", contract.SAMPLE_RATE))
    with open_audio(audio_path, sr) as pcm:  # decoded into a temporary file: any length
        found = recording.analyse(pcm, predictor, info, speakers=speakers)
    if not found.speakers:
        heard = contract.seconds(found.speech_samples, sr)
        raise MediaError(
            NO_SPEECH,
            f"{audio_path}: no usable speech in {contract.seconds(found.samples, sr):.1f} s "
            f"of audio ({heard:.1f} s detected as speech, at least "
            f"{contract.seconds(int(info.get('min_samples') or 1), sr):.1f} s in one stretch needed); "
            f"no face written",
        )
    decoded = predictor.decode(np.stack([s.feature for s in found.speakers]))
    report = {
        "audio": audio_path,
        "seconds": round(contract.seconds(found.samples, sr), 2),
        "speech_seconds": round(contract.seconds(found.speech_samples, sr), 2),
        "speech": _span_json(found.speech, sr),
        "speakers": [],
    }
    count = len(found.speakers)
    for i, speaker in enumerate(found.speakers):
        face = numbered(out_path, i + 1, count)
        save_face(decoded["face_image"][i], face)
        entry = {
            "speaker": i + 1,
            "seconds": round(contract.seconds(speaker.samples, sr), 2),
            "spans": _span_json(speaker.turns, sr),
            "windows": len(speaker.windows),
            "window_seconds": round(
                contract.seconds(max(b - a for a, b in speaker.windows), sr), 2
            ),
            "face": face,
            "feature_dim": int(speaker.feature.shape[-1]),
        }
        if feature_out:
            entry["feature"] = save_feature(speaker.feature, numbered(feature_out, i + 1, count))
        report["speakers"].append(entry)
    return report
