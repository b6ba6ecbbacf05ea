"""The `s2f` command: one binary, subcommands; absl flags live only here (DESIGN.md habit 2).

  s2f describe --config=paper [--set=section.field=value ...]
  s2f prepare synthetic --identities=600 --clips_per_identity=8 --out=DIR [--config=demo]
  s2f prepare avspeech --csv=avspeech_train.csv --videos_dir=VIDEOS --out=DIR --config=paper
  s2f prepare folders --root=SPEAKERS [--meta=vox1_meta.csv] --out=DIR --config=paper
  s2f train --stage=face_encoder|face_decoder|voice_encoder --workdir=RUN --data=DIR
  s2f evaluate --workdir=RUN --data=DIR [--json]
  s2f export --workdir=RUN --export_base=EXPORTS --model_name=s2f
  s2f serve --model_base_path=EXPORTS/s2f --model_name=s2f --port=8500 --rest_api_port=8501
  s2f predict AUDIO (--server=HOST:PORT | --model_dir=EXPORTS/s2f) --out=face.png
  s2f bench input|train|serve ...
  s2f demo --out=demo_out
  s2f bench input --data=DIR [--json]

`s2f --helpfull` lists every flag.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from s2f_tf import demo as s2f_demo  # noqa: E402  (light: numpy; the demo corpus sizes)

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "demo", "Preset name: paper, demo or tiny.")
flags.DEFINE_multi_string("set", [], "Config override section.field=value (repeatable), "
                          "e.g. --set=train.batch_size=4 --set=voice_encoder.width=0.5.")

# prepare
flags.DEFINE_string("out", None, "Output directory (prepare: the dataset; demo: everything).")
flags.DEFINE_integer("identities", s2f_demo.IDENTITIES,
                     "prepare synthetic / demo: number of synthetic identities.")
flags.DEFINE_integer("clips_per_identity", s2f_demo.CLIPS_PER_IDENTITY,
                     "prepare synthetic / demo: clips per identity.")
flags.DEFINE_integer("seed", 0, "Random seed (synthetic corpus; training).")
flags.DEFINE_integer("image_size", 0, "Face crop size in pixels; 0: the config's face_encoder.image_size.")
flags.DEFINE_integer("items_per_shard", 512, "prepare: items per TFRecord shard.")
flags.DEFINE_string("runner", "DirectRunner", "prepare: Apache Beam runner (DirectRunner, DataflowRunner, "
                    "FlinkRunner, SparkRunner, ...).")
flags.DEFINE_multi_string("beam_arg", [], "prepare: extra Beam pipeline option, e.g. "
                          "--beam_arg=--project=P --beam_arg=--region=R (repeatable).")
flags.DEFINE_integer("num_workers", 2, "prepare with DirectRunner: local worker processes.")
flags.DEFINE_string("csv", None, "prepare avspeech: the AVSpeech CSV (no header: youtube_id,start,end,x,y).")
flags.DEFINE_string("videos_dir", None, "prepare avspeech: folder of the videos you fetched "
                    "(<youtube_id>.<ext> or <youtube_id>_<start>_<end>.<ext>).")
flags.DEFINE_enum("csv_split", None, ["train", "validation", "test"], "prepare avspeech: put every row in "
                  "this split (AVSpeech ships train and test CSVs); default: by a hash of the video id.")
flags.DEFINE_string("root", None, "prepare folders: one folder per speaker with audio files and face images.")
flags.DEFINE_string("meta", None, "prepare folders: optional VoxCeleb1/2 meta file (split and gender).")
flags.DEFINE_float("min_seconds", 0.0, "prepare avspeech/folders: shortest usable clip; 0: the source default.")
# train
flags.DEFINE_enum("stage", None, ["face_encoder", "face_decoder", "voice_encoder"], "train: the stage to run.")
flags.DEFINE_string("workdir", None, "train/evaluate/export: the run directory (config, checkpoints, "
                    "TensorBoard logs, weights).")
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored", "multi_worker"],
                  "train: tf.distribute strategy; auto = multi_worker with a TF_CONFIG cluster, mirrored "
                  "with several local GPUs (or --cpu_devices), else default.")
flags.DEFINE_enum("precision", None, ["float32", "mixed_bfloat16", "mixed_float16"],
                  "train: overrides train.precision (CPUs: float32).")
flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical devices (to exercise MirroredStrategy "
                     "without GPUs).")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "train/bench: XLA-compile the "
                  "forward/backward pass; auto = on GPUs, off on CPUs (TF's oneDNN convolutions beat XLA:CPU's).")
flags.DEFINE_bool("deterministic", False, "train: deterministic ops and input order (exact resume; slower).")
flags.DEFINE_string("profile_steps", None, "train: START,STOP steps to trace for TensorBoard's profiler.")
flags.DEFINE_string("vgg_face_weights", None, "VGG-Face Keras HDF5 weights file: the face encoder (stage 1 "
                    "is then skipped).")
flags.DEFINE_bool("skip_corrupt", False, "Skip (and log) unreadable records instead of failing.")
# evaluate
flags.DEFINE_integer("gallery_size", 100, "evaluate: faces per retrieval gallery (the paper's chance row implies 100).")
# export
flags.DEFINE_string("export_base", None, "export: SavedModels go to <export_base>/<model_name>/<version>/.")
flags.DEFINE_string("model_name", "s2f", "export/serve/predict: the model's name.")
flags.DEFINE_integer("version", 0, "export: version number; 0: one above the newest.")
# serve / predict (serve's flags as tensorflow_model_server names them)
flags.DEFINE_string("model_base_path", None, "serve: <export_base>/<model_name>, holding integer versions.")
flags.DEFINE_integer("port", 8500, "serve: gRPC port (0 disables).")
flags.DEFINE_integer("rest_api_port", 8501, "serve: REST port (0 disables).")
flags.DEFINE_string("host", "127.0.0.1", "serve: address to bind; 127.0.0.1 unless you mean otherwise.")
flags.DEFINE_string("server", None, "predict: HOST:PORT of a gRPC server (TF Serving or `s2f serve`).")
flags.DEFINE_string("model_dir", None, "predict: a SavedModel (or its <model_name> dir) to run in-process.")
flags.DEFINE_string("feature_out", None, "predict: also write the face feature as .npy here.")
flags.DEFINE_float("timeout", 30.0, "predict: request deadline in seconds.")
# bench
flags.DEFINE_string("data", None, "A prepared dataset directory.")
flags.DEFINE_string("split", "train", "Dataset split to read.")
flags.DEFINE_bool("json", False, "bench: print one JSON object instead of a table.")
flags.DEFINE_integer("batch_size", 0, "Batch size; 0: the config's train.batch_size.")
flags.DEFINE_integer("steps", 50, "bench: measured steps (after warm-up).")
flags.DEFINE_float("clip_seconds", 0.0, "bench input: clip length; 0: the paper's 6 s.")

COMMANDS = {
    "describe": "print each network's parameter count and input/output shapes as JSON",
    "prepare": "prepare a corpus into TFRecord shards with Apache Beam: synthetic | avspeech | folders",
    "train": "train one stage: --stage=face_encoder|face_decoder|voice_encoder --workdir --data",
    "evaluate": "quality on held-out speakers: --workdir --data [--out] -> metrics.json, faces.png, report.html",
    "export": "write a SavedModel for TF Serving: --workdir --export_base --model_name",
    "serve": "development server (TF Serving's gRPC + REST APIs): --model_base_path --model_name --port",
    "predict": "a face from an audio file: AUDIO [--server HOST:PORT | --model_dir DIR] --out face.png",
    "bench": "measure speed and print figures: input | train | serve",
    "demo": "run the whole stack end to end on the synthetic corpus (what `make demo` runs)",
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


# A corrupt shard or a NaN loss (TrainingError), unreadable media (MediaError), a server's answer
# (ServingError): their messages say what went wrong and where.
EXPECTED_FAILURES = ("TrainingError", "MediaError", "ServingError")


class UsageError(Exception):
  """Bad command line: printed without a traceback, exit status 2."""


SUBCOMMANDS = {"prepare": ("synthetic", "avspeech", "folders"), "bench": ("input", "train", "serve")}


def prepare(kind: str, config) -> None:
  from pipelines.common import run_prepare
  if not FLAGS.out:
    raise UsageError("--out is required")
  image_size = FLAGS.image_size or config.face_encoder.image_size
  if kind == "synthetic":
    from pipelines.synthetic import SyntheticSource
    source = SyntheticSource(FLAGS.identities, FLAGS.clips_per_identity, image_size, FLAGS.seed)
    arguments = {"identities": FLAGS.identities, "clips_per_identity": FLAGS.clips_per_identity,
                 "image_size": image_size, "seed": FLAGS.seed}
  elif kind == "avspeech":
    from pipelines.avspeech import AVSpeechSource
    if not FLAGS.csv or not FLAGS.videos_dir:
      raise UsageError("prepare avspeech needs --csv and --videos_dir")
    extra = {"min_seconds": FLAGS.min_seconds} if FLAGS.min_seconds else {}
    source = AVSpeechSource(FLAGS.csv, FLAGS.videos_dir, image_size, split=FLAGS.csv_split, **extra)
    arguments = {"csv": os.path.abspath(FLAGS.csv), "videos_dir": os.path.abspath(FLAGS.videos_dir),
                 "image_size": image_size, "split": FLAGS.csv_split, **extra}
  elif kind == "folders":
    from pipelines.folders import FoldersSource
    if not FLAGS.root:
      raise UsageError("prepare folders needs --root")
    extra = {"min_seconds": FLAGS.min_seconds} if FLAGS.min_seconds else {}
    source = FoldersSource(FLAGS.root, image_size, meta_path=FLAGS.meta, **extra)
    arguments = {"root": os.path.abspath(FLAGS.root), "image_size": image_size, "meta": FLAGS.meta, **extra}
  features = None
  if FLAGS.vgg_face_weights:
    import dataclasses
    from pipelines.common import FeatureSpec
    kwargs = dataclasses.asdict(config.face_encoder)
    kwargs.update(image_size=image_size, mean=list(kwargs["mean"]))
    features = FeatureSpec(os.path.abspath(FLAGS.vgg_face_weights), kwargs)
  run_prepare(source, FLAGS.out, items_per_shard=FLAGS.items_per_shard, runner=FLAGS.runner,
              beam_args=FLAGS.beam_arg, num_workers=FLAGS.num_workers, arguments=arguments, features=features)


def _jit() -> bool:
  if FLAGS.jit_compile == "auto":
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))
  return FLAGS.jit_compile == "true"


def train_command(config) -> None:
  from s2f_tf.train.loop import TrainOptions, train
  if not FLAGS.stage or not FLAGS.workdir or not FLAGS.data:
    raise UsageError("--stage, --workdir and --data are required")
  if FLAGS.precision:
    from s2f_tf.configs import override
    config = override(config, "train.precision", FLAGS.precision)
  profile = None
  if FLAGS.profile_steps:
    try:
      start, stop = (int(x) for x in FLAGS.profile_steps.split(","))
    except ValueError:
      raise UsageError(f"--profile_steps must be START,STOP, got {FLAGS.profile_steps!r}") from None
    if not 0 <= start < stop:
      raise UsageError(f"--profile_steps needs 0 <= START < STOP, got {FLAGS.profile_steps!r}")
    profile = (start, stop)
  options = TrainOptions(stage=FLAGS.stage, workdir=FLAGS.workdir, data_dir=FLAGS.data, strategy=FLAGS.strategy,
                         jit_compile=_jit(), deterministic=FLAGS.deterministic,
                         profile_steps=profile, vgg_face_weights=FLAGS.vgg_face_weights,
                         skip_corrupt=FLAGS.skip_corrupt)
  result = train(config, options)
  print(json.dumps(result))


def predict_command(audio: str) -> None:
  from s2f_tf.predict import LocalModel, predict_file
  if not FLAGS.out:
    raise UsageError("--out face.png is required")
  if bool(FLAGS.server) == bool(FLAGS.model_dir):
    raise UsageError("give exactly one of --server HOST:PORT or --model_dir DIR")
  if not os.path.exists(audio):
    raise FileNotFoundError(f"audio file {audio!r} does not exist")
  if FLAGS.server:
    from serving.client import GrpcClient
    predictor = GrpcClient(FLAGS.server, FLAGS.model_name, timeout_seconds=FLAGS.timeout)
    max_samples = None
  else:
    predictor = LocalModel(FLAGS.model_dir)
    max_samples = predictor.info.get("max_samples")
  print(json.dumps(predict_file(audio, FLAGS.out, predictor, FLAGS.feature_out, max_samples)))


def bench(kind: str, config) -> None:
  if kind == "input":
    from s2f_tf.bench import bench_input
    if not FLAGS.data:
      raise UsageError("--data is required")
    seconds = FLAGS.clip_seconds or 6.0
    result = bench_input(FLAGS.data, FLAGS.split, batch_size=FLAGS.batch_size or 64,
                         clip_samples=int(round(seconds * config.audio.sample_rate)), steps=FLAGS.steps)
  elif kind == "serve":
    from s2f_tf.bench_serve import bench_serve
    if not FLAGS.model_base_path:
      raise UsageError("--model_base_path is required (an exported <export_base>/<model_name>)")
    result = bench_serve(FLAGS.model_base_path, FLAGS.model_name, batch_size=FLAGS.batch_size or 1)
  elif kind == "train":
    from s2f_tf.bench import bench_train
    result = bench_train(config, batch_size=FLAGS.batch_size or config.train.batch_size, steps=FLAGS.steps,
                         jit_compile=_jit())
  print(json.dumps(result) if FLAGS.json else "\n".join(f"{k:>24}: {v}" for k, v in result.items()))


def main(argv: list[str]) -> int:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    extra = f"unknown command {argv[1]!r}\n\n" if len(argv) >= 2 else ""
    print(extra + _usage(), file=sys.stderr)
    return 2
  command, rest = argv[1], argv[2:]
  kinds = SUBCOMMANDS.get(command, ())
  from s2f_tf.train.runtime import configure_cpu_devices
  configure_cpu_devices(FLAGS.cpu_devices)
  try:
    if kinds and (len(rest) != 1 or rest[0] not in kinds):
      raise UsageError(f"expected one of: {' | '.join(kinds)}; got {' '.join(rest) or 'nothing'}")
    if command == "predict" and len(rest) != 1:
      raise UsageError("expected one audio file: s2f predict AUDIO --out face.png")
    if not kinds and rest and command != "predict":
      raise UsageError(f"unexpected arguments {rest}")
    config = _resolved_config()
    if command == "describe":
      print(json.dumps(describe(config), indent=2))
    elif command == "prepare":
      prepare(rest[0], config)
    elif command == "train":
      train_command(config)
    elif command == "evaluate":
      if not FLAGS.workdir or not FLAGS.data:
        raise UsageError("--workdir and --data are required")
      from s2f_tf.evaluate import evaluate
      metrics = evaluate(FLAGS.workdir, FLAGS.data, FLAGS.out, split=FLAGS.split if FLAGS.split != "train" else "test",
                         gallery_size=FLAGS.gallery_size, vgg_face_weights=FLAGS.vgg_face_weights,
                         log=(lambda *_: None) if FLAGS.json else print)
      if FLAGS.json:
        print(json.dumps(metrics))
    elif command == "serve":
      if not FLAGS.model_base_path:
        raise UsageError("--model_base_path is required")
      from serving.server import serve
      serve(FLAGS.model_base_path, FLAGS.model_name, port=FLAGS.port, rest_api_port=FLAGS.rest_api_port,
            host=FLAGS.host)
    elif command == "predict":
      predict_command(rest[0])
    elif command == "export":
      if not FLAGS.workdir or not FLAGS.export_base:
        raise UsageError("--workdir and --export_base are required")
      from s2f_tf.export import export_workdir
      print(export_workdir(FLAGS.workdir, FLAGS.export_base, FLAGS.model_name, FLAGS.version or None))
    elif command == "bench":
      bench(rest[0], config)
    elif command == "demo":
      s2f_demo.run_demo(FLAGS.out or "demo_out", config, FLAGS.identities, FLAGS.clips_per_identity,
                        FLAGS.seed)
  except (UsageError, ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"s2f {command}: {e}", file=sys.stderr)
    return 2
  except Exception as e:
    # Expected failures with a message written for the user: no traceback, exit status 1.
    if type(e).__name__ not in EXPECTED_FAILURES:
      raise
    print(f"s2f {command}: {e}", file=sys.stderr)
    return 1
  return 0


def run() -> None:
  """Console-script entry point."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
  run()
