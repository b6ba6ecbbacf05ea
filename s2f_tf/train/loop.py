"""Training one stage: `train(config, options)`, shared by all three stages. Its parts:

the Stage (stages.py)       the Task: what a stage builds, reads, computes as its loss, validates
                            on and writes (face_stages.py, voice_stage.py: STAGE_CLASSES)
the Trainer (trainer.py)    the stage's models and optimizer under the tf.distribute strategy,
                            per-replica input on the devices, and the compiled train step,
                            train.steps_per_loop (K) steps per tf.function call
the Controller              restore, the calls of K steps, summaries (means over the logging
(controller.py)             interval), validation cadence (validation.py), checkpoints with their
                            step records (step_records.py), the profiler window, HParams, result
this module                 the config fitted to the data and to the workdir's earlier stages,
                            determinism, strategy, precision (runtime.py), logged with the devices,
                            then Trainer and Controller
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from s2f_tf.configs import Config
from s2f_tf.data.schema import DatasetInfo
from s2f_tf.train import runtime
from s2f_tf.train.controller import Controller, Run, TrainingError
from s2f_tf.train.face_stages import FaceDecoderStage, FaceEncoderStage
from s2f_tf.train.step_records import StepRecords
from s2f_tf.train.trainer import Trainer
from s2f_tf.train.voice_stage import VoiceEncoderStage
from s2f_tf.workdir import STAGES, Workdir, stored_config, write_config

__all__ = ["TrainOptions", "TrainingError", "resolve_config", "train"]

STAGE_CLASSES = {cls.name: cls for cls in (FaceEncoderStage, FaceDecoderStage, VoiceEncoderStage)}

# The step variable's key in a checkpoint (tf.train.Checkpoint(step=...)).
STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
# Config sections that define the networks: a workdir's stages must agree on them.
MODEL_SECTIONS = ("audio", "voice_encoder", "face_encoder", "face_decoder")


@dataclasses.dataclass
class TrainOptions:
    stage: str
    workdir: str
    data_dir: str
    strategy: str = "auto"
    jit_compile: bool = True
    deterministic: bool = False  # op determinism (the input is always ordered): bit-exact resume
    profile_steps: tuple[int, int] | None = None
    vgg_face_weights: str | None = None
    skip_corrupt: bool = False
    progress: bool = True
    profiler_port: int = 0  # 0: no profiler server
    data_service: str = ""  # grpc://HOST:PORT of a tf.data service dispatcher ("": read here)


def resolve_config(config: Config, info: DatasetInfo, options: TrainOptions) -> Config:
    """Fits the config to the data and to the workdir's earlier stages; writes config.json."""
    if not options.vgg_face_weights:
        config = dataclasses.replace(
            config,
            face_encoder=dataclasses.replace(
                config.face_encoder, num_identities=max(info.num_speakers, 1)
            ),
        )
    if info.image_size and info.image_size != config.face_encoder.image_size:
        raise ValueError(
            f"dataset faces are {info.image_size}px, config face_encoder.image_size is "
            f"{config.face_encoder.image_size}: use --set=face_encoder.image_size={info.image_size} "
            "or re-prepare with --image_size"
        )
    if info.num_landmarks and info.num_landmarks != config.face_decoder.num_landmarks:
        raise ValueError(
            f"dataset has {info.num_landmarks} landmarks per face, config face_decoder.num_landmarks "
            f"is {config.face_decoder.num_landmarks}: pass "
            f"--set=face_decoder.num_landmarks={info.num_landmarks}"
        )
    stored = stored_config(options.workdir)
    if stored is not None:
        for section in MODEL_SECTIONS:
            if getattr(stored, section) != getattr(config, section):
                raise ValueError(
                    f"{Workdir(options.workdir).config_path} was written with a different {section} "
                    "config than this run's; use the same --config/--set for every stage, or a new --workdir"
                )
    return config


def train(config: Config, options: TrainOptions, log=print) -> dict:
    """Runs (or resumes) one stage to its configured step count; returns its final figures. The
    stage's mixed-precision policy holds while it trains; the previous global policy is restored."""
    previous = keras.mixed_precision.global_policy()
    try:
        return _train(config, options, log)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(config: Config, options: TrainOptions, log) -> dict:
    run = _prepare(config, options, log)
    stage = run.stage
    tf.io.gfile.makedirs(run.layout.stage_dir(stage.name))
    if run.chief:
        write_config(run.config, options.workdir)
    trainer = Trainer(stage, run.config, run.strategy, run.precision, options.jit_compile)
    return Controller(run, trainer, log).train()


def _prepare(config: Config, options: TrainOptions, log) -> Run:
    """The config fitted to the data, the strategy, the latest checkpoint and its step record, the
    precision (logged with the devices) and the stage (not built yet)."""
    if options.stage not in STAGES:
        raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {options.stage!r}")
    info = DatasetInfo.read(options.data_dir)  # a wrong data path fails here, first
    info.files(options.data_dir, "train")
    config = resolve_config(config, info, options)
    runtime.set_determinism(config.train.seed, options.deterministic)
    strategy = runtime.make_strategy(options.strategy)  # first: MultiWorker needs a fresh context
    num_workers, worker_index = runtime.worker_info(strategy)
    layout = Workdir(options.workdir)
    records = StepRecords(
        layout.input_positions(options.stage, worker_index), config.train.keep_checkpoints
    )
    latest = tf.train.latest_checkpoint(layout.checkpoints(options.stage))  # the chief's, for all
    # The record of the step the checkpoint holds (read from the checkpoint itself): its policy is
    # needed before the optimizer is built, its input position after the restore.
    record = (
        records.latest(at_most=int(tf.train.load_variable(latest, STEP_KEY))) if latest else None
    )
    setting = getattr(config.train, f"{options.stage}_precision") or config.train.precision
    precision, why = _precision(setting, record)
    runtime.set_precision(precision)
    log(f"[{options.stage}] precision {precision} ({why})")
    log(f"[{options.stage}] {runtime.describe_devices(strategy)}")
    if config.train.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"train.batch_size {config.train.batch_size} is not divisible by the "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    if options.profiler_port:
        runtime.start_profiler_server(options.profiler_port)
        log(
            f"[{options.stage}] profiler server on port {options.profiler_port} (TensorBoard: capture)"
        )
    stage = STAGE_CLASSES[options.stage](
        config, info, options.workdir, options.vgg_face_weights, log=log
    )
    return Run(
        stage,
        config,
        info,
        options,
        strategy,
        precision,
        layout,
        records,
        latest,
        record,
        num_workers,
        worker_index,
    )


def _precision(setting: str, record: dict | None) -> tuple[str, str]:
    """The policy a stage trains with: `setting`, resolved (runtime.resolve_precision); "auto" on a
    resumed stage keeps the one its checkpoint trained in, whatever this machine's probe says now (a
    probe near its threshold, or another machine, would otherwise change the numbers mid-run)."""
    trained_in = (record or {}).get("precision")
    if setting == "auto" and trained_in in runtime.POLICIES:
        return trained_in, f"auto: the policy the checkpoint at step {record['step']} trained in"
    precision, why = runtime.resolve_precision(setting)  # (the CPU probe runs ops)
    if trained_in and trained_in != precision:
        why += f"; the checkpoint at step {record['step']} trained in {trained_in}"
    return precision, why
