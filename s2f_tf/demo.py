"""`s2f demo` (what `make demo` runs): the whole stack end to end on the embedded synthetic corpus.

Stages built so far run for real; stages not built yet are listed plainly at the end.
"""

from __future__ import annotations

import json
import os
import time

NOT_BUILT = [
    "train face encoder / face decoder / voice encoder (issue 4: training loop)",
    "evaluate on held-out speakers, export a SavedModel, serve over gRPC, predict faces (issue 5)",
]


def run_demo(out_dir: str, config, identities: int = 200, clips_per_identity: int = 10, seed: int = 0,
             log=print) -> dict:
  from pipelines.common import run_prepare
  from pipelines.synthetic import SyntheticSource
  from s2f_tf.bench import bench_input
  from s2f_tf.cli import describe

  started = time.time()
  os.makedirs(out_dir, exist_ok=True)
  summary: dict = {"config": config.name}

  log("== [1] prepare the synthetic corpus (Apache Beam, speaker-disjoint splits)")
  data_dir = os.path.join(out_dir, "data")
  info = run_prepare(SyntheticSource(identities, clips_per_identity, config.face_encoder.image_size, seed),
                     data_dir, arguments={"identities": identities, "clips_per_identity": clips_per_identity,
                                          "image_size": config.face_encoder.image_size, "seed": seed},
                     log=log)
  summary["data"] = {"dir": data_dir, "clips": info.counts, "speakers": info.speaker_counts}

  log("== [2] build every network of the demo preset")
  summary["networks"] = describe(config)["networks"]
  for name, net in summary["networks"].items():
    log(f"   {name:<14} {net['params']:>12,} parameters")

  log("== [3] input pipeline speed over the prepared shards")
  summary["input"] = bench_input(data_dir, "train", batch_size=config.train.batch_size,
                                 clip_samples=config.audio.clip_samples, steps=20)
  log(f"   {summary['input']['examples_per_second']:.0f} clips/s")

  summary["not_built_yet"] = NOT_BUILT
  summary["wall_seconds"] = round(time.time() - started, 1)
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  log("== not built yet:")
  for item in NOT_BUILT:
    log(f"   - {item}")
  log(f"== done in {summary['wall_seconds']} s; outputs in {out_dir}/ (data/, summary.json)")
  return summary
