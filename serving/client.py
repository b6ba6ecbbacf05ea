"""Clients for a Speech2Face model served by TF Serving (or `serving.server.DevServer`).

  with GrpcClient("127.0.0.1:8500", "s2f") as client:
    out = client.predict(waveform)          # float32 [batch, samples] at 16 kHz
    out["face_image"]                       # uint8 [batch, S, S, 3]
  RestClient("http://127.0.0.1:8501", "s2f").predict(waveform)

Both clients pin the signature ("serving_default"), the input name ("waveform") and the output
names (`OUTPUTS`, sent as the request's output_filter over gRPC and checked over REST), set a deadline on
every call, and raise `ServingError(code, message)` carrying the server's own message. Only transient
failures are retried (UNAVAILABLE, and RESOURCE_EXHAUSTED from a busy server), with exponential
backoff; INVALID_ARGUMENT, NOT_FOUND, message-too-large and every other code fail at once.

The tensor helpers here (`ndarray_to_tensor_proto`, `tensor_proto_to_ndarray`) are the wire format
shared with the development server: raw `tensor_content` bytes, no per-element protobuf fields.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures
from typing import Any, Iterable, Sequence

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

# The export contract (mirrors s2f_tf.export, which this module does not import: it pulls in Keras).
SIGNATURE = "serving_default"
INPUT = "waveform"
OUTPUTS = ("face_feature", "face_image", "landmarks")

DEFAULT_MAX_MESSAGE_BYTES = 64 << 20

# numpy dtype <-> TensorProto dtype enum, for the types this model and its clients use.
_NP_TO_DT = {np.dtype(np.float32): types_pb2.DT_FLOAT, np.dtype(np.float64): types_pb2.DT_DOUBLE,
             np.dtype(np.float16): types_pb2.DT_HALF, np.dtype(np.int32): types_pb2.DT_INT32,
             np.dtype(np.int64): types_pb2.DT_INT64, np.dtype(np.int16): types_pb2.DT_INT16,
             np.dtype(np.int8): types_pb2.DT_INT8, np.dtype(np.uint8): types_pb2.DT_UINT8,
             np.dtype(np.uint16): types_pb2.DT_UINT16, np.dtype(np.uint32): types_pb2.DT_UINT32,
             np.dtype(np.uint64): types_pb2.DT_UINT64, np.dtype(np.bool_): types_pb2.DT_BOOL}
_DT_TO_NP = {v: k for k, v in _NP_TO_DT.items()}

# HTTP status (TF Serving's mapping, plus 413 for an oversized body) -> canonical code name.
_HTTP_TO_CODE = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 409: "ABORTED", 411: "INVALID_ARGUMENT", 413: "RESOURCE_EXHAUSTED",
                 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
                 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class ServingError(Exception):
  """A failed call: `code` is the canonical gRPC status name ("INVALID_ARGUMENT", "NOT_FOUND", ...),
  `message` the server's message; `http_status` is set for REST calls."""

  def __init__(self, code: str, message: str, http_status: int | None = None):
    super().__init__(f"{code}: {message}")
    self.code = code
    self.message = message
    self.http_status = http_status


def dtype_name(dtype_enum: int) -> str:
  """'float32' for DT_FLOAT, ...; the enum number for unknown values."""
  np_dtype = _DT_TO_NP.get(dtype_enum)
  if np_dtype is not None:
    return np_dtype.name
  name = types_pb2.DataType.Name(dtype_enum) if dtype_enum in types_pb2.DataType.values() else None
  return name[3:].lower() if name else f"dtype#{dtype_enum}"


def ndarray_to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
  """A TensorProto with the array's bytes in `tensor_content` (one copy, no per-element fields)."""
  array = np.ascontiguousarray(array)
  dt = _NP_TO_DT.get(array.dtype)
  if dt is None:
    import tensorflow as tf
    return tf.make_tensor_proto(array)
  if array.dtype.byteorder == ">":
    array = array.astype(array.dtype.newbyteorder("<"))
  shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d))
                                                 for d in array.shape])
  return tensor_pb2.TensorProto(dtype=dt, tensor_shape=shape, tensor_content=array.tobytes())


