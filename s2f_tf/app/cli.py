"""The `s2f` command: one binary, a subcommand per job, each with its own flags and `--help`.

  s2f describe --config=paper
  s2f prepare synthetic|avspeech|folders --data=DIR ...
  s2f train --stage=face_encoder|face_decoder|voice_encoder --workdir=RUN --data=DIR
  s2f evaluate --workdir=RUN --data=DIR [--eval_dir=DIR] [--json]
  s2f export --workdir=RUN --export_base=EXPORTS [--model_name=s2f]
  s2f serve --model_base_path=EXPORTS/s2f [--model_name=s2f --port=8500 --rest_api_port=8501]
  s2f predict AUDIO (--server=HOST:PORT | --model_dir=EXPORTS/s2f) --face_out=face.png
  s2f bench input|train|serve ...
  s2f demo [--demo_dir=demo_out]

A flag means the same in every command that has it (e.g. --data is always a prepared dataset
directory: `prepare` writes it, the others read it). Flags live only here; the library takes plain
arguments. Expected failures print one line `s2f COMMAND: message` and no traceback: bad flags,
config values, paths or ports exit with 2; corrupt data, a NaN loss, unreadable audio, a server's
answer or a waveform the model cannot take (S2FErrors) exit with 1. `--verbosity=1` shows the
traceback instead.
The command first re-executes itself under TCMalloc when the machine has it (allocator.py;
S2F_ALLOCATOR=system keeps glibc's malloc), then quiets TensorFlow's start-up (quiet.py).
This module is light to import: TensorFlow loads only once a command runs, after `quiet.install`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from s2f_tf import __version__
from s2f_tf.app import allocator, quiet
from s2f_tf.contract import SPLITS, S2FError

PRESETS = ("paper", "demo", "tiny")  # s2f_tf.configs.PRESETS (kept light here)


class UsageError(S2FError):
    """Bad command line: printed without a traceback, exit status 2."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the example's layout; shows a flag's default where it has a meaningful one."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        shown = not (
            default is None or default is False or default == [] or default is argparse.SUPPRESS
        )
        if shown and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _common(
    parser: argparse.ArgumentParser, config: bool = True, config_default: str = "demo"
) -> None:
    if config:
        parser.add_argument(
            "--config", default=config_default, help="preset: " + ", ".join(PRESETS)
        )
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="SECTION.FIELD=VALUE",
            help="config override (repeatable), e.g. --set=train.batch_size=4",
        )
    parser.add_argument(
        "--verbosity",
        type=int,
        default=0,
        help="0: quiet; 1: also TensorFlow's and Beam's own log lines",
    )


def _command(sub, name: str, summary: str, example: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="example:\n  " + example,
        formatter_class=_Formatter,
        **kwargs,
    )


def _add_data(p, required: bool = True, what: str = "a prepared dataset directory") -> None:
    p.add_argument("--data", required=required, help=what)


def _add_model_name(p) -> None:
    p.add_argument("--model_name", default="s2f", help="the served model's name")


