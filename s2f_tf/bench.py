"""`s2f bench ...`: speed figures, measured (never asserted in tests).

  input: examples/s and MB/s of the tf.data pipeline over prepared shards (int16 PCM, STFT excluded)
"""

from __future__ import annotations

import time

from s2f_tf.data.dataset import InputOptions, make_dataset


def bench_input(data_dir: str, split: str, batch_size: int, clip_samples: int, steps: int = 50,
                warmup: int = 10, fields=("pcm", "speaker")) -> dict:
  """Runs the training input pipeline (random crop, shuffle, repeat) and times `steps` batches."""
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
          "clip_samples": clip_samples, "clip_seconds": clip_samples / 16000, "steps": steps,
          "fields": list(fields), "pcm_dtype": "int16"}
