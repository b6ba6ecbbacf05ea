"""The `s2f` command's flags: a parser with a sub-command per job (cli.py runs them).

  make_parser(presets)    -> argparse.ArgumentParser; `presets` are the --config choices

One small function per command adds its flags; a flag means the same in every command that has it
(tests/test_cli.py checks), so the shared ones are added by the helpers _common, _add_data,
_add_model_name and _add_jit.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from s2f_tf import __version__
from s2f_tf.contract import SPLITS


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


def _common(parser: argparse.ArgumentParser, presets: Sequence[str] | None = None) -> None:
    """--config and --set when the command reads a config (`presets`: its choices), and --verbosity."""
    if presets is not None:
        parser.add_argument("--config", default="demo", help="preset: " + ", ".join(presets))
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


def make_parser(presets: Sequence[str]) -> argparse.ArgumentParser:
    """The `s2f` parser: a sub-command per job; `presets` name the --config choices."""
    parser = argparse.ArgumentParser(
        prog="s2f",
        description="Speech2Face on TensorFlow/Keras: prepare, train, "
        "evaluate, export, serve, predict.",
        formatter_class=_Formatter,
        epilog="`s2f COMMAND --help` lists a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"s2f {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _describe,
        _prepare,
        _train,
        _data_service,
        _evaluate,
        _export,
        _serve,
        _predict,
        _bench,
        _demo,
    ):
        add(sub, presets)
    return parser


def _describe(sub, presets: Sequence[str]) -> None:
    p = _command(
        sub,
        "describe",
        "print each network's parameter count and input/output shapes as JSON",
        "s2f describe --config=paper",
    )
    _common(p, presets)


def _prepare(sub, presets: Sequence[str]) -> None:
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
    for kind, (summary, example) in sources.items():
        q = _command(kinds, kind, summary, example)
        _common(q, presets)
        _add_prepare_flags(q)
        {
            "synthetic": _add_synthetic_flags,
            "avspeech": _add_avspeech_flags,
            "folders": _add_folders_flags,
        }[kind](q)


def _add_prepare_flags(q) -> None:
    """The flags of every `prepare` source: the output, shards, Beam, features."""
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
        help="Apache Beam runner (DirectRunner, DaskRunner, DataflowRunner, FlinkRunner, ...; BUILD.md)",
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


def _add_synthetic_flags(q) -> None:
    from s2f_tf.app.demo import CLIPS_PER_IDENTITY, IDENTITIES  # light: the demo corpus size

    q.add_argument("--identities", type=int, default=IDENTITIES, help="synthetic identities")
    q.add_argument(
        "--clips_per_identity",
        type=int,
        default=CLIPS_PER_IDENTITY,
        help="clips per identity",
    )
    q.add_argument("--seed", type=int, default=0, help="random seed of the corpus")


def _add_avspeech_flags(q) -> None:
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
    _add_min_seconds(q)


def _add_folders_flags(q) -> None:
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
    _add_min_seconds(q)


def _add_min_seconds(q) -> None:
    q.add_argument(
        "--min_seconds",
        type=float,
        default=0.0,
        help="shortest usable clip; 0: the source's default",
    )


def _add_require_accelerator(p) -> None:
    p.add_argument(
        "--require_accelerator",
        action="store_true",
        help="stop with an error when TensorFlow sees no GPU or TPU (instead of running on the CPU)",
    )


def _train(sub, presets: Sequence[str]) -> None:
    p = _command(
        sub,
        "train",
        "train one stage (face_encoder, then face_decoder, then voice_encoder)",
        "s2f train --stage=voice_encoder --workdir=run --data=demo_data --config=demo",
    )
    _common(p, presets)
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
        "--deterministic",
        action="store_true",
        help="deterministic ops (slower; the input is always read in order): a resumed run "
        "ends bit-identical",
    )
    p.add_argument(
        "--profile_steps",
        metavar="START,STOP",
        help="steps to trace for TensorBoard's profiler (rounded to multiples of train.steps_per_loop)",
    )
    p.add_argument(
        "--profiler_port",
        type=int,
        default=0,
        help="start TensorFlow's profiler server on this port, for TensorBoard's on-demand capture "
        "(it listens on every interface); 0: off",
    )
    _add_require_accelerator(p)
    p.add_argument(
        "--vgg_face_weights", help="VGG-Face Keras HDF5 weights: the face encoder (skip stage 1)"
    )
    p.add_argument(
        "--skip_corrupt",
        action="store_true",
        help="skip (and log) unreadable records instead of failing",
    )
    p.add_argument(
        "--data_service",
        metavar="grpc://HOST:PORT",
        help="read the training input through this tf.data service dispatcher (`s2f data-service`); "
        "a resumed run then reads fresh batches instead of resuming its input position",
    )


def _data_service(sub, presets: Sequence[str]) -> None:
    p = _command(
        sub,
        "data-service",
        "run a tf.data service (a dispatcher and workers) that reads and batches training input "
        "for `s2f train --data_service`",
        "s2f data-service --port=5050 --workers=2",
    )
    _common(p)
    p.add_argument("--port", type=int, default=5050, help="the dispatcher's port (0: a free one)")
    p.add_argument("--workers", type=int, default=2, help="workers to run in this process")
    p.add_argument(
        "--dispatcher",
        metavar="HOST:PORT",
        help="join the workers to this dispatcher instead of starting one (another machine's)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address the workers give the dispatcher (this machine's, as trainers reach it)",
    )


def _evaluate(sub, presets: Sequence[str]) -> None:
    p = _command(
        sub,
        "evaluate",
        "quality on held-out speakers -> metrics.json, faces.png, report.html",
        "s2f evaluate --workdir=run --data=demo_data --json",
    )
    _common(p)
    p.add_argument("--workdir", required=True, help="a trained run directory")
    _add_data(p)
    p.add_argument("--eval_dir", help="where the figures go; default <workdir>/eval")
    p.add_argument("--split", default="test", choices=SPLITS, help="the split to evaluate")
    p.add_argument("--gallery_size", type=int, default=100, help="faces per retrieval gallery")
    p.add_argument(
        "--galleries",
        default="random",
        choices=("random", "blocks"),
        help="random: a gallery per query; blocks: SF2F's fixed blocks of --gallery_size "
        "identities over the first 3 x --gallery_size",
    )
    p.add_argument("--vgg_face_weights", help="VGG-Face Keras HDF5 weights, if training used them")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")


def _export(sub, presets: Sequence[str]) -> None:
    p = _command(
        sub,
        "export",
        "write a SavedModel version for TF Serving",
        "s2f export --workdir=run --export_base=exports --model_name=s2f",
    )
    _common(p)
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


def _serve(sub, presets: Sequence[str]) -> None:
    p = _command(
        sub,
        "serve",
        "development server speaking TF Serving's gRPC and REST APIs, with a web "
        "page on the REST port (http://127.0.0.1:8501/)",
        "s2f serve --model_base_path=exports/s2f --port=8500 --rest_api_port=8501",
    )
    _common(p)
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
    p.add_argument(
        "--enable_batching",
        action="store_true",
        help="merge concurrent requests as TF Serving does (needs --batching_parameters_file)",
    )
    p.add_argument(
        "--batching_parameters_file",
        help="TF Serving's text-format BatchingParameters, e.g. serving/batching.config",
    )


def _predict(sub, presets: Sequence[str]) -> None:
    p = _command(
        sub,
        "predict",
        "a face per speaker from a recording, through a server or a local SavedModel",
        "s2f predict meeting.wav --model_dir=exports/s2f --face_out=face.png",
    )
    _common(p)
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
        help="window length (default: the export's clip length, read from the "
        "model: its info file, or the server's metadata)",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="request deadline in seconds (--server)"
    )


def _bench(sub, presets: Sequence[str]) -> None:
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
    _common(q)
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
    _common(q, presets)
    q.add_argument("--batch_size", type=int, default=0, help="0: the config's train.batch_size")
    q.add_argument("--steps", type=int, default=10, help="measured steps (after warm-up)")
    _add_jit(q)
    _add_require_accelerator(q)
    q = _command(
        kinds,
        "serve",
        "p50/p99 and requests/s over gRPC against the SavedModel in-process",
        "s2f bench serve --model_base_path=exports/s2f",
    )
    _common(q)
    q.add_argument(
        "--model_base_path",
        required=True,
        help="<export_base>/<model_name>, holding integer versions",
    )
    _add_model_name(q)
    q.add_argument("--batch_size", type=int, default=1, help="clips per request")
    q.add_argument(
        "--requests", type=int, default=200, help="requests per mode and concurrency level"
    )
    q.add_argument(
        "--time_limit_seconds",
        type=float,
        default=120.0,
        help="no request is issued after this (a paper-size model needs more than the default)",
    )
    q.add_argument(
        "--batching_parameters_file",
        help="the batching server's TF Serving BatchingParameters (default: serving/batching.config)",
    )
    for q in kinds.choices.values():
        q.add_argument(
            "--json", action="store_true", help="print one JSON object instead of a table"
        )


def _demo(sub, presets: Sequence[str]) -> None:
    p = _command(
        sub,
        "demo",
        "the whole stack end to end on the synthetic corpus (what `make demo` runs)",
        "s2f demo --demo_dir=demo_out",
    )
    _common(p, presets)
    from s2f_tf.app.demo import CLIPS_PER_IDENTITY, IDENTITIES  # light: the demo corpus size

    p.add_argument("--demo_dir", default="demo_out", help="everything the demo writes")
    p.add_argument("--identities", type=int, default=IDENTITIES, help="synthetic identities")
    p.add_argument(
        "--clips_per_identity", type=int, default=CLIPS_PER_IDENTITY, help="clips per identity"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the corpus")
