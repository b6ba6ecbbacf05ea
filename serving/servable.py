"""One loaded model version: `load_servable` reads a version directory written by `s2f export`
(the SavedModel, its SIGNATURE and DECODE_SIGNATURE, the signature_defs TF Serving reports,
assets.extra/MODEL_INFO_FILE), `Signature.run` calls one (both through s2f_tf/savedmodel.py, as
`s2f predict` does; `Signature.serve` through its batcher when the server batches, `attach_batchers`),
and `warm_up` replays assets.extra/WARMUP_FILE the way TF Serving does before a
version goes AVAILABLE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from s2f_tf import contract, savedmodel
from serving.batching import Batcher
from serving.validation import RequestError, grpc_code, input_from_proto


@dataclass
class Signature:
    """One served signature of a version: its concrete function and what requests must match."""

    name: str  # contract.SIGNATURE or contract.DECODE_SIGNATURE
    fn: Any  # loaded.signatures[name]
    input_name: str
    input_dtype: int  # TensorProto dtype enum (DT_FLOAT)
    input_rank: int | None  # 2
    output_names: tuple[str, ...]
    info: dict = field(default_factory=dict)  # assets.extra/MODEL_INFO_FILE (may be empty)
    input_tensor: str = ""  # the input's graph tensor name ("serving_default_waveform:0")
    batcher: Any = None  # serving.batching.Batcher when the server batches

    def run(self, array: np.ndarray) -> dict[str, np.ndarray]:
        """The checked input [B, ...] -> {output name: ndarray}. Graph errors -> RequestError."""
        try:
            return savedmodel.call(self.fn, self.input_name, array)
        except savedmodel.ModelError as e:
            raise RequestError(grpc_code(e.error_code), str(e)) from None

    def serve(self, array: np.ndarray, deadline: float | None = None) -> dict[str, np.ndarray]:
        """What a request runs: through the batcher when there is one (which answers
        DEADLINE_EXCEEDED once `deadline`, a time.monotonic(), has passed), else `run` at once."""
        if self.batcher is None:
            return self.run(array)
        return self.batcher.submit(array, deadline)


@dataclass
class Servable:
    """One loaded version: the SavedModel and its served signatures (SIGNATURE always; the
    DECODE_SIGNATURE when the export has it)."""

    name: str
    version: int
    path: str
    loaded: Any  # keeps the functions' variables alive
    signatures: dict[str, Signature]
    signature_defs: get_model_metadata_pb2.SignatureDefMap
    info: dict = field(default_factory=dict)

    @property
    def default(self) -> Signature:
        return self.signatures[contract.SIGNATURE]

    def signature(self, name: str) -> Signature:
        """The signature a request names ("" is the default); an unknown name is FAILED_PRECONDITION,
        as in TF Serving."""
        found = self.signatures.get(name or contract.SIGNATURE)
        if found is None:
            raise RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{name}" not '
                f"found. (signatures: {', '.join(sorted(self.signatures))})",
            )
        return found

    def run(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """waveform float32 [B, N] -> {output name: ndarray} through the default signature."""
        return self.default.run(waveform)


def load_servable(path: str, name: str, version: int) -> Servable:
    """Loads `path` (one version directory) and reads its signatures, contract and metadata."""
    loaded = savedmodel.load(path)
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, contract.SAVED_MODEL_FILE), "rb") as f:
        saved_model.ParseFromString(f.read())
    meta = next(
        (m for m in saved_model.meta_graphs if "serve" in m.meta_info_def.tags),
        saved_model.meta_graphs[0],
    )
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in meta.signature_def.items():
        sigmap.signature_def[key].CopyFrom(sig)
    info = contract.read_model_info(path)
    signatures = {}
    for key in (contract.SIGNATURE, contract.DECODE_SIGNATURE):
        if key not in meta.signature_def or key not in loaded.signatures:
            continue
        sig = meta.signature_def[key]
        if len(sig.inputs) != 1:
            raise ValueError(f"{path}: {key} must take one input, takes {sorted(sig.inputs)}")
        input_name, input_info = next(iter(sig.inputs.items()))
        shape = input_info.tensor_shape
        signatures[key] = Signature(
            name=key,
            fn=loaded.signatures[key],
            input_name=input_name,
            input_dtype=input_info.dtype,
            input_rank=None if shape.unknown_rank else len(shape.dim),
            output_names=tuple(sorted(sig.outputs)),
            info=info,
            input_tensor=input_info.name,
        )
    return Servable(
        name=name,
        version=version,
        path=path,
        loaded=loaded,
        signatures=signatures,
        signature_defs=sigmap,
        info=info,
    )


def warm_up(servable: Servable, max_batch: int | None = None) -> int:
    """Replays assets.extra/WARMUP_FILE (PredictionLog records, at most MAX_WARMUP_RECORDS), like TF
    Serving; each request passes the same checks as a client's (batch size up to `max_batch`; the
    export warms every allowed batch size). Returns the requests replayed."""
    path = os.path.join(servable.path, contract.ASSETS_EXTRA, contract.WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    replayed = 0
    for i, record in enumerate(tf.data.TFRecordDataset(path)):
        if i >= contract.MAX_WARMUP_RECORDS:
            break
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.HasField("predict_log"):
            sig = servable.signature(entry.predict_log.request.model_spec.signature_name)
            sig.run(input_from_proto(sig, entry.predict_log.request.inputs, max_batch))
            replayed += 1
    return replayed


def attach_batchers(servable: Servable, params, on_batch=None) -> None:
    """Gives each signature of `servable` its own serving.batching.Batcher (`params`: its
    BatchingParameters; `on_batch(signature, size, rows)` per batch run, for metrics)."""
    for sig in servable.signatures.values():
        report = (
            None if on_batch is None else (lambda size, rows, s=sig.name: on_batch(s, size, rows))
        )
        run = lambda array, s=sig: s.run(array)  # noqa: E731 -- looked up per batch
        sig.batcher = Batcher(params, run, sig.input_tensor or sig.input_name, report)


def close_batchers(servable: Servable) -> None:
    """Lets each batcher run what it has queued, then stop (a version being unloaded)."""
    for sig in servable.signatures.values():
        if sig.batcher is not None:
            sig.batcher.close()
