"""The one factory: a `Config` in, Keras objects out. Layers and models never read configs.

validate(config)          the config's own checks plus what only the networks know (e.g. the
                          fewest frames the voice encoder takes), before anything is built
build_front_end / build_voice_encoder / build_face_encoder / build_face_decoder / build_speech2face
build_critic              the face decoder's patch critic (loss.decoder_adversarial; training only)
describe(config)          every network's parameter count and shapes (`s2f describe`)
"""

from __future__ import annotations

import numpy as np

from s2f_tf import configs
from s2f_tf.configs import Config
from s2f_tf.frontend import SpectrogramFrontEnd
from s2f_tf.models.discriminator import PatchDiscriminator
from s2f_tf.models.face_decoder import FaceDecoder
from s2f_tf.models.face_encoder import FaceEncoder
from s2f_tf.models.speech2face import Speech2Face
from s2f_tf.models.voice_encoder import VoiceEncoder, min_frames


def validate(config: Config) -> Config:
    """`configs.validate`, then the checks that need the networks' geometry; returns the config or
    raises ValueError naming the field."""
    configs.validate(config)
    a, v = config.audio, config.voice_encoder
    needed = min_frames(v.kernel_size, v.padding)
    if a.num_frames() < needed:
        raise ValueError(
            f"audio.clip_seconds ({a.clip_seconds}) gives {a.num_frames()} frames; the voice encoder "
            f"({v.padding} padding) needs at least {needed}"
        )
    return config


def build_front_end(config: Config, validate: bool = True) -> SpectrogramFrontEnd:
    a = config.audio
    return SpectrogramFrontEnd(
        sample_rate=a.sample_rate,
        window_samples=a.window_samples,
        hop_samples=a.hop_samples,
        fft_length=a.fft_length,
        power=a.power,
        tile_to_samples=a.clip_samples,
        min_samples=a.min_samples,
        max_samples=a.max_samples,
        periodic_window=a.periodic_window,
        validate=validate,
        max_bins=a.max_bins,
        name="front_end",
    )


def build_voice_encoder(config: Config) -> VoiceEncoder:
    v = config.voice_encoder
    return VoiceEncoder(
        channels=v.channels,
        width=v.width,
        kernel_size=v.kernel_size,
        padding=v.padding,
        fc_units=v.fc_units,
        feature_dim=config.feature_dim,
        batchnorm_momentum=v.batchnorm_momentum,
        batchnorm_epsilon=v.batchnorm_epsilon,
        batchnorm_synchronized=config.train.sync_batch_norm,
        name="voice_encoder",
    )


def build_face_encoder(config: Config) -> FaceEncoder:
    f = config.face_encoder
    return FaceEncoder(
        image_size=f.image_size,
        width=f.width,
        fc_units=f.fc_units,
        num_identities=f.num_identities,
        channel_order=f.channel_order,
        mean=f.mean,
        dropout=f.dropout,
        batchnorm=f.batchnorm,
        batchnorm_synchronized=config.train.sync_batch_norm,
        name="face_encoder",
    )


def build_attribute_heads(config: Config, attribute_classes: dict) -> dict:
    """Stage 1's heads (loss.face_encoder_attributes > 0): attribute name -> a softmax Dense on the
    face feature, for each of loss.face_encoder_attribute_heads among `attribute_classes` (name ->
    class names: s2f_tf/train/attributes.py's head_classes); {} when the weight is 0."""
    import keras

    if not config.loss.face_encoder_attributes:
        return {}
    heads = {}
    for name in config.loss.face_encoder_attribute_heads:
        if not attribute_classes.get(name):
            raise ValueError(
                f"loss.face_encoder_attribute_heads names {name!r}, which is not a categorical "
                f"attribute of the data (it has: {sorted(attribute_classes) or 'none'})"
            )
        heads[name] = keras.layers.Dense(
            len(attribute_classes[name]), dtype="float32", name=f"{name}_head"
        )
        heads[name].build((None, config.face_encoder.fc_units))
    return heads


def build_face_decoder(config: Config) -> FaceDecoder:
    d = config.face_decoder
    return FaceDecoder(
        image_size=config.face_encoder.image_size,
        bottleneck=d.bottleneck,
        num_landmarks=d.num_landmarks,
        landmark_hidden=d.landmark_hidden,
        texture_start_size=d.texture_start_size,
        texture_base_channels=d.texture_base_channels,
        texture_min_channels=d.texture_min_channels,
        kernel_size=d.kernel_size,
        warp_border_points=d.warp_border_points,
        warp_regularization=d.warp_regularization,
        normalize_input=d.normalize_input,
        upsample=d.upsample,
        warp_interpolation=d.warp_interpolation,
        warp_flow_grid=d.warp_flow_grid,
        name="face_decoder",
    )


