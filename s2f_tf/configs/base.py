"""Config schema: frozen dataclasses, the one place numbers live.

Presets (`paper`, `demo`, `tiny`) are modules next to this file; each returns a `Config`.
`s2f_tf.configs.get_config(name, overrides)` resolves a preset and applies `section.field=value`
overrides from the command line. Layers never read configs: `s2f_tf.factory` turns a config into
objects, and its `validate` adds the checks that need the networks' geometry.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from s2f_tf import contract
from s2f_tf.models.checks import check_face_decoder, check_voice_encoder


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """Waveform -> spectrogram front end (docs/SPEC.md, "Audio front end")."""

    sample_rate: int = contract.SAMPLE_RATE  # fixed: data, training and serving are all 16 kHz
    clip_seconds: float = 6.0  # training crop; shorter clips are tiled up to this length
    min_seconds: float = 0.5  # shorter input is rejected, not tiled into noise
    max_seconds: float = 30.0  # longer input is rejected (serving bound)
    window_samples: int = 400  # 25 ms Hann
    hop_samples: int = 160  # 10 ms
    fft_length: int = 512  # -> 257 bins
    power: float = 0.3  # sign(x) * |x| ** power on real and imaginary parts
    periodic_window: bool = True  # Hann as in scipy/librosa (fftbins=True)
    max_bins: int = 0  # keep only the lowest N bins (a band limit); 0: all (the paper)

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def min_samples(self) -> int:
        return int(round(self.min_seconds * self.sample_rate))

    @property
    def max_samples(self) -> int:
        return int(round(self.max_seconds * self.sample_rate))

    def num_frames(self, samples: int | None = None) -> int:
        """STFT frames for `samples` (default: the clip length), no padding."""
        samples = self.clip_samples if samples is None else samples
        return 1 + (samples - self.window_samples) // self.hop_samples

    @property
    def num_bins(self) -> int:
        return self.max_bins or self.fft_length // 2 + 1


@dataclasses.dataclass(frozen=True)
class VoiceEncoderConfig:
    """Paper Table 1; channels are scaled by `width` (fc sizes are not)."""

    channels: tuple[int, ...] = (64, 64, 128, 128, 128, 256, 512, 512, 512)
    width: float = 1.0
    kernel_size: int = 4
    padding: str = "valid"  # not stated in the paper (unsure); re-implementations use valid
    fc_units: int = 4096  # block 10 (FC-ReLU); block 11 outputs Config.feature_dim
    batchnorm_momentum: float = 0.99
    batchnorm_epsilon: float = 1e-3


@dataclasses.dataclass(frozen=True)
class FaceEncoderConfig:
    """VGG-Face (VGG-16 layout). fc7 (after ReLU) is the face feature, fc8 the identity logits."""

    image_size: int = 224
    width: float = 1.0  # conv channel multiplier (1.0 = VGG-16)
    fc_units: int = 4096  # fc6 and fc7 -> feature dimension
    num_identities: int = 2622  # fc8
    channel_order: str = "BGR"  # what the network's first conv expects
    mean: tuple[float, float, float] = (93.5940, 104.7624, 129.1863)  # in channel_order
    dropout: float = 0.5  # after fc6/fc7 when training from scratch
    batchnorm: bool = False  # conv-BN-ReLU (small variants trained from scratch)


@dataclasses.dataclass(frozen=True)
class FaceDecoderConfig:
    """Cole et al. 2017 decoder: feature -> FC bottleneck -> landmarks + texture -> warp."""

    bottleneck: int = 1000
    num_landmarks: int = 72  # K (unsure in the paper)
    landmark_hidden: tuple[int, ...] = (1000,)
    texture_start_size: int = 14  # FC -> start x start x base channels
    texture_base_channels: int = 256
    texture_min_channels: int = 32
    kernel_size: int = 5
    warp_border_points: int = 4  # zero-displacement control points per image edge
    warp_regularization: float = 1e-4  # > 0 keeps the spline solvable if landmarks collide
    warp_interpolation: str = (
        "bilinear"  # bilinear (Cole et al.) | bicubic | bspline | bspline5 (keep fine detail)
    )
    warp_flow_grid: int = 0  # 0: the spline at every pixel; N: on N x N points, flow interpolated
    normalize_input: bool = False  # read only the feature's direction: v / |v| * sqrt(D)
    upsample: str = "transposed"  # transposed (Cole et al.) | resize_conv (nearest x2 + conv)


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """docs/SPEC.md, "Voice encoder training loss" and the decoder's own losses."""

    lambda_feature: float = 0.025  # lambda1: normalised-feature L2
    lambda_distill: float = 200.0  # lambda2: fc8 distillation
    temperature: float = 2.0
    decoder_texture: float = 1.0  # texture L1
    decoder_landmarks: float = 100.0  # landmark MSE (normalised coordinates: errors ~1e-3)
    decoder_feature: float = 1.0  # negative cosine of face-encoder features
    decoder_perceptual: float = 0.0  # L1 of face-encoder block outputs, decoded vs target face
    perceptual_blocks: tuple[int, ...] = (1, 2)  # which VGG blocks (pool1 .. pool5) it compares
    decoder_edges: float = 0.0  # L1 of neighbour-pixel differences, texture vs target texture
    decoder_adversarial: float = (
        0.0  # hinge term of a patch critic on the decoded face (0: no critic)
    )
    critic_channels: int = 32  # the critic's first conv width (models/discriminator.py)
    # stage 1: heads on the face feature for these attributes (the data's categorical ones, and
    # age_band: s2f_tf/train/attributes.py), their softmax cross-entropy added with this weight, so
    # the feature keeps them (0: identities only). docs/experiments/2026-12-06-decoder-attribute-loss.md
    face_encoder_attributes: float = 0.0
    face_encoder_attribute_heads: tuple[str, ...] = ("sex",)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float = 1e-3
    beta_1: float = 0.5
    beta_2: float = 0.999
    epsilon: float = 1e-4
    decay_rate: float = 0.95
    decay_steps: int = 10000
    staircase: bool = True  # unsure in the paper
    warmup_steps: int = 0  # linear learning-rate ramp over the first N steps (0: none)
    cooldown_steps: int = 0  # linear ramp down to 0 over each stage's last N steps (0: none)
    clip_global_norm: float = 0.0  # clip the global batch's gradient to this global norm (0: off)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 8  # global batch, every stage
    face_encoder_steps: int = 200_000  # stage 1 (skipped when VGG-Face weights are given)
    face_decoder_steps: int = 200_000  # stage 2
    voice_encoder_steps: int = 1_000_000  # stage 3
    face_encoder_learning_rate: float = 1e-3
    face_decoder_learning_rate: float = 1e-3
    precision: str = "auto"  # auto (by the hardware) | float32 | mixed_bfloat16 | mixed_float16
    face_encoder_precision: str = ""  # one stage's own precision ("": train.precision)
    face_decoder_precision: str = ""
    voice_encoder_precision: str = ""
    log_every: int = 100
    image_every: int = 5000  # TensorBoard image/audio summaries
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    shuffle_buffer: int = 1024  # records (saved in checkpoints for exact resume)
    seed: int = 0
    validate_every: int = 5000  # held-out loss terms and figure, TensorBoard validation/ (0: off)
    validation_clips: int = 512  # the validation split's first clips, read once per run
    keep_best: bool = True  # a stage's weights come from its best validation figure
    # training steps per tf.function call: the host reads the losses once per call; log_every,
    # image_every, checkpoint_every and validate_every must be multiples of it
    steps_per_loop: int = 1
    # SIGTERM / SIGINT stop `s2f train` after the call in flight, with a checkpoint at that step;
    # a second signal, or this many seconds after the first (0: no limit), stops it at once
    stop_grace_seconds: float = 0.0
    sync_batch_norm: bool = False  # batch-norm statistics of the global batch across replicas


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "paper"
    audio: AudioConfig = AudioConfig()
    voice_encoder: VoiceEncoderConfig = VoiceEncoderConfig()
    face_encoder: FaceEncoderConfig = FaceEncoderConfig()
    face_decoder: FaceDecoderConfig = FaceDecoderConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()

    @property
    def feature_dim(self) -> int:
        """The face feature (VGG-Face fc7) dimension; the voice encoder predicts it."""
        return self.face_encoder.fc_units

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _convert(value: str, current: Any, key: str) -> Any:
    """Parses a command-line string into the type of the field it replaces."""
    try:
        if isinstance(current, bool):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, str):
            return value
        if isinstance(current, tuple):
            text = value.strip()
            items = (
                json.loads(text)
                if text.startswith("[")
                else [v for v in text.split(",") if v.strip()]
            )
            kind = type(current[0]) if current else str
            return tuple(kind(v) for v in items)
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"config override {key}={value!r}: expected {type(current).__name__} ({e})"
        ) from None
    raise ValueError(f"config override {key}: field of type {type(current).__name__} cannot be set")


