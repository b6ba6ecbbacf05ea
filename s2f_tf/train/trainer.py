"""The Trainer: a stage's train step under the distribution strategy.

  build         the stage's models, Adam (optimizer.*: the paper's decay, warm-up and cool-down ramps;
                FusedAdam: TensorFlow's fused update kernel) and the step counter, under
                strategy.scope()
  iterator      per-replica input: strategy.distribute_datasets_from_function over the stage's
                dataset, each worker reading its own shards in batches of global / replicas,
                prefetched onto the replicas' devices (not when a field is a string)
  steps(it, n)  n training steps in ONE tf.function call (a tf.range loop over the iterator):
                strategy.run(per-replica step) -> losses averaged over the GLOBAL batch
                (tf.nn.compute_average_loss) -> gradients (optionally XLA-compiled forward and
                backward) -> optionally clipped to the global batch's norm -> Keras optimizer
                (all-reduce inside); returns the last step's losses, the sums over the n steps and
                the input position after them, so the host reads them once per call
The Controller (controller.py) decides when to call it and what to do between calls.
"""

from __future__ import annotations

import keras
import tensorflow as tf


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


class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam (same variables, same checkpoint), each dense variable updated by TensorFlow's fused
    Adam kernel (`ResourceApplyAdam`: one pass over the variable, its two moments and the gradient)
    instead of Keras' ten or so element-wise ops, each a pass over the variable. The same update up to
    float rounding (within 4e-8 of Keras' after 17 steps of a 119.5 M-parameter variable); at paper
    size the update of fc10 alone took 3.4x less CPU time. Sparse gradients and amsgrad go to Keras'
    own update. Under tf.distribute each update runs inside `extended.update`, where `.handle` is the
    variable's own copy on the device being updated."""

    def update_step(self, gradient, variable, learning_rate):
        if isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), step),
            lr=tf.cast(learning_rate, dtype),
            beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def make_optimizer(config, learning_rate: float, precision: str, total_steps: int = 0):
    """The paper's Adam with its decay; optimizer.warmup_steps ramps the start, and
    optimizer.cooldown_steps the end of a stage of `total_steps` steps."""
    o = config.optimizer
    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=o.decay_steps, decay_rate=o.decay_rate, staircase=o.staircase
    )
    cooldown = o.cooldown_steps if total_steps else 0
    if o.warmup_steps or cooldown:
        schedule = Ramps(schedule, o.warmup_steps, cooldown, total_steps)
    optimizer = FusedAdam(schedule, beta_1=o.beta_1, beta_2=o.beta_2, epsilon=o.epsilon)
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


def inner_optimizer(optimizer):
    """The Adam inside a LossScaleOptimizer (or the optimizer itself)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


class Trainer:
    """A stage's models, optimizer and step counter under `strategy`, and its compiled steps."""

    def __init__(self, stage, config, strategy, precision: str, jit_compile: bool):
        self.stage, self.strategy = stage, strategy
        self.global_batch = config.train.batch_size
        self.loss_scale = precision == "mixed_float16"
        self.clip = float(config.optimizer.clip_global_norm)
        with strategy.scope():
            stage.build()
            self.variables = stage.trainable_variables()
            self.optimizer = make_optimizer(
                config, stage.learning_rate, precision, total_steps=stage.steps
            )
            self.optimizer.build(self.variables)
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self._forward_backward = (
            tf.function(self._loss_and_grads, jit_compile=True)
            if jit_compile
            else self._loss_and_grads
        )
        self.steps = tf.function(self._steps)

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(
            step=self.step, optimizer=self.optimizer, **self.stage.checkpoint_items()
        )

    def iterator(self, make_dataset, num_workers: int, worker_index: int):
        """`make_dataset(input_context)` -> this worker's per-replica batches; an iterator of
        per-replica values, prefetched onto the devices where every field can go there."""
        context = tf.distribute.InputContext(
            num_input_pipelines=num_workers,
            input_pipeline_id=worker_index,
            num_replicas_in_sync=self.strategy.num_replicas_in_sync,
        )
        with tf.device("/cpu:0"):
            dataset = make_dataset(context)  # [global / replicas, ...] per element
        on_device = all(s.dtype != tf.string for s in tf.nest.flatten(dataset.element_spec))
        options = tf.distribute.InputOptions(experimental_fetch_to_device=on_device)
        # The strategy calls the function once per worker, with this worker's `context`.
        distributed = self.strategy.distribute_datasets_from_function(lambda _: dataset, options)
        return iter(distributed)

    def _loss_and_grads(self, batch):
        with tf.GradientTape() as tape:
            terms = self.stage.compute_loss(batch, training=True)
            means = {
                k: tf.nn.compute_average_loss(v, global_batch_size=self.global_batch)
                for k, v in terms.items()
            }
            total = means["total"]
            scaled = self.optimizer.scale_loss(total) if self.loss_scale else total
        return means, tape.gradient(scaled, self.variables)

    def _replica_step(self, batch):
        means, grads = self._forward_backward(batch)
        gauges = {}
        if self.clip:
            # the gradients are of the scaled loss
            scale = self.optimizer.dynamic_scale if self.loss_scale else 1.0
            grads, norm = clip_global_norm(grads, self.clip * scale)
            gauges["global_norm"] = norm / scale
            gauges["clipped"] = tf.cast(norm / scale > self.clip, tf.float32)
        self.optimizer.apply(grads, self.variables)
        return means, gauges

    def _one_step(self, iterator):
        batch = dict(next(iterator))
        # (epoch, index) of the last record of this worker's last replica's batch: the replicas
        # take consecutive batches, so the next step starts after it.
        position = self.strategy.experimental_local_results(batch.pop("position"))[-1][-1]
        losses, gauges = self.strategy.run(self._replica_step, args=(batch,))
        self.step.assign_add(1)
        losses = {
            k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in losses.items()
        }
        gauges = {
            k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in gauges.items()
        }
        return losses, gauges, position

    def _steps(self, iterator, n):
        """`n` (an int64 tensor >= 1) steps -> {"losses": the last step's, "sums": {loss term or
        gauge: its sum over the n steps}, "position": int64 [2], the input position after them}."""
        losses, gauges, position = self._one_step(iterator)
        sums = {**losses, **gauges}
        for _ in tf.range(n - 1):
            losses, gauges, position = self._one_step(iterator)
            sums = {k: sums[k] + v for k, v in {**losses, **gauges}.items()}
        return {"losses": losses, "sums": sums, "position": position + [0, 1]}
