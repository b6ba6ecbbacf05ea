"""VGG-Face face encoder (Parkhi et al. 2015), as used by Speech2Face (Oh et al. 2019).

VGG-16 layout on a `image_size` x `image_size` x 3 input:

  conv1_1..conv1_2 (64)  pool1 -> conv2_1..conv2_2 (128) pool2 -> conv3_1..conv3_3 (256) pool3
  -> conv4_1..conv4_3 (512) pool4 -> conv5_1..conv5_3 (512) pool5 -> flatten
  -> fc6 (fc_units, ReLU) -> dropout -> fc7 (fc_units, ReLU) -> dropout -> fc8 (num_identities)

All convolutions are 3x3, 'same', ReLU; pools are 2x2 / stride 2. Conv channels are scaled by
`width` (rounded, at least 1); the fc sizes are not.

Outputs (both float32, also under a mixed-precision policy):
  "feature": fc7 after its ReLU (before dropout): the Speech2Face training target.
  "logits":  fc8 applied to the (dropped-out when training) feature; pre-softmax.
`logits_from_feature` applies the same fc8 to any [B, fc_units] vector (e.g. a predicted feature).

Input convention: RGB in [0, 255] (float or uint8). The model does its own preprocessing
(`preprocess`): reorder RGB -> `channel_order` and subtract `mean` (given in `channel_order`).
The defaults match keras-vggface `utils.preprocess_input(x, version=1)`: RGB -> BGR, then subtract
(93.5940, 104.7624, 129.1863) in BGR order; no scaling.

`load_vggface_weights` reads the Keras-2 HDF5 `save_weights` layout of the keras-vggface port
(`rcmalli_vggface_tf_vgg16.h5`) by layer name; see its docstring.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import h5py
import keras
import numpy as np
from keras import ops

from s2f_tf.models.norm import FusedBatchNormalization

CHANNEL_ORDERS = ("RGB", "BGR")
# VGG-16 conv channels per block; each block ends in a 2x2 max pool.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = (
    (64, 64),
    (128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (512, 512, 512),
)
NUM_POOLS = len(VGG16_BLOCKS)  # total downsampling 2**5 = 32


def preprocess(images: Any, channel_order: str, mean: Sequence[float]) -> Any:
    """RGB [0, 255] images -> network input: reorder channels, subtract the per-channel mean.

    Args:
      images: [..., 3] RGB in [0, 255], any real dtype (uint8 or float).
      channel_order: "RGB" (keep) or "BGR" (reverse the channel axis).
      mean: three values subtracted per channel, given in `channel_order`.

    Returns:
      float32 tensor of the same shape, in `channel_order`, mean subtracted.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}.")
    if len(mean) != 3:
        raise ValueError(f"mean must have 3 values (one per channel), got {tuple(mean)!r}.")
    x = ops.cast(images, "float32")  # [B, H, W, 3] RGB
    if channel_order == "BGR":
        x = ops.flip(x, axis=-1)  # [B, H, W, 3] BGR
    mean_t = ops.convert_to_tensor(np.asarray(mean, dtype=np.float32))  # [3] in channel_order
    return x - mean_t  # [B, H, W, 3]


def _scaled(channels: int, width: float) -> int:
    """Channel count scaled by `width`: round, at least 1."""
    return max(1, int(round(channels * width)))


