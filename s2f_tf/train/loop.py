"""The custom distributed training loop shared by all three stages.

strategy.run(per-replica step) -> losses averaged over the GLOBAL batch (tf.nn.compute_average_loss)
  -> gradients (optionally XLA-compiled forward/backward) -> Keras optimizer (all-reduce inside)
input: each worker reads its own shards with a plain tf.data iterator and splits its batch over
  its local replicas (experimental_distribute_values_from_function)
checkpoints: model + optimizer + step every N steps (the chief's copy is kept, the last K), and
  next to it each worker's record of that step (`StepRecords`): its input position, two numbers,
  (epoch, records of the epoch read) (s2f_tf/data/dataset.py says how the pipeline resumes from
  it), the step's losses, the precision policy and the weights' digest; a restarted run continues
  from the latest, exactly (with --deterministic), in the policy it started in, and one restarted
  after its last checkpoint writes the result an uninterrupted run would have;
  under MultiWorkerMirroredStrategy a SIGTERM saves the model through TF's
  PreemptionCheckpointHandler (the input then resumes from the last periodic position)
observability: resolved config in the workdir, TensorBoard scalars/images/audio, profiler window,
  progress bar (step, loss, examples/s, ETA, the latest validation figure), and a stage's
  start_report before its first step (the voice stage: the loss balance) in the log and result.json
optimizer: Adam on the paper's decay, with optional linear ramps: up over a stage's first steps
  (optimizer.warmup_steps), down to zero over its last (optimizer.cooldown_steps); optionally the
  global batch's gradient clipped to a norm (optimizer.clip_global_norm, `clip_global_norm`), its
  norm then in TensorBoard gradient/
validation: every train.validate_every steps the chief evaluates held-out clips (train/validation.py:
  TensorBoard validation/, the best weights kept and used as the stage's output)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from s2f_tf.configs import Config
from s2f_tf.contract import S2FError
from s2f_tf.data.dataset import InputOptions, explain_read_error
from s2f_tf.data.schema import DatasetInfo
from s2f_tf.files import write_atomic
from s2f_tf.progress import Progress
from s2f_tf.train import runtime
from s2f_tf.train.stages import STAGE_CLASSES
from s2f_tf.train.step_records import StepRecords, replica_digests
from s2f_tf.train.validation import Validator
from s2f_tf.workdir import STAGES, Workdir, stored_config, write_config

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
    deterministic: bool = False  # op determinism + ordered input: bit-exact resume
    profile_steps: tuple[int, int] | None = None
    vgg_face_weights: str | None = None
    skip_corrupt: bool = False
    progress: bool = True


class TrainingError(S2FError):
    """A run that cannot go on (NaN/Inf loss, corrupt data): the message says where and why."""


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


class Ramps(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule` scaled by a linear ramp up over the first `warmup` steps, min(1, (step + 1) / warmup),
    and down to zero over the last `cooldown` of a stage's `total` steps, clip((total - step) / cooldown,
    0, 1); 0 turns either off.
    Warm-up: Adam's first updates move every weight by about the learning rate at once (m / sqrt(v)
    is +-1), which at paper size threw the voice stage's loss from 1.4e3 to 8e3 in its first steps.
    Cool-down: a stage's weights settle instead of ending on a full-size step."""

    def __init__(self, schedule, warmup: int = 0, cooldown: int = 0, total: int = 0):
        self.schedule, self.warmup, self.cooldown, self.total = (
            schedule,
            int(warmup),
            int(cooldown),
            int(total),
        )

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = self.schedule(step)
        if self.warmup:
            rate = rate * tf.minimum(1.0, (step + 1.0) / float(self.warmup))
        if self.cooldown:
            rate = rate * tf.clip_by_value(
                (float(self.total) - step) / float(self.cooldown), 0.0, 1.0
            )
        return rate

    def get_config(self):
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "warmup": self.warmup,
            "cooldown": self.cooldown,
            "total": self.total,
        }


