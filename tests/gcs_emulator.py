"""A Google Cloud Storage bucket on 127.0.0.1 that both of s2f's gs:// clients use: Beam's GCS
filesystem (google-cloud-storage, which honours STORAGE_EMULATOR_HOST) and TensorFlow's (compiled-in
endpoints over libcurl, which honours https_proxy and CURL_CA_BUNDLE).

  gcp-storage-emulator (in memory) on a free port   <- Beam, directly
  mitmdump on a free port, tests/gcs_proxy_addon.py  <- TensorFlow, through https_proxy; it ends
      TLS with its own CA (generated in the run's directory) and forwards to the emulator

Both run from .venv-tools (tests/tools.lock; `make test` installs it). `running(folder)` starts
them and yields a Bucket: its gs:// URL and the environment a process needs to use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.environ.get("S2F_TOOLS_VENV", os.path.join(os.path.dirname(HERE), ".venv-tools"))
BUCKET = "s2f-test"


@dataclasses.dataclass(frozen=True)
class Bucket:
    url: str  # gs://s2f-test
    env: dict  # the variables that point both clients at it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(ready, what: str, proc: subprocess.Popen, log: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {open(log).read()[-2000:]}")
        time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return opener.open(url, timeout=1).status == 200
    except OSError:
        return False


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def _environment(folder: str, emulator_port: int, proxy_port: int, ca: str) -> dict:
    credentials = os.path.join(folder, "credentials.json")  # google-auth then asks the proxy for a
    with open(credentials, "w") as f:  # token instead of retrying the metadata server for 25 s
        json.dump({"type": "authorized_user", "client_id": "x", "client_secret": "x"}, f)
    bundle = os.path.join(folder, "ca-bundle.pem")  # the system's CAs and the proxy's
    system = next(
        (
            c
            for c in (os.environ.get("REQUESTS_CA_BUNDLE"), "/etc/ssl/certs/ca-certificates.crt")
            if c and os.path.isfile(c)
        ),
        None,
    )
    with open(bundle, "w") as out:
        for path in ([system] if system else []) + [ca]:
            out.write(open(path).read().rstrip("\n") + "\n")
    proxy = f"http://127.0.0.1:{proxy_port}"
    return {
        "https_proxy": proxy,
        "HTTPS_PROXY": proxy,
        "no_proxy": "127.0.0.1,localhost",
        "NO_PROXY": "127.0.0.1,localhost",
        "CURL_CA_BUNDLE": bundle,  # TensorFlow's CA file
        "REQUESTS_CA_BUNDLE": bundle,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake",  # TensorFlow: no real authentication
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{emulator_port}",
        "GOOGLE_APPLICATION_CREDENTIALS": credentials,
        "GOOGLE_CLOUD_PROJECT": "s2f-test",
        "NO_GCE_CHECK": "True",
    }


@contextlib.contextmanager
def running(folder: str):
    """Starts the emulator and the proxy (logs and the proxy's CA in `folder`); yields a Bucket."""
    for tool in ("gcp-storage-emulator", "mitmdump"):
        if not os.path.exists(os.path.join(TOOLS, "bin", tool)):
            raise RuntimeError(
                f"{TOOLS}/bin/{tool} is missing: `make test` installs tests/tools.lock"
            )
    emulator_port, proxy_port = _free_port(), _free_port()
    procs = []
    try:
        log = os.path.join(folder, "emulator.log")
        procs.append(
            subprocess.Popen(
                [f"{TOOLS}/bin/gcp-storage-emulator", "start", "--host", "127.0.0.1"]
                + ["--port", str(emulator_port), "--in-memory", "--default-bucket", BUCKET],
                cwd=folder,
                stdout=open(log, "w"),
                stderr=subprocess.STDOUT,
            )
        )
        _wait(lambda: _answers(f"http://127.0.0.1:{emulator_port}/"), "the emulator", procs[0], log)
        confdir = os.path.join(folder, "mitmproxy")
        log = os.path.join(folder, "proxy.log")
        procs.append(
            subprocess.Popen(
                [f"{TOOLS}/bin/mitmdump", "--listen-host", "127.0.0.1"]
                + ["--listen-port", str(proxy_port), "--set", f"confdir={confdir}"]
                # no DNS here: never connect upstream on CONNECT; libcurl sends both
                # Transfer-Encoding and Content-Length, which the addon then fixes
                + ["--set", "connection_strategy=lazy", "--set", "upstream_cert=false"]
                + ["--set", "validate_inbound_headers=false"]
                + ["-s", os.path.join(HERE, "gcs_proxy_addon.py")],
                cwd=folder,
                env={**os.environ, "GCS_EMULATOR_PORT": str(emulator_port), "HOME": folder},
                stdout=open(log, "w"),
                stderr=subprocess.STDOUT,
            )
        )
        ca = os.path.join(confdir, "mitmproxy-ca-cert.pem")
        _wait(lambda: _listening(proxy_port) and os.path.exists(ca), "mitmdump", procs[1], log)
        yield Bucket(f"gs://{BUCKET}", _environment(folder, emulator_port, proxy_port, ca))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
