"""Named presets. `get_config("demo", ["train.batch_size=4"])` -> a validated `Config`."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from s2f_tf.configs.base import (
    AudioConfig,
    Config,
    FaceDecoderConfig,
    FaceEncoderConfig,
    LossConfig,
    OptimizerConfig,
    TrainConfig,
    VoiceEncoderConfig,
    from_dict,
    override,
    validate,
)

__all__ = [
    "AudioConfig",
    "Config",
    "FaceDecoderConfig",
    "FaceEncoderConfig",
    "LossConfig",
    "OptimizerConfig",
    "TrainConfig",
    "VoiceEncoderConfig",
    "from_dict",
    "get_config",
    "override",
    "validate",
    "PRESETS",
]

PRESETS = ("paper", "demo", "tiny")


def get_config(name: str, overrides: Iterable[str] = ()) -> Config:
    """Returns preset `name` with `section.field=value` overrides applied and validated."""
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; presets: {', '.join(PRESETS)}")
    config = importlib.import_module(f"s2f_tf.configs.{name}").get_config()
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"config override {item!r}: expected section.field=value")
        key, value = item.split("=", 1)
        config = override(config, key.strip(), value)
    return validate(config)
