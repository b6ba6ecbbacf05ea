"""Tests for s2f_tf.models.face_encoder (tiny models; a few seconds on CPU)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from s2f_tf.models.face_encoder import FaceEncoder, load_vggface_weights, preprocess

TINY = dict(image_size=32, width=1 / 16, fc_units=16, num_identities=5)
VGG_MEAN_BGR = (93.5940, 104.7624, 129.1863)
CONV_NAMES = [
    "conv1_1",
    "conv1_2",
    "conv2_1",
    "conv2_2",
    "conv3_1",
    "conv3_2",
    "conv3_3",
    "conv4_1",
    "conv4_2",
    "conv4_3",
    "conv5_1",
    "conv5_2",
    "conv5_3",
]


def tiny(**overrides: Any) -> FaceEncoder:
    return FaceEncoder(**{**TINY, **overrides})


def images(batch: int = 2, size: int = 32, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (batch, size, size, 3)).round().astype(dtype)


# ----------------------------------------------------------------------------------------------
# Reference helpers: random VGG weights, a Keras-2 `save_weights` HDF5 writer, a numpy forward.


def random_vgg_weights(
    model: FaceEncoder, seed: int = 1
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """He-scaled random (kernel, bias) per weighted layer, shaped like `model`'s."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in model.weighted_layers:
        kshape = tuple(layer.kernel.shape)
        fan_in = int(np.prod(kshape[:-1]))
        kernel = rng.normal(0, np.sqrt(2.0 / fan_in), kshape).astype(np.float32)
        bias = rng.normal(0, 0.1, kshape[-1:]).astype(np.float32)
        out[layer.name] = (kernel, bias)
    return out


def keras2_layer_list(
    weights: dict[str, tuple[np.ndarray, np.ndarray]],
) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """keras-vggface VGG16 layers in model order, with Keras-2 weight names (`conv1_1/kernel:0`)."""
    layers: list[tuple[str, list[tuple[str, np.ndarray]]]] = [("input_1", [])]
    for b, n in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(1, n + 1):
            layers.append((f"conv{b}_{i}", []))
        layers.append((f"pool{b}", []))
    layers.append(("flatten", []))
    for fc, act in (("fc6", "relu"), ("fc7", "relu"), ("fc8", "softmax")):
        layers += [(fc, []), (f"{fc}/{act}", [])]
    return [
        (
            name,
            [(f"{name}/kernel:0", weights[name][0]), (f"{name}/bias:0", weights[name][1])]
            if name in weights
            else [],
        )
        for name, _ in layers
    ]


def write_keras2_h5(
    path: str,
    layers: list[tuple[str, list[tuple[str, np.ndarray]]]],
    model_weights: bool = False,
    chunk_layer_names: bool = False,
) -> None:
    """Writes the Keras-2 HDF5 layout: `save_weights` (root) or `save` (under `model_weights`)."""
    with h5py.File(path, "w") as f:
        if model_weights:  # full-model file: config at the root, weights in a group
            f.attrs["keras_version"] = b"2.2.4"
            f.attrs["backend"] = b"tensorflow"
            f.attrs["model_config"] = b'{"class_name": "Model", "config": {}}'
            root = f.create_group("model_weights")
        else:
            root = f
        names = np.array([name.encode("utf8") for name, _ in layers])
        if chunk_layer_names:  # Keras splits attributes above 64 KB into name0, name1, ...
            for i, chunk in enumerate(np.array_split(names, 3)):
                root.attrs[f"layer_names{i}"] = chunk
        else:
            root.attrs["layer_names"] = names
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4"
        for name, weights in layers:
            # "fc6/relu" becomes the subgroup "relu" of "fc6", as h5py does for Keras 2.
            g = root.create_group(name)
            g.attrs["weight_names"] = (
                np.array([w.encode("utf8") for w, _ in weights]) if weights else np.asarray([])
            )
            for (
                weight_name,
                value,
            ) in weights:  # "conv1_1/kernel:0" -> nested /conv1_1/conv1_1/kernel:0
                g.create_dataset(weight_name, data=value)