@keras.saving.register_keras_serializable(package="s2f")
class FaceEncoder(keras.Model):
    """VGG-Face: images -> {"feature": fc7 after ReLU, "logits": fc8}.

    Args:
      image_size: input height = width; a multiple of 32 (five 2x2 pools).
      width: conv channel multiplier (1.0 = VGG-16); channels are rounded, min 1.
      fc_units: fc6 / fc7 units = face feature dimension (4096 for VGG-Face).
      num_identities: fc8 units (2622 for VGG-Face).
      channel_order: "RGB" or "BGR": the channel order the first conv expects.
      mean: per-channel mean subtracted from [0, 255] pixels, in `channel_order`.
      dropout: dropout rate after the fc6 and fc7 ReLUs (active only with training=True).
      batchnorm: conv -> batch norm -> ReLU in every conv layer (VGG-BN), for training small variants
        from scratch; VGG-Face itself has none (published weights need batchnorm=False).
      batchnorm_synchronized: with batchnorm, statistics of the global batch when several replicas
        train in sync (models/norm.py); no effect with one replica or at inference.
      **kwargs: passed to `keras.Model` (name, dtype, trainable).
    """

    def __init__(
        self,
        image_size: int = 224,
        width: float = 1.0,
        fc_units: int = 4096,
        num_identities: int = 2622,
        channel_order: str = "BGR",
        mean: Sequence[float] = (93.5940, 104.7624, 129.1863),
        dropout: float = 0.5,
        batchnorm: bool = False,
        batchnorm_synchronized: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        image_size = int(image_size)
        if image_size <= 0 or image_size % 32 != 0:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}.")
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(
                f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}."
            )
        mean = tuple(float(m) for m in mean)
        if len(mean) != 3:
            raise ValueError(f"mean must have 3 values (one per channel), got {mean!r}.")
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.image_size = image_size
        self.width = float(width)
        self.fc_units = int(fc_units)
        self.num_identities = int(num_identities)
        self.channel_order = channel_order
        self.mean = mean
        self.dropout = float(dropout)
        self.batchnorm = bool(batchnorm)
        self.batchnorm_synchronized = bool(batchnorm_synchronized)

        self.conv_layers: list[keras.layers.Conv2D] = []
        self.norm_layers: list[keras.layers.BatchNormalization] = []
        self.pool_layers: list[keras.layers.MaxPooling2D] = []
        for b, block in enumerate(VGG16_BLOCKS, start=1):
            for i, channels in enumerate(block, start=1):
                self.conv_layers.append(
                    keras.layers.Conv2D(
                        _scaled(channels, self.width),
                        3,
                        padding="same",
                        activation=None if self.batchnorm else "relu",
                        name=f"conv{b}_{i}",
                    )
                )
                if self.batchnorm:
                    self.norm_layers.append(
                        FusedBatchNormalization(
                            synchronized=self.batchnorm_synchronized, name=f"bn{b}_{i}"
                        )
                    )
            self.pool_layers.append(keras.layers.MaxPooling2D(2, strides=2, name=f"pool{b}"))
        self.flatten = keras.layers.Flatten(name="flatten")
        self.fc6 = keras.layers.Dense(self.fc_units, activation="relu", name="fc6")
        self.drop6 = keras.layers.Dropout(self.dropout, name="drop6")
        self.fc7 = keras.layers.Dense(self.fc_units, activation="relu", name="fc7")
        self.drop7 = keras.layers.Dropout(self.dropout, name="drop7")
        # fc8 computes in float32 under any mixed policy: logits feed a softmax / distillation loss.
        self.fc8 = keras.layers.Dense(self.num_identities, name="fc8", dtype="float32")
        self.build((None, self.image_size, self.image_size, 3))

    # Pixels are converted to float32 (not the compute dtype) before `call`, so the mean
    # subtraction is exact; `call` casts to the compute dtype afterwards.
    @property
    def input_dtype(self) -> str:
        return "float32"

    @property
    def final_map_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) after pool5."""
        size = self.image_size // 2**NUM_POOLS
        return (size, size, _scaled(VGG16_BLOCKS[-1][-1], self.width))

    @property
    def weighted_layers(self) -> list[keras.layers.Layer]:
        """The layers that hold weights, in order: conv1_1 .. conv5_3, fc6, fc7, fc8."""
        return [*self.conv_layers, self.fc6, self.fc7, self.fc8]

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Creates every weight for `input_shape` = [B, image_size, image_size, 3]."""
        shape = (None, self.image_size, self.image_size, 3)
        convs = iter(self.conv_layers)
        for block in VGG16_BLOCKS:
            for _ in block:
                conv = next(convs)
                conv.build(shape)
                shape = (None, shape[1], shape[2], conv.filters)
                if self.batchnorm:
                    self.norm_layers[self.conv_layers.index(conv)].build(shape)
            shape = (None, shape[1] // 2, shape[2] // 2, shape[3])
        flat = shape[1] * shape[2] * shape[3]
        self.fc6.build((None, flat))
        self.fc7.build((None, self.fc_units))
        self.fc8.build((None, self.fc_units))
        self.built = True

    def _check_images(self, images: Any) -> None:
        expected = (None, self.image_size, self.image_size, 3)
        try:
            shape = tuple(images.shape)
        except ValueError:  # unknown rank (e.g. a tf.function traced without a signature)
            return
        ok = len(shape) == 4 and all(
            e is None or s is None or int(s) == e for s, e in zip(shape, expected)
        )
        if not ok:
            raise ValueError(
                f"FaceEncoder expects images of shape {expected} (RGB, [0, 255]), "
                f"received shape {shape}."
            )

    def call(
        self, images: Any, training: bool = False, blocks: Sequence[int] = ()
    ) -> dict[str, Any]:
        """images [B, S, S, 3] RGB in [0, 255] -> {"feature": [B, F], "logits": [B, N]}, float32; with
        `blocks` (VGG block numbers 1..5) also "blocks": their pooled outputs from the same pass."""
        x, pooled = self._convolutions(images, training, blocks, stop_after=len(VGG16_BLOCKS))
        x = self.flatten(x)  # [B, (S/32)^2 * C5]      (S=224, width=1: 25088)
        x = self.fc6(x)  # [B, F] ReLU
        x = self.drop6(x, training=training)  # [B, F]
        feature = self.fc7(x)  # [B, F] ReLU: the face feature
        x = self.drop7(feature, training=training)  # [B, F]
        logits = self.fc8(x)  # [B, N]
        out = {
            "feature": ops.cast(feature, "float32"),  # [B, F]
            "logits": ops.cast(logits, "float32"),
        }  # [B, N]
        if blocks:
            out["blocks"] = pooled
        return out

    def block_outputs(self, images: Any, blocks: Sequence[int]) -> list[Any]:
        """images [B, S, S, 3] RGB in [0, 255] -> the pooled output of each conv block in `blocks`
        (1-based, VGG's pool1 .. pool5), float32, computed no further than the last one asked for
        (inference mode: the perceptual term of the face decoder's loss reads them)."""
        return self._convolutions(
            images, False, blocks, stop_after=max(int(b) for b in blocks or (0,))
        )[1]

    def _convolutions(self, images: Any, training: bool, blocks: Sequence[int], stop_after: int):
        """The conv blocks 1..stop_after.

        Returns (last pooled map, [pooled output of each of `blocks`, float32]).
        """
        blocks = sorted({int(b) for b in blocks})
        if blocks and (blocks[0] < 1 or blocks[-1] > len(VGG16_BLOCKS)) or stop_after < 1:
            raise ValueError(f"blocks must be in 1..{len(VGG16_BLOCKS)}, got {blocks}")
        self._check_images(images)
        x = preprocess(images, self.channel_order, self.mean)  # [B, S, S, 3] float32
        x = ops.cast(x, self.compute_dtype)  # [B, S, S, 3]
        convs = iter(range(len(self.conv_layers)))
        pooled = []
        for number, (block, pool) in enumerate(
            zip(VGG16_BLOCKS[:stop_after], self.pool_layers), start=1
        ):
            for _ in block:
                k = next(convs)
                x = self.conv_layers[k](x)  # [B, s, s, C_block]  (S=224, width=1: C = 64 .. 512)
                if self.batchnorm:
                    x = ops.relu(self.norm_layers[k](x, training=training))
            x = pool(x)  # [B, s/2, s/2, C_block]  (S=224: 112, 56, 28, 14, 7)
            if number in blocks:
                pooled.append(ops.cast(x, "float32"))
        return x, pooled

    def logits_from_feature(self, feature: Any) -> Any:
        """fc8 applied to any feature [B, fc_units] -> logits [B, num_identities] float32."""
        shape = tuple(feature.shape)
        if len(shape) != 2 or (shape[-1] is not None and int(shape[-1]) != self.fc_units):
            raise ValueError(
                f"logits_from_feature expects shape (None, {self.fc_units}), "
                f"received shape {shape}."
            )
        return ops.cast(self.fc8(ops.cast(feature, "float32")), "float32")  # [B, N]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "width": self.width,
                "fc_units": self.fc_units,
                "num_identities": self.num_identities,
                "channel_order": self.channel_order,
                "mean": list(self.mean),
                "dropout": self.dropout,
                "batchnorm": self.batchnorm,
                "batchnorm_synchronized": self.batchnorm_synchronized,
            }
        )
        return config


