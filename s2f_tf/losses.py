"""Where the loss is: Speech2Face's voice-encoder loss and the face decoder's training losses.

Every function returns a PER-EXAMPLE loss `[batch]` in float32, never a batch mean: the training
loop averages over the GLOBAL batch (tf.nn.compute_average_loss), which is what keeps the loss
right under data parallelism. Nothing here normalises across the batch (docs/SPEC.md).

Voice encoder (docs/SPEC.md, "Voice encoder training loss"), v_f the true face feature, v_s the predicted:
  L = || f_dec(v_f) - f_dec(v_s) ||_1
    + lambda1 * || v_f / ||v_f|| - v_s / ||v_s|| ||_2^2          lambda1 = 0.025
    + lambda2 * L_distill(f_VGG(v_f), f_VGG(v_s))                lambda2 = 200, T = 2
"""

from __future__ import annotations

import tensorflow as tf

_EPS = 1e-12


def _f32(x) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def _mean_per_example(x) -> tf.Tensor:
    """Mean over all non-batch axes: [B, ...] -> [B]."""
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def l1_per_example(a, b) -> tf.Tensor:
    """|| a - b ||_1 over all non-batch axes: [B, ...] x2 -> [B]."""
    d = tf.abs(_f32(a) - _f32(b))
    return tf.reduce_sum(tf.reshape(d, [tf.shape(d)[0], -1]), axis=1)


def normalized_l2_per_example(v_true, v_pred) -> tf.Tensor:
    """|| v_t/||v_t|| - v_p/||v_p|| ||_2^2: [B, D] x2 -> [B] (in [0, 4])."""
    t = tf.math.l2_normalize(_f32(v_true), axis=-1, epsilon=_EPS)
    p = tf.math.l2_normalize(_f32(v_pred), axis=-1, epsilon=_EPS)
    return tf.reduce_sum(tf.square(t - p), axis=-1)


def distillation_per_example(logits_teacher, logits_student, temperature: float = 2.0) -> tf.Tensor:
    """- sum_i softmax(a / T)_i * log softmax(b / T)_i: [B, C] x2 -> [B]."""
    p = tf.nn.softmax(_f32(logits_teacher) / temperature, axis=-1)
    log_q = tf.nn.log_softmax(_f32(logits_student) / temperature, axis=-1)
    return -tf.reduce_sum(p * log_q, axis=-1)


def speech2face_loss(
    dec_true,
    dec_pred,
    feature_true,
    feature_pred,
    logits_true,
    logits_pred,
    lambda_feature: float = 0.025,
    lambda_distill: float = 200.0,
    temperature: float = 2.0,
) -> dict[str, tf.Tensor]:
    """The voice encoder's loss; every entry is per example, [B].

    dec_*: the decoder's first layer (FC bottleneck) applied to v_f / v_s   [B, 1000]
    feature_*: v_f / v_s                                                      [B, 4096]
    logits_*: VGG-Face fc8 applied to v_f / v_s                               [B, 2622]
    Returns {'decoder_l1', 'feature_l2', 'distill', 'total'} (the weighted terms are unweighted
    here except in 'total', so each can be logged on its own scale).
    """
    decoder_l1 = l1_per_example(dec_true, dec_pred)
    feature_l2 = normalized_l2_per_example(feature_true, feature_pred)
    distill = distillation_per_example(logits_true, logits_pred, temperature)
    total = decoder_l1 + lambda_feature * feature_l2 + lambda_distill * distill
    return {"decoder_l1": decoder_l1, "feature_l2": feature_l2, "distill": distill, "total": total}


def negative_cosine_per_example(a, b) -> tf.Tensor:
    """- cos(a, b) over the last axis: [B, D] x2 -> [B] (in [-1, 1])."""
    a = tf.math.l2_normalize(_f32(a), axis=-1, epsilon=_EPS)
    b = tf.math.l2_normalize(_f32(b), axis=-1, epsilon=_EPS)
    return -tf.reduce_sum(a * b, axis=-1)


def perceptual_per_example(blocks_true, blocks_pred) -> tf.Tensor:
    """Mean over blocks of | a_pred - a_true | averaged over the block, divided by the mean | a_true |
    of that block (so each block weighs alike whatever its scale): lists of [B, h, w, c] -> [B]."""
    terms = []
    for t, p in zip(blocks_true, blocks_pred):
        t, p = _f32(t), _f32(p)
        scale = tf.reduce_mean(tf.abs(t)) + 1e-6  # one number per block
        terms.append(_mean_per_example(tf.abs(p - t)) / tf.stop_gradient(scale))
    return tf.add_n(terms) / float(len(terms))