def numpy_forward(
    x: np.ndarray,
    weights: dict[str, tuple[np.ndarray, np.ndarray]],
    channel_order: str = "BGR",
    mean=VGG_MEAN_BGR,
    fc6_as_conv: bool = False,
) -> dict[str, np.ndarray]:
    """VGG-Face forward pass in float64 numpy (independent of Keras)."""
    x = x.astype(np.float64)
    if channel_order == "BGR":
        x = x[..., ::-1]
    x = x - np.asarray(mean)
    for b, n in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(1, n + 1):
            k, bias = (w.astype(np.float64) for w in weights[f"conv{b}_{i}"])
            batch, h, w_, _ = x.shape
            xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
            out = np.zeros((batch, h, w_, k.shape[-1]))
            for dy in range(3):
                for dx in range(3):
                    out += xp[:, dy : dy + h, dx : dx + w_, :] @ k[dy, dx]
            x = np.maximum(out + bias, 0)
        batch, h, w_, c = x.shape
        x = x.reshape(batch, h // 2, 2, w_ // 2, 2, c).max(axis=(2, 4))
    k6, b6 = (w.astype(np.float64) for w in weights["fc6"])
    if fc6_as_conv:  # valid conv of the [h, w, C] map with a [h, w, C, F] kernel
        h6 = np.einsum("byxc,yxcf->bf", x, k6)
    else:
        h6 = x.reshape(x.shape[0], -1) @ k6
    h6 = np.maximum(h6 + b6, 0)
    k7, b7 = (w.astype(np.float64) for w in weights["fc7"])
    k7 = k7.reshape(-1, k7.shape[-1])  # a [1, 1, F, F] conv kernel is a dense kernel
    feature = np.maximum(h6 @ k7 + b7, 0)
    k8, b8 = (w.astype(np.float64) for w in weights["fc8"])
    return {"feature": feature, "logits": feature @ k8 + b8}


def assert_close(actual: Any, expected: np.ndarray, rtol: float = 1e-4) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# ----------------------------------------------------------------------------------------------
# 1. Shapes, dtypes, feature >= 0, logits_from_feature.


def test_outputs_shapes_dtypes_and_logits_from_feature():
    model = tiny()
    out = model(images(3), training=False)
    assert set(out) == {"feature", "logits"}
    assert tuple(out["feature"].shape) == (3, 16) and out["feature"].dtype == tf.float32
    assert tuple(out["logits"].shape) == (3, 5) and out["logits"].dtype == tf.float32
    assert np.all(out["feature"].numpy() >= 0)
    logits = model.logits_from_feature(out["feature"])
    assert logits.dtype == tf.float32 and tuple(logits.shape) == (3, 5)
    np.testing.assert_allclose(logits.numpy(), out["logits"].numpy(), rtol=1e-6, atol=1e-6)
    # uint8 input gives the same result as float input.
    out_u8 = model(images(3, dtype="uint8"))
    np.testing.assert_allclose(
        out_u8["logits"].numpy(), out["logits"].numpy(), rtol=1e-6, atol=1e-6
    )


def test_block_outputs_by_hand_and_from_the_same_pass():
    model = tiny()
    x = images(2)
    pool1, pool2 = model.block_outputs(x, (2, 1))  # returned in block order
    h = model.conv_layers[1](model.conv_layers[0](preprocess(x, model.channel_order, model.mean)))
    np.testing.assert_allclose(pool1.numpy(), model.pool_layers[0](h).numpy(), rtol=1e-6, atol=1e-6)
    assert pool2.shape[1] == model.image_size // 4
    out = model(x, training=False, blocks=(1, 2))
    assert set(out) == {"feature", "logits", "blocks"}
    for a, b in zip(out["blocks"], (pool1, pool2)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        out["feature"].numpy(), model(x)["feature"].numpy(), rtol=1e-6, atol=1e-6
    )
    for bad in ((), (0,), (6,)):
        with pytest.raises(ValueError, match="blocks must be in 1..5"):
            model.block_outputs(x, bad)


def test_layer_names_and_channels():
    model = tiny()
    assert [layer.name for layer in model.weighted_layers] == CONV_NAMES + ["fc6", "fc7", "fc8"]
    assert [layer.filters for layer in model.conv_layers] == [4, 4, 8, 8] + [16] * 3 + [32] * 6
    assert model.final_map_shape == (1, 1, 32)
    assert tuple(model.fc6.kernel.shape) == (32, 16)


def test_full_width_parameter_count():
    # Full-width convs = Keras VGG16(include_top=False): 14,714,688 parameters; pool5 map 1x1x512.
    # (At image_size 224 with the default fc sizes the total is 145,002,878; not built here.)
    model = FaceEncoder(image_size=32, fc_units=16, num_identities=5)
    assert model.final_map_shape == (1, 1, 512)
    assert model.count_params() == 14_714_688 + (512 * 16 + 16) + (16 * 16 + 16) + (16 * 5 + 5)


def test_dropout_only_when_training():
    model = tiny(dropout=0.5, fc_units=64)
    x = images(2)
    a, b = model(x, training=False), model(x, training=False)
    np.testing.assert_array_equal(a["logits"].numpy(), b["logits"].numpy())
    t = model(x, training=True)
    # feature is fc7 after ReLU (pre-dropout); fc6 dropout still changes it in training.
    assert not np.allclose(t["feature"].numpy(), a["feature"].numpy())


# ----------------------------------------------------------------------------------------------
# 2. Preprocessing.


@pytest.mark.parametrize("channel_order", ["BGR", "RGB"])
def test_preprocess_matches_numpy(channel_order):
    x = images(2, 8, dtype="uint8")
    mean = (10.0, 20.0, 30.0)
    got = preprocess(x, channel_order, mean)
    ref = x.astype(np.float32)
    if channel_order == "BGR":
        ref = ref[..., ::-1]
    ref = ref - np.asarray(mean, np.float32)
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-5)