# ---------------------------------------------------------------------------------------------
# Loading the keras-vggface HDF5 weights.


def _read_str_list_attr(group: h5py.Group, name: str) -> list[str] | None:
    """A Keras string-list attribute (possibly chunked as name0, name1, ...); None if absent."""
    if name in group.attrs:
        values = list(group.attrs[name])
    elif f"{name}0" in group.attrs:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    else:
        return None
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _weights_root(f: h5py.File) -> h5py.Group:
    """The group holding `layer_names`: the file root (save_weights) or `model_weights` (save)."""
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return f
    if "model_weights" in f and isinstance(f["model_weights"], h5py.Group):
        return f["model_weights"]
    return f


def _read_layer_weights(root: h5py.Group) -> dict[str, list[np.ndarray]]:
    """{layer name: [arrays in `weight_names` order]} for every layer that has weights."""
    names = _read_str_list_attr(root, "layer_names")
    if names is None:  # no Keras index: take the top-level groups as layers
        names = [k for k in root.keys() if isinstance(root[k], h5py.Group)]
    out: dict[str, list[np.ndarray]] = {}
    for name in names:
        if name not in root or not isinstance(root[name], h5py.Group):
            continue
        group = root[name]
        weight_names = _read_str_list_attr(group, "weight_names") or []
        # Dataset paths are relative to the layer group and may be nested ("conv1_1/kernel:0").
        values = [np.asarray(group[w]) for w in weight_names]
        if values:
            out[name] = values
    return out


