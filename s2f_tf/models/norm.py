"""FusedBatchNormalization: Keras' BatchNormalization computed by TensorFlow's fused kernel.

Keras 3's BatchNormalization on the TensorFlow backend computes moments and normalisation as
separate element-wise ops (cast to float32, mean, subtract, square, mean, ...; the same again for
the gradients). In the paper-size voice-encoder training step those ops took more thread time
than every convolution together (TF profile on the 2-core AMX Xeon). FusedBatchNormV3 (oneDNN on
CPUs, cuDNN on GPUs) does the same maths in one pass per direction.

Same variables, names and maths as keras.layers.BatchNormalization for 4-D NHWC input: the batch
statistics normalise in training (biased variance), the moving averages follow `momentum` with the
biased variance as Keras keeps it, and inference uses the moving averages; `trainable=False` means
inference mode, as in Keras. Any other input (rank, axis, mask) takes Keras' own path.
"""

from __future__ import annotations

import keras
import tensorflow as tf


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
        x = tf.convert_to_tensor(inputs)
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = tf.cast(x, self.compute_dtype)
        gamma, beta = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
            )
            n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
            variance = (
                variance * (n - 1.0) / tf.maximum(n, 1.0)
            )  # the op's is unbiased; Keras keeps biased
            m = self.momentum
            self.moving_mean.assign(
                self.moving_mean * m + tf.cast(mean, self.moving_mean.dtype) * (1.0 - m)
            )
            self.moving_variance.assign(
                self.moving_variance * m + tf.cast(variance, self.moving_variance.dtype) * (1.0 - m)
            )
        else:
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
