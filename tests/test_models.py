"""Face decoder, the Speech2Face composition, the factory, every preset, and `s2f describe`."""

import dataclasses
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from s2f_tf import factory, losses
from s2f_tf.configs import PRESETS, get_config
from s2f_tf.models.face_decoder import FaceDecoder
from s2f_tf.models.speech2face import Speech2Face


def _decoder(**kw):
    args = dict(
        image_size=16,
        bottleneck=8,
        num_landmarks=5,
        landmark_hidden=(8,),
        texture_start_size=4,
        texture_base_channels=8,
        texture_min_channels=4,
    )
    args.update(kw)
    return FaceDecoder(**args)


def test_decoder_shapes_and_initial_identity_warp():
    d = _decoder()
    out = d(np.random.RandomState(0).randn(3, 6).astype(np.float32))
    assert out["bottleneck"].shape == (3, 8) and out["landmarks"].shape == (3, 5, 2)
    assert out["texture"].shape == (3, 16, 16, 3) and out["image"].shape == (3, 16, 16, 3)
    assert all(v.dtype == tf.float32 for v in out.values())
    # offsets start at zero: landmarks == mean layout, so the warp is the identity
    np.testing.assert_allclose(
        out["landmarks"], np.broadcast_to(d.mean_landmarks.numpy(), (3, 5, 2)), atol=1e-6
    )
    np.testing.assert_allclose(out["image"], out["texture"], atol=1e-4)
    assert float(tf.reduce_min(out["image"])) >= 0.0 and float(tf.reduce_max(out["image"])) <= 1.0


