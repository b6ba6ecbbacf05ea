"""The development server's REST surface, as TF Serving's REST API has it:

  GET  /v1/models/NAME[/versions/N|/labels/L]            status
  GET  /v1/models/NAME[/versions/N|/labels/L]/metadata   signature_def metadata
  POST /v1/models/NAME[/versions/N|/labels/L]:predict    {"instances": ...} | {"inputs": ...}

the JSON of each answer, and the HTTP server classes that carry it. Every response is JSON; errors
are {"error": message} with TF Serving's HTTP status (413 for a body over max_message_bytes).

It also serves the web page (serving.page): GET / and /web/NAME, and the Prometheus metrics at
GET /monitoring/prometheus/metrics (serving.metrics).

The handler answers for a `backend`, the serving.server.DevServer that starts it (not imported here:
it imports this module). It provides `model_name`, `max_batch`, `max_message_bytes`, `metrics`,
`resolve(ModelSpec)`,
`metadata_proto(request)`, `status_proto(request)` and `page_config()`.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import grpc
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving import metrics, page
from serving.protos import metadata_to_dict, status_to_dict
from serving.validation import RequestError, check_input_names, input_from_json

log = logging.getLogger("s2f.serving")

_PREDICT_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?"
    r":(classify|regress|predict)"
)
_STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?"
    r"(?:/(metadata))?"
)


def _rest_spec(name: str, version: str | None, label: str | None) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=unquote(name))
    if version:
        try:
            spec.version.value = int(version)
        except ValueError:
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Failed to convert version: {version} to numeric.",
            ) from None
    elif label:
        spec.version_label = unquote(label)
    return spec


def rest_predict(
    backend: Any, name: str, version: str | None, label: str | None, body: bytes
) -> dict:
    """TF Serving's JSON predict: {"instances": rows} -> {"predictions": [{output: row}, ...]};
    {"inputs": {name: tensor} | tensor} -> {"outputs": {output: tensor}}."""
    spec = _rest_spec(name, version, label)
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {e}") from None
    if not isinstance(request, dict):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "request body must be a JSON object")
    servable = backend.resolve(spec)
    signature_name = request.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "signature_name must be a string")
    signature = servable.signature(signature_name)
    has_rows, has_cols = "instances" in request, "inputs" in request
    if has_rows == has_cols:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            'request must have exactly one of "instances" '
            '(row format) or "inputs" (columnar format)',
        )
    if has_rows:
        rows = request["instances"]
        if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
            for r in rows:
                check_input_names(signature, r.keys(), backend.max_batch)
            rows = [r[signature.input_name] for r in rows]
        value = rows
    else:
        value = request["inputs"]
        if isinstance(value, dict):
            check_input_names(signature, value.keys(), backend.max_batch)
            value = value[signature.input_name]
    array = input_from_json(signature, value, backend.max_batch)
    result = signature.serve(array)
    names = list(signature.output_names)
    if has_cols:
        return {"outputs": {k: result[k].tolist() for k in names}}
    lists = {k: result[k].tolist() for k in names}
    return {"predictions": [{k: lists[k][i] for k in names} for i in range(array.shape[0])]}


def rest_status(backend: Any, name: str, version: str | None, label: str | None) -> dict:
    request = get_model_status_pb2.GetModelStatusRequest(
        model_spec=_rest_spec(name, version, label)
    )
    return status_to_dict(backend.status_proto(request))


def rest_metadata(backend: Any, name: str, version: str | None, label: str | None) -> dict:
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=_rest_spec(name, version, label), metadata_field=["signature_def"]
    )
    return metadata_to_dict(backend.metadata_proto(request))


class RestServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not delay stop()
    allow_reuse_address = True


class RestServer6(RestServer):
    address_family = socket.AF_INET6


class RestHandler(BaseHTTPRequestHandler):
    """TF Serving's REST surface; every response is JSON, errors are {"error": message}."""

    protocol_version = "HTTP/1.1"  # keep-alive
    backend: Any  # set by start_rest_server
    server_version = "s2f-devserver"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 -- stdlib signature
        log.debug("rest %s - %s", self.address_string(), format % args)

    def _send(self, status: int, payload: dict, close: bool = False) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", close=close)

    def _send_bytes(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict | None = None,
        close: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
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
        except Exception as e:
            log.exception("REST %s %s failed", self.command, self.path)
            try:
                self._error(
                    RequestError(
                        grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"
                    ),
                    close=True,
                )
            except OSError:
                self.close_connection = True

    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _other(self) -> None:
        path = self.path.split("?", 1)[0]
        self._error(
            RequestError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {self.command} {path}"),
            close=True,
        )

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other  # noqa: N815

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue` (curl sends it for large bodies): refuse an oversized body before the
        client sends it."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if length > self.backend.max_message_bytes:
            self._error(self._too_large(length), close=True)
            return False
        return super().handle_expect_100()

    def _too_large(self, length: int) -> RequestError:
        limit = self.backend.max_message_bytes
        return RequestError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"request body of {length} bytes is larger "
            f"than this server's limit of {limit} bytes (max_message_bytes): send fewer or "
            f"shorter clips per request",
            http_status=413,
        )

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        if page.is_page_path(path):
            self._page(path)
            return
        if path == metrics.PATH:
            data, content_type = self.backend.metrics.exposition()
            self._send_bytes(200, data, content_type)
            return
        m = _STATUS_PATH.fullmatch(path)
        if not m or not m.group(1):
            raise RequestError(
                grpc.StatusCode.NOT_FOUND if not m else grpc.StatusCode.INVALID_ARGUMENT,
                f"Malformed request: GET {path}" if not m else "Missing model name in request.",
            )
        name, version, label, sub = m.groups()
        answer = rest_metadata if sub else rest_status
        self._send(200, answer(self.backend, name, version, label))

    def _page(self, path: str) -> None:
        if path == "/web/" + page.CONFIG:
            data, content_type = json.dumps(self.backend.page_config()).encode(), "application/json"
        else:
            found = page.static_file(path)
            if found is None:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"no such page file: {path}")
            data, content_type = found
        self._send_bytes(200, data, content_type, page.HEADERS)

    def _post(self) -> None:
        path = self.path.split("?", 1)[0]
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length_header is None:
            self._error(
                RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "a Content-Length header is required (chunked bodies are not accepted)",
                    http_status=411,
                ),
                close=True,
            )
            return
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self._error(
                RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"bad Content-Length {length_header!r}"
                ),
                close=True,
            )
            return
        if length > self.backend.max_message_bytes:
            self._drain(length)
            self._error(self._too_large(length), close=True)
            return
        body = self.rfile.read(length)
        m = _PREDICT_PATH.fullmatch(path)
        if not m:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Malformed request: POST {path}")
        name, version, label, method = m.groups()
        if method.lower() != "predict":
            raise RequestError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{method} is not served: the s2f signature is a predict signature; use :predict",
            )
        started, status = time.perf_counter(), "INTERNAL"
        try:
            answer = rest_predict(self.backend, name, version, label, body)
            status = "OK"
        except RequestError as e:
            status = e.code.name
            raise
        finally:
            self.backend.metrics.request(
                self.backend.model_name, "predict", "REST", status, time.perf_counter() - started
            )
        self._send(200, answer)

    def _drain(self, length: int) -> None:
        """Reads and drops an oversized body (up to 4x the limit) so the client sees the 413 instead of
        a reset connection; the connection is closed afterwards."""
        budget = min(length, 4 * self.backend.max_message_bytes)
        try:
            while budget > 0:
                chunk = self.rfile.read(min(budget, 1 << 20))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass


def start_rest_server(
    backend: Any, host: str, port: int, timeout_seconds: float
) -> tuple[RestServer, threading.Thread]:
    """Binds host:port (0: any free port) and serves on a daemon thread; returns (server, thread).
    The bound port is server.server_address[1]; a port that cannot be bound raises OSError."""
    handler = type("_Handler", (RestHandler,), {"backend": backend, "timeout": timeout_seconds})
    server_cls = RestServer6 if ":" in host else RestServer
    httpd = server_cls((host, port), handler)
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="s2f-serve-rest",
        daemon=True,
    )
    thread.start()
    return httpd, thread
