"""train.precision=auto: bfloat16 where the hardware runs it fast, float32 elsewhere (probes mocked)."""

import pytest

from s2f_tf.configs import get_config
from s2f_tf.train import runtime


def test_auto_is_the_default_in_every_preset():
    for name in ("paper", "demo", "tiny"):
        assert get_config(name).train.precision == "auto"


@pytest.mark.parametrize(
    "speedup, policy",
    [
        (0.2, "float32"),
        (0.9, "float32"),
        (1.49, "float32"),
        (1.5, "mixed_bfloat16"),
        (4.1, "mixed_bfloat16"),
    ],
)
def test_auto_on_a_cpu_follows_the_bfloat16_probe(speedup, policy):
    got, why = runtime.resolve_precision("auto", gpus=[], cpu_speedup=lambda: speedup)
    assert got == policy and f"{speedup:.1f}x" in why


@pytest.mark.parametrize(
    "capability, policy",
    [
        ((8, 0), "mixed_bfloat16"),
        ((9, 0), "mixed_bfloat16"),
        ((7, 5), "mixed_float16"),
        ((6, 1), "float32"),
    ],
)
def test_auto_on_gpus_follows_the_compute_capability(capability, policy):
    def no_cpu_probe():
        raise AssertionError("the CPU probe must not run when there are GPUs")

    assert (
        runtime.resolve_precision("auto", gpus=[capability], cpu_speedup=no_cpu_probe)[0] == policy
    )


def test_an_explicit_precision_is_kept_and_a_bad_one_named():
    assert (
        runtime.resolve_precision("mixed_float16", gpus=[], cpu_speedup=lambda: 9.0)[0]
        == "mixed_float16"
    )
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.resolve_precision("float64")


def test_the_probe_measures_a_positive_ratio():
    assert runtime.cpu_bfloat16_speedup() > 0


def test_a_stage_may_have_its_own_precision_and_a_bad_one_is_named():
    import dataclasses

    from s2f_tf.configs import base

    config = get_config("demo")
    assert config.train.voice_encoder_precision == "" and config.train.precision == "auto"
    own = dataclasses.replace(
        config, train=dataclasses.replace(config.train, voice_encoder_precision="float32")
    )
    base.validate(own)
    bad = dataclasses.replace(
        config, train=dataclasses.replace(config.train, face_decoder_precision="bf16")
    )
    with pytest.raises(ValueError, match="train.face_decoder_precision must be"):
        base.validate(bad)
