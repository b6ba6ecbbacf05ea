"""Clients for a Speech2Face model served by TF Serving (or `serving.server.DevServer`).

  with GrpcClient("127.0.0.1:8500", "s2f") as client:
    out = client.predict(waveform)          # float32 [batch, samples] at 16 kHz
    out["face_image"]                       # uint8 [batch, S, S, 3]
  RestClient("http://127.0.0.1:8501", "s2f").predict(waveform)

Both clients read the export's model info from the server's metadata (`model_info()`: clip_samples,
min_samples, ...; the export's `model_info` signature carries them) and send every waveform as
exactly clip_samples samples (`fit_waveform`: tiled when shorter, as training tiles, centre-cropped
when longer), which TF Serving's batching needs (serving/batching.config); `fit=False` sends
waveforms as given. Both clients pin the signature ("serving_default"), the input name ("waveform")
and the output names (`OUTPUTS`, sent as the request's output_filter over gRPC and checked over
REST), set a deadline on every call, and raise `ServingError(code, message)`
carrying the server's own message.
`GrpcClient.decode(features)` calls the export's second signature ("decode_feature": a face feature
in, face image and landmarks out), which `s2f predict` uses for a speaker's combined feature. Only transient
failures are retried (UNAVAILABLE, and RESOURCE_EXHAUSTED from a busy server), with exponential
backoff; INVALID_ARGUMENT, NOT_FOUND, message-too-large and every other code fail at once.

The signature, input and output names are the s2f contract's (s2f_tf.contract); the tensor wire
format (raw `tensor_content` bytes) is serving.protos, shared with the development server.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent import futures
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from s2f_tf import contract
from s2f_tf.contract import (
    DECODE_OUTPUTS,
    DECODE_SIGNATURE,
    FEATURE_INPUT,
    INPUT,
    OUTPUTS,
    SIGNATURE,
    S2FError,
)
from serving.protos import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DT_TO_NP,
    metadata_to_dict,
    model_info_from_metadata,
    ndarray_to_tensor_proto,
    status_to_dict,
    tensor_proto_to_ndarray,
)

# HTTP status (TF Serving's mapping, plus 413 for an oversized body) -> canonical code name.
_HTTP_TO_CODE = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    411: "INVALID_ARGUMENT",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class ServingError(S2FError):
    """A failed call: `code` is the canonical gRPC status name ("INVALID_ARGUMENT", "NOT_FOUND", ...),
    `message` the server's message; `http_status` is set for REST calls. An S2FError: `s2f predict`
    prints it without a traceback."""

    def __init__(self, code: str, message: str, http_status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


def _model_spec(
    model_name: str, signature: str, version: int | None, version_label: str | None
) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=model_name, signature_name=signature)
    if version is not None:
        spec.version.value = int(version)
    elif version_label:
        spec.version_label = version_label
    return spec


def _retryable(code: grpc.StatusCode, message: str) -> bool:
    """Predict/metadata/status are idempotent, but only transient failures are worth another try:
    UNAVAILABLE (server down or restarting) and RESOURCE_EXHAUSTED from a busy server -- not the
    RESOURCE_EXHAUSTED of a message over the size limit, which would fail again."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" not in message.lower()


def _backoff(attempt: int, base: float, cap: float = 2.0) -> float:
    return min(cap, base * (2**attempt)) * (0.5 + random.random() / 2)


def checked_info(metadata: dict, where: str) -> dict:
    """The model info in a metadata answer; ServingError FAILED_PRECONDITION when it lacks one."""
    info = model_info_from_metadata(metadata)
    missing = [k for k in ("clip_samples", "min_samples") if k not in info]
    if missing:
        raise ServingError(
            "FAILED_PRECONDITION",
            f"{where}: the served export does not say its {' and '.join(missing)} (its metadata "
            f"has no {contract.INFO_SIGNATURE!r} signature): export it again with this s2f",
        )
    return info