def test_preprocess_default_is_keras_vggface_v1():
    # keras-vggface utils.preprocess_input(x, version=1): x[..., ::-1]; x[..., 0] -= 93.5940; ...
    x = images(1, 4)
    ref = x[..., ::-1].copy()
    ref[..., 0] -= 93.5940
    ref[..., 1] -= 104.7624
    ref[..., 2] -= 129.1863
    model = tiny()
    np.testing.assert_allclose(
        preprocess(x, model.channel_order, model.mean).numpy(), ref, atol=1e-4
    )


def test_preprocess_bad_channel_order():
    with pytest.raises(ValueError, match="channel_order"):
        preprocess(images(1, 4), "RGBA", (0, 0, 0))


# ----------------------------------------------------------------------------------------------
# 3. Loader.


@pytest.mark.parametrize("channel_order", ["BGR", "RGB"])
def test_load_keras2_save_weights_layout(tmp_path, channel_order):
    mean = VGG_MEAN_BGR if channel_order == "BGR" else VGG_MEAN_BGR[::-1]
    model = tiny(channel_order=channel_order, mean=mean)
    weights = random_vgg_weights(model)
    path = str(tmp_path / "rcmalli_vggface_tf_vgg16.h5")
    write_keras2_h5(path, keras2_layer_list(weights))
    with h5py.File(path, "r") as f:  # the layout we mean to read
        assert "/conv1_1/conv1_1/kernel:0" in f and "/fc6/relu" in f
        assert list(f["fc6"].attrs["weight_names"]) == [b"fc6/kernel:0", b"fc6/bias:0"]
    load_vggface_weights(model, path)
    for layer in model.weighted_layers:
        kernel, bias = weights[layer.name]
        np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
        np.testing.assert_array_equal(layer.bias.numpy(), bias)
    x = images(2)
    out = model(x)
    ref = numpy_forward(x, weights, channel_order, mean)
    assert_close(out["feature"], ref["feature"])
    assert_close(out["logits"], ref["logits"])


def test_load_model_weights_group_and_chunked_names(tmp_path):
    model = tiny()
    weights = random_vgg_weights(model, seed=2)
    path = str(tmp_path / "full_model.h5")
    write_keras2_h5(path, keras2_layer_list(weights), model_weights=True, chunk_layer_names=True)
    load_vggface_weights(model, path)
    for layer in model.weighted_layers:
        np.testing.assert_array_equal(layer.kernel.numpy(), weights[layer.name][0])
    x = images(2, seed=3)
    assert_close(model(x)["logits"], numpy_forward(x, weights)["logits"])