def _add_jit(p) -> None:
    p.add_argument(
        "--jit_compile",
        default="auto",
        choices=["auto", "true", "false"],
        help="XLA-compile the forward/backward pass; auto: on GPUs, off on CPUs (TF's oneDNN "
        "convolutions beat XLA:CPU's)",
    )
    p.add_argument(
        "--cpu_devices",
        type=int,
        default=1,
        help="split the CPU into N logical devices (exercises MirroredStrategy without GPUs)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s2f",
        description="Speech2Face on TensorFlow/Keras: prepare, train, "
        "evaluate, export, serve, predict.",
        formatter_class=_Formatter,
        epilog="`s2f COMMAND --help` lists a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"s2f {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _command(
        sub,
        "describe",
        "print each network's parameter count and input/output shapes as JSON",
        "s2f describe --config=paper",
    )
    _common(p)

    p = _command(
        sub,
        "prepare",
        "prepare a corpus into TFRecord shards with Apache Beam",
        "s2f prepare synthetic --identities=600 --data=demo_data",
    )
    kinds = p.add_subparsers(dest="kind", metavar="SOURCE", required=True)
    sources = {
        "synthetic": (
            "the embedded synthetic corpus (voices and faces that share hidden attributes)",
            "s2f prepare synthetic --identities=600 --clips_per_identity=8 --data=demo_data",
        ),
        "avspeech": (
            "AVSpeech segments from its CSV and the videos you fetched",
            "s2f prepare avspeech --csv=avspeech_train.csv --videos_dir=videos --data=data --config=paper",
        ),
        "folders": (
            "one folder per speaker with audio files and face images (VoxCeleb-style)",
            "s2f prepare folders --root=speakers --meta=vox1_meta.csv --data=data --config=paper",
        ),
    }
    from s2f_tf.app.demo import CLIPS_PER_IDENTITY, IDENTITIES  # light: the demo corpus size

    for kind, (summary, example) in sources.items():
        q = _command(kinds, kind, summary, example)
        _common(q)
        _add_data(q, what="the dataset directory to write (shards, dataset.json, manifest.jsonl)")
        q.add_argument(
            "--image_size",
            type=int,
            default=0,
            help="face crop size; 0: the config's face_encoder.image_size",
        )
        q.add_argument("--items_per_shard", type=int, default=512, help="items per TFRecord shard")
        q.add_argument(
            "--runner",
            default="DirectRunner",
            help="Apache Beam runner (DirectRunner, DataflowRunner, ...)",
        )
        q.add_argument(
            "--beam_arg",
            action="append",
            default=[],
            help="extra Beam pipeline option (repeatable), e.g. --beam_arg=--project=P",
        )
        q.add_argument(
            "--num_workers", type=int, default=2, help="local worker processes (DirectRunner)"
        )
        q.add_argument(
            "--vgg_face_weights", help="VGG-Face Keras HDF5 weights: also store each face's feature"
        )
        if kind == "synthetic":
            q.add_argument(
                "--identities", type=int, default=IDENTITIES, help="synthetic identities"
            )
            q.add_argument(
                "--clips_per_identity",
                type=int,
                default=CLIPS_PER_IDENTITY,
                help="clips per identity",
            )
            q.add_argument("--seed", type=int, default=0, help="random seed of the corpus")
        if kind == "avspeech":
            q.add_argument(
                "--csv",
                required=True,
                help="the AVSpeech CSV (no header: youtube_id,start,end,x,y)",
            )
            q.add_argument(
                "--videos_dir",
                required=True,
                help="folder of the videos you fetched "
                "(<youtube_id>.<ext> or <youtube_id>_<start>_<end>.<ext>)",
            )
            q.add_argument(
                "--csv_split",
                choices=SPLITS,
                help="put every row in this split (default: by a hash of the video id)",
            )
        if kind == "folders":
            q.add_argument(
                "--root",
                required=True,
                help="one folder per speaker with audio files and face images",
            )
            q.add_argument("--meta", help="optional VoxCeleb1/2 meta file (split and gender)")
            q.add_argument(
                "--decoder_target",
                choices=("clip", "most_frontal"),
                default="clip",
                help="the face decoder's target: each clip's own face, or the speaker's most "
                "frontal face among all their images",
            )
        if kind in ("avspeech", "folders"):
            q.add_argument(
                "--min_seconds",
                type=float,
                default=0.0,
                help="shortest usable clip; 0: the source's default",
            )

    p = _command(
        sub,
        "train",
        "train one stage (face_encoder, then face_decoder, then voice_encoder)",
        "s2f train --stage=voice_encoder --workdir=run --data=demo_data --config=demo",
    )
    _common(p)
    p.add_argument(
        "--stage", required=True, choices=["face_encoder", "face_decoder", "voice_encoder"]
    )
    p.add_argument(
        "--workdir",
        required=True,
        help="the run directory (config, checkpoints, weights, TensorBoard)",
    )
    _add_data(p)
    p.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "default", "mirrored", "multi_worker"],
        help="tf.distribute strategy; auto: multi_worker with a TF_CONFIG cluster, mirrored with "
        "several local devices, else default",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
        help="overrides train.precision; auto: bfloat16 where the hardware runs it fast",
    )
    _add_jit(p)
    p.add_argument(
        "--deterministic", action="store_true", help="deterministic ops and input order (slower)"
    )
    p.add_argument(
        "--profile_steps", metavar="START,STOP", help="steps to trace for TensorBoard's profiler"
    )
    p.add_argument(
        "--vgg_face_weights", help="VGG-Face Keras HDF5 weights: the face encoder (skip stage 1)"
    )
    p.add_argument(
        "--skip_corrupt",
        action="store_true",
        help="skip (and log) unreadable records instead of failing",
    )

    p = _command(
        sub,
        "evaluate",
        "quality on held-out speakers -> metrics.json, faces.png, report.html",
        "s2f evaluate --workdir=run --data=demo_data --json",
    )
    _common(p, config=False)
    p.add_argument("--workdir", required=True, help="a trained run directory")
    _add_data(p)
    p.add_argument("--eval_dir", help="where the figures go; default <workdir>/eval")
    p.add_argument("--split", default="test", choices=SPLITS, help="the split to evaluate")
    p.add_argument("--gallery_size", type=int, default=100, help="faces per retrieval gallery")
    p.add_argument("--vgg_face_weights", help="VGG-Face Keras HDF5 weights, if training used them")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")

    p = _command(
        sub,
        "export",
        "write a SavedModel version for TF Serving",
        "s2f export --workdir=run --export_base=exports --model_name=s2f",
    )
    _common(p, config=False)
    p.add_argument("--workdir", required=True, help="a trained run directory")
    p.add_argument(
        "--export_base",
        required=True,
        help="SavedModels go to <export_base>/<model_name>/<version>/",
    )
    _add_model_name(p)
    p.add_argument(
        "--export_version", type=int, default=0, help="version number; 0: one above the newest"
    )

    p = _command(
        sub,
        "serve",
        "development server speaking TF Serving's gRPC and REST APIs, with a web "
        "page on the REST port (http://127.0.0.1:8501/)",
        "s2f serve --model_base_path=exports/s2f --port=8500 --rest_api_port=8501",
    )
    _common(p, config=False)
    p.add_argument(
        "--model_base_path",
        required=True,
        help="<export_base>/<model_name>, holding integer versions",
    )
    _add_model_name(p)
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 disables)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0 disables)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind; 127.0.0.1 unless you mean otherwise"
    )

    p = _command(
        sub,
        "predict",
        "a face per speaker from a recording, through a server or a local SavedModel",
        "s2f predict meeting.wav --model_dir=exports/s2f --face_out=face.png",
    )
    _common(p, config=False)
    p.add_argument(
        "audio", help="any WAV/FLAC/OGG/MP3/M4A file, any rate, channel count and length"
    )
    p.add_argument("--server", help="HOST:PORT of a gRPC server (TF Serving or `s2f serve`)")
    p.add_argument(
        "--model_dir", help="a SavedModel (or its <model_name> dir of versions) to run in-process"
    )
    _add_model_name(p)
    p.add_argument(
        "--face_out",
        required=True,
        help="the face image to write (PNG); with several speakers NAME-1.png, NAME-2.png, ...",
    )
    p.add_argument(
        "--feature_out", help="also write each speaker's combined face feature here (.npy)"
    )
    p.add_argument(
        "--speakers",
        type=int,
        help="how many speakers the recording holds (default: found "
        "by clustering; 1 treats all speech as one voice)",
    )
    p.add_argument(
        "--window_seconds",
        type=float,
        help="window length (default: the export's clip length; "
        "6 s, the paper's, through --server)",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="request deadline in seconds (--server)"
    )

    p = _command(
        sub,
        "bench",
        "measure speed and print figures",
        "s2f bench train --config=paper --batch_size=2",
    )
    kinds = p.add_subparsers(dest="kind", metavar="BENCHMARK", required=True)
    q = _command(
        kinds,
        "input",
        "examples/s of the tf.data input pipeline (int16 PCM, STFT excluded)",
        "s2f bench input --data=demo_data --clip_seconds=6",
    )
    _common(q, config=False)
    _add_data(q)
    q.add_argument("--split", default="train", choices=SPLITS, help="the split to read")
    q.add_argument("--batch_size", type=int, default=64, help="clips per batch")
    q.add_argument("--steps", type=int, default=50, help="measured batches (after warm-up)")
    q.add_argument("--clip_seconds", type=float, default=6.0, help="clip length")
    q = _command(
        kinds,
        "train",
        "the voice-encoder training step, with a PyTorch peer when installed",
        "s2f bench train --config=paper --batch_size=2",
    )
    _common(q)
    q.add_argument("--batch_size", type=int, default=0, help="0: the config's train.batch_size")
    q.add_argument("--steps", type=int, default=10, help="measured steps (after warm-up)")
    _add_jit(q)
    q = _command(
        kinds,
        "serve",
        "p50/p99 and requests/s over gRPC against the SavedModel in-process",
        "s2f bench serve --model_base_path=exports/s2f",
    )
    _common(q, config=False)
    q.add_argument(
        "--model_base_path",
        required=True,
        help="<export_base>/<model_name>, holding integer versions",
    )
    _add_model_name(q)
    q.add_argument("--batch_size", type=int, default=1, help="clips per request")
    for q in kinds.choices.values():
        q.add_argument(
            "--json", action="store_true", help="print one JSON object instead of a table"
        )

    p = _command(
        sub,
        "demo",
        "the whole stack end to end on the synthetic corpus (what `make demo` runs)",
        "s2f demo --demo_dir=demo_out",
    )
    _common(p)
    p.add_argument("--demo_dir", default="demo_out", help="everything the demo writes")
    p.add_argument("--identities", type=int, default=IDENTITIES, help="synthetic identities")
    p.add_argument(
        "--clips_per_identity", type=int, default=CLIPS_PER_IDENTITY, help="clips per identity"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the corpus")
    return parser


# -- commands (each gets the parsed flags and, where it has --config, the resolved config)
def _config(args):
    from s2f_tf import factory
    from s2f_tf.configs import get_config, override

    config = get_config(args.config, args.set)
    if getattr(args, "precision", None):
        config = override(config, "train.precision", args.precision)
    return factory.validate(config)


def _jit(args) -> bool:
    if args.jit_compile == "auto":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return args.jit_compile == "true"


def describe(args) -> None:
    from s2f_tf import factory

    print(json.dumps(factory.describe(_config(args)), indent=2))


def prepare(args) -> None:
    from pipelines.common import FeatureSpec, run_prepare
    from s2f_tf import factory

    config = _config(args)
    image_size = args.image_size or config.face_encoder.image_size
    extra = {"min_seconds": args.min_seconds} if getattr(args, "min_seconds", 0.0) else {}
    if args.kind == "synthetic":
        from pipelines.synthetic import SyntheticSource

        source = SyntheticSource(args.identities, args.clips_per_identity, image_size, args.seed)
        arguments = {
            "identities": args.identities,
            "clips_per_identity": args.clips_per_identity,
            "image_size": image_size,
            "seed": args.seed,
        }
    elif args.kind == "avspeech":
        from pipelines.avspeech import AVSpeechSource

        source = AVSpeechSource(
            args.csv, args.videos_dir, image_size, split=args.csv_split, **extra
        )
        arguments = {
            "csv": os.path.abspath(args.csv),
            "videos_dir": os.path.abspath(args.videos_dir),
            "image_size": image_size,
            "split": args.csv_split,
            **extra,
        }
    else:
        from pipelines.folders import FoldersSource

        source = FoldersSource(
            args.root, image_size, meta_path=args.meta, decoder_target=args.decoder_target, **extra
        )
        arguments = {
            "root": os.path.abspath(args.root),
            "image_size": image_size,
            "meta": args.meta,
            "decoder_target": args.decoder_target,
            **extra,
        }
    features = None
    if args.vgg_face_weights:
        import dataclasses

        kwargs = dataclasses.asdict(config.face_encoder)
        kwargs.update(image_size=image_size, mean=list(kwargs["mean"]))
        features = FeatureSpec(os.path.abspath(args.vgg_face_weights), kwargs)
    run_prepare(
        source,
        args.data,
        items_per_shard=args.items_per_shard,
        runner=args.runner,
        beam_args=args.beam_arg,
        num_workers=args.num_workers,
        arguments=arguments,
        features=features,
        texture_warp=factory.texture_warp(config),
    )


def train(args) -> None:
    from s2f_tf.train.loop import TrainOptions
    from s2f_tf.train.loop import train as train_stage

    profile = None
    if args.profile_steps:
        try:
            start, stop = (int(x) for x in args.profile_steps.split(","))
        except ValueError:
            raise UsageError(
                f"--profile_steps must be START,STOP, got {args.profile_steps!r}"
            ) from None
        if not 0 <= start < stop:
            raise UsageError(f"--profile_steps needs 0 <= START < STOP, got {args.profile_steps!r}")
        profile = (start, stop)
    config = _config(args)
    options = TrainOptions(
        stage=args.stage,
        workdir=args.workdir,
        data_dir=args.data,
        strategy=args.strategy,
        jit_compile=_jit(args),
        deterministic=args.deterministic,
        profile_steps=profile,
        vgg_face_weights=args.vgg_face_weights,
        skip_corrupt=args.skip_corrupt,
    )
    print(json.dumps(train_stage(config, options)))


def evaluate(args) -> None:
    from s2f_tf.evaluate import evaluate as run_evaluate

    metrics = run_evaluate(
        args.workdir,
        args.data,
        args.eval_dir,
        split=args.split,
        gallery_size=args.gallery_size,
        vgg_face_weights=args.vgg_face_weights,
        log=(lambda *_: None) if args.json else print,
    )
    if args.json:
        print(json.dumps(metrics))


def export(args) -> None:
    from s2f_tf.export import export_workdir

    print(
        export_workdir(args.workdir, args.export_base, args.model_name, args.export_version or None)
    )


def serve(args) -> None:
    from serving.server import serve as run_server

    run_server(
        args.model_base_path,
        args.model_name,
        port=args.port,
        rest_api_port=args.rest_api_port,
        host=args.host,
    )


def predict(args) -> None:
    if bool(args.server) == bool(args.model_dir):
        raise UsageError("give exactly one of --server HOST:PORT or --model_dir DIR")
    if not os.path.isfile(args.audio):
        raise FileNotFoundError(
            f"audio file {args.audio!r} "
            + ("is a directory" if os.path.isdir(args.audio) else "does not exist")
        )
    if args.speakers is not None and args.speakers < 1:
        raise UsageError(f"--speakers must be at least 1, got {args.speakers}")
    if args.window_seconds is not None and not args.window_seconds > 0:
        raise UsageError(f"--window_seconds must be positive, got {args.window_seconds}")
    import tensorflow as tf

    for flag, path in (("--face_out", args.face_out), ("--feature_out", args.feature_out)):
        if not path:
            continue
        if tf.io.gfile.isdir(path):
            raise UsageError(
                f"{flag} {path!r} is a directory: give a file name, e.g. {os.path.join(path, 'face.png')}"
            )
        folder = os.path.dirname(path) or "."
        if not tf.io.gfile.isdir(folder):
            raise FileNotFoundError(f"{flag} {path!r}: directory {folder!r} does not exist")
    from s2f_tf import contract
    from s2f_tf.predict import LocalModel, predict_recording

    if args.server:
        from serving.client import GrpcClient

        predictor = GrpcClient(args.server, args.model_name, timeout_seconds=args.timeout)
        info = {
            "clip_samples": 6 * contract.SAMPLE_RATE,
            "min_samples": contract.SAMPLE_RATE,
        }  # the server's export
    else:
        predictor = LocalModel(args.model_dir)
        info = dict(predictor.info)
    if args.window_seconds:
        info["clip_samples"] = int(round(args.window_seconds * contract.SAMPLE_RATE))
        info["min_samples"] = min(int(info.get("min_samples") or 1), info["clip_samples"])
    print(
        json.dumps(
            predict_recording(
                args.audio, args.face_out, predictor, info, args.feature_out, args.speakers
            )
        )
    )


def bench(args) -> None:
    if args.kind == "input":
        from s2f_tf import contract
        from s2f_tf.app.bench import bench_input

        result = bench_input(
            args.data,
            args.split,
            batch_size=args.batch_size,
            clip_samples=int(round(args.clip_seconds * contract.SAMPLE_RATE)),
            steps=args.steps,
        )
    elif args.kind == "serve":
        from s2f_tf.app.bench_serve import bench_serve

        result = bench_serve(args.model_base_path, args.model_name, batch_size=args.batch_size)
    else:
        from s2f_tf.app.bench import bench_train

        config = _config(args)
        result = bench_train(
            config,
            batch_size=args.batch_size or config.train.batch_size,
            steps=args.steps,
            jit_compile=_jit(args),
        )
    result["allocator"] = allocator.loaded()
    print(
        json.dumps(result) if args.json else "\n".join(f"{k:>24}: {v}" for k, v in result.items())
    )


def demo(args) -> None:
    from s2f_tf.app.demo import run_demo

    run_demo(args.demo_dir, _config(args), args.identities, args.clips_per_identity, args.seed)


COMMANDS = {
    "describe": describe,
    "prepare": prepare,
    "train": train,
    "evaluate": evaluate,
    "export": export,
    "serve": serve,
    "predict": predict,
    "bench": bench,
    "demo": demo,
}


def _verbosity(argv: list[str]) -> int:
    """--verbosity read before argparse runs (quiet.install must come before TensorFlow loads)."""
    for i, arg in enumerate(argv):
        value = (
            arg.split("=", 1)[1]
            if arg.startswith("--verbosity=")
            else (argv[i + 1] if arg == "--verbosity" and i + 1 < len(argv) else None)
        )
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with argparse's message on bad flags
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    what = " ".join(x for x in (args.command, getattr(args, "kind", None)) if x)
    try:
        if getattr(args, "cpu_devices", 1) > 1:
            from s2f_tf.train.runtime import configure_cpu_devices

            configure_cpu_devices(args.cpu_devices)
        COMMANDS[args.command](args)
    except (UsageError, ValueError, OSError) as e:  # bad flags, config, paths or ports
        if args.verbosity > 0 and not isinstance(e, UsageError):
            raise  # the traceback, on request
        print(f"s2f {what}: {e}", file=sys.stderr)
        return 2
    except S2FError as e:
        if args.verbosity > 0:
            raise
        print(f"s2f {what}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"s2f {what}: interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    """Console-script entry point."""
    allocator.reexec_with_tcmalloc(sys.argv[1:])
    quiet.install(_verbosity(sys.argv[1:]))
    sys.exit(main())


if __name__ == "__main__":
    run()
