"""Presets resolve, overrides parse by type, bad overrides name the problem, JSON round trip."""

import json

import pytest

from s2f_tf.configs import PRESETS, from_dict, get_config


@pytest.mark.parametrize("name", PRESETS)
def test_presets_valid_and_documented(name):
    import importlib

    config = get_config(name)
    assert config.name == name
    module = importlib.import_module(f"s2f_tf.configs.{name}")
    assert "s2f " in module.__doc__ or "make demo" in module.__doc__  # each preset says its command
    assert from_dict(json.loads(config.to_json())) == config


def test_paper_numbers():
    c = get_config("paper")
    assert c.audio.clip_samples == 96000 and c.audio.num_frames() == 598 and c.audio.num_bins == 257
    assert c.feature_dim == 4096 and c.face_encoder.num_identities == 2622
    assert c.face_encoder.image_size == 224 and c.voice_encoder.padding == "valid"
    assert (c.loss.lambda_feature, c.loss.lambda_distill, c.loss.temperature) == (0.025, 200.0, 2.0)
    assert (c.optimizer.beta_1, c.optimizer.epsilon, c.optimizer.decay_rate) == (0.5, 1e-4, 0.95)
    assert c.train.batch_size == 8
    assert (c.face_decoder.upsample, c.face_decoder.warp_interpolation) == (
        "transposed",
        "bilinear",
    )  # Cole et al.
    assert (
        c.loss.decoder_perceptual == c.loss.decoder_edges == c.loss.decoder_adversarial == 0.0
    )  # no critic
    assert c.face_decoder.warp_flow_grid == 0  # the spline at every pixel
    # measured at paper size (BUILD.md): stage 1 from scratch at 1e-4, warm-up, direction-only decoder input
    assert (
        c.train.face_encoder_learning_rate,
        c.optimizer.warmup_steps,
        c.face_decoder.normalize_input,
    ) == (1e-4, 50, True)


def test_overrides_by_type():
    c = get_config(
        "tiny",
        [
            "train.batch_size=3",
            "voice_encoder.width=0.5",
            "train.precision=mixed_bfloat16",
            "face_decoder.landmark_hidden=8,4",
            "optimizer.staircase=false",
        ],
    )
    assert c.train.batch_size == 3 and c.voice_encoder.width == 0.5
    assert c.train.precision == "mixed_bfloat16" and c.face_decoder.landmark_hidden == (8, 4)
    assert c.optimizer.staircase is False


@pytest.mark.parametrize(
    "item,match",
    [
        ("train.batch_size=abc", "expected int"),
        ("nosuch.field=1", "unknown section"),
        ("train.nosuch=1", "unknown field"),
        ("batch_size=1", "section.field"),
        ("train.batch_size", "section.field=value"),
        ("train.precision=float64", "train.precision"),
        ("voice_encoder.padding=causal", "padding"),
        ("audio.fft_length=256", "fft_length"),
        ("face_encoder.image_size=48", "multiple of 32"),
        ("optimizer.staircase=maybe", "not a boolean"),
        ("face_decoder.upsample=pixel_shuffle", "face_decoder.upsample"),
        ("face_decoder.warp_interpolation=lanczos", "face_decoder.warp_interpolation"),
        ("face_decoder.warp_flow_grid=1", "warp_flow_grid must be 0"),
        ("face_decoder.warp_flow_grid=-3", "warp_flow_grid must be 0"),
        ("face_decoder.warp_flow_grid=999", "warp_flow_grid must be 0"),
        ("optimizer.clip_global_norm=-1", "clip_global_norm must be a finite number >= 0"),
        ("optimizer.clip_global_norm=inf", "clip_global_norm must be a finite number >= 0"),
    ],
)
def test_bad_overrides(item, match):
    with pytest.raises(ValueError, match=match):
        get_config("tiny", [item])


def test_clip_too_short_for_valid_padding():
    from s2f_tf import factory

    config = get_config("paper", ["audio.clip_seconds=2.0", "audio.min_seconds=0.5"])
    with pytest.raises(ValueError, match="needs at least 259"):
        factory.validate(config)


def test_unknown_preset():
    with pytest.raises(ValueError, match="presets: paper, demo, tiny"):
        get_config("huge")