def test_decoder_mean_landmarks_and_errors():
    d = _decoder()
    mean = np.random.RandomState(1).uniform(0.2, 0.8, (5, 2)).astype(np.float32)
    d.set_mean_landmarks(mean)
    out = d(np.zeros((1, 6), np.float32))
    np.testing.assert_allclose(out["landmarks"][0], mean, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[5, 2\]"):
        d.set_mean_landmarks(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="power of two"):
        _decoder(image_size=24, texture_start_size=5)
    with pytest.raises(ValueError, match=r"feature \[batch, dim\]"):
        d(np.zeros((1, 2, 6), np.float32))


def test_decoder_normalized_input_reads_the_direction_only():
    feature = np.random.RandomState(5).rand(3, 6).astype(np.float32)
    d = _decoder(normalize_input=True)
    np.testing.assert_allclose(d(feature)["image"], d(feature * 0.4)["image"], atol=1e-5)
    assert FaceDecoder.from_config(d.get_config()).normalize_input
    plain = _decoder()
    f = tf.constant(feature)
    assert np.abs(plain.bottleneck_features(f) - plain.bottleneck_features(f * 0.4)).max() > 1e-3


@pytest.mark.parametrize("kw", [{}, {"upsample": "resize_conv", "warp_interpolation": "bicubic"}])
def test_decoder_config_round_trip_and_training_step(kw):
    d = _decoder(**kw)
    clone = FaceDecoder.from_config(d.get_config())
    assert clone.get_config() == d.get_config()
    feature = np.random.RandomState(2).randn(4, 6).astype(np.float32)
    target = np.random.RandomState(3).rand(4, 16, 16, 3).astype(np.float32)
    lmk = np.random.RandomState(4).uniform(0.3, 0.7, (4, 5, 2)).astype(np.float32)
    opt = keras.optimizers.Adam(1e-2)
    first = None
    for _ in range(5):
        with tf.GradientTape() as tape:
            out = d(feature, training=True)
            terms = losses.face_decoder_loss(
                target, out["texture"], lmk, out["landmarks"], feature, feature
            )  # feature term constant here
            loss = tf.reduce_mean(terms["total"])
        grads = tape.gradient(loss, d.trainable_variables)
        assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
        opt.apply_gradients(zip(grads, d.trainable_variables))
        first = float(loss) if first is None else first
    assert float(loss) < first


def test_critic_shapes_and_the_adversarial_terms_reach_one_player_each():
    """The decoder stage trains both players with one optimizer on one loss: the critic's term must
    reach only the critic, the decoder's only the decoded faces (FaceDecoderStage._adversarial)."""
    from s2f_tf.train.face_stages import FaceDecoderStage

    config = get_config("tiny")
    critic = factory.build_critic(config)
    size = config.face_encoder.image_size
    rng = np.random.RandomState(6)
    scores = critic(rng.rand(2, size, size, 3).astype(np.float32))
    assert scores.shape == (2, size // 8, size // 8) and scores.dtype == tf.float32
    clone = type(critic).from_config(critic.get_config())
    assert clone.get_config() == critic.get_config()
    holder = type("Holder", (), {"critic": critic})()
    real = tf.constant(rng.rand(3, size, size, 3).astype(np.float32))
    decoded = tf.Variable(rng.rand(3, size, size, 3).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        terms = FaceDecoderStage._adversarial(holder, real, decoded)
    assert terms["critic"].shape == terms["adversarial"].shape == (3,)
    np.testing.assert_allclose(
        terms["adversarial"], -tf.reduce_mean(critic(decoded), axis=[1, 2]), rtol=1e-5
    )
    to_critic = tape.gradient(terms["adversarial"], critic.trainable_variables)
    assert all(g is None for g in to_critic)
    assert tape.gradient(terms["critic"], decoded) is None
    assert tape.gradient(terms["adversarial"], decoded) is not None
    assert all(g is not None for g in tape.gradient(terms["critic"], critic.trainable_variables))
    with pytest.raises(ValueError, match="channels"):
        factory.build_critic(
            dataclasses.replace(config, loss=dataclasses.replace(config.loss, critic_channels=0))
        )


@pytest.mark.parametrize("name", ["mixed_float16", "mixed_bfloat16"])
def test_speech2face_under_mixed_precision(policy, name):
    policy(name)
    config = get_config("tiny")
    model = factory.build_speech2face(config)
    wave = (np.random.RandomState(0).randn(2, config.audio.clip_samples) * 0.1).astype(np.float32)
    out = model(wave, training=True)
    assert {k: v.dtype for k, v in out.items()} == {k: tf.float32 for k in out}
    assert all(np.all(np.isfinite(v.numpy())) for v in out.values())
    assert model.front_end.compute_dtype == "float32"
    assert model.voice_encoder.convs[0].compute_dtype == name.split("_")[1]
    # the paper loss stays float32 on low-precision inputs
    fe = factory.build_face_encoder(config)
    d = model.face_decoder
    v_f = fe(np.zeros((2, 32, 32, 3), np.float32))["feature"]
    terms = losses.speech2face_loss(
        d.bottleneck_features(v_f),
        d.bottleneck_features(out["face_feature"]),
        v_f,
        out["face_feature"],
        fe.logits_from_feature(v_f),
        fe.logits_from_feature(out["face_feature"]),
    )
    assert all(t.dtype == tf.float32 and np.all(np.isfinite(t.numpy())) for t in terms.values())


def test_speech2face_save_and_reload(tmp_path):
    config = get_config("tiny")
    model = factory.build_speech2face(config)
    wave = (np.random.RandomState(0).randn(2, 12000) * 0.1).astype(np.float32)
    before = model(wave)
    path = str(tmp_path / "s2f.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    assert isinstance(again, Speech2Face)
    after = again(wave)
    for k in before:
        np.testing.assert_allclose(after[k], before[k], atol=1e-5)


@pytest.mark.parametrize("name", [p for p in PRESETS if p != "paper"])
def test_preset_builds_and_steps(name):
    """Every shipped CPU-size preset: build all networks, one forward pass and one training step."""
    config = get_config(name)
    s2f = factory.build_speech2face(config)
    fe = factory.build_face_encoder(config)
    batch = 2
    wave = (np.random.RandomState(0).randn(batch, config.audio.clip_samples) * 0.1).astype(
        np.float32
    )
    size = config.face_encoder.image_size
    faces = np.random.RandomState(1).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    teacher = fe(faces)
    assert teacher["feature"].shape == (batch, config.feature_dim)
    variables = s2f.front_end.trainable_variables + s2f.voice_encoder.trainable_variables
    with tf.GradientTape() as tape:
        out = s2f(wave, training=True)
        d = s2f.face_decoder
        terms = losses.speech2face_loss(
            d.bottleneck_features(teacher["feature"]),
            d.bottleneck_features(out["face_feature"]),
            teacher["feature"],
            out["face_feature"],
            teacher["logits"],
            fe.logits_from_feature(out["face_feature"]),
        )
        loss = tf.reduce_mean(terms["total"])
    grads = tape.gradient(loss, variables)
    assert np.isfinite(float(loss)) and all(g is not None for g in grads)
    assert out["face_image"].shape == (batch, size, size, 3)


def _s2f(*args):
    return subprocess.run(
        [sys.executable, "-m", "s2f_tf.app.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_describe_paper_batch_1():
    """The paper preset: every network built at full size and run at batch 1."""
    r = _s2f("describe", "--config=paper")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["spectrogram"]["shape"] == [598, 257, 2]
    assert info["networks"]["voice_encoder"]["output"] == [None, 4096]
    assert info["networks"]["voice_encoder"]["input"] == [None, 598, 257, 2]
    assert info["networks"]["face_encoder"]["outputs"] == {
        "feature": [None, 4096],
        "logits": [None, 2622],
    }
    assert info["networks"]["face_decoder"]["outputs"]["image"] == [None, 224, 224, 3]
    assert info["networks"]["voice_encoder"]["params"] > 100_000_000
    # forward GFLOPs counted from the graph = VGG-16's by hand (3x3 convs and the three FC layers;
    # the graph also counts bias adds and ReLUs, under 0.1 %)
    blocks = [(64, 224, 2), (128, 112, 2), (256, 56, 3), (512, 28, 3), (512, 14, 3)]
    flops, cin = 0, 3
    for cout, size, n in blocks:
        for _ in range(n):
            flops += 2 * 9 * cin * cout * size * size
            cin = cout
    flops += 2 * (7 * 7 * 512 * 4096 + 4096 * 4096 + 4096 * 2622)
    assert abs(info["networks"]["face_encoder"]["forward_gflops"] * 1e9 / flops - 1) < 0.002
    assert (
        info["networks"]["voice_encoder"]["forward_gflops"]
        > info["networks"]["face_encoder"]["forward_gflops"]
    )


@pytest.mark.slow
def test_cli_errors():
    r = _s2f("describe", "--config=tiny", "--set=train.batch_size=x")
    assert r.returncode == 2 and "expected int" in r.stderr
    r = _s2f("frobnicate")
    assert r.returncode == 2 and "invalid choice: 'frobnicate'" in r.stderr
    r = _s2f("describe", "--config=nope")
    assert r.returncode == 2 and "unknown config" in r.stderr
