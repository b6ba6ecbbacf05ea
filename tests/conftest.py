"""Shared test setup: quiet TF, float32 by default, and a policy-restoring fixture."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "0")

import keras
import pytest


@pytest.fixture
def policy():
    """Yields a setter for the global mixed-precision policy; restores float32 afterwards."""
    try:
        yield keras.mixed_precision.set_global_policy
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def _float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


BROWSER_PATHS = {
    "chromium": ("/usr/bin/chromium", "/usr/bin/chromium-browser"),
    "chromedriver": ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"),
}


@pytest.fixture
def open_browser(tmp_path):
    """Opens real headless Chromiums driven by selenium (Debian's chromium + chromium-driver, which
    .ci/run installs), with any extra command-line flags: open_browser("--use-fake-ui-for-media-stream").
    Missing outside CI: the test is skipped; under CI=true it fails. All are closed afterwards."""
    found = {
        name: next((p for p in paths if os.path.exists(p)), None)
        for name, paths in BROWSER_PATHS.items()
    }
    if not all(found.values()):
        missing = ", ".join(name for name, path in found.items() if path is None)
        if os.environ.get("CI"):
            pytest.fail(
                f"CI needs {missing} (apt-get install chromium chromium-driver; .ci/run does it)"
            )
        pytest.skip(f"no {missing} on this machine (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def open_one(*flags: str):
        options = webdriver.ChromeOptions()
        options.binary_location = found["chromium"]
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1000",
            # this machine's network is closed: no background connections, no updates
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            f"--user-data-dir={tmp_path / f'chromium-profile-{len(drivers)}'}",
            *flags,
        ):
            options.add_argument(flag)
        # an explicit driver path: selenium never looks for (or downloads) a driver of its own
        driver = webdriver.Chrome(
            service=Service(executable_path=found["chromedriver"]), options=options
        )
        driver.set_page_load_timeout(60)
        drivers.append(driver)
        return driver

    try:
        yield open_one
    finally:
        for driver in drivers:
            driver.quit()


@pytest.fixture
def browser(open_browser):
    """One real headless Chromium (see open_browser)."""
    return open_browser()


def run_s2f(*args, env=None, timeout=600):
    """Runs the `s2f` command in a fresh process (the way users run it)."""
    import subprocess
    import sys

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "s2f_tf.app.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def once_per_run(tmp_path_factory, name: str, make):
    """make(an empty directory) -> a str (a path in it), once per test run: with pytest-xdist's
    workers (`make test` runs two), the first worker to ask makes it under a lock in the run's
    shared temporary directory and the others wait and read its answer. Session fixtures whose
    result is a path use it, so a tiny model is trained once, not once per worker."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return make(str(tmp_path_factory.mktemp(name)))
    import json

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent  # one per run, above the workers' own
    answer = root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not answer.exists():
            out = root / name
            if out.exists():  # a worker that failed making it: start again
                import shutil

                shutil.rmtree(out)
            out.mkdir()
            answer.write_text(json.dumps(make(str(out))))
        return json.loads(answer.read_text())


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A tiny synthetic corpus (8 identities x 3 clips, 32 px faces) prepared once per session. Seed
    24 puts 4 identities in train, 2 in validation and 2 in test: the fewest speakers that retrieval,
    matching and validation while training accept."""
    from pipelines.common import run_prepare
    from pipelines.synthetic import SyntheticSource
    from s2f_tf import factory
    from s2f_tf.configs import get_config

    def make(out: str) -> str:
        run_prepare(
            SyntheticSource(identities=8, clips_per_identity=3, image_size=32, seed=24),
            out,
            items_per_shard=8,
            beam_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
            log=lambda *_: None,
            texture_warp=factory.texture_warp(get_config("tiny")),
        )
        return out

    return once_per_run(tmp_path_factory, "tiny_corpus", make)


@pytest.fixture(scope="session")
def tiny_faces_workdir(tiny_corpus, tmp_path_factory):
    """A workdir with stages 1 and 2 trained (tiny preset), for the voice-encoder tests to copy."""

    def make(workdir: str) -> str:
        for stage in ("face_encoder", "face_decoder"):
            r = run_s2f(
                "train",
                "--config=tiny",
                f"--stage={stage}",
                f"--workdir={workdir}",
                f"--data={tiny_corpus}",
            )
            assert r.returncode == 0, r.stderr[-3000:]
        return workdir

    return once_per_run(tmp_path_factory, "faces_workdir", make)


@pytest.fixture(scope="session")
def tiny_trained_workdir(tiny_corpus, tiny_faces_workdir, tmp_path_factory):
    """All three stages trained at tiny size (for evaluate/export/serve tests)."""
    import shutil

    def make(out: str) -> str:
        workdir = f"{out}/run"
        shutil.copytree(tiny_faces_workdir, workdir)
        r = run_s2f(
            "train",
            "--config=tiny",
            "--stage=voice_encoder",
            f"--workdir={workdir}",
            f"--data={tiny_corpus}",
        )
        assert r.returncode == 0, r.stderr[-3000:]
        return workdir

    return once_per_run(tmp_path_factory, "trained", make)


@pytest.fixture(scope="session")
def tiny_export(tiny_trained_workdir, tmp_path_factory):
    """`s2f export` of tiny_trained_workdir, once per session: the model directory <base>/s2f (for the
    predict tests; a test that checks the export itself, or writes versions, exports on its own)."""

    def make(base: str) -> str:
        r = run_s2f("export", f"--workdir={tiny_trained_workdir}", f"--export_base={base}")
        assert r.returncode == 0, r.stderr[-3000:]
        return f"{base}/s2f"

    return once_per_run(tmp_path_factory, "exports", make)


@pytest.fixture(scope="session")
def untrained_tiny_export(tmp_path_factory):
    """A tiny untrained Speech2Face exported once per session (the serving and page tests'):
    {"model", "config", "version_dir"}, the version being <base>/s2f/1. Read it, never write into it
    (copy the version elsewhere to add versions)."""
    import numpy as np

    from s2f_tf import factory
    from s2f_tf.configs import get_config
    from s2f_tf.export import export_model

    config = get_config("tiny")
    model = factory.build_speech2face(config)
    model(np.zeros((1, config.audio.clip_samples), np.float32))
    base = str(tmp_path_factory.mktemp("untrained_export"))
    return {
        "model": model,
        "config": config,
        "version_dir": export_model(model, config, base, "s2f"),
    }


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory):
    """An emulated GCS bucket on 127.0.0.1 for Beam's and TensorFlow's gs:// (tests/gcs_emulator.py),
    one per test process; tests write under their own prefix. Subprocesses get `.env`."""
    from gcs_emulator import running

    with running(str(tmp_path_factory.mktemp("gcs"))) as bucket:
        yield bucket


@pytest.fixture
def gcs_env(gcs_bucket, monkeypatch):
    """gcs_bucket's environment in this process too (Beam's GCS filesystem reads it when used)."""
    for name, value in gcs_bucket.env.items():
        monkeypatch.setenv(name, value)
    return gcs_bucket
