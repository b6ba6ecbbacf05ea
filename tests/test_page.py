"""The web page `s2f serve` shows on its REST port (serving/page.py, serving/web/): its files over
HTTP, and the page driven end to end in a real headless Chromium: a dropped file and a fake
microphone fed from a WAV file, each giving a face the test reads back from the page and compares
with the same SavedModel called in-process on the windows the page sent.

S2F_PAGE_EXPORT=<export_base>/<model_name> runs the browser tests against another export (e.g. the
demo's) instead of a tiny untrained one; the microphone test prints the page's figures.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile

from s2f_tf import contract
from s2f_tf.media.speech import window_starts
from serving import page
from serving.server import AUTO_PORT, DevServer

MODEL = "s2f"


@pytest.fixture(scope="module")
def model_dir(request):
    """<base>/s2f holding one version: S2F_PAGE_EXPORT's, or a tiny untrained model's (conftest's
    untrained_tiny_export, shared with the serving tests; only read here)."""
    if os.environ.get("S2F_PAGE_EXPORT"):
        return os.environ["S2F_PAGE_EXPORT"]
    version_dir = request.getfixturevalue("untrained_tiny_export")["version_dir"]
    assert os.path.basename(os.path.dirname(version_dir)) == MODEL
    return os.path.dirname(version_dir)


@pytest.fixture(scope="module")
def server(model_dir):
    with DevServer(model_dir, MODEL, port=0, rest_api_port=AUTO_PORT, poll_seconds=60) as srv:
        yield srv


@pytest.fixture(scope="module")
def local(model_dir):
    from s2f_tf.predict import LocalModel

    return LocalModel(model_dir)


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _voice(seconds: float, seed: int = 3) -> np.ndarray:
    """A synthetic voice, float in [-1, 1] at 16 kHz, at least `seconds` long (sentences repeated)."""
    from s2f_tf.synthetic.identity import make_identity
    from s2f_tf.synthetic.voice import synthesize_voice

    rng = np.random.default_rng(seed)
    parts = []
    while sum(len(p) for p in parts) < seconds * 16000:
        parts.append(
            synthesize_voice(
                make_identity(seed, 1),
                "The quick brown fox jumps over the lazy dog "
                "near the river bank, and then it runs home.",
                rng,
            )
            / 32768.0
        )
    return np.concatenate(parts)[: int(seconds * 16000)]


def _write(path, x16k: np.ndarray, rate: int, channels: int = 1) -> str:
    import soxr

    x = soxr.resample(x16k, 16000, rate) if rate != 16000 else x16k
    soundfile.write(
        str(path), np.stack([x] * channels, 1) if channels > 1 else x, rate, subtype="PCM_16"
    )
    return str(path)


# -- the files, over HTTP
def test_page_files_are_served_from_the_package_and_nothing_else(server):
    status, headers, body = _get(server.rest_url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert (
        b'src="web/s2f.js"' in body and "default-src 'self'" in headers["Content-Security-Policy"]
    )
    for name, kind in (
        ("s2f.js", "text/javascript"),
        ("capture.js", "text/javascript"),
        ("s2f.css", "text/css"),
    ):
        status, headers, body = _get(f"{server.rest_url}/web/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind), name
        with open(os.path.join(page.PAGE_DIR, name), "rb") as f:
            assert body == f.read()
    status, headers, body = _get(f"{server.rest_url}/web/config.json")
    config = json.loads(body)
    assert status == 200 and config["model"] == MODEL and config["version"] == server.versions()[0]
    assert config["info"] == contract.read_model_info(
        contract.newest_version_dir(server.model_base_path)
    )
    for path in (
        "/web/../setup.py",
        "/web/",
        "/web/nothing.js",
        "/web/%2e%2e/page.py",
        "/index.htm",
    ):
        status, headers, body = _get(server.rest_url + path)
        assert status == 404 and "error" in json.loads(body), path
    # nothing from the internet: no absolute URL in any attribute, import, fetch or stylesheet
    for name in os.listdir(page.PAGE_DIR):
        with open(os.path.join(page.PAGE_DIR, name)) as f:
            text = f.read()
        code = re.sub(r"//[^\n]*|/\*.*?\*/|<!--.*?-->", "", text, flags=re.S)
        assert not re.search(r"https?:|url\(|@import", code), name


# -- the page in a real browser
def _open(driver, url: str):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.body.dataset.ready === '1'")
    )
    assert driver.find_element("id", "record").is_enabled()
    assert MODEL in driver.find_element("id", "model").text


def _wait_done(driver, timeout: float = 60) -> dict:
    """Waits for the page to finish a run; returns what it shows and what it sent."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script(
            "return document.getElementById('status').textContent === 'done' || "
            "!document.getElementById('error').hidden"
        )
    )
    error = driver.find_element("id", "error")
    assert not error.is_displayed(), error.text
    shown = driver.execute_script("""
    const last = window.s2f.last, face = document.getElementById('face');
    const overlay = document.getElementById('overlay').getContext('2d');
    const o = overlay.getImageData(0, 0, overlay.canvas.width, overlay.canvas.height).data;
    let marked = 0; for (let i = 3; i < o.length; i += 4) marked += o[i] > 0;
    const figures = {};
    document.querySelectorAll('#figures dd').forEach((dd) => figures[dd.dataset.figure] = dd.textContent);
    return {rows: last.rows, samples: last.samples, landmarks: last.landmarks, calls: last.calls,
            request_ms: last.request_ms, total_ms: last.total_ms, png: face.toDataURL('image/png'),
            marked: marked, figures: figures};""")
    from PIL import Image

    shown["face"] = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(shown["png"].split(",", 1)[1]))).convert("RGB")
    )
    return shown