def test_load_fc6_as_convolution(tmp_path):
    # image_size 64 -> pool5 map [2, 2, C]: a [2, 2, C, F] kernel exercises the flatten order.
    model = tiny(image_size=64)
    assert model.final_map_shape == (2, 2, 32)
    weights = random_vgg_weights(model, seed=4)
    conv_weights = dict(weights)
    conv_weights["fc6"] = (weights["fc6"][0].reshape(2, 2, 32, 16), weights["fc6"][1])
    conv_weights["fc7"] = (weights["fc7"][0].reshape(1, 1, 16, 16), weights["fc7"][1])
    path = str(tmp_path / "conv_fc.h5")
    write_keras2_h5(path, keras2_layer_list(conv_weights))
    load_vggface_weights(model, path)
    np.testing.assert_array_equal(model.fc6.kernel.numpy(), weights["fc6"][0])
    x = images(2, 64, seed=5)
    ref = numpy_forward(x, conv_weights, fc6_as_conv=True)
    out = model(x)
    assert_close(out["feature"], ref["feature"])
    assert_close(out["logits"], ref["logits"])


def test_load_file_written_by_keras_legacy_h5(tmp_path):
    """Cross-check with Keras's own HDF5 writer (model.save('x.h5') -> model_weights group)."""
    model = tiny()
    weights = random_vgg_weights(model, seed=6)
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for name, layer in zip(CONV_NAMES, model.conv_layers):
        x = keras.layers.Conv2D(layer.filters, 3, padding="same", activation="relu", name=name)(x)
        if name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"):
            x = keras.layers.MaxPooling2D(2, name=f"pool{name[4]}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc6")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc7")(x)
    x = keras.layers.Dense(5, name="fc8")(x)
    reference = keras.Model(inputs, x)
    for name, (kernel, bias) in weights.items():
        reference.get_layer(name).set_weights([kernel, bias])
    path = str(tmp_path / "keras_full.h5")
    reference.save(path)
    with h5py.File(path, "r") as f:
        assert "model_weights" in f and "layer_names" in f["model_weights"].attrs
    load_vggface_weights(model, path)
    x = images(2, seed=7)
    expected = reference(
        preprocess(x, "BGR", VGG_MEAN_BGR)
    ).numpy()  # reference has no preprocessing
    np.testing.assert_allclose(model(x)["logits"].numpy(), expected, rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# 4. Loader errors.


def test_load_shape_mismatch_names_layer_and_shapes(tmp_path):
    wide = tiny(width=1 / 8)
    path = str(tmp_path / "wide.h5")
    write_keras2_h5(path, keras2_layer_list(random_vgg_weights(wide)))
    model = tiny()
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"conv1_1.*\(3, 3, 3, 4\).*\(3, 3, 3, 8\)"):
        load_vggface_weights(model, path)
    for b, w in zip(before, model.weights):  # nothing assigned on failure
        np.testing.assert_array_equal(b, w.numpy())


def test_load_fc_shape_mismatch(tmp_path):
    model = tiny()
    weights = random_vgg_weights(model)
    weights["fc8"] = (np.zeros((16, 7), np.float32), np.zeros((7,), np.float32))
    path = str(tmp_path / "fc8.h5")
    write_keras2_h5(path, keras2_layer_list(weights))
    with pytest.raises(ValueError, match=r"fc8.*\(16, 5\).*\(16, 7\)"):
        load_vggface_weights(model, path)


def test_load_missing_layer(tmp_path):
    model = tiny()
    weights = random_vgg_weights(model)
    layers = [(n, w) for n, w in keras2_layer_list(weights) if n not in ("fc8", "fc8/softmax")]
    path = str(tmp_path / "notop.h5")
    write_keras2_h5(path, layers)
    with pytest.raises(ValueError, match=r"missing.*fc8"):
        load_vggface_weights(model, path)


