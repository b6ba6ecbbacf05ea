"""A development model server that speaks TF Serving's gRPC and REST protocols.

Production runs the `tensorflow/serving` image (serving/Dockerfile); this server exists so that
every client can be developed and tested against the same protocol where that binary is not
installed. It serves `<model_base_path>/<integer version>/` SavedModels written by `s2f export`:

  gRPC  tensorflow.serving.PredictionService/Predict, /GetModelMetadata (signature_def);
        tensorflow.serving.ModelService/GetModelStatus                     (default port 8500)
  REST  GET  /v1/models/NAME[/versions/N|/labels/L]            status
        GET  /v1/models/NAME[/versions/N|/labels/L]/metadata   signature_def metadata
        POST /v1/models/NAME[/versions/N|/labels/L]:predict    {"instances": ...} | {"inputs": ...}
                                                               (default port 8501)

Like TF Serving it serves the newest version by default, honours an explicit version or label,
polls the base path for new versions (`poll_seconds`, TF Serving's --file_system_poll_wait_seconds)
and keeps the newest `num_versions` loaded (models.config's `latest { num_versions: 2 }`), replays
assets.extra/tf_serving_warmup_requests before a version goes AVAILABLE, and reports errors with
TF Serving's codes and JSON (`{"error": "..."}`, HTTP 400/404/...). Unlike TF Serving it binds
127.0.0.1 unless told otherwise, checks every request against the s2f export contract before the
model runs (dtype, rank, clip length, batch size, NaN/Inf), answers an oversized REST body with
HTTP 413, and has no request batching (batching.config is for production).

  from serving.server import DevServer
  with DevServer("exports/s2f", "s2f", port=8500, rest_api_port=8501) as server:
    server.wait()

  serve(model_base_path="exports/s2f", model_name="s2f")      # what `s2f serve` calls; blocks
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence
from urllib.parse import unquote

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc)

from serving.client import (DEFAULT_MAX_MESSAGE_BYTES, dtype_name, metadata_to_dict, ndarray_to_tensor_proto,
                            status_to_dict, tensor_proto_to_ndarray)

log = logging.getLogger("s2f.serving")

SIGNATURE = "serving_default"
MODEL_INFO_FILE = "s2f_model.json"           # s2f_tf.export.MODEL_INFO_FILE
WARMUP_FILE = "tf_serving_warmup_requests"   # TF Serving's name
MAX_WARMUP_RECORDS = 1000                    # TF Serving's limit
AUTO_PORT = -1                               # port=-1: any free port (0 disables, as in TF Serving)
_VERSION_DIR = re.compile(r"[0-9]+")
_CODE_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}
# TF Serving's status -> HTTP mapping (http_server.cc); 413 is this server's answer to a body over
# the size limit (TF Serving has no such check).
_HTTP_STATUS = {grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
                grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
                grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
                grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
                grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
                grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
                grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503,
                grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401}
_PREDICT_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?"
                           r":(classify|regress|predict)")
_STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?"
                          r"(?:/(metadata))?")


class RequestError(Exception):
  """A request the server refuses: a gRPC status code and the message the client sees."""

  def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
    super().__init__(message)
    self.code = code
    self.message = message
    self.http_status = http_status or _HTTP_STATUS.get(code, 500)


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port that was free a moment ago (for tests and benchmarks)."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  with socket.socket(family, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def _clean_tf_message(message: str) -> str:
  """The useful part of a graph error ("assertion failed: [waveform too short ...]"), without TF's
  "Graph execution error: Detected at node ..." preamble."""
  lines = [line.strip() for line in str(message).splitlines()]
  noise = ("Graph execution error", "Detected at node", "<stack traces unavailable>", "[[", "Op:")
  lines = [line for line in lines if line and not line.startswith(noise)]
  return " ".join(lines)[:2000] or str(message)[:2000]


def _shape_str(shape: Sequence[int]) -> str:
  return "[" + ", ".join(str(int(d)) for d in shape) + "]"


@dataclass
class Servable:
  """One loaded version: the SavedModel, its kept concrete function and what requests must match."""
  name: str
  version: int
  path: str
  loaded: Any                                  # keeps the function's variables alive
  fn: Any                                      # loaded.signatures[SIGNATURE]
  signature_defs: get_model_metadata_pb2.SignatureDefMap
  input_name: str
  input_dtype: int                             # DT_FLOAT
  input_rank: int | None                       # 2
  output_names: tuple[str, ...]
  info: dict = field(default_factory=dict)     # assets.extra/s2f_model.json (may be empty)

  @property
  def min_samples(self) -> int:
    return int(self.info.get("min_samples", 1))

  @property
  def max_samples(self) -> int | None:
    return self.info.get("max_samples")

  def expected(self, max_batch: int) -> str:
    """The input contract in words, for error messages."""
    want = f"input '{self.input_name}' must be {dtype_name(self.input_dtype)} [batch, samples]"
    if self.max_samples:
      want += f" with {self.min_samples}..{self.max_samples} samples"
    if "sample_rate" in self.info:
      want += f" at {self.info['sample_rate']} Hz"
    return want + f", batch 1..{max_batch}"

  def run(self, waveform: np.ndarray) -> dict[str, np.ndarray]:
    """waveform float32 [B, N] -> {output name: ndarray}. Graph errors -> RequestError."""
    try:
      out = self.fn(**{self.input_name: tf.constant(waveform)})
      return {k: v.numpy() for k, v in out.items()}
    except tf.errors.OpError as e:
      code = _CODE_BY_VALUE.get(e.error_code, grpc.StatusCode.INTERNAL)
      raise RequestError(code, f"model error: {_clean_tf_message(e.message)}") from None


def load_servable(path: str, name: str, version: int) -> Servable:
  """Loads `path` (one version directory) and reads its signature, contract and metadata."""
  loaded = tf.saved_model.load(path)
  if SIGNATURE not in loaded.signatures:
    raise ValueError(f"{path} has no {SIGNATURE!r} signature (has {sorted(loaded.signatures)})")
  fn = loaded.signatures[SIGNATURE]
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  meta = next((m for m in saved_model.meta_graphs if "serve" in m.meta_info_def.tags),
              saved_model.meta_graphs[0])
  sigmap = get_model_metadata_pb2.SignatureDefMap()
  for key, sig in meta.signature_def.items():
    sigmap.signature_def[key].CopyFrom(sig)
  sig = meta.signature_def[SIGNATURE]
  if len(sig.inputs) != 1:
    raise ValueError(f"{path}: {SIGNATURE} must take one input, takes {sorted(sig.inputs)}")
  input_name, input_info = next(iter(sig.inputs.items()))
  shape = input_info.tensor_shape
  info_path = os.path.join(path, "assets.extra", MODEL_INFO_FILE)
  info = {}
  if os.path.exists(info_path):
    with open(info_path) as f:
      info = json.load(f)
  return Servable(name=name, version=version, path=path, loaded=loaded, fn=fn, signature_defs=sigmap,
                  input_name=input_name, input_dtype=input_info.dtype,
                  input_rank=None if shape.unknown_rank else len(shape.dim),
                  output_names=tuple(sorted(sig.outputs)), info=info)


@dataclass
class _VersionState:
  state: int                                   # ModelVersionStatus.State
  error_code: int = 0                          # tensorflow.error.Code (OK)
  error_message: str = ""


class DevServer:
  """TF Serving's gRPC + REST protocols over SavedModel versions in `model_base_path`.

  Args:
    model_base_path: the directory holding integer version directories (TF Serving's
      --model_base_path: `<export_base>/<model_name>`).
    model_name: the name clients address (--model_name).
    port: gRPC port (--port); 0 disables gRPC, -1 (AUTO_PORT) picks a free port.
    rest_api_port: REST port (--rest_api_port); 0 disables REST, -1 picks a free port.
    host: the address to bind; 127.0.0.1 unless you mean to expose it.
    poll_seconds: interval of the base-path poll for new versions (--file_system_poll_wait_seconds).
    max_batch: largest batch a request may carry (batching.config's max_batch_size).
    max_message_bytes: largest gRPC message (grpc.max_receive/send_message_length) and REST body.
    num_versions: newest versions kept loaded (models.config's `latest { num_versions }`).
    version_labels: label -> version (models.config's version_labels), e.g. {"stable": 1}.
    grpc_max_threads: gRPC worker threads (--grpc_max_threads); requests run concurrently on them.
    max_concurrent_rpcs: RPCs admitted at once; more get RESOURCE_EXHAUSTED (clients retry those).
    warmup: replay assets.extra/tf_serving_warmup_requests before a version goes AVAILABLE.
  """

  def __init__(self, model_base_path: str, model_name: str, port: int = 8500, rest_api_port: int = 8501,
               host: str = "127.0.0.1", poll_seconds: float = 1.0, max_batch: int = 32,
               max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, num_versions: int = 2,
               version_labels: dict[str, int] | None = None, grpc_max_threads: int = 16,
               max_concurrent_rpcs: int | None = 256, warmup: bool = True,
               rest_timeout_seconds: float = 30.0):
    if not model_name or "/" in model_name:
      raise ValueError(f"model_name must be a plain name, got {model_name!r}")
    if port and rest_api_port and port == rest_api_port and port != AUTO_PORT:
      raise ValueError("--rest_api_port cannot be the same as --port")
    self.model_base_path = os.path.abspath(model_base_path)
    self.model_name = model_name
    self.host = host
    self.port = port
    self.rest_api_port = rest_api_port
    self.poll_seconds = poll_seconds
    self.max_batch = max_batch
    self.max_message_bytes = max_message_bytes
    self.num_versions = max(1, num_versions)
    self.version_labels = dict(version_labels or {})
    self.grpc_max_threads = grpc_max_threads
    self.max_concurrent_rpcs = max_concurrent_rpcs
    self.warmup = warmup
    self.rest_timeout_seconds = rest_timeout_seconds
    self._servables: dict[int, Servable] = {}           # replaced whole on change (readers: no lock)
    self._states: dict[int, _VersionState] = {}
    self._failed: dict[int, int] = {}                   # version -> dir mtime_ns of the failed load
    self._state_lock = threading.Lock()
    self._scan_lock = threading.Lock()
    self._stop_lock = threading.Lock()
    self._stopped = threading.Event()
    self._grpc_server: grpc.Server | None = None
    self._httpd: ThreadingHTTPServer | None = None
    self._threads: list[threading.Thread] = []
    self._started = False

  # -- lifecycle
  def start(self) -> DevServer:
    """Loads the versions present now, then starts gRPC, REST and the poll thread. Returns self."""
    if self._started:
      raise RuntimeError("DevServer already started")
    if not os.path.isdir(self.model_base_path):
      raise FileNotFoundError(f"model_base_path {self.model_base_path} is not a directory (it should "
                              f"hold version directories: {self.model_base_path}/1/saved_model.pb)")
    self._started = True
    self.scan()
    if not self._servables:
      log.warning("no loadable version under %s yet; polling every %.1f s", self.model_base_path,
                  self.poll_seconds)
    try:
      if self.port:
        self._start_grpc()
      if self.rest_api_port:
        self._start_rest()
    except BaseException:
      self.stop()
      raise
    poller = threading.Thread(target=self._poll_loop, name="s2f-serve-poll", daemon=True)
    poller.start()
    self._threads.append(poller)
    log.info("serving %s from %s: gRPC %s, REST %s, versions %s", self.model_name, self.model_base_path,
             self.grpc_target or "off", self.rest_url or "off", self.versions())
    return self

  def _start_grpc(self) -> None:
    options = [("grpc.max_receive_message_length", self.max_message_bytes),
               ("grpc.max_send_message_length", self.max_message_bytes),
               ("grpc.so_reuseport", 0)]                         # a taken port fails, never shares
    server = grpc.server(futures.ThreadPoolExecutor(self.grpc_max_threads, thread_name_prefix="s2f-grpc"),
                         options=options, maximum_concurrent_rpcs=self.max_concurrent_rpcs)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(self), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self), server)
    want = 0 if self.port == AUTO_PORT else self.port
    address = f"[{self.host}]:{want}" if ":" in self.host else f"{self.host}:{want}"
    try:
      bound = server.add_insecure_port(address)
    except RuntimeError as e:
      raise OSError(f"gRPC: cannot bind {address}: {e}") from None
    if not bound:
      raise OSError(f"gRPC: cannot bind {address} (in use?)")
    self.port = bound
    server.start()
    self._grpc_server = server

  def _start_rest(self) -> None:
    want = 0 if self.rest_api_port == AUTO_PORT else self.rest_api_port
    handler = type("_Handler", (_RestHandler,), {"server_ref": self, "timeout": self.rest_timeout_seconds})
    server_cls = _RestServer6 if ":" in self.host else _RestServer
    httpd = server_cls((self.host, want), handler)
    self.rest_api_port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                              name="s2f-serve-rest", daemon=True)
    thread.start()
    self._httpd = httpd
    self._threads.append(thread)

  def stop(self, grace_seconds: float = 1.0) -> None:
    """Stops accepting requests, lets in-flight gRPC calls finish for `grace_seconds`, unloads.
    Idempotent and safe to call from several threads."""
    self._stopped.set()
    with self._stop_lock:
      if self._grpc_server is not None:
        self._grpc_server.stop(grace_seconds).wait(grace_seconds + 1.0)
        self._grpc_server = None
      if self._httpd is not None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None
      for thread in self._threads:
        if thread is not threading.current_thread():
          thread.join(timeout=grace_seconds + 5.0)
      self._threads = []
      with self._state_lock:
        self._servables = {}

  def wait(self, timeout: float | None = None) -> bool:
    """Blocks until `stop()` (or `timeout`); True if stopped."""
    return self._stopped.wait(timeout)

  def __enter__(self) -> DevServer:
    return self if self._started else self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  @property
  def grpc_target(self) -> str | None:
    """"host:port" for grpc.insecure_channel, once started."""
    if not self._grpc_server:
      return None
    return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

  @property
  def rest_url(self) -> str | None:
    """"http://host:port" of the REST API, once started."""
    if not self._httpd:
      return None
    host = f"[{self.host}]" if ":" in self.host else self.host
    return f"http://{host}:{self.rest_api_port}"

  # -- versions
  def versions(self) -> list[int]:
    """Loaded (AVAILABLE) versions, newest first."""
    return sorted(self._servables, reverse=True)

  def _poll_loop(self) -> None:
    while not self._stopped.wait(self.poll_seconds):
      try:
        self.scan()
      except Exception:                                          # never let the poller die
        log.exception("polling %s failed", self.model_base_path)

  def _version_dirs(self) -> dict[int, str]:
    found = {}
    try:
      names = os.listdir(self.model_base_path)
    except OSError as e:
      log.warning("cannot list %s: %s", self.model_base_path, e)
      return found
    for name in names:
      path = os.path.join(self.model_base_path, name)
      if _VERSION_DIR.fullmatch(name) and os.path.isfile(os.path.join(path, "saved_model.pb")):
        found[int(name)] = path
    return found

  def scan(self) -> list[int]:
    """One poll: loads the newest `num_versions` versions on disk that are not loaded yet (falling
    back to older ones when a load fails), unloads the rest and versions whose directory vanished.
    Loading happens outside every lock requests take. Returns the AVAILABLE versions."""
    with self._scan_lock:
      on_disk = self._version_dirs()
      current = self._servables
      wanted: dict[int, Servable] = {}
      for version in sorted(on_disk, reverse=True):
        if len(wanted) >= self.num_versions or self._stopped.is_set():
          break
        if version in current:
          wanted[version] = current[version]
          continue
        path = on_disk[version]
        mtime = os.stat(path).st_mtime_ns
        if self._failed.get(version) == mtime:
          continue                                               # retried when the directory changes
        self._set_state(version, _VersionState(get_model_status_pb2.ModelVersionStatus.LOADING))
        try:
          servable = load_servable(path, self.model_name, version)
          if self.warmup:
            self._warmup(servable)
        except Exception as e:                                   # a bad export must not stop serving
          log.error("loading %s version %d from %s failed: %s", self.model_name, version, path, e)
          self._failed[version] = mtime
          self._set_state(version, _VersionState(get_model_status_pb2.ModelVersionStatus.END, 2,
                                                 f"loading failed: {e}"[:2000]))
          continue
        self._failed.pop(version, None)
        wanted[version] = servable
        log.info("loaded %s version %d", self.model_name, version)
      if self._stopped.is_set():
        return self.versions()
      with self._state_lock:
        self._servables = wanted
        for version in wanted:
          self._states[version] = _VersionState(get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        for version in set(current) - set(wanted):
          self._states[version] = _VersionState(get_model_status_pb2.ModelVersionStatus.END)
          log.info("unloaded %s version %d", self.model_name, version)
      return self.versions()

  def _set_state(self, version: int, state: _VersionState) -> None:
    with self._state_lock:
      self._states[version] = state

  def _warmup(self, servable: Servable) -> None:
    """Replays assets.extra/tf_serving_warmup_requests (PredictionLog records), like TF Serving."""
    path = os.path.join(servable.path, "assets.extra", WARMUP_FILE)
    if not os.path.exists(path):
      return
    for i, record in enumerate(tf.data.TFRecordDataset(path)):
      if i >= MAX_WARMUP_RECORDS:
        break
      entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
      if entry.HasField("predict_log"):
        waveform = self._waveform_from_proto(servable, entry.predict_log.request.inputs)
        servable.run(waveform)

  # -- request handling shared by gRPC and REST
  def resolve(self, spec: model_pb2.ModelSpec) -> Servable:
    """The servable a ModelSpec addresses (newest by default) or NOT_FOUND / INVALID_ARGUMENT."""
    servables = self._servables
    if spec.name != self.model_name:
      what = f"Specific({spec.name}, {spec.version.value})" if spec.HasField("version") \
          else f"Latest({spec.name})"
      raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {what}; this "
                         f"server serves model {self.model_name!r}")
    if spec.HasField("version"):
      version = spec.version.value
    elif spec.version_label:
      if spec.version_label not in self.version_labels:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Unrecognized servable version label: {spec.version_label} (labels: "
                           f"{sorted(self.version_labels) or 'none'})")
      version = self.version_labels[spec.version_label]
    else:
      if not servables:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: "
                           f"Latest({spec.name}); no version is loaded from {self.model_base_path}")
      return servables[max(servables)]
    servable = servables.get(version)
    if servable is None:
      raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific("
                         f"{spec.name}, {version}); available versions: {sorted(servables) or 'none'}")
    return servable

  def _check_signature(self, name: str) -> None:
    if name and name != SIGNATURE:
      raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                         f'Serving signature key "{name}" not found. (signatures: {SIGNATURE})')

  def _check_input_names(self, servable: Servable, names) -> None:
    names = sorted(names)
    if names != [servable.input_name]:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"wrong input name(s) {names}: signature {SIGNATURE!r} takes exactly one "
                         f"input; {servable.expected(self.max_batch)}")

  def check_waveform_header(self, servable: Servable, dtype: str, shape: Sequence[int] | None) -> None:
    """Validates dtype, rank, emptiness, batch size and clip length before any data is decoded."""
    got = f"{dtype} {_shape_str(shape) if shape is not None else '[unknown rank]'}"

    def fail(why: str):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{why}: {servable.expected(self.max_batch)}; got {got}")

    if dtype != dtype_name(servable.input_dtype):
      fail("wrong dtype")
    if shape is None or (servable.input_rank is not None and len(shape) != servable.input_rank):
      fail("wrong rank")
    if any(d <= 0 for d in shape):
      fail("empty input")
    batch, samples = shape[0], shape[-1]
    if batch > self.max_batch:
      fail("batch too large")
    if samples < servable.min_samples:
      fail("clip too short")
    if servable.max_samples and samples > servable.max_samples:
      fail("clip too long")

  def check_waveform_values(self, servable: Servable, waveform: np.ndarray) -> None:
    """NaN/Inf would propagate silently through the model: refuse them."""
    if not np.isfinite(waveform).all():
      kind = "NaN" if np.isnan(waveform).any() else "Inf"
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"non-finite values: {servable.expected(self.max_batch)}, finite; got "
                         f"{waveform.dtype.name} {_shape_str(waveform.shape)} containing {kind}")

  def _waveform_from_proto(self, servable: Servable, inputs) -> np.ndarray:
    self._check_input_names(servable, inputs.keys())
    proto = inputs[servable.input_name]
    shape = None if proto.tensor_shape.unknown_rank else [d.size for d in proto.tensor_shape.dim]
    self.check_waveform_header(servable, dtype_name(proto.dtype), shape)
    try:
      if proto.tensor_content:
        waveform = tensor_proto_to_ndarray(proto)              # a view of tensor_content: no copy
      else:
        # float_val (TF's typed field). TF would repeat the last value to fill the shape, or zero
        # fill without values; for audio that is a client bug, so the count must match exactly.
        count = int(np.prod(shape, dtype=np.int64))
        if len(proto.float_val) != count:
          raise ValueError(f"{len(proto.float_val)} values for shape {_shape_str(shape)} "
                           f"({count} needed, in tensor_content or float_val)")
        waveform = np.asarray(proto.float_val, np.float32).reshape(shape)
    except Exception as e:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"malformed tensor for input "
                         f"'{servable.input_name}': {e}") from None
    if list(waveform.shape) != list(shape):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"malformed tensor for input "
                         f"'{servable.input_name}': values do not fill shape {_shape_str(shape)}")
    self.check_waveform_values(servable, waveform)
    return waveform

  def predict_proto(self, request: predict_pb2.PredictRequest, time_remaining: float | None = None
                    ) -> predict_pb2.PredictResponse:
    """PredictRequest -> PredictResponse (raises RequestError)."""
    servable = self.resolve(request.model_spec)
    self._check_signature(request.model_spec.signature_name)
    outputs = list(request.output_filter) or list(servable.output_names)
    unknown = [o for o in outputs if o not in servable.output_names]
    if unknown or len(set(outputs)) != len(outputs):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"output_filter {list(request.output_filter)}: each must appear once and be "
                         f"one of {list(servable.output_names)}")
    waveform = self._waveform_from_proto(servable, request.inputs)
    if time_remaining is not None and time_remaining <= 0:
      raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the model ran")
    result = servable.run(waveform)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = self.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = SIGNATURE
    for name in outputs:
      response.outputs[name].CopyFrom(ndarray_to_tensor_proto(result[name]))
    return response

  def metadata_proto(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                     ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.HasField("model_spec"):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    if not request.metadata_field:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         "GetModelMetadataRequest must specify at least one metadata_field")
    for name in request.metadata_field:
      if name != "signature_def":
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {name} is not supported")
    servable = self.resolve(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = self.model_name
    response.model_spec.version.value = servable.version
    response.metadata["signature_def"].Pack(servable.signature_defs)
    return response

  def status_proto(self, request: get_model_status_pb2.GetModelStatusRequest
                   ) -> get_model_status_pb2.GetModelStatusResponse:
    spec = request.model_spec
    if not spec.name:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
    if spec.name != self.model_name:
      raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
    with self._state_lock:
      states = dict(self._states)
    if spec.HasField("version") or spec.version_label:
      if spec.version_label:
        if spec.version_label not in self.version_labels:
          raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                             f"Unrecognized servable version label: {spec.version_label}")
        version = self.version_labels[spec.version_label]
      else:
        version = spec.version.value
      if version not in states:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find version {version} of model {spec.name}")
      states = {version: states[version]}
    if not states:
      raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for version in sorted(states, reverse=True):                 # newest first, as TF Serving
      st = states[version]
      entry = response.model_version_status.add(version=version, state=st.state)
      entry.status.error_code = st.error_code
      entry.status.error_message = st.error_message
    return response

  # -- REST
  def rest_predict(self, name: str, version: str | None, label: str | None, body: bytes) -> dict:
    """TF Serving's JSON predict: {"instances": rows} -> {"predictions": [{output: row}, ...]};
    {"inputs": {name: tensor} | tensor} -> {"outputs": {output: tensor}}."""
    spec = _rest_spec(name, version, label)
    try:
      request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {e}") from None
    if not isinstance(request, dict):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "request body must be a JSON object")
    servable = self.resolve(spec)
    signature = request.get("signature_name", "")
    if not isinstance(signature, str):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "signature_name must be a string")
    self._check_signature(signature)
    has_rows, has_cols = "instances" in request, "inputs" in request
    if has_rows == has_cols:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, 'request must have exactly one of "instances" '
                         '(row format) or "inputs" (columnar format)')
    if has_rows:
      rows = request["instances"]
      if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        for r in rows:
          self._check_input_names(servable, r.keys())
        rows = [r[servable.input_name] for r in rows]
      value = rows
    else:
      value = request["inputs"]
      if isinstance(value, dict):
        self._check_input_names(servable, value.keys())
        value = value[servable.input_name]
    waveform = self._json_waveform(servable, value)
    result = servable.run(waveform)
    names = list(servable.output_names)
    if has_cols:
      return {"outputs": {k: result[k].tolist() for k in names}}
    lists = {k: result[k].tolist() for k in names}
    return {"predictions": [{k: lists[k][i] for k in names} for i in range(waveform.shape[0])]}

  def _json_waveform(self, servable: Servable, value) -> np.ndarray:
    try:
      array = np.asarray(value)
    except (ValueError, TypeError):
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"ragged or malformed input: "
                         f"{servable.expected(self.max_batch)}") from None
    if array.dtype.kind in "iuf" and array.dtype != np.float32:
      with np.errstate(over="ignore", invalid="ignore"):
        array = array.astype(np.float32)                         # JSON numbers; overflow -> Inf
    kind = {"b": "bool", "U": "string", "S": "string", "O": "object"}.get(array.dtype.kind, array.dtype.name)
    self.check_waveform_header(servable, "float32" if array.dtype == np.float32 else kind, array.shape)
    self.check_waveform_values(servable, array)
    return array

  def rest_status(self, name: str, version: str | None, label: str | None) -> dict:
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=_rest_spec(name, version, label))
    return status_to_dict(self.status_proto(request))

  def rest_metadata(self, name: str, version: str | None, label: str | None) -> dict:
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=_rest_spec(name, version, label), metadata_field=["signature_def"])
    return metadata_to_dict(self.metadata_proto(request))


def _rest_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
  spec = model_pb2.ModelSpec(name=unquote(name))
  if version:
    try:
      spec.version.value = int(version)
    except ValueError:
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Failed to convert version: {version} "
                         "to numeric.") from None
  elif label:
    spec.version_label = unquote(label)
  return spec


def _grpc_guard(method):
  """Runs a servicer method; RequestError -> its status, anything else -> INTERNAL. The server keeps
  serving whatever a request does."""
  empty = {"Predict": predict_pb2.PredictResponse,
           "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataResponse,
           "GetModelStatus": get_model_status_pb2.GetModelStatusResponse}[method.__name__]

  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except RequestError as e:
      context.set_code(e.code)
      context.set_details(e.message)
    except Exception as e:                                       # noqa: BLE001 -- by design
      log.exception("%s failed", method.__name__)
      context.set_code(grpc.StatusCode.INTERNAL)
      context.set_details(f"internal error: {type(e).__name__}: {e}"[:2000])
    return empty()

  wrapper.__name__ = method.__name__
  wrapper.__doc__ = method.__doc__
  return wrapper


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata; Classify/Regress/MultiInference stay UNIMPLEMENTED."""

  def __init__(self, server: DevServer):
    self.server = server

  @_grpc_guard
  def Predict(self, request, context):  # noqa: N802 -- gRPC method name
    return self.server.predict_proto(request, context.time_remaining())

  @_grpc_guard
  def GetModelMetadata(self, request, context):  # noqa: N802
    return self.server.metadata_proto(request)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED."""

  def __init__(self, server: DevServer):
    self.server = server

  @_grpc_guard
  def GetModelStatus(self, request, context):  # noqa: N802
    return self.server.status_proto(request)


class _RestServer(ThreadingHTTPServer):
  daemon_threads = True
  block_on_close = False                 # idle keep-alive connections must not delay stop()
  allow_reuse_address = True


class _RestServer6(_RestServer):
  address_family = socket.AF_INET6


class _RestHandler(BaseHTTPRequestHandler):
  """TF Serving's REST surface; every response is JSON, errors are {"error": message}."""

  protocol_version = "HTTP/1.1"          # keep-alive
  server_ref: DevServer                  # set by DevServer._start_rest
  server_version = "s2f-devserver"

  def log_message(self, format: str, *args) -> None:  # noqa: A002 -- stdlib signature
    log.debug("rest %s - %s", self.address_string(), format % args)

  def _send(self, status: int, payload: dict, close: bool = False) -> None:
    data = json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    if close:
      self.send_header("Connection", "close")
      self.close_connection = True
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(data)

  def _error(self, e: RequestError, close: bool = False) -> None:
    self._send(e.http_status, {"error": e.message}, close)

  def _guard(self, fn) -> None:
    try:
      fn()
    except RequestError as e:
      self._error(e)
    except (BrokenPipeError, ConnectionResetError):
      self.close_connection = True
    except Exception as e:                                       # noqa: BLE001 -- by design
      log.exception("REST %s %s failed", self.command, self.path)
      try:
        self._error(RequestError(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"),
                    close=True)
      except OSError:
        self.close_connection = True

  def do_GET(self) -> None:  # noqa: N802
    self._guard(self._get)

  def do_POST(self) -> None:  # noqa: N802
    self._guard(self._post)

  def _other(self) -> None:
    path = self.path.split("?", 1)[0]
    self._error(RequestError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {self.command} {path}"),
                close=True)

  do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other  # noqa: N815

  def handle_expect_100(self) -> bool:
    """`Expect: 100-continue` (curl sends it for large bodies): refuse an oversized body before the
    client sends it."""
    try:
      length = int(self.headers.get("Content-Length", "0"))
    except ValueError:
      length = 0
    if length > self.server_ref.max_message_bytes:
      self._error(self._too_large(length), close=True)
      return False
    return super().handle_expect_100()

  def _too_large(self, length: int) -> RequestError:
    limit = self.server_ref.max_message_bytes
    return RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request body of {length} bytes is larger "
                        f"than this server's limit of {limit} bytes (max_message_bytes): send fewer or "
                        f"shorter clips per request", http_status=413)

  def _get(self) -> None:
    path = self.path.split("?", 1)[0]
    m = _STATUS_PATH.fullmatch(path)
    if not m or not m.group(1):
      raise RequestError(grpc.StatusCode.NOT_FOUND if not m else grpc.StatusCode.INVALID_ARGUMENT,
                         f"Malformed request: GET {path}" if not m else "Missing model name in request.")
    name, version, label, sub = m.groups()
    srv = self.server_ref
    payload = srv.rest_metadata(name, version, label) if sub else srv.rest_status(name, version, label)
    self._send(200, payload)

  def _post(self) -> None:
    srv = self.server_ref
    path = self.path.split("?", 1)[0]
    length_header = self.headers.get("Content-Length")
    if self.headers.get("Transfer-Encoding") or length_header is None:
      self._error(RequestError(grpc.StatusCode.INVALID_ARGUMENT, "a Content-Length header is required "
                               "(chunked bodies are not accepted)", http_status=411), close=True)
      return
    try:
      length = int(length_header)
      if length < 0:
        raise ValueError
    except ValueError:
      self._error(RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"bad Content-Length {length_header!r}"),
                  close=True)
      return
    if length > srv.max_message_bytes:
      self._drain(length)
      self._error(self._too_large(length), close=True)
      return
    body = self.rfile.read(length)
    m = _PREDICT_PATH.fullmatch(path)
    if not m:
      raise RequestError(grpc.StatusCode.NOT_FOUND, f"Malformed request: POST {path}")
    name, version, label, method = m.groups()
    if method.lower() != "predict":
      raise RequestError(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served: the s2f signature "
                         f"is a predict signature; use :predict")
    self._send(200, srv.rest_predict(name, version, label, body))

  def _drain(self, length: int) -> None:
    """Reads and drops an oversized body (up to 4x the limit) so the client sees the 413 instead of
    a reset connection; the connection is closed afterwards."""
    budget = min(length, 4 * self.server_ref.max_message_bytes)
    try:
      while budget > 0:
        chunk = self.rfile.read(min(budget, 1 << 20))
        if not chunk:
          break
        budget -= len(chunk)
    except OSError:
      pass


def serve(model_base_path: str, model_name: str = "s2f", port: int = 8500, rest_api_port: int = 8501,
          host: str = "127.0.0.1", poll_seconds: float = 1.0, max_batch: int = 32,
          max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, num_versions: int = 2,
          grpc_max_threads: int = 16, ready_callback=None) -> None:
  """Runs a DevServer until SIGINT/SIGTERM (what `s2f serve` calls; flags as tensorflow_model_server
  names them: --model_base_path --model_name --port --rest_api_port, plus --host)."""
  server = DevServer(model_base_path, model_name, port=port, rest_api_port=rest_api_port, host=host,
                     poll_seconds=poll_seconds, max_batch=max_batch, max_message_bytes=max_message_bytes,
                     num_versions=num_versions, grpc_max_threads=grpc_max_threads)
  previous = {}
  if threading.current_thread() is threading.main_thread():
    for sig in (signal.SIGINT, signal.SIGTERM):
      previous[sig] = signal.signal(sig, lambda *_: server._stopped.set())
  try:
    server.start()
    print(f"serving {model_name!r} versions {server.versions()} from {server.model_base_path}: "
          f"gRPC {server.grpc_target or 'off'}, REST {server.rest_url or 'off'} (Ctrl-C stops)", flush=True)
    if ready_callback is not None:
      ready_callback(server)
    while not server.wait(1.0):
      pass
  finally:
    server.stop()
    for sig, handler in previous.items():
      signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m serving.server --model_base_path=DIR [--model_name=s2f --port=8500
  --rest_api_port=8501 --host=127.0.0.1 --file_system_poll_wait_seconds=1]`."""
  import argparse
  parser = argparse.ArgumentParser(description="s2f development model server (TF Serving protocols)")
  parser.add_argument("--model_base_path", required=True)
  parser.add_argument("--model_name", default="s2f")
  parser.add_argument("--port", type=int, default=8500)
  parser.add_argument("--rest_api_port", type=int, default=8501)
  parser.add_argument("--host", default="127.0.0.1")
  parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
  parser.add_argument("--max_batch", type=int, default=32)
  parser.add_argument("--max_message_bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
  parser.add_argument("--grpc_max_threads", type=int, default=16)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  serve(args.model_base_path, args.model_name, port=args.port, rest_api_port=args.rest_api_port,
        host=args.host, poll_seconds=args.file_system_poll_wait_seconds, max_batch=args.max_batch,
        max_message_bytes=args.max_message_bytes, grpc_max_threads=args.grpc_max_threads)


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  main()
