"""Where training runs: distribution strategy, precision policy, determinism.

  strategy  default (one device) | mirrored (all local GPUs, or N logical CPUs) |
            multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG) | auto
  precision auto | float32 | mixed_bfloat16 | mixed_float16 (loss scaling in the loop); auto picks
            by the hardware (`resolve_precision`): bfloat16 where the chip runs it fast, else float32
Keras 3 `fit` breaks under MultiWorkerMirroredStrategy (keras-team/keras#20585), so s2f trains
with its own loop (loop.py) on `strategy.run`.
"""

from __future__ import annotations

import functools
import json
import os
import time

import keras
import tensorflow as tf

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
