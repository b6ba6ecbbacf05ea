"""The Controller: the outer loop around a stage's Trainer.

restore      the chief's latest checkpoint (model, optimizer, step) and this worker's record of that
             step (`StepRecords`: its input position, (epoch, records of the epoch read), which
             s2f_tf/data/dataset.py resumes from; the step's losses; the precision; the digest); a
             restarted run continues from there, exactly (with --deterministic), and one restarted
             after its last checkpoint writes the result an uninterrupted run would have
loop         calls of train.steps_per_loop (K) steps (trainer.py), each ending on a multiple of K;
             after each call the host reads the losses once and, on multiples of their `*_every`
             (config-checked multiples of K): TensorBoard scalars (means over the logging
             interval), preview images/audio, validation (train/validation.py, chief only: the best
             weights kept and used as the stage's output), a checkpoint with every worker's step
             record (written first; the chief's checkpoint is kept, the last N); the profiler window
             (--profile_steps, rounded to multiples of K) with a step marker per call
stopping     SIGTERM / SIGINT (runtime.StopSignals): the call in flight finishes, a checkpoint and
             its step record are written at that step, and StoppedError says where (exit 143 /
             130); a second signal or train.stop_grace_seconds ends the process at once. Under
             MultiWorkerMirroredStrategy the workers agree after every call (a one-number
             all-reduce), so a signal to any worker stops them all at the same step, each with its
             step record
result       the last checkpoint, result.json (chief), the HParams dashboard's record of the stage
             (its resolved config, final and best figures)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import tempfile
import time

import tensorflow as tf

from s2f_tf.contract import S2FError, StoppedError
from s2f_tf.data.dataset import InputOptions, explain_read_error
from s2f_tf.data.schema import DatasetInfo
from s2f_tf.files import write_atomic
from s2f_tf.progress import Progress
from s2f_tf.train import runtime
from s2f_tf.train.step_records import StepRecords, replica_digests
from s2f_tf.train.trainer import Trainer, inner_optimizer
from s2f_tf.train.validation import Validator
from s2f_tf.workdir import Workdir


class TrainingError(S2FError):
    """A run that cannot go on (NaN/Inf loss, corrupt data): the message says where and why."""


@contextlib.contextmanager
def naming_corrupt_shards(files: list[str]):
    """Turns a tf.data read failure into a TrainingError that names the corrupt shard(s)."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        if isinstance(e, tf.errors.InvalidArgumentError) and "record" not in str(e).lower():
            raise
        raise TrainingError(explain_read_error(e, files)) from None


def _path_digest(path: str) -> str:
    return hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:12]


@dataclasses.dataclass
class Run:
    """What `loop.train` resolved before the Trainer was built: the Controller's inputs."""

    stage: object  # a train.stages.Stage
    config: object  # the resolved Config
    info: DatasetInfo
    options: object  # loop.TrainOptions
    strategy: tf.distribute.Strategy
    precision: str
    layout: Workdir
    records: StepRecords
    latest: str | None  # the chief's latest checkpoint
    record: dict | None  # this worker's record of the step it holds
    num_workers: int
    worker_index: int

    @property
    def chief(self) -> bool:
        return self.worker_index == 0


