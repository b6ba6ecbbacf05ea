"""FusedBatchNormalization: Keras' BatchNormalization computed by TensorFlow's fused kernel, or
across replicas when `synchronized=True`.

Keras 3's BatchNormalization on the TensorFlow backend computes moments and normalisation as
separate element-wise ops (cast to float32, mean, subtract, square, mean, ...; the same again for
the gradients). In the paper-size voice-encoder training step those ops took more thread time
than every convolution together (TF profile on the 2-core AMX Xeon). FusedBatchNormV3 (oneDNN on
CPUs, cuDNN on GPUs) does the same maths in one pass per direction.

Same variables, names and maths as keras.layers.BatchNormalization for 4-D NHWC input: the batch
statistics normalise in training (biased variance), the moving averages follow `momentum` with the
biased variance as Keras keeps it, and inference uses the moving averages; `trainable=False` means
inference mode, as in Keras. Any other input (rank, axis, mask) takes Keras' own path.

Synchronized (`synchronized=True`, training, more than one replica in sync): the statistics are
those of the global batch. Each replica sums x and x^2 per channel in float32 and counts its
positions, one all-reduce adds the three across replicas (Keras' own synchronized path does the
same sums in three all-reduces), and mean = sum / n, variance = sum(x^2) / n - mean^2 (biased, as
Keras keeps it). The gradient flows through the all-reduce (tf.distribute all-reduces it back), so
the gradients are those of one replica holding the whole batch. With one replica, outside
training, or without `synchronized`, the fused kernel runs as above.

Half-precision input (mixed_bfloat16, mixed_float16) with a channel count that is not a multiple of
16 goes through the kernel in float32 (`_kernel_input`): TF's fused kernel in bfloat16 is fast
only when the channels fill whole vector blocks. On the 2-core AMX Xeon, forward and backward on a
32 x 99 x 129 x C batch took 187 ms in bfloat16 against 8 ms in float32 at C = 8, 203 against 15
at 12, 151 against 24 at 24 (half the frames), while 16, 32, 48, 64 and 128 channels ran as fast
as float32 or faster. The demo's voice encoder at 1/8 width has two 8-channel blocks; its bfloat16
training step took three times its float32 step before this. The output is cast back to the
layer's compute dtype either way.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# channels per vector block of the fused kernel's fast half-precision path (see the docstring)
_HALF_CHANNEL_BLOCK = 16


def _replicas_to_sync():
    """The replica context when more than one replica trains in sync, else None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def global_moments(x: tf.Tensor, context) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-channel mean and biased variance of `x` ([B, H, W, C], float32) over every replica's
    batch: one all-reduce of [sum x, sum x^2, count] ([2C + 1])."""
    local = tf.concat(
        [
            tf.reduce_sum(x, axis=[0, 1, 2]),  # [C]
            tf.reduce_sum(tf.square(x), axis=[0, 1, 2]),  # [C]
            tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)[None],  # [1]
        ],
        axis=0,
    )
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)  # [2C + 1]
    sums, squares, n = tf.split(total, [x.shape[-1], x.shape[-1], 1])
    n = tf.maximum(n, 1.0)
    mean = sums / n
    return mean, tf.maximum(squares / n - tf.square(mean), 0.0)


@keras.saving.register_keras_serializable(package="s2f")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        if (
            mask is not None
            or len(inputs.shape) != 4
            or self.axis not in (-1, 3)
            or not self.center
            or not self.scale
            or keras.backend.backend() != "tensorflow"
        ):
            return super().call(inputs, training=training, mask=mask)
        x = _kernel_input(tf.convert_to_tensor(inputs), self.compute_dtype)
        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        if not (training and self.trainable):
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )
            return tf.cast(y, self.compute_dtype)
        context = _replicas_to_sync() if self.synchronized else None
        if context is not None:
            x32 = tf.cast(x, tf.float32)
            mean, variance = global_moments(x32, context)  # [C], [C]
            scale = gamma * tf.math.rsqrt(variance + self.epsilon)  # [C]
            y = x32 * scale + (beta - mean * scale)
        else:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)  # the op's is unbiased
        self._update_moving_averages(mean, variance)
        return tf.cast(y, self.compute_dtype)

    def _update_moving_averages(self, mean: tf.Tensor, variance: tf.Tensor) -> None:
        """Keras' moving averages: moving = moving * momentum + batch * (1 - momentum)."""
        m = self.momentum
        self.moving_mean.assign(
            self.moving_mean * m + tf.cast(mean, self.moving_mean.dtype) * (1.0 - m)
        )
        self.moving_variance.assign(
            self.moving_variance * m + tf.cast(variance, self.moving_variance.dtype) * (1.0 - m)
        )


def _kernel_input(x: tf.Tensor, compute_dtype) -> tf.Tensor:
    """`x` in the dtype the fused kernel runs it fastest in: half precision only when the channels
    fill whole blocks, else float32 (the module docstring says why); other dtypes as compute_dtype."""
    if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
        x = tf.cast(x, compute_dtype)
    channels = x.shape[-1]
    if x.dtype != tf.float32 and channels is not None and channels % _HALF_CHANNEL_BLOCK:
        x = tf.cast(x, tf.float32)
    return x
