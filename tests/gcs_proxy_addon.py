"""mitmproxy addon (tests/gcs_emulator.py): TensorFlow's GCS client, whose endpoints are compiled in
(https://www.googleapis.com, https://storage.googleapis.com), reaches the local GCS emulator.

- requests for those hosts go to http://127.0.0.1:$GCS_EMULATOR_PORT, same paths;
- request bodies get an exact Content-Length (libcurl sends "Transfer-Encoding: chunked" beside
  one; the emulator's http.server trusts the length and would store the chunk framing);
- an empty uploadType=media upload (TensorFlow's "folder/" markers) becomes the same empty object as
  a multipart upload (the emulator fails on the former);
- a resumable upload's session URL points back through this proxy, so its PUTs are reframed too;
- OAuth token requests (google-auth's refresh) get a fake token; any other host gets 502.
"""

import json
import os

from mitmproxy import http

EMULATOR = ("127.0.0.1", int(os.environ["GCS_EMULATOR_PORT"]))
STORAGE_HOSTS = {"www.googleapis.com", "storage.googleapis.com"}
TOKEN_HOSTS = {"oauth2.googleapis.com", "accounts.google.com"}


def request(flow: http.HTTPFlow) -> None:
    req = flow.request
    host = req.pretty_host
    if host in TOKEN_HOSTS or (host == "www.googleapis.com" and req.path.startswith("/oauth2/")):
        token = {"access_token": "fake", "expires_in": 3600, "token_type": "Bearer"}
        flow.response = http.Response.make(
            200, json.dumps(token), {"content-type": "application/json"}
        )
        return
    if host not in STORAGE_HOSTS:
        flow.response = http.Response.make(502, b"not an emulated host")
        return
    flow.metadata["emulated"] = True
    req.scheme, (req.host, req.port) = "http", EMULATOR
    req.http_version = "HTTP/1.1"
    req.headers.pop("transfer-encoding", None)
    if (
        req.method == "POST"
        and req.path.startswith("/upload/")
        and req.query.get("uploadType") == "media"
        and not req.raw_content
    ):
        boundary = "s2f-boundary"
        req.query["uploadType"] = "multipart"
        req.headers["content-type"] = f"multipart/related; boundary={boundary}"
        req.raw_content = (
            f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
            f"{json.dumps({'name': req.query.get('name', '')})}\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n\r\n--{boundary}--\r\n"
        ).encode()
    if req.method in ("POST", "PUT", "PATCH") or req.raw_content:
        req.headers["content-length"] = str(len(req.raw_content or b""))


def response(flow: http.HTTPFlow) -> None:
    if not flow.metadata.get("emulated") or flow.response is None:
        return
    location = flow.response.headers.get("location", "")
    for origin in (f"http://{EMULATOR[0]}:{EMULATOR[1]}", f"http://localhost:{EMULATOR[1]}"):
        if location.startswith(origin):
            flow.response.headers["location"] = (
                "https://www.googleapis.com" + location[len(origin) :]
            )
