"""FusedBatchNormalization (s2f_tf/models/norm.py) against keras.layers.BatchNormalization: the same
outputs, moving averages, gradients and variables, in float32 and mixed_bfloat16."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from s2f_tf.models.norm import FusedBatchNormalization


@pytest.mark.parametrize("precision, atol", [("float32", 1e-4), ("mixed_bfloat16", 2e-2)])
def test_fused_batch_norm_is_keras_batch_norm(policy, precision, atol):
    policy(precision)
    x = tf.random.stateless_normal([4, 9, 7, 5], seed=(1, 2)) * 3.0 + 1.0
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name="bn")
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-3, name="bn")
    for layer in (keras_bn, fused):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, 5))
        layer.beta.assign(np.linspace(-1.0, 1.0, 5))
    assert [w.path for w in keras_bn.weights] == [
        w.path for w in fused.weights
    ]  # weights files interchange
    x = tf.cast(x, keras_bn.compute_dtype)
    upstream = tf.random.stateless_normal(
        x.shape, seed=(3, 4)
    )  # a gradient that is not constant per channel
    results = []
    for layer in (keras_bn, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append(
            [y, *grads, layer.moving_mean, layer.moving_variance, layer(x, training=False)]
        )
        assert y.dtype == x.dtype
    for a, b in zip(*results):
        np.testing.assert_allclose(
            tf.cast(a, tf.float32).numpy(), tf.cast(b, tf.float32).numpy(), atol=atol, rtol=atol
        )
    frozen = FusedBatchNormalization(name="bn")
    frozen.build(x.shape)
    frozen.trainable = False  # Keras: a frozen layer runs in inference mode
    before = frozen.moving_mean.numpy().copy()
    frozen(x, training=True)
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), before)
