"""`s2f bench ...`: speed figures, measured (never asserted in tests).

  input: examples/s and MB/s of the tf.data pipeline over prepared shards (int16 PCM, STFT excluded)
"""

from __future__ import annotations

import time

from s2f_tf import contract


def bench_input(data_dir: str, split: str, batch_size: int, clip_samples: int, steps: int = 50,
                warmup: int = 10, fields=("pcm", "speaker")) -> dict:
  """Runs the training input pipeline (random crop, shuffle, repeat) and times `steps` batches."""
  from s2f_tf.data.dataset import InputOptions, make_dataset
  options = InputOptions(batch_size=batch_size, clip_samples=clip_samples, training=True, fields=fields)
  it = iter(make_dataset(data_dir, split, options))
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  nbytes = 0
  for _ in range(steps):
    batch = next(it)
    nbytes += sum(int(v.numpy().nbytes) for v in batch.values())
  seconds = time.perf_counter() - start
  return {"benchmark": "input", "examples_per_second": round(steps * batch_size / seconds, 1),
          "megabytes_per_second": round(nbytes / seconds / 1e6, 1), "batch_size": batch_size,
          "clip_samples": clip_samples, "clip_seconds": contract.seconds(clip_samples), "steps": steps,
          "fields": list(fields), "pcm_dtype": "int16"}


def matmul_flops_per_second(sizes=(1024, 2048), seconds: float = 1.0) -> float:
  """The machine's measured float32 matmul throughput (best of a few square sizes), FLOP/s."""
  import tensorflow as tf
  best = 0.0
  for n in sizes:
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    f().numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      f().numpy()
      count += 1
    best = max(best, 2.0 * n ** 3 * count / (time.perf_counter() - start))
  return best


def graph_flops(concrete_function) -> int:
  """Float operations of a concrete function's graph, counted by TF's profiler (conv, matmul, ...)."""
  import tensorflow as tf
  opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  opts["output"] = "none"
  return int(tf.compat.v1.profiler.profile(graph=concrete_function.graph, options=opts).total_float_ops)


def timed(step, steps: int, warmup: int) -> float:
  """Seconds for `steps` calls of `step` after `warmup` calls (shared by the TF and PyTorch sides)."""
  for _ in range(warmup):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return time.perf_counter() - start


def bench_train(config, batch_size: int, steps: int = 10, warmup: int = 3, jit_compile: bool = True,
                torch_peer: bool = True) -> dict:
  """Voice-encoder training step (waveform -> in-graph STFT -> Table 1 encoder -> loss -> Adam).

  flop_utilization = 3 x forward FLOPs (counted from the graph) x examples/s / matmul FLOP/s.
  With PyTorch installed, the same network and step in PyTorch is timed in the same run.
  """
  import keras
  import numpy as np
  import tensorflow as tf

  from s2f_tf import losses
  from s2f_tf import factory

  keras.mixed_precision.set_global_policy("float32")
  samples = config.audio.clip_samples
  front_end = factory.build_front_end(config, validate=False)
  encoder = factory.build_voice_encoder(config)
  wave = tf.constant((np.random.RandomState(0).randn(batch_size, samples) * 0.1).astype(np.float32))
  target = tf.constant(np.random.RandomState(1).randn(batch_size, config.feature_dim).astype(np.float32))
  encoder(front_end(wave[:1]))
  optimizer = keras.optimizers.Adam(1e-4, beta_1=0.5, epsilon=1e-4)
  optimizer.build(encoder.trainable_variables)

  forward = tf.function(lambda w: encoder(front_end(w), training=False))
  flops_forward = graph_flops(forward.get_concrete_function(tf.TensorSpec([batch_size, samples], tf.float32)))

  @tf.function(jit_compile=jit_compile)
  def train_step(w, t):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(losses.normalized_l2_per_example(t, encoder(front_end(w), training=True)))
    grads = tape.gradient(loss, encoder.trainable_variables)
    optimizer.apply(grads, encoder.trainable_variables)
    return loss

  matmul_before = matmul_flops_per_second()
  seconds = timed(lambda: train_step(wave, target).numpy(), steps, warmup)
  matmul = max(matmul_before, matmul_flops_per_second())     # the machine's capability, not a dip
  step_flops = 3 * flops_forward
  result = {"benchmark": "train", "config": config.name, "batch_size": batch_size, "steps": steps,
            "jit_compile": jit_compile, "examples_per_second": round(steps * batch_size / seconds, 2),
            "step_seconds": round(seconds / steps, 4), "forward_gflops": round(flops_forward / 1e9, 2),
            "matmul_gflops_per_second": round(matmul / 1e9, 1),
            "achieved_gflops_per_second": round(step_flops * steps / seconds / 1e9, 1),
            "flop_utilization": round(step_flops * steps / seconds / matmul, 3)}
  if torch_peer:
    import importlib.util
    import subprocess
    import sys
    if importlib.util.find_spec("torch") is None:
      result["torch"] = "not installed (pip install torch to time the PyTorch peer)"
    else:
      proc = subprocess.run([sys.executable, "-m", "s2f_tf.app.bench_torch", config.to_json(), str(batch_size),
                             str(steps), str(warmup)], capture_output=True, text=True, check=True)
      t = float(proc.stdout.strip().splitlines()[-1])
      result["torch_step_seconds"] = round(t / steps, 4)
      result["speedup_vs_torch"] = round(t / seconds, 2)
      result["torch_flop_utilization"] = round(step_flops * steps / t / matmul, 3)
  return result