class Controller:
    def __init__(self, run: Run, trainer: Trainer, log=print):
        self.run, self.trainer, self.log = run, trainer, log
        self.stage, self.config = run.stage, run.config
        self.name, self.total = run.stage.name, run.stage.steps
        self.every = config_every(run.config)
        self.checkpoint = trainer.checkpoint()
        checkpoint_dir = run.layout.checkpoints(self.name)
        self.scratch = None
        if not run.chief:  # every worker saves; only the chief's copy is kept
            self.scratch = checkpoint_dir = tempfile.mkdtemp(prefix="s2f-worker-ckpt-")
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, checkpoint_dir, max_to_keep=run.config.train.keep_checkpoints
        )
        self.position, self.resumed = self._restore()
        # the workers agree on a stop signal after every call (`_stop_signal`)
        self.multi_worker = isinstance(run.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.values: dict = dict(self.resumed.get("losses", {}))  # the last step's
        self.clipped = 0  # steps whose gradient norm was above clip_global_norm
        self.rate = 0.0
        self.validated: dict = {}
        self.interval: dict = {}  # loss term or gauge -> its sum since the last logged step
        self.interval_steps = 0
        self.profiling = False

    # -- restore ----------------------------------------------------------------------------------
    def _restore(self) -> tuple[tuple[int, int], dict]:
        """(the input position to start from, the step record of the checkpoint resumed from)."""
        run, latest = self.run, self.run.latest
        if not latest:
            return (0, 0), {}
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except AssertionError as e:  # the run's model or optimizer is not the checkpoint's
            raise ValueError(
                f"{latest} was written by a run whose {self.name} stage trained other variables "
                f"than this config's ({str(e).splitlines()[0][:160]}): train in a new --workdir, "
                f"or remove {run.layout.checkpoints(self.name)} to start the stage over"
            ) from None
        restored = int(self.trainer.step.numpy())
        self.log(f"[{self.name}] resumed from {latest} at step {restored}")
        record = run.record
        if record is None:
            self.log(f"[{self.name}] no saved input position: the input pipeline starts over")
            return (0, 0), {}
        start = (int(record["epoch"]), int(record["offset"]))
        if record["step"] != restored:
            self.log(
                f"[{self.name}] input position from step {record['step']} (saved model is at {restored})"
            )
            return start, {}
        return start, record

    def input_options(self) -> InputOptions:
        run, train = self.run, self.config.train
        options = InputOptions(
            batch_size=train.batch_size,
            clip_samples=self.config.audio.clip_samples,
            training=True,
            fields=self.stage.fields + ("position",),
            shuffle_buffer=train.shuffle_buffer,
            seed=train.seed + run.worker_index,
            # always in order: it costs no step time (docs/experiments/2026-12-06-demo-run-to-run.md)
            # and leaves the ops as the only difference between two runs of one config
            deterministic=True,
            skip_corrupt=run.options.skip_corrupt,
            start=self.position,
        )
        if not run.options.data_service:
            return options
        # The service's workers each stream the whole split in their own random order (seed
        # None), and the trainers of this run share one job: positions mean nothing there.
        step = int(self.trainer.step.numpy())
        self.log(
            f"[{self.name}] input from the tf.data service at {run.options.data_service}"
            + (f": resumed at step {step} with fresh batches" if step else "")
        )
        return dataclasses.replace(
            options,
            seed=None,
            start=(0, 0),
            service_address=run.options.data_service,
            service_job=f"s2f-{self.name}-{_path_digest(run.options.workdir)}-from-{step}",
        )

    # -- the stage --------------------------------------------------------------------------------
    def train(self) -> dict:
        """Trains the stage to its step count (or finds it there); returns its result."""
        run = self.run
        options = self.input_options()
        data_dir = run.options.data_dir
        iterator = self.trainer.iterator(
            lambda context: self.stage.dataset(data_dir, "train", options, input_context=context),
            run.num_workers,
            run.worker_index,
        )
        writer = (
            tf.summary.create_file_writer(run.layout.tensorboard(self.name))
            if run.chief
            else tf.summary.create_noop_writer()
        )
        local = dataclasses.replace(options, service_address=None, service_job=None)
        preview = self._preview(local) if run.chief and self.stage.summaries is not None else None
        validator = self._validator(local) if run.chief else None
        start = int(self.trainer.step.numpy())
        start_report = (
            self.stage.start_report(preview) if preview is not None and not start else None
        )
        if start_report:
            self.log(f"[{self.name}] at the start: {self.stage.describe_start(start_report)}")
        if start >= self.total:
            self.log(f"[{self.name}] already at step {start} of {self.total}")
        with writer.as_default():
            if run.chief:
                write_hparams(self.config, run, self.trainer)
            self._loop(iterator, start, preview, validator)
            result = self._finish(validator, start_report)
            writer.flush()
        return result

    def _preview(self, options: InputOptions) -> dict:
        info, data_dir = self.run.info, self.run.options.data_dir
        split = "validation" if info.shards.get("validation") else "train"
        preview_options = dataclasses.replace(
            options,
            batch_size=4,
            training=False,
            repeat=True,
            drop_remainder=True,
            fields=tuple(dict.fromkeys(options.fields + self.stage.preview_fields)),
        )
        with naming_corrupt_shards(info.files(data_dir, split)):
            return next(iter(self.stage.dataset(data_dir, split, preview_options)))

    def _validator(self, options: InputOptions) -> Validator:
        info, data_dir = self.run.info, self.run.options.data_dir
        files = info.files(data_dir, "validation") if info.shards.get("validation") else []
        with naming_corrupt_shards(files):
            return Validator(
                self.stage,
                self.config,
                info,
                data_dir,
                options,
                self.log,
                resumed_at=int(self.trainer.step.numpy()),
            )

    def _loop(self, iterator, current: int, preview, validator) -> None:
        run = self.run
        progress = Progress(self.total, self.name, enabled=run.chief and run.options.progress)
        self.last_time, self.last_step = time.time(), current
        with runtime.StopSignals(self.config.train.stop_grace_seconds) as stop:
            self._calls(iterator, current, preview, validator, (progress, stop))
        if self.profiling:
            tf.profiler.experimental.stop()
            self.profiling = False
        progress.close()

    def _calls(self, iterator, current: int, preview, validator, helpers) -> None:
        """Calls of K steps up to the stage's end, or to a stop signal."""
        progress, stop = helpers
        trainer, k = self.trainer, self.config.train.steps_per_loop
        files = self.run.info.files(self.run.options.data_dir, "train")
        while current < self.total:
            n = min(k - current % k, self.total - current)  # each call ends on a multiple of K
            self._profile(current)
            count = tf.constant(n, tf.int64)
            with naming_corrupt_shards(files), self._marker(current):
                out = trainer.steps(iterator, count)
            out = tf.nest.map_structure(lambda t: t.numpy(), out)  # the call's one host read
            current += n
            self._after(current, n, out)
            self._between_calls(current, preview, validator)
            progress.update(
                current, {"loss": self.values["total"], "examples/s": self.rate, **self.validated}
            )
            signum = self._stop_signal(stop)
            if signum and current < self.total:  # (at the end: the stage finishes)
                progress.close()
                self._stop(current, signum)

    def _stop_signal(self, stop) -> int | None:
        """The signal to stop at after this call: this process's; under MultiWorkerMirroredStrategy,
        any worker's (SIGTERM for those that got none), agreed by a one-number all-reduce after
        every call, so that all workers stop at the same step and each writes its step record."""
        if not self.multi_worker:
            return stop.signal
        strategy = self.run.strategy
        mine = tf.constant(float(stop.signal or 0))
        signals = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: mine), axis=None)
        return (stop.signal or signal.SIGTERM) if float(signals) > 0 else None

    def _stop(self, current: int, signum: int) -> None:
        """A stop signal: the checkpoint (and step record) at `current`, then StoppedError."""
        if current % self.every["checkpoint"]:  # (else saved already)
            self._save(current)
        if self.profiling:
            tf.profiler.experimental.stop()
            self.profiling = False
        tf.summary.flush()
        raise StoppedError(
            f"stopped by {signal.Signals(signum).name} at step {current} of {self.total} of the "
            f"{self.name} stage, its checkpoint saved: run the same command again to resume",
            signum,
        )

    def _after(self, current: int, n: int, out: dict) -> None:
        """A call's figures: the last step's losses, the interval's sums; stops on a NaN/Inf loss."""
        self.values = {k: float(v) for k, v in out["losses"].items()}
        self.position = (int(out["position"][0]), int(out["position"][1]))
        for key, value in out["sums"].items():
            self.interval[key] = self.interval.get(key, 0.0) + float(value)
        self.interval_steps += n
        self.clipped += int(round(float(out["sums"].get("clipped", 0.0))))
        total = float(out["sums"]["total"])
        if not math.isfinite(total):
            where = f"at step {current}" if n == 1 else f"in steps {current - n + 1}-{current}"
            raise TrainingError(
                f"[{self.name}] loss is {total if n == 1 else 'not finite'} {where}: stopping "
                f"(last checkpoint: {self.manager.latest_checkpoint or 'none'})"
            )

    def _between_calls(self, current: int, preview, validator) -> None:
        """What falls on `current`: the profiler's stop, summaries, validation, a checkpoint."""
        every, done = self.every, current == self.total
        if self.profiling and current >= self.run.options.profile_steps[1]:
            tf.profiler.experimental.stop()
            self.profiling = False
        if current % every["log"] == 0 or done:
            self._scalars(current)
        if preview is not None and (current % every["image"] == 0 or done):
            self.stage.summaries(preview, current)
        if validator is not None and validator.due(current, self.total):
            entry = validator.run(current)
            if "figure" in entry:
                self.validated = {f"val {entry['figure']}": entry["value"]}
        if current % every["checkpoint"] == 0:
            self._save(current)

    def _scalars(self, current: int) -> None:
        """TensorBoard scalars at `current`: loss terms and the gradient norm as means over the
        steps since the last logged step; rates and counters as they are now."""
        trainer, steps = self.trainer, max(self.interval_steps, 1)
        now = time.time()
        self.rate = (
            (current - self.last_step) * trainer.global_batch / max(now - self.last_time, 1e-9)
        )
        self.last_time, self.last_step = now, current
        means = {k: v / steps for k, v in self.interval.items()}
        self.interval, self.interval_steps = {}, 0
        for key, value in means.items():
            if key in ("global_norm", "clipped"):
                continue
            tf.summary.scalar(
                f"loss/{key}" if key != "accuracy" else "metrics/accuracy", value, step=current
            )
        adam = inner_optimizer(trainer.optimizer)
        lr = adam.learning_rate
        lr = lr(adam.iterations) if callable(lr) else lr
        tf.summary.scalar("learning_rate", float(lr), step=current)
        tf.summary.scalar("examples_per_second", self.rate, step=current)
        if trainer.clip:
            tf.summary.scalar("gradient/global_norm", means["global_norm"], step=current)
            tf.summary.scalar("gradient/clipped_steps", self.clipped, step=current)
        if trainer.loss_scale:
            scale = float(trainer.optimizer.dynamic_scale.numpy())
            tf.summary.scalar("loss_scale", scale, step=current)
            skipped = current - int(adam.iterations.numpy())
            tf.summary.scalar("skipped_steps", skipped, step=current)

    def _profile(self, current: int) -> None:
        """Starts the profiler at the first call that begins at or after --profile_steps' START."""
        window = self.run.options.profile_steps
        if window and self.run.chief and not self.profiling and window[0] <= current < window[1]:
            if current != window[0]:
                self.log(f"[{self.name}] profiling from step {current} (a multiple of K)")
            tf.profiler.experimental.start(self.run.layout.tensorboard(self.name))
            self.profiling = True

    def _marker(self, current: int):
        """A step marker for the profiler's overview (one per call) while it traces."""
        if not self.profiling:
            return contextlib.nullcontext()
        return tf.profiler.experimental.Trace("train", step_num=current, _r=1)

    def _save(self, current: int) -> None:
        trainer = self.trainer
        self.run.records.save(
            current, self.position, self.values, self.run.precision, trainer.variables
        )
        self.manager.save(checkpoint_number=current)

    # -- the result -------------------------------------------------------------------------------
    def _finish(self, validator, start_report) -> dict:
        run, trainer = self.run, self.trainer
        final_step = int(trainer.step.numpy())
        latest = self.manager.latest_checkpoint
        if latest is None or not latest.endswith(f"-{final_step}"):
            self._save(final_step)
        result = {
            "stage": self.name,
            "steps": final_step,
            "losses": self.values,
            "examples_per_second": round(self.rate, 1),
            "replicas": run.strategy.num_replicas_in_sync,
            "precision": run.precision,
            "replica_digests": replica_digests(trainer.variables),
            "worker": run.worker_index,
        }
        if start_report:
            result["start"] = start_report
        if trainer.clip:
            result["clipped_steps"] = self.clipped  # of this run's steps (not a resumed run's)
        if trainer.loss_scale:
            iterations = int(inner_optimizer(trainer.optimizer).iterations.numpy())
            result["skipped_steps"] = final_step - iterations
            result["loss_scale"] = float(trainer.optimizer.dynamic_scale.numpy())
        if run.chief:
            self._chief_result(result, validator, final_step)
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return result

    def _chief_result(self, result: dict, validator, final_step: int) -> None:
        validation = validator.finish(final_step) if validator is not None else None
        if validation is not None:
            result["validation"] = validation
            if "best" in validation:
                best = validation["best"]
                self.log(
                    f"[{self.name}] weights from step {validation['weights_from_step']}: best "
                    f"validation {best['figure']} {best['value']:.3f} (step {best['step']})"
                )
        write_hparams_results(result, final_step)
        result["outputs"] = self.stage.save_outputs()
        write_atomic(self.run.layout.result(self.name), json.dumps(result, indent=2))