def _split_kernel_bias(
    name: str, values: list[np.ndarray], path: str
) -> tuple[np.ndarray, np.ndarray]:
    kernels = [v for v in values if v.ndim >= 2]
    biases = [v for v in values if v.ndim == 1]
    if len(kernels) != 1 or len(biases) != 1 or len(values) != 2:
        raise ValueError(
            f"Layer '{name}' in {path}: expected one kernel and one bias, got arrays "
            f"of shapes {[tuple(v.shape) for v in values]}."
        )
    return kernels[0], biases[0]


def load_vggface_weights(model: FaceEncoder, path: str) -> None:
    """Loads VGG-Face weights by layer name from a Keras HDF5 file into `model`.

    Layout read (Keras-2 `model.save_weights(..h5)`, e.g. keras-vggface
    `rcmalli_vggface_tf_vgg16.h5`): root attribute `layer_names` (possibly chunked as
    `layer_names0`, `layer_names1`, ...); one group per layer; each group's attribute
    `weight_names` lists dataset paths relative to the group, usually nested as
    `conv1_1/kernel:0` (i.e. `/conv1_1/conv1_1/kernel:0` from the root). Full-model files
    (`model.save(..h5)`) hold the same structure under a `model_weights` group. Layers without
    weights (fc6/relu, pool1, flatten, ...) and layers the model does not have are skipped.

    Kernels are channels-last (TF ordering): conv [3, 3, Cin, Cout], dense [in, out]. A fc6 kernel
    stored as a convolution [h, w, C, F] (h, w, C = the pool5 map) is reshaped to [h*w*C, F], which
    matches Flatten's row-major (y, x, c) order; fc7/fc8 stored as [1, 1, in, out] likewise.

    Nothing is assigned unless every layer fits.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: `path` is not an HDF5 file; a model layer is missing from the file; or a shape
        differs (message names the layer, the expected shape and the file's shape).
    """
    path = os.fspath(path)
    if model.batchnorm:
        raise ValueError(
            "VGG-Face weights have no batch norm layers: build the face encoder with "
            "batchnorm=False (--set=face_encoder.batchnorm=false) to load them"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VGG-Face weights file not found: {path}")
    if not h5py.is_hdf5(path):
        raise ValueError(f"VGG-Face weights file is not an HDF5 file: {path}")
    try:
        with h5py.File(path, "r") as f:
            file_weights = _read_layer_weights(_weights_root(f))
    except OSError as e:
        raise ValueError(f"Could not read HDF5 weights file {path}: {e}") from e

    layers = model.weighted_layers
    missing = [layer.name for layer in layers if layer.name not in file_weights]
    if missing:
        raise ValueError(
            f"Layers missing from {path}: {missing}. "
            f"Layers with weights in the file: {sorted(file_weights)}."
        )

    fh, fw, fc = model.final_map_shape
    assignments = []
    for layer in layers:
        kernel, bias = _split_kernel_bias(layer.name, file_weights[layer.name], path)
        expected_kernel = tuple(layer.kernel.shape)
        expected_bias = tuple(layer.bias.shape)
        if isinstance(layer, keras.layers.Dense) and kernel.ndim == 4:
            # Convolutional form of a dense layer: [h, w, in, out] -> [h*w*in, out].
            conv_in = (fh, fw, fc) if layer.name == "fc6" else (1, 1, expected_kernel[0])
            if tuple(kernel.shape) == (*conv_in, expected_kernel[1]):
                kernel = kernel.reshape(expected_kernel)
            else:
                raise ValueError(
                    f"Layer '{layer.name}' kernel shape mismatch in {path}: expected "
                    f"{expected_kernel} (or {(*conv_in, expected_kernel[1])} as a convolution), "
                    f"file has {tuple(kernel.shape)}."
                )
        if tuple(kernel.shape) != expected_kernel:
            raise ValueError(
                f"Layer '{layer.name}' kernel shape mismatch in {path}: expected "
                f"{expected_kernel}, file has {tuple(kernel.shape)}."
            )
        if tuple(bias.shape) != expected_bias:
            raise ValueError(
                f"Layer '{layer.name}' bias shape mismatch in {path}: expected "
                f"{expected_bias}, file has {tuple(bias.shape)}."
            )
        assignments.append((layer, kernel, bias))

    for layer, kernel, bias in assignments:
        layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
