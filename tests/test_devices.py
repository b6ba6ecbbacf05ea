"""Devices, said and checked: GPU failures pass the quiet filter as one warning line,
--require_accelerator stops a run that sees no GPU or TPU, each stage names its strategy, replicas
and devices, and train.steps_per_loop is checked against the other intervals."""

import os
import threading

import pytest
from conftest import run_s2f

from s2f_tf.app import quiet

CU_INIT = (
    b"E0000 00:00:1796109321.440327    5004 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)"
)
DLOPEN = (
    b"W0000 00:00:1796109321.440327    5004 gpu_device.cc:2344] Cannot dlopen some GPU libraries. "
    b"Please make sure the missing libraries mentioned above are installed properly if you would "
    b"like to use GPU. Follow the guide at https://www.tensorflow.org/install/gpu for how to "
    b"download and setup the required libraries for your platform."
)


def _through_the_filter(lines: list[bytes], expect_gpu: bool = True) -> list[str]:
    """`lines` written into quiet's stderr pump (a real pipe and thread) -> the lines it passes."""
    read_fd, write_fd = os.pipe()
    out_read, out_write = os.pipe()
    pump = threading.Thread(
        target=quiet._pump, args=(read_fd, out_write), kwargs={"expect_gpu": expect_gpu}
    )
    pump.start()
    os.write(write_fd, b"".join(line + b"\n" for line in lines))
    os.close(write_fd)
    pump.join(timeout=10)
    os.close(out_write)
    chunks = []
    while chunk := os.read(out_read, 1 << 16):
        chunks.append(chunk)
    os.close(out_read)
    return b"".join(chunks).decode().splitlines()


@pytest.mark.parametrize("failure", [CU_INIT, DLOPEN])
def test_a_gpu_library_failure_passes_the_quiet_filter_as_one_warning_line(failure):
    noise = (
        b"I0000 00:00:1796109316.034283    5004 cpu_feature_guard.cc:227] This TensorFlow binary"
    )
    passed = _through_the_filter(
        [noise, failure, b"Skipping registering GPU devices...", CU_INIT, b"s2f train: done"]
    )
    assert len(passed) == 2 and passed[1] == "s2f train: done", passed
    warning = passed[0]
    assert warning.startswith("s2f: warning: TensorFlow cannot use a GPU (")
    cause = "failed call to cuInit" if failure == CU_INIT else "Cannot dlopen some GPU libraries"
    assert cause in warning and "--require_accelerator" in warning
    assert "E0000" not in warning and "Please make sure" not in warning  # readable: one line


def test_a_machine_without_a_gpu_driver_drops_the_no_gpu_lines():
    """On a CPU-only machine (no NVIDIA driver, no CUDA_VISIBLE_DEVICES) the same lines are its normal
    state: nothing to warn about on every command."""
    passed = _through_the_filter([CU_INIT, DLOPEN, b"s2f train: done"], expect_gpu=False)
    assert passed == ["s2f train: done"]


def test_a_gpu_is_expected_where_cuda_visible_devices_names_one(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert quiet.gpu_expected()


def _cpu_only() -> bool:
    import tensorflow as tf

    return not (tf.config.list_physical_devices("GPU") or tf.config.list_logical_devices("TPU"))


@pytest.mark.slow
def test_require_accelerator_stops_cleanly_on_a_cpu_only_machine(tmp_path):
    if not _cpu_only():
        pytest.skip("this machine has a GPU or TPU")
    for what, command in (
        ("train", ("--stage=face_encoder", f"--workdir={tmp_path}/w", f"--data={tmp_path}/d")),
        ("bench train", ("--steps=1",)),
    ):
        r = run_s2f(*what.split(), *command, "--config=tiny", "--require_accelerator")
        errors = [line for line in r.stderr.splitlines() if "cannot use a GPU" not in line]
        assert r.returncode == 1 and len(errors) == 1, r.stderr[-2000:]
        assert "no GPU or TPU" in errors[0] and errors[0].startswith(f"s2f {what}: ")
    assert not os.path.exists(tmp_path / "w")  # stopped before anything was written


def test_describe_devices_names_the_strategy_replicas_and_device_kinds():
    import tensorflow as tf

    from s2f_tf.train import runtime

    line = runtime.describe_devices(tf.distribute.get_strategy())
    kind = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    assert line.startswith("strategy default (one device), 1 replica on 1 x " + kind), line


def test_steps_per_loop_is_checked_against_the_other_intervals():
    from s2f_tf.configs import get_config

    assert get_config("tiny", ["train.steps_per_loop=3", "train.log_every=3"])
    with pytest.raises(ValueError, match="train.steps_per_loop must be >= 1"):
        get_config("tiny", ["train.steps_per_loop=0"])
    with pytest.raises(
        ValueError,
        match=r"train.log_every \(2\) must be a multiple of train.steps_per_loop \(3\).*"
        "train.log_every=3",
    ):
        get_config("tiny", ["train.steps_per_loop=3"])
    with pytest.raises(ValueError, match="train.checkpoint_every"):
        get_config("demo", ["train.steps_per_loop=3", "train.log_every=75", "train.image_every=99"])


_PROFILER_SERVER = r"""
import socket, sys
from s2f_tf.train import runtime
runtime.start_profiler_server(int(sys.argv[1]))
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10):
    print("listening")
try:
    runtime.start_profiler_server(0)
except ValueError as e:
    print(e)
"""


@pytest.mark.slow
def test_profiler_port_starts_the_profiler_server():
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run(
        [sys.executable, "-c", _PROFILER_SERVER, str(port)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines() == ["listening", "--profiler_port must be in 1..65535, got 0"]