def fit_waveform(waveform: np.ndarray, info: dict) -> np.ndarray:
    """float [B, N] -> float32 [B, clip_samples]: tiled when shorter, centre-cropped when longer
    (contract.fit_clip); a waveform shorter than the export's min_samples is refused
    (ServingError INVALID_ARGUMENT, the server's words) instead of being tiled from too little."""
    array = contract.as_waveform(waveform)
    if array.ndim == 2 and array.dtype == np.float32 and array.shape[-1] > 0:
        if array.shape[-1] < info["min_samples"]:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"clip too short: {contract.describe_input(info)}; got float32 "
                f"{contract.shape_str(array.shape)}",
            )
        array = contract.fit_clip(array, info["clip_samples"])
    return array  # anything else goes as it is: the server says what it expects


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
      fit: send waveforms as the export's clip_samples (`fit_waveform`); False: as given.
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        signature: str = SIGNATURE,
        timeout_seconds: float = 10.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_concurrency: int = 8,
        retries: int = 2,
        backoff_seconds: float = 0.1,
        version: int | None = None,
        version_label: str | None = None,
        input_name: str = INPUT,
        outputs: Sequence[str] = OUTPUTS,
        fit: bool = True,
    ):
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
        self.fit = fit
        self._info: dict | None = None
        self.retries_made = 0  # transient failures retried so far (for tests, logs)
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
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
                details += (
                    " (the request or response exceeds a gRPC message-size limit: send fewer or "
                    "shorter clips per request, or raise max_message_bytes on client and server)"
                )
            raise ServingError(code.name, details) from None

    def predict_request(
        self,
        waveform: np.ndarray,
        signature: str | None = None,
        input_name: str | None = None,
        outputs: Sequence[str] | None = None,
    ) -> predict_pb2.PredictRequest:
        """The PredictRequest `predict` sends (float inputs are cast to float32, waveforms fitted to
        the export's clip when `fit`; anything else is sent as is, so the server reports what it
        expects); the pinned signature unless told otherwise."""
        if self.fit and (signature or self.signature) == SIGNATURE:
            array = fit_waveform(waveform, self.model_info())
        else:
            array = contract.as_waveform(waveform)
        request = predict_pb2.PredictRequest(
            model_spec=_model_spec(
                self.model_name, signature or self.signature, self.version, self.version_label
            ),
            output_filter=list(self.outputs if outputs is None else outputs),
        )
        request.inputs[input_name or self.input_name].CopyFrom(ndarray_to_tensor_proto(array))
        return request

    def predict(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """float32 [batch, samples] at 16 kHz -> {"face_feature": float32 [B, D], "face_image": uint8
        [B, S, S, 3], "landmarks": float32 [B, K, 2]} (arrays are read-only views of the response)."""
        response = self._call(self._predict.Predict, self.predict_request(waveform))
        missing = set(self.outputs) - set(response.outputs)
        if missing:
            raise ServingError(
                "INTERNAL",
                f"response lacks pinned outputs {sorted(missing)}; got {sorted(response.outputs)}",
            )
        return {k: tensor_proto_to_ndarray(response.outputs[k]) for k in self.outputs}

    def decode(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """The export's DECODE_SIGNATURE: face features float32 [B, D] -> {"face_image", "landmarks"}."""
        request = self.predict_request(features, DECODE_SIGNATURE, FEATURE_INPUT, DECODE_OUTPUTS)
        response = self._call(self._predict.Predict, request)
        missing = set(DECODE_OUTPUTS) - set(response.outputs)
        if missing:
            raise ServingError(
                "INTERNAL",
                f"response lacks outputs {sorted(missing)}; got {sorted(response.outputs)}",
            )
        return {k: tensor_proto_to_ndarray(response.outputs[k]) for k in DECODE_OUTPUTS}

    def predict_response(self, waveform: np.ndarray) -> predict_pb2.PredictResponse:
        """The raw PredictResponse (model_spec carries the version that answered)."""
        return self._call(self._predict.Predict, self.predict_request(waveform))

    def predict_many(self, waveforms: Iterable[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """`predict` for each request, at most `max_concurrency` in flight; results in input order.
        The first failure is raised (after the others finish)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = futures.ThreadPoolExecutor(
                    self.max_concurrency, thread_name_prefix="s2f-grpc"
                )
        return list(self._pool.map(self.predict, list(waveforms)))

    def model_info(self) -> dict:
        """The served export's model info (contract.INFO_FIELDS) from its metadata, read once."""
        if self._info is None:
            self._info = checked_info(self.metadata(), self.target)
        return self._info

    def metadata(self) -> dict:
        """GetModelMetadata (signature_def), in TF Serving's REST JSON layout (see `metadata_to_dict`)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(self.model_name, "", self.version, self.version_label),
            metadata_field=["signature_def"],
        )
        return metadata_to_dict(self._call(self._predict.GetModelMetadata, request))

    def status(self, version: int | None = None) -> dict:
        """GetModelStatus, in TF Serving's REST JSON layout: {"model_version_status": [{"version": "2",
        "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}, ...]}."""
        request = get_model_status_pb2.GetModelStatusRequest(
            model_spec=_model_spec(self.model_name, "", version, None)
        )
        return status_to_dict(self._call(self._models.GetModelStatus, request))

    def wait_until_available(self, timeout_seconds: float = 30.0) -> dict:
        """Polls `status()` until a version is AVAILABLE; returns the status (raises the last error)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                status = self.status()
                if any(
                    s.get("state") == "AVAILABLE" for s in status.get("model_version_status", [])
                ):
                    return status
                error = ServingError(
                    "UNAVAILABLE", f"no version of {self.model_name!r} is AVAILABLE: {status}"
                )
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
      fit: send waveforms as the export's clip_samples (`fit_waveform`); False: as given.
    """

    def __init__(
        self,
        base_url: str,
        model_name: str,
        timeout_seconds: float = 30.0,
        signature: str = SIGNATURE,
        retries: int = 2,
        backoff_seconds: float = 0.1,
        version: int | None = None,
        input_name: str = INPUT,
        outputs: Sequence[str] = OUTPUTS,
        fit: bool = True,
    ):
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
        self.fit = fit
        self._info: dict | None = None
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
            request = urllib.request.Request(
                url,
                data=data,
                method="GET" if data is None else "POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                raw = e.read()
                try:
                    message = json.loads(raw).get("error", "")
                except (ValueError, AttributeError):
                    message = raw.decode(errors="replace")
                error = ServingError(
                    _HTTP_TO_CODE.get(e.code, "UNKNOWN"),
                    message or str(e.reason),
                    http_status=e.code,
                )
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
            sig = self.metadata()["metadata"]["signature_def"]["signature_def"].get(
                self.signature, {}
            )
            self._output_dtypes = {
                k: DT_TO_NP.get(
                    types_pb2.DataType.Value(v.get("dtype", "DT_FLOAT")), np.dtype(np.float32)
                )
                for k, v in sig.get("outputs", {}).items()
            }
        return self._output_dtypes

    def predict(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
        """Same contract as `GrpcClient.predict`, over JSON ({"signature_name", "inputs"} -> "outputs")."""
        if self.fit and self.signature == SIGNATURE:
            array = fit_waveform(waveform, self.model_info())
        else:
            array = contract.as_waveform(waveform)
        body = {"signature_name": self.signature, "inputs": {self.input_name: array.tolist()}}
        outputs = self._request(self._url(":predict"), body)["outputs"]
        missing = set(self.outputs) - set(outputs)
        if missing:
            raise ServingError("INTERNAL", f"response lacks pinned outputs {sorted(missing)}")
        dtypes = self._dtypes()
        return {k: np.asarray(outputs[k], dtype=dtypes.get(k, np.float32)) for k in self.outputs}

    def model_info(self) -> dict:
        """The served export's model info (contract.INFO_FIELDS) from its metadata, read once."""
        if self._info is None:
            self._info = checked_info(self.metadata(), self.base_url)
        return self._info

    def metadata(self) -> dict:
        return self._request(self._url("/metadata"))

    def status(self, version: int | None = None) -> dict:
        return self._request(self._url("", version))
