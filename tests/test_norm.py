"""FusedBatchNormalization (s2f_tf/models/norm.py) against keras.layers.BatchNormalization: the same
outputs, moving averages, gradients and variables, in float32 and mixed_bfloat16; synchronized on 2
logical CPU replicas against one replica holding the whole batch."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from s2f_tf.models.norm import FusedBatchNormalization


# 5 channels: in mixed_bfloat16 the kernel runs in float32 (norm.py's _kernel_input); 16: in bfloat16
@pytest.mark.parametrize("channels", [5, 16])
@pytest.mark.parametrize("precision, atol", [("float32", 1e-4), ("mixed_bfloat16", 2e-2)])
def test_fused_batch_norm_is_keras_batch_norm(policy, precision, atol, channels):
    policy(precision)
    x = tf.random.stateless_normal([4, 9, 7, channels], seed=(1, 2)) * 3.0 + 1.0
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name="bn")
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-3, name="bn")
    for layer in (keras_bn, fused):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, channels))
        layer.beta.assign(np.linspace(-1.0, 1.0, channels))
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


def test_half_precision_reaches_the_kernel_in_float32_unless_its_channels_fill_blocks():
    """TF's fused kernel in bfloat16 is 10-20x slower than float32 at 8, 12 or 24 channels (norm.py):
    those go through it in float32, multiples of 16 stay in half precision."""
    from s2f_tf.models.norm import _kernel_input

    for channels, dtype in [
        (8, tf.float32),
        (24, tf.float32),
        (16, tf.bfloat16),
        (64, tf.bfloat16),
    ]:
        x = tf.zeros([1, 2, 2, channels], tf.bfloat16)
        assert _kernel_input(x, tf.bfloat16).dtype == dtype, channels
    assert _kernel_input(tf.zeros([1, 2, 2, 8], tf.float16), tf.float16).dtype == tf.float32
    assert _kernel_input(tf.zeros([1, 2, 2, 8]), tf.float32).dtype == tf.float32
    assert _kernel_input(tf.zeros([1, 2, 2, 16], tf.int32), tf.bfloat16).dtype == tf.bfloat16


# Runs in its own process: the CPU is split into 2 logical devices before TensorFlow initialises.
_SYNC_SCRIPT = r"""
import json, sys
import numpy as np, tensorflow as tf
from s2f_tf.train.runtime import configure_cpu_devices
configure_cpu_devices(2)
from s2f_tf.models.norm import FusedBatchNormalization

synchronized = sys.argv[1] == "true"
x = (tf.random.stateless_normal([8, 6, 5, 3], seed=(1, 2)) * 3.0
     + tf.constant([1.0, -2.0, 0.5]) * tf.reshape(tf.range(8, dtype=tf.float32), [8, 1, 1, 1]))
upstream = tf.random.stateless_normal(x.shape, seed=(3, 4))  # not constant per channel

def make(synchronized):
    layer = FusedBatchNormalization(momentum=0.5, epsilon=1e-3, synchronized=synchronized)
    layer.build(x.shape)
    layer.gamma.assign(np.linspace(0.5, 2.0, 3))
    layer.beta.assign(np.linspace(-1.0, 1.0, 3))
    return layer

def forward_backward(layer, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * upstream)
    dx, dgamma, dbeta = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return y, dx, dgamma, dbeta

strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
with strategy.scope():
    layer = make(synchronized)

@tf.function
def two_replicas():
    def replica():
        i = tf.distribute.get_replica_context().replica_id_in_sync_group
        half = x.shape[0] // 2
        return forward_backward(layer, x[i * half:(i + 1) * half], upstream[i * half:(i + 1) * half])
    y, dx, dgamma, dbeta = strategy.run(replica)
    return (strategy.gather(y, 0), strategy.gather(dx, 0),
            strategy.reduce("SUM", dgamma, axis=None), strategy.reduce("SUM", dbeta, axis=None))

whole = make(synchronized)  # one replica: the fused kernel on the whole batch
got = [t.numpy().tolist() for t in two_replicas()] + [
    layer.moving_mean.numpy().tolist(), layer.moving_variance.numpy().tolist()]
want = [t.numpy().tolist() for t in tf.function(forward_backward)(whole, x, upstream)] + [
    whole.moving_mean.numpy().tolist(), whole.moving_variance.numpy().tolist()]
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "got": got, "want": want}))
"""

_SYNC_NAMES = [
    "outputs",
    "input gradient",
    "gamma gradient",
    "beta gradient",
    "moving mean",
    "moving variance",
]


def _two_replicas_against_one(synchronized: bool) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _SYNC_SCRIPT, "true" if synchronized else "false"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    return out


@pytest.mark.slow
def test_synchronized_batch_norm_on_two_replicas_is_the_whole_batch():
    """Half of a batch on each of 2 logical CPU replicas, synchronized: the same outputs, input
    gradients, gamma/beta gradients (summed over replicas) and moving statistics as one replica with
    the whole batch through the fused kernel."""
    out = _two_replicas_against_one(synchronized=True)
    for name, got, want in zip(_SYNC_NAMES, out["got"], out["want"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_unsynchronized_batch_norm_on_two_replicas_is_not():
    """The same run without synchronized: each replica normalises with its own half's statistics, so
    the outputs and the moving variance differ from the whole batch's (the test above can fail)."""
    out = _two_replicas_against_one(synchronized=False)
    got, want = dict(zip(_SYNC_NAMES, out["got"])), dict(zip(_SYNC_NAMES, out["want"]))
    for name in ("outputs", "moving variance"):
        assert not np.allclose(got[name], want[name], rtol=1e-3, atol=1e-3), name
