"""A development model server that speaks TF Serving's gRPC and REST protocols: `DevServer` (its
lifecycle, the versions it loads and unloads, the ModelSpec -> version it answers with, the status and
metadata it reports) and `serve()`, what `s2f serve` runs.

Production runs the `tensorflow/serving` image (serving/Dockerfile); this server exists so that
every client can be developed and tested against the same protocol where that binary is not
installed. It serves `<model_base_path>/<integer version>/` SavedModels written by `s2f export`:

  gRPC  tensorflow.serving.PredictionService/Predict, /GetModelMetadata (signature_def);
        tensorflow.serving.ModelService/GetModelStatus                     (default port 8500)
  REST  GET  /v1/models/NAME[/versions/N|/labels/L]            status
        GET  /v1/models/NAME[/versions/N|/labels/L]/metadata   signature_def metadata
        POST /v1/models/NAME[/versions/N|/labels/L]:predict    {"instances": ...} | {"inputs": ...}
                                                               (default port 8501)
  page  GET  /   a web page that records speech and shows its face (serving.page, on the REST port)
  GET  /monitoring/prometheus/metrics   TF Serving's Prometheus metrics (serving.metrics)

Like TF Serving it serves the newest version by default, honours an explicit version or label,
polls the base path for new versions (`poll_seconds`, TF Serving's --file_system_poll_wait_seconds)
and keeps the newest `num_versions` loaded (models.config's `latest { num_versions: 2 }`), replays
assets.extra/tf_serving_warmup_requests before a version goes AVAILABLE, and reports errors with
TF Serving's codes and JSON (`{"error": "..."}`, HTTP 400/404/...). Unlike TF Serving it binds
127.0.0.1 unless told otherwise, checks every request against the s2f export contract before the
model runs (dtype, rank, clip length, batch size, NaN/Inf), answers an oversized REST body with
HTTP 413. With `batching` (what --enable_batching --batching_parameters_file=serving/batching.config
give `s2f serve`) it merges concurrent requests as TF Serving does (serving.batching).

  from serving.server import DevServer
  with DevServer("exports/s2f", "s2f", port=8500, rest_api_port=8501) as server:
    server.wait()

  serve(model_base_path="exports/s2f", model_name="s2f")      # what `s2f serve` calls; blocks

Modules: protos (wire format) <- validation (RequestError, request checks) <- batching (TF
Serving's batching) <- servable (one loaded version) <- grpc_api, rest_api (the two protocols;
rest_api also serves page, the web page's files, and metrics) <- server (this).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

import grpc
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from s2f_tf import contract
from serving import page
from serving.batching import BatchingParameters
from serving.grpc_api import start_grpc_server
from serving.metrics import ServingMetrics
from serving.protos import DEFAULT_MAX_MESSAGE_BYTES
from serving.rest_api import start_rest_server
from serving.servable import Servable, attach_batchers, close_batchers, load_servable, warm_up
from serving.validation import RequestError

log = logging.getLogger("s2f.serving")

UNLOAD_GRACE_SECONDS = 5.0  # an unloaded version's batchers keep serving this long
AUTO_PORT = -1  # port=-1: any free port (0 disables, as in TF Serving)
_State = get_model_status_pb2.ModelVersionStatus


@dataclass
class _VersionState:
    state: int  # ModelVersionStatus.State
    error_code: int = 0  # tensorflow.error.Code (OK)
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
      batching: merge concurrent requests as TF Serving does with these BatchingParameters
        (serving.batching.read_batching_parameters); None serves each request on its own.
    """

    def __init__(
        self,
        model_base_path: str,
        model_name: str,
        port: int = 8500,
        rest_api_port: int = 8501,
        host: str = "127.0.0.1",
        poll_seconds: float = 1.0,
        max_batch: int = 32,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        num_versions: int = 2,
        version_labels: dict[str, int] | None = None,
        grpc_max_threads: int = 16,
        max_concurrent_rpcs: int | None = 256,
        warmup: bool = True,
        rest_timeout_seconds: float = 30.0,
        batching: BatchingParameters | None = None,
    ):
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
        self.batching = batching
        self.metrics = ServingMetrics()
        self._servables: dict[int, Servable] = {}  # replaced whole on change (readers: no lock)
        self._states: dict[int, _VersionState] = {}
        self._failed: dict[int, int] = {}  # version -> dir mtime_ns of the failed load
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
            raise FileNotFoundError(
                f"model_base_path {self.model_base_path} is not a directory (it should "
                f"hold version directories: {self.model_base_path}/1/saved_model.pb)"
            )
        self._started = True
        self.scan()
        if not self._servables:
            log.warning(
                "no loadable version under %s yet; polling every %.1f s",
                self.model_base_path,
                self.poll_seconds,
            )
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
        log.info(
            "serving %s from %s: gRPC %s, REST %s, versions %s",
            self.model_name,
            self.model_base_path,
            self.grpc_target or "off",
            self.rest_url or "off",
            self.versions(),
        )
        return self

    def _start_grpc(self) -> None:
        want = 0 if self.port == AUTO_PORT else self.port
        self._grpc_server, self.port = start_grpc_server(
            self,
            self.host,
            want,
            self.max_message_bytes,
            self.grpc_max_threads,
            self.max_concurrent_rpcs,
        )

    def _start_rest(self) -> None:
        want = 0 if self.rest_api_port == AUTO_PORT else self.rest_api_port
        self._httpd, thread = start_rest_server(self, self.host, want, self.rest_timeout_seconds)
        self.rest_api_port = self._httpd.server_address[1]
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
                for servable in self._servables.values():
                    close_batchers(servable)
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
        """ "host:port" for grpc.insecure_channel, once started."""
        if not self._grpc_server:
            return None
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def rest_url(self) -> str | None:
        """ "http://host:port" of the REST API, once started."""
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
            except Exception:  # never let the poller die
                log.exception("polling %s failed", self.model_base_path)

    def scan(self) -> list[int]:
        """One poll: loads the newest `num_versions` versions on disk that are not loaded yet (falling
        back to older ones when a load fails), unloads the rest and versions whose directory vanished.
        Loading happens outside every lock requests take. Returns the AVAILABLE versions."""
        with self._scan_lock:
            current = self._servables
            wanted: dict[int, Servable] = {}
            for version in reversed(contract.versions(self.model_base_path)):
                if len(wanted) >= self.num_versions or self._stopped.is_set():
                    break
                if version in current:
                    wanted[version] = current[version]
                    continue
                path = contract.version_dir(self.model_base_path, version)
                mtime = os.stat(path).st_mtime_ns
                if self._failed.get(version) == mtime:
                    continue  # retried when the directory changes
                self._set_state(version, _VersionState(_State.LOADING))
                try:
                    servable = load_servable(path, self.model_name, version)
                    if self.warmup:
                        warm_up(servable)
                    if self.batching is not None:
                        attach_batchers(servable, self.batching, self._batch_ran)
                except Exception as e:  # noqa: BLE001 -- a bad export must not stop serving
                    log.error(
                        "loading %s version %d from %s failed: %s",
                        self.model_name,
                        version,
                        path,
                        e,
                    )
                    self._failed[version] = mtime
                    self._set_state(
                        version, _VersionState(_State.END, 2, f"loading failed: {e}"[:2000])
                    )
                    continue
                self._failed.pop(version, None)
                wanted[version] = servable
                log.info("loaded %s version %d", self.model_name, version)
            if self._stopped.is_set():
                return self.versions()
            with self._state_lock:
                self._servables = wanted
                for version in wanted:
                    self._states[version] = _VersionState(_State.AVAILABLE)
                for version in set(current) - set(wanted):
                    self._states[version] = _VersionState(_State.END)
                    # requests that found this version before the swap are still served
                    closer = threading.Timer(
                        UNLOAD_GRACE_SECONDS, close_batchers, [current[version]]
                    )
                    closer.daemon = True
                    closer.start()
                    log.info("unloaded %s version %d", self.model_name, version)
            return self.versions()

    def _batch_ran(self, signature: str, size: int, rows: int) -> None:
        self.metrics.batch(self.model_name, signature, size, rows)

    def _set_state(self, version: int, state: _VersionState) -> None:
        with self._state_lock:
            self._states[version] = state

    # -- what requests see (shared by gRPC and REST)
    def resolve(self, spec: model_pb2.ModelSpec) -> Servable:
        """The servable a ModelSpec addresses (newest by default) or NOT_FOUND / INVALID_ARGUMENT."""
        servables = self._servables
        if spec.name != self.model_name:
            what = (
                f"Specific({spec.name}, {spec.version.value})"
                if spec.HasField("version")
                else f"Latest({spec.name})"
            )
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: {what}; this "
                f"server serves model {self.model_name!r}",
            )
        if spec.HasField("version"):
            version = spec.version.value
        elif spec.version_label:
            if spec.version_label not in self.version_labels:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {spec.version_label} (labels: "
                    f"{sorted(self.version_labels) or 'none'})",
                )
            version = self.version_labels[spec.version_label]
        else:
            if not servables:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: "
                    f"Latest({spec.name}); no version is loaded from {self.model_base_path}",
                )
            return servables[max(servables)]
        servable = servables.get(version)
        if servable is None:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific("
                f"{spec.name}, {version}); available versions: {sorted(servables) or 'none'}",
            )
        return servable

    def page_config(self) -> dict:
        """web/config.json for the page: the model's name and the newest loaded version's limits."""
        servables = self._servables
        newest = servables[max(servables)] if servables else None
        return page.config(
            self.model_name, newest.version if newest else None, newest.info if newest else {}
        )

    def metadata_proto(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """GetModelMetadata (signature_def only, as TF Serving) of the version the spec addresses."""
        if not request.HasField("model_spec"):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        if not request.metadata_field:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "GetModelMetadataRequest must specify at least one metadata_field",
            )
        for name in request.metadata_field:
            if name != "signature_def":
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {name} is not supported"
                )
        servable = self.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model_name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_defs)
        return response

    def status_proto(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: every version this server has seen (or the one asked for), newest first."""
        spec = request.model_spec
        if not spec.name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
        if spec.name != self.model_name:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}"
            )
        with self._state_lock:
            states = dict(self._states)
        if spec.HasField("version") or spec.version_label:
            if spec.version_label:
                if spec.version_label not in self.version_labels:
                    raise RequestError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"Unrecognized servable version label: {spec.version_label}",
                    )
                version = self.version_labels[spec.version_label]
            else:
                version = spec.version.value
            if version not in states:
                raise RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {version} of model {spec.name}",
                )
            states = {version: states[version]}
        if not states:
            raise RequestError(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}"
            )
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in sorted(states, reverse=True):  # newest first, as TF Serving
            st = states[version]
            entry = response.model_version_status.add(version=version, state=st.state)
            entry.status.error_code = st.error_code
            entry.status.error_message = st.error_message
        return response


def serve(
    model_base_path: str,
    model_name: str = "s2f",
    port: int = 8500,
    rest_api_port: int = 8501,
    host: str = "127.0.0.1",
    poll_seconds: float = 1.0,
    max_batch: int = 32,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    num_versions: int = 2,
    grpc_max_threads: int = 16,
    batching: BatchingParameters | None = None,
    ready_callback=None,
) -> None:
    """Runs a DevServer until SIGINT/SIGTERM (what `s2f serve` calls; flags as tensorflow_model_server
    names them: --model_base_path --model_name --port --rest_api_port, plus --host)."""
    server = DevServer(
        model_base_path,
        model_name,
        port=port,
        rest_api_port=rest_api_port,
        host=host,
        poll_seconds=poll_seconds,
        max_batch=max_batch,
        max_message_bytes=max_message_bytes,
        num_versions=num_versions,
        grpc_max_threads=grpc_max_threads,
        batching=batching,
    )
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: server._stopped.set())
    try:
        server.start()
        print(
            f"serving {model_name!r} versions {server.versions()} from {server.model_base_path}: "
            f"gRPC {server.grpc_target or 'off'}, REST {server.rest_url or 'off'} (Ctrl-C stops)",
            flush=True,
        )
        if server.rest_url:
            print(
                f"the page: {server.rest_url}/ (record your voice or drop a file; a face comes back)",
                flush=True,
            )
        if ready_callback is not None:
            ready_callback(server)
        while not server.wait(1.0):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