def config_every(config) -> dict[str, int]:
    train = config.train
    return {
        "log": train.log_every,
        "image": train.image_every,
        "checkpoint": train.checkpoint_every,
    }


def _flat(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(value, (bool, int, float, str)):
        out[prefix] = value
    elif value is not None:
        out[prefix] = str(value)


def write_hparams(config, run: Run, trainer: Trainer) -> None:
    """The HParams dashboard's session: the stage's resolved config (dotted field names) and how it
    ran (stage, precision, replicas), in the stage's TensorBoard run (the writer in use)."""
    from tensorboard.plugins.hparams import api as hp

    values: dict = {}
    _flat("", config.to_dict(), values)
    values.update(
        {
            "stage": run.stage.name,
            "precision": run.precision,
            "replicas": run.strategy.num_replicas_in_sync,
            "strategy": type(run.strategy).__name__,
        }
    )
    hp.hparams(values, trial_id=f"{run.layout.path}:{run.stage.name}")


def write_hparams_results(result: dict, step: int) -> None:
    """The stage's final and best figures as the HParams dashboard's metrics (final/..., best/...)."""
    for key, value in result["losses"].items():
        tf.summary.scalar(f"final/loss/{key}", value, step=step)
    validation = result.get("validation") or {}
    final = validation.get("final") or {}
    if "figure" in final:
        tf.summary.scalar(f"final/validation/{final['figure']}", final["value"], step=step)
    if "best" in validation:
        best = validation["best"]
        tf.summary.scalar(f"best/{best['figure']}", best["value"], step=step)
