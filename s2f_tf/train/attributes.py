"""Stage 1's attribute heads (loss.face_encoder_attributes > 0, docs/SPEC.md): which attributes they
can learn, and their loss terms on a batch.

A head is a softmax over a categorical attribute's classes: the data's own (sex, ancestry, ...) and
`age_band`, the evaluation's age bands (<18, 18-29, 30-44, 45-59, 60+) of the data's ages.
"""

from __future__ import annotations

import tensorflow as tf

from s2f_tf import losses, metrics
from s2f_tf.data.schema import DatasetInfo

AGE_BAND = "age_band"


def head_classes(info: DatasetInfo) -> dict[str, list[str]]:
    """Attribute -> class names, for every attribute a head can learn on this data."""
    bands = {AGE_BAND: metrics.age_band_names()} if "age" in info.attribute_names else {}
    return {**info.attribute_classes, **bands}


def head_targets(attributes: tf.Tensor, names: list[str], name: str) -> tf.Tensor:
    """[B, A] attribute values (the data's `names`; NaN unknown) -> [B] class indices of `name`."""
    if name != AGE_BAND:
        return attributes[:, names.index(name)]
    age = attributes[:, names.index("age")]
    edges = tf.constant(metrics.AGE_BAND_EDGES, age.dtype)
    band = tf.reduce_sum(tf.cast(age[:, None] >= edges, age.dtype), axis=-1)  # as metrics.age_bands
    return tf.where(tf.math.is_nan(age), age, band)


def head_terms(heads: dict, attributes: tf.Tensor, names: list[str], feature) -> dict:
    """{<name>_cross_entropy: [B]} of each head on the face feature (0 where the value is unknown)."""
    return {
        f"{name}_cross_entropy": losses.attribute_cross_entropy_per_example(
            head_targets(attributes, names, name), head(tf.cast(feature, tf.float32))
        )
        for name, head in heads.items()
    }
