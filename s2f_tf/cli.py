"""The `s2f` command: one binary, subcommands; absl flags live only here (DESIGN.md habit 2).

  s2f describe --config=paper [--set=section.field=value ...]

`s2f --helpfull` lists every flag.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "demo", "Preset name: paper, demo or tiny.")
flags.DEFINE_multi_string("set", [], "Config override section.field=value (repeatable), "
                          "e.g. --set=train.batch_size=4 --set=voice_encoder.width=0.5.")

COMMANDS = {
    "describe": "print each network's parameter count and input/output shapes as JSON",
}


def _resolved_config():
  from s2f_tf.configs import get_config
  return get_config(FLAGS.config, FLAGS.set)


def _shape(x) -> list:
  return [None] + [int(d) for d in x.shape[1:]]


def describe(config) -> dict:
  """Builds every network of `config` at batch 1 and reports parameters and shapes."""
  import numpy as np
  from s2f_tf.models import factory

  a = config.audio
  waveform = np.zeros((1, a.clip_samples), np.float32)
  front_end = factory.build_front_end(config)
  spec = front_end(waveform)
  voice = factory.build_voice_encoder(config)
  feature = voice(spec)
  face_encoder = factory.build_face_encoder(config)
  image = np.zeros((1, config.face_encoder.image_size, config.face_encoder.image_size, 3), np.float32)
  face_out = face_encoder(image)
  decoder = factory.build_face_decoder(config)
  decoded = decoder(feature)
  return {
      "config": config.name,
      "spectrogram": {"clip_seconds": a.clip_seconds, "samples": a.clip_samples,
                      "sample_rate": a.sample_rate, "shape": _shape(spec)[1:]},
      "networks": {
          "voice_encoder": {"params": voice.count_params(), "input": _shape(spec),
                            "output": _shape(feature), "min_frames": voice.min_frames()},
          "face_encoder": {"params": face_encoder.count_params(), "input": _shape(image),
                           "outputs": {k: _shape(v) for k, v in face_out.items()}},
          "face_decoder": {"params": decoder.count_params(), "input": _shape(feature),
                           "outputs": {k: _shape(v) for k, v in decoded.items()}},
      },
      "feature_dim": config.feature_dim,
  }


def _usage() -> str:
  lines = ["usage: s2f COMMAND [--flags]   (s2f --helpfull lists every flag)", "", "commands:"]
  lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    extra = f"unknown command {argv[1]!r}\n\n" if len(argv) >= 2 else ""
    print(extra + _usage(), file=sys.stderr)
    return 2
  if len(argv) > 2:
    print(f"s2f {argv[1]}: unexpected arguments {argv[2:]}", file=sys.stderr)
    return 2
  try:
    config = _resolved_config()
  except ValueError as e:
    print(f"s2f {argv[1]}: {e}", file=sys.stderr)
    return 2
  if argv[1] == "describe":
    print(json.dumps(describe(config), indent=2))
  return 0


def run() -> None:
  """Console-script entry point."""
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