def make_optimizer(config: Config, learning_rate: float, precision: str, total_steps: int = 0):
    """The paper's Adam with its decay; optimizer.warmup_steps ramps the start, and
    optimizer.cooldown_steps the end of a stage of `total_steps` steps."""
    o = config.optimizer
    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=o.decay_steps, decay_rate=o.decay_rate, staircase=o.staircase
    )
    cooldown = o.cooldown_steps if total_steps else 0
    if o.warmup_steps or cooldown:
        schedule = Ramps(schedule, o.warmup_steps, cooldown, total_steps)
    optimizer = keras.optimizers.Adam(schedule, beta_1=o.beta_1, beta_2=o.beta_2, epsilon=o.epsilon)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def clip_global_norm(grads: list, clip_norm) -> tuple[list, tf.Tensor]:
    """In a replica: this replica's gradients -> (its share of the global batch's gradient clipped to
    global norm `clip_norm`, the global norm before clipping).

    The global gradient is the sum of the replicas' gradients (each loss is averaged over the global
    batch), and Keras' optimizer sums the replicas' gradients itself when it applies them, so each
    replica hands it 1/R of the clipped sum. Keras' own `global_clipnorm` clips each replica's part
    before that sum, which is not the global batch's norm under tf.distribute."""
    ctx = tf.distribute.get_replica_context()
    present = [i for i, g in enumerate(grads) if g is not None]
    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
    clipped, norm = tf.clip_by_global_norm(total, clip_norm)
    out = list(grads)
    for i, g in zip(present, clipped):
        out[i] = g / float(ctx.num_replicas_in_sync)
    return out, norm


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