def _expected(local, rows) -> dict:
    """The face `s2f predict` would draw from the page's windows: serving_default on each window,
    their features combined (recording.combine), the decode_feature signature."""
    from s2f_tf.recording import combine

    windows = np.asarray(rows, np.float32)
    out = local.predict(windows)
    if len(windows) == 1:
        return {"face_image": out["face_image"][0], "landmarks": out["landmarks"][0]}
    decoded = local.decode(combine(out["face_feature"])[None])
    return {"face_image": decoded["face_image"][0], "landmarks": decoded["landmarks"][0]}


def _check_face(shown, local):
    want = _expected(local, shown["rows"])
    assert shown["face"].shape == want["face_image"].shape
    assert np.abs(shown["face"].astype(int) - want["face_image"].astype(int)).max() <= 2
    np.testing.assert_allclose(np.asarray(shown["landmarks"]), want["landmarks"], atol=1e-4)
    assert shown["marked"] > 0  # the landmarks are drawn
    assert re.fullmatch(r"\d+ ms \(\d calls? to the model server\)", shown["figures"]["request"])


def test_page_draws_the_face_of_a_dropped_file(server, local, browser, tmp_path):
    voice = _voice(4.0)
    path = _write(tmp_path / "voice.wav", voice, 8000, channels=2)  # telephone rate, stereo
    _open(browser, server.rest_url + "/")
    browser.find_element("id", "file").send_keys(path)
    shown = _wait_done(browser)
    _check_face(shown, local)
    info, n = local.info, shown["samples"]
    assert abs(n - len(voice)) <= 2  # 4 s at 16 kHz
    window = info["clip_samples"]  # read from the model's metadata
    assert browser.execute_script("return window.s2f.config.clip") == window
    assert [len(r) for r in shown["rows"]] == [window] * len(shown["rows"])
    assert len(shown["rows"]) == len(window_starts(n, window, window // 2))
    # the page's own 8 kHz -> 16 kHz resampling agrees with soxr's on the same file
    import soxr

    data, _ = soundfile.read(path)
    ref = soxr.resample(data.mean(axis=1), 8000, 16000)
    first = np.asarray(shown["rows"][0])
    ref = ref[: len(first)]
    assert np.corrcoef(first[: len(ref)], ref)[0, 1] > 0.99


def test_page_draws_the_face_of_a_recording_from_the_microphone(
    server, local, open_browser, tmp_path
):
    voice = _voice(8.0, seed=5)
    wav = _write(tmp_path / "mic.wav", voice, 48000)
    driver = open_browser(
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    )
    _open(driver, server.rest_url + "/")
    seconds = driver.find_element("id", "seconds")
    seconds.clear()
    seconds.send_keys("5")
    driver.find_element("id", "record").click()
    shown = _wait_done(driver, timeout=90)
    _check_face(shown, local)
    assert 4.5 * 16000 <= shown["samples"] <= 5.5 * 16000, shown[
        "samples"
    ]  # 5 s, stopped by the page
    # what the page heard is the WAV it was fed: the best-aligned stretch of the (looping) file
    heard = np.concatenate([np.asarray(r) for r in shown["rows"][:1]])
    loop = np.concatenate([voice, voice])
    scores = np.correlate(loop, heard[:16000], mode="valid")
    at = int(np.argmax(np.abs(scores)))
    assert abs(np.corrcoef(loop[at : at + 16000], heard[:16000])[0, 1]) > 0.9
    print(
        f"\npage figures ({local.path}): request {shown['request_ms']:.0f} ms in {shown['calls']} calls, "
        f"end of a {shown['samples'] / 16000:.1f} s recording to the face {shown['total_ms']:.0f} ms"
    )


def test_page_says_what_is_wrong_with_the_audio(server, browser, tmp_path):
    _open(browser, server.rest_url + "/")
    cases = [
        (_write(tmp_path / "silence.wav", np.zeros(32000), 16000), "silent"),
        (_write(tmp_path / "short.wav", _voice(0.1), 16000), "too short"),
        (str(tmp_path / "notes.wav"), "cannot decode"),
    ]
    with open(cases[2][0], "w") as f:
        f.write("not audio at all")
    from selenium.webdriver.support.ui import WebDriverWait

    for path, words in cases:
        browser.find_element("id", "file").send_keys(path)
        WebDriverWait(browser, 30).until(
            lambda d, words=words: words in d.find_element("id", "error").text
        )
    # a refusal by the server reaches the page in the server's words: more windows in one request
    # than a server that takes 2 at a time accepts
    with DevServer(
        server.model_base_path, MODEL, port=0, rest_api_port=AUTO_PORT, poll_seconds=60, max_batch=2
    ) as small:
        _open(browser, f"{small.rest_url}/")
        path = _write(tmp_path / "long.wav", _voice(4.0), 16000)
        browser.find_element("id", "file").send_keys(path)
        WebDriverWait(browser, 60).until(lambda d: "refused" in d.find_element("id", "error").text)
        assert "batch too large" in browser.find_element("id", "error").text


def test_page_works_behind_the_proxy_that_puts_it_in_front_of_tf_serving(
    server, local, browser, tmp_path
):
    """serving/page.nginx.conf, what docker-compose's `page` service runs in front of TF Serving's
    REST port, with the development server standing in for TF Serving: nothing there writes
    web/config.json, so the page takes the model's limits from its URL."""
    import shutil
    import subprocess
    import time

    from support import free_port

    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None
    )
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs nginx (apt-get install nginx; .ci/run does it)")
        pytest.skip("no nginx on this machine (apt-get install nginx)")
    with open(os.path.join(os.path.dirname(page.PAGE_DIR), "page.nginx.conf")) as f:
        site = f.read()
    port = free_port()
    for old, new in (
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
        ("http://tf-serving:8501", server.rest_url),
        ("/srv/s2f", os.path.dirname(page.PAGE_DIR)),
    ):
        assert old in site
        site = site.replace(old, new)
    mime = (
        "include /etc/nginx/mime.types;"
        if os.path.exists("/etc/nginx/mime.types")
        else "types { text/html html; text/javascript js; text/css css; }"
    )
    temp = " ".join(
        f"{kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"daemon off; master_process off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; {mime} {temp}\n{site}\n}}\n"
    )
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if _get(url + "/")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert _get(url + "/web/config.json")[0] == 404
        info = local.info
        _open(browser, f"{url}/?model={MODEL}")  # the limits come from the model's metadata
        assert browser.execute_script("return window.s2f.config.clip") == info["clip_samples"]
        assert browser.execute_script("return window.s2f.config.min") == info["min_samples"]
        browser.find_element("id", "file").send_keys(
            _write(tmp_path / "voice.flac", _voice(3.0), 44100)
        )
        _check_face(_wait_done(browser), local)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_page_sends_what_a_batching_server_merges(server, local, browser, tmp_path):
    """A recording shorter than a clip, sent while a Python client keeps the server busy with
    clip-length requests, through the shipped batching.config (with a 300 ms timeout, so requests
    surely merge): the page tiles it to the clip, so its request merges with theirs and the face comes
    back (a window of the recording's own length gets TF Serving's mixed-shape error)."""
    import dataclasses
    import threading

    from serving.batching import SHIPPED, read_batching_parameters
    from serving.client import GrpcClient

    batching = dataclasses.replace(read_batching_parameters(SHIPPED), batch_timeout_micros=300_000)
    clip, short = local.info["clip_samples"], 0.6
    assert local.info["min_samples"] <= short * 16000 < clip
    with (
        DevServer(
            server.model_base_path,
            MODEL,
            port=AUTO_PORT,
            rest_api_port=AUTO_PORT,
            poll_seconds=60,
            batching=batching,
        ) as busy,
        GrpcClient(busy.grpc_target, MODEL) as client,
    ):
        stop = threading.Event()
        answered = []

        def traffic():
            wave = (np.random.RandomState(0).randn(1, clip) * 0.05).astype(np.float32)
            while not stop.is_set():
                answered.append(client.predict(wave))

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        try:
            _open(browser, busy.rest_url + "/")
            browser.find_element("id", "file").send_keys(
                _write(tmp_path / "short.wav", _voice(short), 16000)
            )
            shown = _wait_done(browser)
        finally:
            stop.set()
            thread.join(60)
    assert [len(r) for r in shown["rows"]] == [clip] and answered
    _check_face(shown, local)