def override(config: Config, key: str, value: str) -> Config:
    """Returns `config` with the dotted field `key` (e.g. 'voice_encoder.width') set from a string."""
    parts = key.split(".")
    if len(parts) != 2:
        raise ValueError(
            f"config override {key!r}: expected section.field, e.g. train.batch_size=4"
        )
    section_name, field = parts
    section_names = [
        f.name
        for f in dataclasses.fields(config)
        if dataclasses.is_dataclass(getattr(config, f.name))
    ]
    if section_name not in section_names:
        raise ValueError(
            f"config override {key!r}: unknown section {section_name!r}; known: {', '.join(section_names)}"
        )
    section = getattr(config, section_name)
    names = [f.name for f in dataclasses.fields(section)]
    if field not in names:
        raise ValueError(
            f"config override {key!r}: unknown field {field!r} in {section_name}; known: {', '.join(names)}"
        )
    new_value = _convert(value, getattr(section, field), key)
    return dataclasses.replace(
        config, **{section_name: dataclasses.replace(section, **{field: new_value})}
    )


def from_dict(data: dict[str, Any]) -> Config:
    """Inverse of Config.to_dict (used to reload the config written next to checkpoints)."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        value = data.get(f.name)
        if value is None:
            continue
        if isinstance(value, dict):
            section_type = type(getattr(Config(), f.name))
            fields = {sf.name: sf for sf in dataclasses.fields(section_type)}
            unknown = set(value) - set(fields)
            if unknown:
                raise ValueError(f"config section {f.name}: unknown fields {sorted(unknown)}")
            section_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            kwargs[f.name] = section_type(**section_kwargs)
        else:
            kwargs[f.name] = value
    return Config(**kwargs)


def validate(config: Config) -> Config:
    """Checks cross-field consistency; returns the config or raises ValueError naming the field.
    The networks' own argument checks are the models' (`s2f_tf.models.checks`, no Keras); the ones
    that need the networks' geometry are `factory.validate`'s."""
    _check_audio(config.audio)
    _check_networks(config)
    _check_loss(config.loss)
    _check_training(config)
    return config


def _check_audio(a: AudioConfig) -> None:
    if a.sample_rate != contract.SAMPLE_RATE:
        raise ValueError(
            f"audio.sample_rate must be {contract.SAMPLE_RATE} (s2f prepares, trains on and serves "
            f"{contract.SAMPLE_RATE} Hz audio), got {a.sample_rate}"
        )
    if a.fft_length < a.window_samples:
        raise ValueError(
            f"audio.fft_length ({a.fft_length}) must be >= audio.window_samples ({a.window_samples})"
        )
    if not 0 < a.min_seconds <= a.clip_seconds <= a.max_seconds:
        raise ValueError(
            "audio: need 0 < min_seconds <= clip_seconds <= max_seconds, got "
            f"{a.min_seconds}, {a.clip_seconds}, {a.max_seconds}"
        )
    if not 0 <= a.max_bins <= a.fft_length // 2 + 1:
        raise ValueError(
            f"audio.max_bins must be in [0, {a.fft_length // 2 + 1}], got {a.max_bins}"
        )
    if a.min_samples < a.window_samples:
        raise ValueError(f"audio.min_seconds ({a.min_seconds}) is shorter than one STFT window")


def _check_networks(config: Config) -> None:
    check_voice_encoder(
        config.voice_encoder.channels, config.voice_encoder.padding, prefix="voice_encoder."
    )
    fe, fd = config.face_encoder, config.face_decoder
    if fe.channel_order not in ("RGB", "BGR"):
        raise ValueError(f"face_encoder.channel_order must be RGB or BGR, got {fe.channel_order!r}")
    if fe.image_size % 32:
        raise ValueError(
            f"face_encoder.image_size must be a multiple of 32 (5 VGG pools), got {fe.image_size}"
        )
    check_face_decoder(
        fe.image_size,
        fd.texture_start_size,
        fd.upsample,
        prefix="face_decoder.",
        image_size_name="face_encoder.image_size",
    )
    if fd.warp_interpolation not in ("bilinear", "bicubic", "bspline", "bspline5"):
        raise ValueError(
            "face_decoder.warp_interpolation must be bilinear, bicubic, bspline or bspline5, got "
            f"{fd.warp_interpolation!r}"
        )
    if fd.warp_flow_grid < 0 or fd.warp_flow_grid == 1 or fd.warp_flow_grid > fe.image_size:
        raise ValueError(
            f"face_decoder.warp_flow_grid must be 0 (the spline at every pixel) or 2..image_size "
            f"({fe.image_size}), got {fd.warp_flow_grid}"
        )


def _check_loss(loss: LossConfig) -> None:
    if loss.decoder_perceptual and not all(1 <= b <= 5 for b in loss.perceptual_blocks or (0,)):
        raise ValueError(
            f"loss.perceptual_blocks must name VGG blocks 1..5, got {loss.perceptual_blocks}"
        )
    if not (math.isfinite(loss.face_encoder_attributes) and loss.face_encoder_attributes >= 0):
        raise ValueError(
            "loss.face_encoder_attributes must be a finite number >= 0 (0: no attribute heads), "
            f"got {loss.face_encoder_attributes}"
        )
    if not (math.isfinite(loss.decoder_adversarial) and loss.decoder_adversarial >= 0):
        raise ValueError(
            f"loss.decoder_adversarial must be a finite number >= 0 (0: no critic), got "
            f"{loss.decoder_adversarial}"
        )
    if loss.decoder_adversarial and loss.critic_channels < 1:
        raise ValueError(f"loss.critic_channels must be >= 1, got {loss.critic_channels}")


def _check_loop(train: TrainConfig) -> None:
    if not (math.isfinite(train.stop_grace_seconds) and train.stop_grace_seconds >= 0):
        raise ValueError(
            "train.stop_grace_seconds must be a finite number >= 0 (0: no limit), got "
            f"{train.stop_grace_seconds}"
        )
    k = train.steps_per_loop
    if k < 1:
        raise ValueError(f"train.steps_per_loop must be >= 1, got {k}")
    for field in ("log_every", "image_every", "checkpoint_every", "validate_every"):
        every = getattr(train, field)
        if every % k:
            up = -(-every // k) * k
            raise ValueError(
                f"train.{field} ({every}) must be a multiple of train.steps_per_loop ({k}): "
                f"events fall between calls of {k} steps; use --set=train.{field}={up}"
            )


def _check_training(config: Config) -> None:
    precisions = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
    for field, allowed in (
        ("precision", precisions),
        *(
            (f"{stage}_precision", ("",) + precisions)
            for stage in ("face_encoder", "face_decoder", "voice_encoder")
        ),
    ):
        value = getattr(config.train, field)
        if value not in allowed:
            raise ValueError(
                f"train.{field} must be {'empty (train.precision), ' if '' in allowed else ''}"
                f"auto, float32, mixed_bfloat16 or mixed_float16, got {value!r}"
            )
    o = config.optimizer
    if o.warmup_steps < 0:
        raise ValueError(
            f"optimizer.warmup_steps must be >= 0 (0: no warm-up), got {o.warmup_steps}"
        )
    if o.cooldown_steps < 0:
        raise ValueError(
            f"optimizer.cooldown_steps must be >= 0 (0: no cool-down), got {o.cooldown_steps}"
        )
    if not (math.isfinite(o.clip_global_norm) and o.clip_global_norm >= 0):
        raise ValueError(
            "optimizer.clip_global_norm must be a finite number >= 0 (0: no clipping), got "
            f"{o.clip_global_norm}"
        )
    _check_loop(config.train)
    if config.train.validate_every < 0 or config.train.validation_clips < 1:
        raise ValueError(
            "train.validate_every must be >= 0 (0: off) and train.validation_clips >= 1, got "
            f"{config.train.validate_every} and {config.train.validation_clips}"
        )
