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
directory: `prepare` writes it, the others read it). Flags live only here (parser.py); the library
takes plain arguments. Expected failures print one line `s2f COMMAND: message` and no traceback: bad
flags, config values, paths or ports exit with 2; corrupt data, a NaN loss, unreadable audio, a server's
answer or a waveform the model cannot take (S2FErrors) exit with 1. `--verbosity=1` shows the
traceback instead.
The command first re-executes itself under TCMalloc when the machine has it (allocator.py;
S2F_ALLOCATOR=system keeps glibc's malloc), then quiets TensorFlow's start-up (quiet.py).
This module is light to import: TensorFlow loads only once a command runs, after `quiet.install`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from s2f_tf.app import allocator, quiet
from s2f_tf.app.parser import make_parser
from s2f_tf.configs import PRESETS  # light: dataclasses, no TensorFlow
from s2f_tf.contract import S2FError, StorageError


class UsageError(S2FError):
    """Bad command line: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The `s2f` parser (its flags: parser.py), --config naming PRESETS."""
    return make_parser(PRESETS)


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
    from pipelines import runners, storage
    from pipelines.common import FeatureSpec, run_prepare
    from s2f_tf import factory
    from s2f_tf.app import extras

    if runners.full_name(args.runner) == runners.DASK:  # a flag's extra: checked here
        missing = extras.missing_extras(extras.EXTRAS["dask"])
        if missing:
            raise extras.MissingExtraError(missing)
    storage.configure(args.beam_arg)  # the sources read their inputs before the pipeline runs
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
            "csv": storage.absolute(args.csv),
            "videos_dir": storage.absolute(args.videos_dir),
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
            "root": storage.absolute(args.root),
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
        features = FeatureSpec(storage.absolute(args.vgg_face_weights), kwargs)
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
    if args.require_accelerator:
        from s2f_tf.train.runtime import require_accelerator

        require_accelerator()
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
        profiler_port=args.profiler_port,
        data_service=_data_service_address(args),
    )
    print(json.dumps(train_stage(config, options)))


def _data_service_address(args) -> str:
    if not args.data_service:
        return ""
    from s2f_tf.data.service import address

    if args.deterministic:
        raise UsageError(
            "--deterministic reads the input in a fixed order that a resumed run continues; a "
            "tf.data service's stream is shared and unordered: use one or the other"
        )
    return address(args.data_service)


def data_service(args) -> None:
    from s2f_tf.data.service import run as run_service

    run_service(args.port, args.workers, args.dispatcher or "", args.host)
    # The servers are stopped (or given up on). Their threads can still hold up the interpreter's
    # own teardown (one test run in about twenty never exited), so leave without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
        galleries=args.galleries,
    )
    if args.json:
        print(json.dumps(metrics))


def export(args) -> None:
    from s2f_tf.export import export_workdir

    print(
        export_workdir(args.workdir, args.export_base, args.model_name, args.export_version or None)
    )


def serve(args) -> None:
    from serving.batching import read_batching_parameters
    from serving.server import serve as run_server

    if args.batching_parameters_file and not args.enable_batching:
        raise UsageError("--batching_parameters_file needs --enable_batching")
    batching = None
    if args.enable_batching:
        if not args.batching_parameters_file:
            raise UsageError(
                "--enable_batching needs --batching_parameters_file (e.g. serving/batching.config)"
            )
        batching = read_batching_parameters(args.batching_parameters_file)
    run_server(
        args.model_base_path,
        args.model_name,
        port=args.port,
        rest_api_port=args.rest_api_port,
        host=args.host,
        batching=batching,
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
        info = dict(predictor.model_info())  # the served export's, from its metadata
    else:
        predictor = LocalModel(args.model_dir)
        info = dict(predictor.info)
    if args.window_seconds:
        if args.server:
            predictor.fit = False  # windows of the asked length go as they are (all of one length)
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

        result = bench_serve(
            args.model_base_path,
            args.model_name,
            batch_size=args.batch_size,
            requests=args.requests,
            time_limit_seconds=args.time_limit_seconds,
            batching_parameters_file=args.batching_parameters_file,
        )
    else:
        from s2f_tf.app.bench import bench_train

        config = _config(args)
        if args.require_accelerator:
            from s2f_tf.train.runtime import require_accelerator

            require_accelerator()
        result = bench_train(
            config,
            batch_size=args.batch_size or config.train.batch_size,
            steps=args.steps,
            jit_compile=_jit(args),
        )
    result["allocator"] = allocator.loaded()
    if args.json:
        print(json.dumps(result))
    elif args.kind == "serve":
        from s2f_tf.app.bench_serve import as_text

        print(as_text(result))
    else:
        print("\n".join(f"{k:>24}: {v}" for k, v in result.items()))


def demo(args) -> None:
    from s2f_tf.app.demo import run_demo

    run_demo(args.demo_dir, _config(args), args.identities, args.clips_per_identity, args.seed)


COMMANDS = {
    "describe": describe,
    "prepare": prepare,
    "train": train,
    "data-service": data_service,
    "evaluate": evaluate,
    "export": export,
    "serve": serve,
    "predict": predict,
    "bench": bench,
    "demo": demo,
}


# What a storage fault leaves behind and how to go on, per command (files.storage_fault names the fault).
AFTER_STORAGE_FAULT = {
    "prepare": "finished shards are kept, no partial file is left; free space and rerun the same "
    "command to continue",
    "train": "the last whole checkpoint is kept; free space and rerun the same command to resume",
    "evaluate": "no partial file is left; free space and rerun",
    "export": "no version was written; free space and rerun",
    "predict": "no partial file is left; free space and rerun",
    "demo": "finished steps are kept; free space and rerun to continue",
}


@contextlib.contextmanager
def _storage_faults(command: str):
    """A full disk, a quota, a read-only or vanished output location, however it is raised (an
    OSError, TensorFlow's SaveV2 or gfile errors, Beam's wrapped worker failures) -> StorageError
    (printed as one line, exit 1) saying where, what was kept and how to continue."""
    from s2f_tf.files import storage_fault

    try:
        yield
    except Exception as e:
        fault = storage_fault(e)
        if fault is None:
            raise
        after = AFTER_STORAGE_FAULT.get(command, "free space and rerun")
        raise StorageError(f"{fault} ({after})") from e


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
        from s2f_tf.app import extras

        extras.require(what)  # a missing extra: one line naming its pip install, exit 1
        if getattr(args, "cpu_devices", 1) > 1:
            from s2f_tf.train.runtime import configure_cpu_devices

            configure_cpu_devices(args.cpu_devices)
        with _storage_faults(args.command):  # a full disk and the like: one line, exit 1
            COMMANDS[args.command](args)
    except (UsageError, ValueError, OSError) as e:  # bad flags, config, paths or ports
        if args.verbosity > 0 and not isinstance(e, UsageError):
            raise  # the traceback, on request
        print(f"s2f {what}: {e}", file=sys.stderr)
        return 2
    except S2FError as e:
        if args.verbosity > 0 and not hasattr(e, "exit_status"):
            raise
        print(f"s2f {what}: {e}", file=sys.stderr)
        return getattr(e, "exit_status", 1)  # a training run stopped by a signal: 128 + it
    except ModuleNotFoundError as e:  # an extra's module that require() did not foresee
        missing = extras.for_import_error(e)
        if missing is None or args.verbosity > 0:
            raise
        print(f"s2f {what}: {missing}", file=sys.stderr)
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