@contextlib.contextmanager
def _naming_corrupt_shards(files: list[str]):
    """Turns a tf.data read failure into a TrainingError that names the corrupt shard(s)."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        if isinstance(e, tf.errors.InvalidArgumentError) and "record" not in str(e).lower():
            raise
        raise TrainingError(explain_read_error(e, files)) from None


def train(config: Config, options: TrainOptions, log=print) -> dict:
    """Runs (or resumes) one stage to its configured step count; returns its final figures. The
    stage's mixed-precision policy holds while it trains; the previous global policy is restored."""
    previous = keras.mixed_precision.global_policy()
    try:
        return _train(config, options, log)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _train(config: Config, options: TrainOptions, log) -> dict:
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
    chief = runtime.is_chief(strategy)
    stage = STAGE_CLASSES[options.stage](
        config, info, options.workdir, options.vgg_face_weights, log=log
    )
    tf.io.gfile.makedirs(layout.stage_dir(stage.name))
    if chief:
        write_config(config, options.workdir)
    total_steps = stage.steps
    global_batch = config.train.batch_size
    if global_batch % strategy.num_replicas_in_sync:
        raise ValueError(
            f"train.batch_size {global_batch} is not divisible by the "
            f"{strategy.num_replicas_in_sync} replicas"
        )

    with strategy.scope():
        stage.build()
        variables = stage.trainable_variables()
        optimizer = make_optimizer(config, stage.learning_rate, precision, total_steps=stage.steps)
        optimizer.build(variables)
        step = tf.Variable(
            0,
            dtype=tf.int64,
            trainable=False,
            name="step",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    local_replicas = strategy.num_replicas_in_sync // num_workers
    per_replica = global_batch // strategy.num_replicas_in_sync
    checkpoint = tf.train.Checkpoint(step=step, optimizer=optimizer, **stage.checkpoint_items())
    checkpoint_dir = layout.checkpoints(stage.name)
    scratch = None
    if not chief:  # every worker saves; only the chief's copy is kept
        scratch = tempfile.mkdtemp(prefix="s2f-worker-ckpt-")
        checkpoint_dir = scratch
    manager = tf.train.CheckpointManager(
        checkpoint, checkpoint_dir, max_to_keep=config.train.keep_checkpoints
    )
    start = (0, 0)
    resumed: dict = {}  # the step record of the checkpoint resumed from
    if latest:
        try:
            checkpoint.restore(latest).assert_existing_objects_matched()
        except AssertionError as e:  # the run's model or optimizer is not the checkpoint's
            raise ValueError(
                f"{latest} was written by a run whose {stage.name} stage trained other variables "
                f"than this config's ({str(e).splitlines()[0][:160]}): train in a new --workdir, "
                f"or remove {layout.checkpoints(stage.name)} to start the stage over"
            ) from None
        restored = int(step.numpy())
        log(f"[{stage.name}] resumed from {latest} at step {restored}")
        if record is not None:
            start = (int(record["epoch"]), int(record["offset"]))
            if record["step"] != restored:
                log(
                    f"[{stage.name}] input position from step {record['step']} (saved model is at {restored})"
                )
            else:
                resumed = record
        else:
            log(f"[{stage.name}] no saved input position: the input pipeline starts over")
    input_options = InputOptions(
        batch_size=global_batch,
        clip_samples=config.audio.clip_samples,
        training=True,
        fields=stage.fields + ("position",),
        shuffle_buffer=config.train.shuffle_buffer,
        seed=config.train.seed + worker_index,
        deterministic=options.deterministic,
        skip_corrupt=options.skip_corrupt,
        start=start,
    )
    worker_context = tf.distribute.InputContext(
        num_input_pipelines=num_workers,
        input_pipeline_id=worker_index,
        num_replicas_in_sync=num_workers,
    )
    with tf.device("/cpu:0"):
        iterator = iter(
            stage.dataset(options.data_dir, "train", input_options, input_context=worker_context)
        )  # per-worker batches [global / workers, ...]
    position = start
    preemption = None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        preemption = tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, manager
        )

    loss_scale = precision == "mixed_float16"

    def loss_and_grads(batch):
        with tf.GradientTape() as tape:
            terms = stage.compute_loss(batch, training=True)
            means = {
                k: tf.nn.compute_average_loss(v, global_batch_size=global_batch)
                for k, v in terms.items()
            }
            scaled = optimizer.scale_loss(means["total"]) if loss_scale else means["total"]
        return means, tape.gradient(scaled, variables)

    compiled = (
        tf.function(loss_and_grads, jit_compile=True) if options.jit_compile else loss_and_grads
    )
    clip = float(config.optimizer.clip_global_norm)

    def replica_step(batch):
        means, grads = compiled(batch)
        gauges = {}
        if clip:
            scale = (
                optimizer.dynamic_scale if loss_scale else 1.0
            )  # the gradients of the scaled loss
            grads, norm = clip_global_norm(grads, clip * scale)
            gauges["global_norm"] = norm / scale
        optimizer.apply(grads, variables)
        return means, gauges

    def split_for_replicas(batch):
        def value_fn(ctx):  # this worker's batch -> this replica's slice
            i = ctx.replica_id_in_sync_group % local_replicas
            return {k: v[i * per_replica : (i + 1) * per_replica] for k, v in batch.items()}

        return strategy.experimental_distribute_values_from_function(value_fn)

    @tf.function
    def train_step(it):
        batch = next(it)
        last = batch.pop("position")[-1]  # (epoch, index) of this worker's last record
        per_replica, gauges = strategy.run(replica_step, args=(split_for_replicas(batch),))
        step.assign_add(1)
        out = {
            k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()
        }
        same = {
            k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in gauges.items()
        }
        return out, same, last

    writer = (
        tf.summary.create_file_writer(layout.tensorboard(stage.name))
        if chief
        else tf.summary.create_noop_writer()
    )
    preview = None
    files = info.files(options.data_dir, "train")
    if chief and stage.summaries is not None:
        preview_split = "validation" if info.shards.get("validation") else "train"
        preview_options = dataclasses.replace(
            input_options,
            batch_size=4,
            training=False,
            repeat=True,
            drop_remainder=True,
            fields=tuple(dict.fromkeys(input_options.fields + stage.preview_fields)),
        )
        with _naming_corrupt_shards(info.files(options.data_dir, preview_split)):
            preview = next(iter(stage.dataset(options.data_dir, preview_split, preview_options)))

    validator = None
    if chief:
        with _naming_corrupt_shards(
            info.files(options.data_dir, "validation") if info.shards.get("validation") else []
        ):
            validator = Validator(
                stage,
                config,
                info,
                options.data_dir,
                input_options,
                log,
                resumed_at=int(step.numpy()),
            )
    validated: dict = {}
    start_step = int(step.numpy())
    start_report = stage.start_report(preview) if preview is not None and start_step == 0 else None
    if start_report:
        log(f"[{stage.name}] at the start: {stage.describe_start(start_report)}")
    if start_step >= total_steps:
        log(f"[{stage.name}] already at step {start_step} of {total_steps}")
    progress = Progress(total_steps, stage.name, enabled=chief and options.progress)
    profile = options.profile_steps
    profiling = False
    last_time, last_step = time.time(), start_step
    rate = 0.0
    values: dict = dict(
        resumed.get("losses", {})
    )  # the last step's (a run resumed at its end has no other)
    clipped = 0  # steps whose gradient norm was above clip_global_norm
    learning_rate = _inner(optimizer).learning_rate
    with writer.as_default():
        while int(step.numpy()) < total_steps:
            current = int(step.numpy())
            if profile and current == profile[0] and chief:
                tf.profiler.experimental.start(layout.tensorboard(stage.name))
                profiling = True
            with _naming_corrupt_shards(files):
                out, gauges, last = (
                    preemption.run(train_step, iterator) if preemption else train_step(iterator)
                )
            position = (int(last[0]), int(last[1]) + 1)
            current = int(step.numpy())
            values = {k: float(v) for k, v in out.items()}
            norm = float(gauges["global_norm"]) if clip else 0.0
            clipped += norm > clip
            if not math.isfinite(values["total"]):
                raise TrainingError(
                    f"[{stage.name}] loss is {values['total']} at step {current}: stopping "
                    f"(last checkpoint: {manager.latest_checkpoint or 'none'})"
                )
            if profiling and current >= profile[1]:
                tf.profiler.experimental.stop()
                profiling = False
            if current % config.train.log_every == 0 or current == total_steps:
                now = time.time()
                rate = (current - last_step) * global_batch / max(now - last_time, 1e-9)
                last_time, last_step = now, current
                for k, v in values.items():
                    tf.summary.scalar(
                        f"loss/{k}" if k != "accuracy" else "metrics/accuracy", v, step=current
                    )
                lr = (
                    learning_rate(_inner(optimizer).iterations)
                    if callable(learning_rate)
                    else learning_rate
                )
                tf.summary.scalar("learning_rate", float(lr), step=current)
                tf.summary.scalar("examples_per_second", rate, step=current)
                if clip:
                    tf.summary.scalar("gradient/global_norm", norm, step=current)
                    tf.summary.scalar("gradient/clipped_steps", clipped, step=current)
                if loss_scale:
                    tf.summary.scalar(
                        "loss_scale", float(optimizer.dynamic_scale.numpy()), step=current
                    )
                    tf.summary.scalar(
                        "skipped_steps",
                        current - int(_inner(optimizer).iterations.numpy()),
                        step=current,
                    )
            if preview is not None and (
                current % config.train.image_every == 0 or current == total_steps
            ):
                stage.summaries(preview, current)
            if validator is not None and validator.due(current, total_steps):
                entry = validator.run(current)
                if "figure" in entry:
                    validated = {f"val {entry['figure']}": entry["value"]}
            if current % config.train.checkpoint_every == 0:
                records.save(current, position, values, precision, variables)
                manager.save(checkpoint_number=current)
            progress.update(current, {"loss": values["total"], "examples/s": rate, **validated})
        if profiling:
            tf.profiler.experimental.stop()
        writer.flush()
    progress.close()

    final_step = int(step.numpy())
    if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(
        f"-{final_step}"
    ):
        records.save(final_step, position, values, precision, variables)
        manager.save(checkpoint_number=final_step)
    result = {
        "stage": stage.name,
        "steps": final_step,
        "losses": values,
        "examples_per_second": round(rate, 1),
        "replicas": strategy.num_replicas_in_sync,
        "precision": precision,
        "replica_digests": replica_digests(variables),
        "worker": worker_index,
    }
    if start_report:
        result["start"] = start_report
    if clip:
        result["clipped_steps"] = clipped  # of this run's steps (not counting a resumed run's)
    if loss_scale:
        result["skipped_steps"] = final_step - int(_inner(optimizer).iterations.numpy())
        result["loss_scale"] = float(optimizer.dynamic_scale.numpy())
    if chief:
        validation = validator.finish(final_step) if validator is not None else None
        if validation is not None:
            result["validation"] = validation
            if "best" in validation:
                best = validation["best"]
                log(
                    f"[{stage.name}] weights from step {validation['weights_from_step']}: best validation "
                    f"{best['figure']} {best['value']:.3f} (step {best['step']})"
                )
        result["outputs"] = stage.save_outputs()
        write_atomic(layout.result(stage.name), json.dumps(result, indent=2))
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


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
