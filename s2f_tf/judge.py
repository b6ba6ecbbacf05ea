"""The attribute judge of `s2f evaluate`: a small CNN trained on the TRUE face images of the training
split (standing in for the face-attribute service the paper used), which reads true and decoded
faces alike. train_attribute_classifier(images, values, classes) -> predict(images)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def train_attribute_classifier(
    images: np.ndarray,
    values: np.ndarray,
    classes: dict[str, list[str] | None],
    steps: int = 1500,
    batch_size: int = 64,
    seed: int = 0,
):
    """A small CNN: face images uint8 [N, S, S, 3] -> the attributes' readings.

    values [N, A] in `classes` order (NaN unknown, masked out of the loss); a categorical attribute
    gets one softmax over its classes, a continuous one a regression on its standardised value.
    Trained on true faces only. Returns predict(images [M, S, S, 3] in [0, 255]) -> {name: [M]}
    (class index as float, or the value).
    """
    import keras

    names = list(classes)
    widths = [len(classes[n]) if classes[n] else 1 for n in names]
    offsets = np.cumsum([0] + widths)
    finite = np.isfinite(values)
    continuous = np.array([classes[n] is None for n in names])
    mu = np.where(continuous, np.nanmean(np.where(finite, values, np.nan), axis=0), 0.0)
    sd = np.where(continuous, np.nanstd(np.where(finite, values, np.nan), axis=0) + 1e-6, 1.0)
    target = np.where(finite, (values - mu) / sd, 0.0).astype(np.float32)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.layers.Input(images.shape[1:]),
            keras.layers.Rescaling(1.0 / 255.0),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(int(offsets[-1])),
        ],
        name="attribute_classifier",
    )
    step = _attribute_step(model, keras.optimizers.Adam(2e-3), classes, offsets)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(images), batch_size)
        step(images[idx], target[idx], finite[idx])

    def predict(x) -> dict[str, np.ndarray]:
        out = model.predict(np.asarray(x, np.float32), batch_size=256, verbose=0)
        return {
            name: (
                np.argmax(out[:, offsets[j] : offsets[j + 1]], axis=1).astype(np.float64)
                if classes[name]
                else out[:, offsets[j]] * sd[j] + mu[j]
            )
            for j, name in enumerate(names)
        }

    return predict


def _attribute_step(model, optimizer, classes: dict, offsets: np.ndarray):
    """One training step (a tf.function) of (images [B, S, S, 3], standardised values [B, A], known
    [B, A]): a categorical attribute's outputs offsets[j]:offsets[j + 1] are its logits, a continuous
    one's single output its value; unknown values are left out of the mean loss."""
    names = list(classes)

    @tf.function
    def step(x, y, ok):
        with tf.GradientTape() as tape:
            out = model(tf.cast(x, tf.float32), training=True)
            terms = []
            for j, name in enumerate(names):
                logits = out[:, offsets[j] : offsets[j + 1]]
                if classes[name]:
                    label = tf.cast(tf.where(ok[:, j], y[:, j], 0.0), tf.int32)
                    term = tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=label, logits=logits
                    )
                else:
                    term = tf.square(logits[:, 0] - y[:, j])
                terms.append(term)
            loss = tf.stack(terms, axis=1)
            loss = tf.reduce_sum(tf.where(ok, loss, 0.0)) / tf.maximum(
                tf.reduce_sum(tf.cast(ok, tf.float32)), 1.0
            )
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step