def test_load_not_hdf5(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_text("not an hdf5 file")
    with pytest.raises(ValueError, match="not an HDF5 file.*weights.h5"):
        load_vggface_weights(tiny(), str(path))


def test_load_missing_file(tmp_path):
    path = str(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        load_vggface_weights(tiny(), path)


# ----------------------------------------------------------------------------------------------
# 5. Config and saving.


def test_config_round_trip():
    model = tiny(channel_order="RGB", mean=(1.0, 2.0, 3.0), dropout=0.25)
    config = model.get_config()
    for key, value in dict(TINY, channel_order="RGB", mean=[1.0, 2.0, 3.0], dropout=0.25).items():
        assert config[key] == value
    clone = FaceEncoder.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    x = images(2)
    np.testing.assert_allclose(clone(x)["logits"].numpy(), model(x)["logits"].numpy(), rtol=1e-6)


def test_keras_save_and_load(tmp_path):
    model = tiny()
    x = images(2)
    expected = model(x)
    path = str(tmp_path / "face_encoder.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, FaceEncoder)
    assert loaded.get_config() == model.get_config()
    got = loaded(x)
    for key in ("feature", "logits"):
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# 6. Mixed precision.


@pytest.mark.parametrize(
    "name,compute", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")]
)
def test_mixed_precision_outputs_float32(policy, name, compute):
    policy(name)  # conftest's fixture: sets the global policy, restores float32 afterwards
    model = tiny()
    assert model.conv_layers[0].compute_dtype == compute
    assert model.fc6.kernel.dtype == "float32"
    out = model(images(2), training=False)
    for key in ("feature", "logits"):
        assert out[key].dtype == tf.float32
        assert np.all(np.isfinite(out[key].numpy()))
    logits = model.logits_from_feature(out["feature"])
    assert logits.dtype == tf.float32
    np.testing.assert_allclose(logits.numpy(), out["logits"].numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# 7. Bad input.


@pytest.mark.parametrize("shape", [(32, 32, 3), (2, 64, 64, 3), (2, 32, 32, 4), (2, 32, 16, 3)])
def test_bad_image_shapes(shape):
    model = tiny()
    with pytest.raises(
        ValueError,
        match=r"expects images of shape \(None, 32, 32, 3\).*"
        + "received shape "
        + re_tuple(shape),
    ):
        model(np.zeros(shape, np.float32))


def re_tuple(shape: tuple[int, ...]) -> str:
    return r"\(" + ", ".join(str(s) for s in shape) + r"\)"


def test_bad_feature_shape():
    with pytest.raises(ValueError, match=r"\(None, 16\).*\(2, 8\)"):
        tiny().logits_from_feature(np.zeros((2, 8), np.float32))


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="channel_order"):
        tiny(channel_order="BRG")
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny(image_size=48)
    with pytest.raises(ValueError, match="mean"):
        tiny(mean=(1.0, 2.0))


# ----------------------------------------------------------------------------------------------
# 8. Training.


def test_training_step_reduces_loss():
    keras.utils.set_random_seed(0)
    model = tiny(dropout=0.0)
    x = tf.constant(images(4, seed=8))
    y = tf.constant([0, 1, 2, 3])
    optimizer = keras.optimizers.Adam(1e-3)

    def step() -> tuple[float, list]:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)["logits"]
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return float(loss), grads

    first, grads = step()
    assert len(grads) == len(model.trainable_variables) == 32
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert any(np.any(g.numpy() != 0) for g in grads)
    assert model.fc8.kernel.trainable
    for _ in range(5):
        last, _ = step()
    assert np.isfinite(last) and last < first


def test_batchnorm_variant_trains_and_refuses_vggface_weights(tmp_path):
    from s2f_tf.models.face_encoder import FaceEncoder, load_vggface_weights

    model = FaceEncoder(
        image_size=32, width=1 / 16, fc_units=16, num_identities=5, batchnorm=True, dropout=0.0
    )
    assert len(model.norm_layers) == 13
    out = model(
        np.random.RandomState(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32), training=True
    )
    assert out["feature"].shape == (4, 16)
    assert FaceEncoder.from_config(model.get_config()).batchnorm
    with pytest.raises(ValueError, match="batchnorm=False"):
        load_vggface_weights(model, str(tmp_path / "any.h5"))