def tensor_proto_to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """The array of a TensorProto: zero-copy view of `tensor_content` when present (read-only), else
  TF's own decoding of the typed value fields. Raises ValueError on a malformed proto."""
  shape = [d.size for d in proto.tensor_shape.dim]
  if any(d < 0 for d in shape):
    raise ValueError(f"tensor shape {shape} has a negative dimension")
  np_dtype = _DT_TO_NP.get(proto.dtype)
  if proto.tensor_content and np_dtype is not None:
    content = proto.tensor_content
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(content) != count * np_dtype.itemsize:
      raise ValueError(f"tensor_content has {len(content)} bytes, shape {shape} of {np_dtype.name} "
                       f"needs {count * np_dtype.itemsize}")
    return np.frombuffer(content, np_dtype).reshape(shape)
  import tensorflow as tf
  return tf.make_ndarray(proto)


def _model_spec(model_name: str, signature: str, version: int | None,
                version_label: str | None) -> model_pb2.ModelSpec:
  spec = model_pb2.ModelSpec(name=model_name, signature_name=signature)
  if version is not None:
    spec.version.value = int(version)
  elif version_label:
    spec.version_label = version_label
  return spec


def metadata_to_dict(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict:
  """GetModelMetadataResponse as TF Serving's REST API prints it:
  {"model_spec": {...}, "metadata": {"signature_def": {"signature_def": {name: SignatureDef}}}}."""
  sigmap = get_model_metadata_pb2.SignatureDefMap()
  if "signature_def" in response.metadata:
    response.metadata["signature_def"].Unpack(sigmap)
  opts = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
  return {"model_spec": json_format.MessageToDict(response.model_spec, **opts),
          "metadata": {"signature_def": json_format.MessageToDict(sigmap, **opts)}}


def status_to_dict(response: get_model_status_pb2.GetModelStatusResponse) -> dict:
  """GetModelStatusResponse as TF Serving's REST API prints it: {"model_version_status": [...]}."""
  return json_format.MessageToDict(response, always_print_fields_with_no_presence=True)


def _retryable(code: grpc.StatusCode, message: str) -> bool:
  """Predict/metadata/status are idempotent, but only transient failures are worth another try:
  UNAVAILABLE (server down or restarting) and RESOURCE_EXHAUSTED from a busy server -- not the
  RESOURCE_EXHAUSTED of a message over the size limit, which would fail again."""
  if code == grpc.StatusCode.UNAVAILABLE:
    return True
  return code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" not in message.lower()


def _backoff(attempt: int, base: float, cap: float = 2.0) -> float:
  return min(cap, base * (2 ** attempt)) * (0.5 + random.random() / 2)


class GrpcClient:
  """PredictionService/ModelService client over one gRPC channel (thread-safe).

  Args:
    target: "host:port" of the gRPC endpoint.
    model_name: the served model's name.
    signature: the pinned signature.
    timeout_seconds: deadline of each attempt.
    max_message_bytes: the channel's send and receive limits.
    max_concurrency: calls in flight at once from this client (a semaphore; `predict_many` uses as
      many threads).
    retries: extra attempts after a transient failure (UNAVAILABLE, busy RESOURCE_EXHAUSTED).
    backoff_seconds: the first retry's delay; doubles each retry (with jitter), capped at 2 s.
    version / version_label: pin a model version (default: the server's newest).
  """

  def __init__(self, target: str, model_name: str, signature: str = SIGNATURE,
               timeout_seconds: float = 10.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
               max_concurrency: int = 8, retries: int = 2, backoff_seconds: float = 0.1,
               version: int | None = None, version_label: str | None = None,
               input_name: str = INPUT, outputs: Sequence[str] = OUTPUTS):
    if max_concurrency < 1:
      raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    self.target = target
    self.model_name = model_name
    self.signature = signature
    self.timeout_seconds = timeout_seconds
    self.retries = max(0, int(retries))
    self.backoff_seconds = backoff_seconds
    self.version = version
    self.version_label = version_label
    self.input_name = input_name
    self.outputs = tuple(outputs)
    self.max_concurrency = max_concurrency
    self.retries_made = 0                     # transient failures retried so far (for tests, logs)
    self._channel = grpc.insecure_channel(target, options=[
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes)])
    self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
    self._slots = threading.BoundedSemaphore(max_concurrency)
    self._pool: futures.ThreadPoolExecutor | None = None
    self._pool_lock = threading.Lock()

  # -- calls
  def _call(self, method, request):
    attempt = 0
    while True:
      with self._slots:
        try:
          return method(request, timeout=self.timeout_seconds)
        except grpc.RpcError as e:
          code, details = e.code(), e.details() or ""
      if attempt < self.retries and _retryable(code, details):
        self.retries_made += 1
        time.sleep(_backoff(attempt, self.backoff_seconds))
        attempt += 1
        continue
      if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details.lower():
        details += " (the request or response exceeds a gRPC message-size limit: send fewer or " \
                   "shorter clips per request, or raise max_message_bytes on client and server)"
      raise ServingError(code.name, details) from None

  def predict_request(self, waveform: np.ndarray) -> predict_pb2.PredictRequest:
    """The PredictRequest `predict` sends (float inputs are cast to float32; anything else is sent
    as is, so the server reports what it expects)."""
    array = np.asarray(waveform)
    if array.dtype.kind == "f" and array.dtype != np.float32:
      array = array.astype(np.float32)
    request = predict_pb2.PredictRequest(
        model_spec=_model_spec(self.model_name, self.signature, self.version, self.version_label),
        output_filter=list(self.outputs))
    request.inputs[self.input_name].CopyFrom(ndarray_to_tensor_proto(array))
    return request

  def predict(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
    """float32 [batch, samples] at 16 kHz -> {"face_feature": float32 [B, D], "face_image": uint8
    [B, S, S, 3], "landmarks": float32 [B, K, 2]} (arrays are read-only views of the response)."""
    response = self._call(self._predict.Predict, self.predict_request(waveform))
    missing = set(self.outputs) - set(response.outputs)
    if missing:
      raise ServingError("INTERNAL", f"response lacks pinned outputs {sorted(missing)}; "
                         f"got {sorted(response.outputs)}")
    return {k: tensor_proto_to_ndarray(response.outputs[k]) for k in self.outputs}

  def predict_response(self, waveform: np.ndarray) -> predict_pb2.PredictResponse:
    """The raw PredictResponse (model_spec carries the version that answered)."""
    return self._call(self._predict.Predict, self.predict_request(waveform))

  def predict_many(self, waveforms: Iterable[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """`predict` for each request, at most `max_concurrency` in flight; results in input order.
    The first failure is raised (after the others finish)."""
    with self._pool_lock:
      if self._pool is None:
        self._pool = futures.ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="s2f-grpc")
    return list(self._pool.map(self.predict, list(waveforms)))

  def metadata(self) -> dict:
    """GetModelMetadata (signature_def), in TF Serving's REST JSON layout (see `metadata_to_dict`)."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=_model_spec(self.model_name, "", self.version, self.version_label),
        metadata_field=["signature_def"])
    return metadata_to_dict(self._call(self._predict.GetModelMetadata, request))

  def status(self, version: int | None = None) -> dict:
    """GetModelStatus, in TF Serving's REST JSON layout: {"model_version_status": [{"version": "2",
    "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}, ...]}."""
    request = get_model_status_pb2.GetModelStatusRequest(
        model_spec=_model_spec(self.model_name, "", version, None))
    return status_to_dict(self._call(self._models.GetModelStatus, request))

  def wait_until_available(self, timeout_seconds: float = 30.0) -> dict:
    """Polls `status()` until a version is AVAILABLE; returns the status (raises the last error)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
      try:
        status = self.status()
        if any(s.get("state") == "AVAILABLE" for s in status.get("model_version_status", [])):
          return status
        error = ServingError("UNAVAILABLE", f"no version of {self.model_name!r} is AVAILABLE: {status}")
      except ServingError as e:
        error = e
      if time.monotonic() > deadline:
        raise error
      time.sleep(0.1)

  def close(self) -> None:
    with self._pool_lock:
      if self._pool is not None:
        self._pool.shutdown(wait=True)
        self._pool = None
    self._channel.close()

  def __enter__(self) -> GrpcClient:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


class RestClient:
  """TF Serving's REST API with urllib: predict (columnar "inputs" format), metadata, status.

  Args:
    base_url: "http://host:port" of the REST endpoint.
    model_name: the served model's name.
    timeout_seconds: socket timeout of each attempt.
    retries: extra attempts after a connection failure, 503 or 429.
    version: pin a model version (default: the server's newest).
  """

  def __init__(self, base_url: str, model_name: str, timeout_seconds: float = 30.0,
               signature: str = SIGNATURE, retries: int = 2, backoff_seconds: float = 0.1,
               version: int | None = None, input_name: str = INPUT, outputs: Sequence[str] = OUTPUTS):
    self.base_url = base_url.rstrip("/")
    self.model_name = model_name
    self.timeout_seconds = timeout_seconds
    self.signature = signature
    self.retries = max(0, int(retries))
    self.backoff_seconds = backoff_seconds
    self.version = version
    self.input_name = input_name
    self.outputs = tuple(outputs)
    self.retries_made = 0
    self._output_dtypes: dict[str, np.dtype] | None = None

  def _url(self, suffix: str = "", version: int | None = None) -> str:
    path = f"{self.base_url}/v1/models/{urllib.request.quote(self.model_name, safe='')}"
    version = self.version if version is None else version
    if version is not None:
      path += f"/versions/{int(version)}"
    return path + suffix

  def _request(self, url: str, body: dict | None = None) -> Any:
    """GET (no body) or POST JSON; returns the decoded JSON. Connection failures, 503 and 429 are
    retried with backoff; any other HTTP error raises ServingError with the server's message."""
    data = None if body is None else json.dumps(body).encode()
    attempt = 0
    while True:
      request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                       headers={"Content-Type": "application/json"})
      try:
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
          return json.loads(response.read())
      except urllib.error.HTTPError as e:
        raw = e.read()
        try:
          message = json.loads(raw).get("error", "")
        except (ValueError, AttributeError):
          message = raw.decode(errors="replace")
        error = ServingError(_HTTP_TO_CODE.get(e.code, "UNKNOWN"), message or str(e.reason), http_status=e.code)
        retryable = e.code in (429, 503)
      except TimeoutError as e:
        raise ServingError("DEADLINE_EXCEEDED", f"{url}: {e}") from None
      except (urllib.error.URLError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
          raise ServingError("DEADLINE_EXCEEDED", f"{url}: {reason}") from None
        error, retryable = ServingError("UNAVAILABLE", f"{url}: {reason}"), True
      if not retryable or attempt >= self.retries:
        raise error
      self.retries_made += 1
      time.sleep(_backoff(attempt, self.backoff_seconds))
      attempt += 1

  def _dtypes(self) -> dict[str, np.dtype]:
    if self._output_dtypes is None:
      sig = self.metadata()["metadata"]["signature_def"]["signature_def"].get(self.signature, {})
      self._output_dtypes = {k: _DT_TO_NP.get(types_pb2.DataType.Value(v.get("dtype", "DT_FLOAT")),
                                              np.dtype(np.float32))
                             for k, v in sig.get("outputs", {}).items()}
    return self._output_dtypes

  def predict(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
    """Same contract as `GrpcClient.predict`, over JSON ({"signature_name", "inputs"} -> "outputs")."""
    array = np.asarray(waveform)
    if array.dtype.kind == "f" and array.dtype != np.float32:
      array = array.astype(np.float32)
    body = {"signature_name": self.signature, "inputs": {self.input_name: array.tolist()}}
    outputs = self._request(self._url(":predict"), body)["outputs"]
    missing = set(self.outputs) - set(outputs)
    if missing:
      raise ServingError("INTERNAL", f"response lacks pinned outputs {sorted(missing)}")
    dtypes = self._dtypes()
    return {k: np.asarray(outputs[k], dtype=dtypes.get(k, np.float32)) for k in self.outputs}

  def metadata(self) -> dict:
    return self._request(self._url("/metadata"))

  def status(self, version: int | None = None) -> dict:
    return self._request(self._url("", version))
