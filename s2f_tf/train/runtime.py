"""Where training runs: distribution strategy, precision policy, determinism.

  strategy  default (one device) | mirrored (all local GPUs, or N logical CPUs) |
            multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG) | auto
  precision auto | float32 | mixed_bfloat16 | mixed_float16 (loss scaling in the loop); auto picks
            by the hardware (`resolve_precision`): bfloat16 where the chip runs it fast, else float32
  stopping  `StopSignals`: SIGTERM / SIGINT ask the loop to stop after the call in flight
  devices   `describe_devices`: the strategy, its replicas and their device kinds (each stage logs
            it); `require_accelerator` stops a run that sees no GPU or TPU
Keras 3 `fit` breaks under MultiWorkerMirroredStrategy (keras-team/keras#20585), so s2f trains
with its own loop (loop.py) on `strategy.run`.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time

import keras
import tensorflow as tf

from s2f_tf.contract import S2FError

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
PRECISIONS = ("auto",) + POLICIES
# bfloat16 pays on a CPU only where its matmuls run well above the float32 rate (AMX: ~4x); on
# CPUs without native bfloat16 they run several times SLOWER. The probe's ratio decides.
MIN_CPU_BFLOAT16_SPEEDUP = 1.5


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into `count` logical devices (MirroredStrategy tests on a CPU-only machine).
    Must run before TensorFlow initialises its devices."""
    if count <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def _tf_config_workers() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
    return sum(len(cluster.get(k, [])) for k in ("chief", "worker"))


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "auto":
        if _tf_config_workers() > 1:
            name = "multi_worker"
        elif (
            len(tf.config.list_logical_devices("GPU")) > 1
            or len(tf.config.list_logical_devices("CPU")) > 1
        ):
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if _tf_config_workers() < 1:
        raise ValueError("strategy multi_worker needs TF_CONFIG with a cluster (see BUILD.md)")
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one worker that writes checkpoints, summaries and outputs: the chief if the
    cluster has one, else worker 0 — index 0 in `worker_info` either way."""
    return worker_info(strategy)[1] == 0


def worker_info(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """(number of workers, this worker's index) — (1, 0) outside multi-worker training."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return 1, 0
    workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
    index = resolver.task_id + (1 if resolver.task_type == "worker" and "chief" in spec else 0)
    return workers, index


ACCELERATORS = ("GPU", "TPU")


def _device_kind(name: str) -> str:
    """A device name (/job:.../device:GPU:0) -> its kind, with the GPU's model where TF knows it."""
    spec = tf.DeviceSpec.from_string(name)
    kind = spec.device_type or "CPU"
    if kind == "GPU":
        physical = tf.config.list_physical_devices("GPU")
        index = spec.device_index or 0
        if index < len(physical):
            model = tf.config.experimental.get_device_details(physical[index]).get("device_name")
            if model:
                return f"GPU ({model})"
    return kind


def describe_devices(strategy: tf.distribute.Strategy) -> str:
    """One line: the strategy, its replica count and this worker's replicas' device kinds, e.g.
    "strategy MirroredStrategy, 2 replicas on 2 x GPU (NVIDIA H200)"."""
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy: TensorFlow's first GPU, else the CPU
        devices = [(tf.config.list_logical_devices("GPU") or [None])[0]]
        devices = [devices[0].name if devices[0] else "/device:CPU:0"]
    kinds: dict[str, int] = {}
    for name in devices:
        kind = _device_kind(name)
        kinds[kind] = kinds.get(kind, 0) + 1
    replicas = strategy.num_replicas_in_sync
    on = ", ".join(f"{count} x {kind}" for kind, count in kinds.items())
    where = f" ({len(devices)} on this worker)" if len(devices) != replicas else ""
    name = type(strategy).__name__
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"  # (its class is CollectiveAllReduceStrategy)
    elif name == "_DefaultDistributionStrategy":
        name = "default (one device)"
    return f"strategy {name}, {replicas} replica{'s' * (replicas != 1)}{where} on {on}"


def require_accelerator() -> None:
    """Raises S2FError (one line) when TensorFlow sees no GPU or TPU."""
    found = [k for k in ACCELERATORS if tf.config.list_logical_devices(k)]
    if not found:
        raise S2FError(
            "--require_accelerator: TensorFlow sees no GPU or TPU (only the CPU); check nvidia-smi, "
            "install with pip install '.[gpu]', and read the GPU warning above (BUILD.md: GPUs)"
        )


def start_profiler_server(port: int) -> None:
    """TensorFlow's profiler server, for on-demand capture from TensorBoard's Profile tab
    (`--profiler_port`; it listens on every interface, TensorFlow's choice)."""
    if not 0 < port < 65536:
        raise ValueError(f"--profiler_port must be in 1..65535, got {port}")
    tf.profiler.experimental.server.start(port)


def _matmul(dtype, n: int = 1024):
    a = tf.cast(tf.random.stateless_normal([n, n], seed=[1, 2]), dtype)
    b = tf.cast(tf.random.stateless_normal([n, n], seed=[3, 4]), dtype)
    f = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    f().numpy()  # trace and warm up
    return f


@functools.lru_cache(maxsize=1)
def cpu_bfloat16_speedup(rounds: int = 7) -> float:
    """bfloat16 / float32 matmul throughput on this CPU, measured once per process (under 1 s): the
    fastest of `rounds` timings of each, the two taken in turn, so that a burst of other work on the
    machine slows both rather than one (it had flipped a run's choice near the threshold)."""
    with tf.device("/cpu:0"):
        calls = {dtype: _matmul(dtype) for dtype in (tf.float32, tf.bfloat16)}
        best = {dtype: float("inf") for dtype in calls}
        for _ in range(rounds):
            for dtype, f in calls.items():
                start = time.perf_counter()
                f().numpy()
                best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[tf.float32] / best[tf.bfloat16]


def resolve_precision(precision: str, gpus=None, cpu_speedup=None) -> tuple[str, str]:
    """`precision` -> (Keras policy, why). "auto": mixed_bfloat16 on GPUs of compute capability
    8.0 and newer (A100, H100, ...), mixed_float16 on 7.x (V100, T4: tensor cores, loss scaling),
    float32 on older GPUs; on a CPU, mixed_bfloat16 if its bfloat16 matmuls run at least
    MIN_CPU_BFLOAT16_SPEEDUP x its float32 ones (`cpu_bfloat16_speedup`), else float32.
    `gpus` ([compute capability tuples]) and `cpu_speedup` (a callable) replace the probes in tests."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision, "set in the config"
    if gpus is None:
        gpus = [
            tuple(tf.config.experimental.get_device_details(d).get("compute_capability") or (0, 0))
            for d in tf.config.list_physical_devices("GPU")
        ]
    if gpus:
        cc = min(gpus)
        if cc >= (8, 0):
            return (
                "mixed_bfloat16",
                f"auto: GPU compute capability {cc[0]}.{cc[1]} runs bfloat16 natively",
            )
        if cc >= (7, 0):
            return (
                "mixed_float16",
                f"auto: GPU compute capability {cc[0]}.{cc[1]} (float16 tensor cores)",
            )
        return "float32", f"auto: GPU compute capability {cc[0]}.{cc[1]} has no fast half precision"
    speedup = (cpu_speedup or cpu_bfloat16_speedup)()
    if speedup >= MIN_CPU_BFLOAT16_SPEEDUP:
        return (
            "mixed_bfloat16",
            f"auto: this CPU's bfloat16 matmul runs {speedup:.1f}x its float32 rate",
        )
    return (
        "float32",
        f"auto: this CPU's bfloat16 matmul runs {speedup:.1f}x its float32 rate (no fast bfloat16)",
    )


def set_precision(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"precision policy must be one of {POLICIES}, got {policy!r}")
    keras.mixed_precision.set_global_policy(policy)


def set_determinism(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


class StopSignals:
    """While active (a context manager, in the main thread): the first SIGTERM or SIGINT sets
    `.signal`, for the training loop to stop after the call in flight; a second one, or
    `grace_seconds` after the first (0: no limit), ends the process at once with status 128 + the
    signal's number. Signals are seen by a watcher thread through `signal.set_wakeup_fd`, so they
    count even while the main thread is inside a long TensorFlow call."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, grace_seconds: float = 0.0, enabled: bool = True):
        self.grace_seconds = float(grace_seconds)
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signal: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if not self.enabled:
            return self
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous = {s: signal.signal(s, lambda *_: None) for s in self.SIGNALS}
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="s2f-stop-signals", daemon=True).start()
        return self

    def _watch(self) -> None:
        while True:
            try:
                got = os.read(self._read, 1)
            except OSError:
                return
            if not got:
                os.close(self._read)
                return
            number = got[0]
            if number not in self.SIGNALS:
                continue
            if self.signal is not None:  # a second signal: at once
                os._exit(128 + number)
            self.signal = number
            if self.grace_seconds > 0:
                timer = threading.Timer(self.grace_seconds, os._exit, args=(128 + number,))
                timer.daemon = True
                timer.start()

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        signal.set_wakeup_fd(self._previous_fd)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        os.close(self._write)  # the watcher sees EOF