# `prepare` resamples the decoder's targets to the mean face with the most faithful sampler we have,
# whatever the decoder's own warp samples with (that one is paid at every training step, this one
# once): on the synthetic canonical faces a quintic texture warped back through the demo's cubic
# B-spline warp keeps 78% of the targets' mean squared Laplacian, a cubic one 74%.
TEXTURE_INTERPOLATION = "bspline5"


def texture_warp(config: Config) -> dict:
    """How `prepare` makes target/texture (dataset.json texture_warp): the decoder warp's spline (its
    border points and regularization) sampled with TEXTURE_INTERPOLATION."""
    d = config.face_decoder
    return {
        "border_points": int(d.warp_border_points),
        "regularization": float(d.warp_regularization),
        "interpolation": TEXTURE_INTERPOLATION,
    }


def build_critic(config: Config) -> PatchDiscriminator:
    """The patch critic of the decoder's adversarial term, built on the config's face size."""
    size = config.face_encoder.image_size
    critic = PatchDiscriminator(channels=config.loss.critic_channels, name="critic")
    critic(np.zeros((1, size, size, 3), np.float32))
    return critic


def build_speech2face(config: Config, face_decoder: FaceDecoder | None = None) -> Speech2Face:
    """Front end + voice encoder + (given or new) face decoder."""
    return Speech2Face(
        build_front_end(config),
        build_voice_encoder(config),
        face_decoder or build_face_decoder(config),
        name="speech2face",
    )


def graph_flops(concrete_function) -> int:
    """Float operations of a concrete function's graph, counted by TF's profiler (conv, matmul, ...)."""
    import tensorflow as tf

    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # the v1 profiler warns about its own deprecated internals
    try:
        return int(
            tf.compat.v1.profiler.profile(
                graph=concrete_function.graph, options=opts
            ).total_float_ops
        )
    finally:
        logger.setLevel(level)


def _forward_gflops(network, example) -> float:
    """Forward GFLOPs of `network` on one example shaped like `example` (inference mode)."""
    import tensorflow as tf

    spec = tf.TensorSpec([1, *example.shape[1:]], tf.float32)
    return round(
        graph_flops(tf.function(lambda x: network(x, training=False)).get_concrete_function(spec))
        / 1e9,
        3,
    )


def _shape(x) -> list:
    return [None] + [int(d) for d in x.shape[1:]]


def describe(config: Config) -> dict:
    """Builds every network of `config` at batch 1 and reports parameters, shapes and forward GFLOPs per
    example (counted from the graph by TF's profiler: convolutions and matmuls) (`s2f describe`)."""
    a = config.audio
    front_end = build_front_end(config)
    spec = front_end(np.zeros((1, a.clip_samples), np.float32))
    voice = build_voice_encoder(config)
    feature = voice(spec)
    face_encoder = build_face_encoder(config)
    image = np.zeros(
        (1, config.face_encoder.image_size, config.face_encoder.image_size, 3), np.float32
    )
    face_out = face_encoder(image)
    decoder = build_face_decoder(config)
    decoded = decoder(feature)
    return {
        "config": config.name,
        "spectrogram": {
            "clip_seconds": a.clip_seconds,
            "samples": a.clip_samples,
            "sample_rate": a.sample_rate,
            "shape": _shape(spec)[1:],
        },
        "networks": {
            "voice_encoder": {
                "params": voice.count_params(),
                "input": _shape(spec),
                "output": _shape(feature),
                "min_frames": voice.min_frames(),
                "forward_gflops": _forward_gflops(voice, spec),
            },
            "face_encoder": {
                "params": face_encoder.count_params(),
                "input": _shape(image),
                "outputs": {k: _shape(v) for k, v in face_out.items()},
                "forward_gflops": _forward_gflops(face_encoder, image),
            },
            "face_decoder": {
                "params": decoder.count_params(),
                "input": _shape(feature),
                "outputs": {k: _shape(v) for k, v in decoded.items()},
                "forward_gflops": _forward_gflops(decoder, feature),
            },
        },
        "feature_dim": config.feature_dim,
    }