def edge_l1_per_example(images_true, images_pred) -> tf.Tensor:
    """Mean | d_pred - d_true | over the differences d between horizontal and between vertical
    neighbour pixels: [B, H, W, C] x2 -> [B]. Pixel L1 barely tells a sharp edge from a soft one
    half a pixel wide; this term compares the edges themselves."""
    t, p = _f32(images_true), _f32(images_pred)
    d_rows = (p[:, 1:] - p[:, :-1]) - (t[:, 1:] - t[:, :-1])  # [B, H-1, W, C]
    d_cols = (p[:, :, 1:] - p[:, :, :-1]) - (t[:, :, 1:] - t[:, :, :-1])  # [B, H, W-1, C]
    return 0.5 * (_mean_per_example(tf.abs(d_rows)) + _mean_per_example(tf.abs(d_cols)))


def face_decoder_loss(
    texture_true,
    texture_pred,
    landmarks_true,
    landmarks_pred,
    feature_true,
    feature_pred,
    texture_weight: float = 1.0,
    landmark_weight: float = 1.0,
    feature_weight: float = 1.0,
    blocks_true=None,
    blocks_pred=None,
    perceptual_weight: float = 0.0,
    edge_weight: float = 0.0,
) -> dict[str, tf.Tensor]:
    """Cole et al. decoder losses, per example [B].

    texture_*: [B, H, W, 3] in [0, 1], the true one being the true face warped to the mean landmarks
      -> mean absolute error per example (L1 averaged over pixels, so the weight is size-independent)
    landmarks_*: [B, K, 2] normalised (x, y) -> mean squared error per example
    feature_*: face-encoder features of the input face and of the decoded face -> negative cosine
    blocks_*: optional face-encoder block outputs of the target face and of the decoded face ->
      perceptual_per_example, weighted by perceptual_weight
    edge_weight: > 0 adds edge_l1_per_example of the textures ("edges"), so weighted
    """
    texture = _mean_per_example(tf.abs(_f32(texture_true) - _f32(texture_pred)))
    landmarks = _mean_per_example(tf.square(_f32(landmarks_true) - _f32(landmarks_pred)))
    feature = negative_cosine_per_example(feature_true, feature_pred)
    total = texture_weight * texture + landmark_weight * landmarks + feature_weight * feature
    out = {"texture_l1": texture, "landmark_mse": landmarks, "feature_cos": feature}
    if blocks_true is not None:
        out["perceptual"] = perceptual_per_example(blocks_true, blocks_pred)
        total = total + perceptual_weight * out["perceptual"]
    if edge_weight:
        out["edges"] = edge_l1_per_example(texture_true, texture_pred)
        total = total + edge_weight * out["edges"]
    out["total"] = total
    return out


def hinge_critic_per_example(scores_real, scores_fake) -> tf.Tensor:
    """The critic's hinge loss (Lim & Ye 2017; Miyato et al. 2018), per example [B]: the mean over
    patches of relu(1 - real) + relu(1 + fake), scores [B, ...] each. The critic is done with a
    patch once it scores real faces above 1 and decoded ones below -1."""
    return _mean_per_example(tf.nn.relu(1.0 - _f32(scores_real))) + _mean_per_example(
        tf.nn.relu(1.0 + _f32(scores_fake))
    )


def hinge_generator_per_example(scores_fake) -> tf.Tensor:
    """The decoder's side of the hinge game, per example [B]: minus the critic's mean patch score of
    its decoded face."""
    return -_mean_per_example(_f32(scores_fake))


def attribute_cross_entropy_per_example(values, logits) -> tf.Tensor:
    """Stage 1's attribute heads: softmax cross-entropy of a categorical attribute, [B] float class
    indices (NaN: unknown, scored 0) x [B, C] -> [B]."""
    known = tf.logical_not(tf.math.is_nan(values))
    term = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(tf.where(known, values, 0.0), tf.int32), logits=_f32(logits)
    )
    return tf.where(known, term, 0.0)


def identity_cross_entropy_per_example(labels, logits) -> tf.Tensor:
    """Face-encoder training (stage 1): softmax cross-entropy over identities, [B] int x [B, C] -> [B]."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=_f32(logits)
    )
