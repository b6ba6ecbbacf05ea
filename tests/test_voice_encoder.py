"""Voice encoder: Table 1 geometry, any length, config round trip, mixed precision, errors."""

import numpy as np
import pytest
import tensorflow as tf

from s2f_tf.models.voice_encoder import VoiceEncoder, frequency_bins_out, min_frames, output_length


def _tiny(**kw):
    args = dict(width=1 / 16, fc_units=16, feature_dim=8)
    args.update(kw)
    return VoiceEncoder(**args)


def test_paper_geometry_numbers():
    # docs/SPEC.md: 6 s (598 frames) with valid padding -> 1 x 57 x 512 before the FC layers
    assert output_length(598, 4, "valid") == 6  # conv9 output time, then averaged to 1
    assert frequency_bins_out(257, 4, "valid") == 57
    assert min_frames(4, "valid") == 259
    assert output_length(min_frames(4, "valid") - 1, 4, "valid") < 1


def test_paper_layer_shapes_at_width_1_16():
    # Same geometry as the paper net, thin channels, to keep the test fast.
    m = _tiny(padding="valid")
    x = np.random.RandomState(0).randn(1, 598, 257, 2).astype(np.float32)
    y = m(x)
    assert y.shape == (1, 8) and y.dtype == tf.float32
    assert m.fc10.kernel.shape[0] == 57 * 32  # 57 bins x (512 / 16) channels


def test_any_length_and_minimum():
    m = _tiny(padding="valid")
    for frames in (259, 300, 598, 1000):
        assert m(np.zeros((2, frames, 257, 2), np.float32)).shape == (2, 8)
    with pytest.raises(ValueError, match="needs at least 259"):
        m(np.zeros((1, 258, 257, 2), np.float32))
    same = _tiny(padding="same")
    assert same(np.zeros((1, 98, 257, 2), np.float32)).shape == (1, 8)


def test_variable_length_in_tf_function():
    m = _tiny(padding="same")
    f = tf.function(
        lambda s: m(s), input_signature=[tf.TensorSpec([None, None, 257, 2], tf.float32)]
    )
    for frames in (64, 98):
        assert f(tf.zeros([3, frames, 257, 2])).shape == (3, 8)


def test_get_config_round_trip_and_training_step():
    m = _tiny(padding="same")
    clone = VoiceEncoder.from_config(m.get_config())
    assert clone.get_config() == m.get_config()
    x = np.random.RandomState(1).randn(4, 98, 257, 2).astype(np.float32)
    target = np.random.RandomState(2).randn(4, 8).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(m(x, training=True) - target))
    grads = tape.gradient(loss, m.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert any(np.abs(g.numpy()).sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_output_float32(policy, name):
    policy(name)
    m = _tiny(padding="same")
    y = m(np.random.RandomState(0).randn(2, 98, 257, 2).astype(np.float32), training=True)
    assert y.dtype == tf.float32 and np.all(np.isfinite(y.numpy()))
    assert m.convs[0].compute_dtype == name.split("_")[1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="9 entries"):
        VoiceEncoder(channels=(1, 2, 3))
    with pytest.raises(ValueError, match="padding"):
        VoiceEncoder(padding="causal")
    with pytest.raises(ValueError, match=r"\[batch, frames, bins, 2\]"):
        _tiny()(np.zeros((1, 598, 257), np.float32))


def test_factory_passes_sync_batch_norm_to_every_batch_norm_layer():
    """train.sync_batch_norm reaches every batch-norm layer of the voice and face encoders, survives
    get_config, and the paper preset turns it on."""
    from s2f_tf import factory
    from s2f_tf.configs import get_config

    assert (
        get_config("paper").train.sync_batch_norm and not get_config("tiny").train.sync_batch_norm
    )
    for value in (True, False):
        config = get_config(
            "tiny", [f"train.sync_batch_norm={value}", "face_encoder.batchnorm=true"]
        )
        voice, face = factory.build_voice_encoder(config), factory.build_face_encoder(config)
        norms = voice.norms + face.norm_layers
        assert norms and all(n.synchronized is value for n in norms)
        clone = type(voice).from_config(voice.get_config())
        assert all(n.synchronized is value for n in clone.norms)
