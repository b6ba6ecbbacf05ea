"""Where training runs: distribution strategy, precision policy, determinism.

  strategy  default (one device) | mirrored (all local GPUs, or N logical CPUs) |
            multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG) | auto
  precision float32 | mixed_bfloat16 | mixed_float16 (loss scaling in the loop)
Keras 3 `fit` breaks under MultiWorkerMirroredStrategy (keras-team/keras#20585), so s2f trains
with its own loop (loop.py) on `strategy.run`.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def configure_cpu_devices(count: int) -> None:
  """Splits the CPU into `count` logical devices (MirroredStrategy tests on a CPU-only machine).
  Must run before TensorFlow initialises its devices."""
  if count <= 1:
    return
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


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
    elif len(tf.config.list_logical_devices("GPU")) > 1 or len(tf.config.list_logical_devices("CPU")) > 1:
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


def set_precision(policy: str) -> None:
  if policy not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {policy!r}")
  keras.mixed_precision.set_global_policy(policy)


def set_determinism(seed: int, deterministic: bool) -> None:
  keras.utils.set_random_seed(seed)
  if deterministic:
    tf.config.experimental.enable_op_determinism()
