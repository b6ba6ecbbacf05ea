"""Each loss term against a hand computation; per example, never across the batch."""

import numpy as np
import pytest
import tensorflow as tf

from s2f_tf import losses


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_terms_by_hand():
    rng = np.random.RandomState(0)
    dt, dp = rng.randn(3, 5).astype(np.float32), rng.randn(3, 5).astype(np.float32)
    ft, fp = rng.randn(3, 7).astype(np.float32), rng.randn(3, 7).astype(np.float32)
    lt, lp = rng.randn(3, 4).astype(np.float32), rng.randn(3, 4).astype(np.float32)
    out = losses.speech2face_loss(dt, dp, ft, fp, lt, lp)
    l1 = np.abs(dt - dp).sum(1)
    nt = ft / np.linalg.norm(ft, axis=1, keepdims=True)
    npred = fp / np.linalg.norm(fp, axis=1, keepdims=True)
    l2 = ((nt - npred) ** 2).sum(1)
    p, q = _softmax(lt / 2.0), _softmax(lp / 2.0)
    distill = -(p * np.log(q)).sum(1)
    np.testing.assert_allclose(out["decoder_l1"], l1, rtol=1e-5)
    np.testing.assert_allclose(out["feature_l2"], l2, rtol=1e-5)
    np.testing.assert_allclose(out["distill"], distill, rtol=1e-5)
    np.testing.assert_allclose(out["total"], l1 + 0.025 * l2 + 200 * distill, rtol=1e-5)
    assert all(v.shape == (3,) and v.dtype == tf.float32 for v in out.values())


def test_per_example_not_across_batch():
    rng = np.random.RandomState(1)
    args = [rng.randn(4, 6).astype(np.float32) for _ in range(6)]
    full = losses.speech2face_loss(*args)["total"].numpy()
    for i in range(4):
        one = losses.speech2face_loss(*[a[i : i + 1] for a in args])["total"].numpy()
        np.testing.assert_allclose(one, full[i : i + 1], rtol=1e-5)


def test_known_values():
    v = np.array([[1.0, 0.0]], np.float32)
    assert losses.normalized_l2_per_example(v, v).numpy()[0] == pytest.approx(0.0)
    assert losses.normalized_l2_per_example(v, -v).numpy()[0] == pytest.approx(4.0)
    assert losses.normalized_l2_per_example(v, np.array([[0.0, 3.0]], np.float32)).numpy()[
        0
    ] == pytest.approx(2.0)
    # identical logits: distillation is the entropy of softmax(a / T)
    a = np.array([[0.0, 0.0, 0.0, 0.0]], np.float32)
    assert losses.distillation_per_example(a, a).numpy()[0] == pytest.approx(np.log(4.0), rel=1e-6)
    assert losses.negative_cosine_per_example(v, 5 * v).numpy()[0] == pytest.approx(-1.0)


def test_decoder_loss_by_hand():
    rng = np.random.RandomState(2)
    tt, tp = rng.rand(2, 4, 4, 3).astype(np.float32), rng.rand(2, 4, 4, 3).astype(np.float32)
    lt, lp = rng.rand(2, 5, 2).astype(np.float32), rng.rand(2, 5, 2).astype(np.float32)
    ft, fp = rng.randn(2, 6).astype(np.float32), rng.randn(2, 6).astype(np.float32)
    out = losses.face_decoder_loss(
        tt, tp, lt, lp, ft, fp, texture_weight=2.0, landmark_weight=3.0, feature_weight=0.5
    )
    tex = np.abs(tt - tp).reshape(2, -1).mean(1)
    lmk = ((lt - lp) ** 2).reshape(2, -1).mean(1)
    cos = -(ft * fp).sum(1) / np.linalg.norm(ft, axis=1) / np.linalg.norm(fp, axis=1)
    np.testing.assert_allclose(out["texture_l1"], tex, rtol=1e-5)
    np.testing.assert_allclose(out["landmark_mse"], lmk, rtol=1e-5)
    np.testing.assert_allclose(out["feature_cos"], cos, rtol=1e-5)
    np.testing.assert_allclose(out["total"], 2 * tex + 3 * lmk + 0.5 * cos, rtol=1e-5)


def test_perceptual_term_by_hand():
    rng = np.random.RandomState(4)
    bt = [rng.rand(2, 4, 4, 3).astype(np.float32), 5 * rng.rand(2, 2, 2, 6).astype(np.float32)]
    bp = [rng.rand(2, 4, 4, 3).astype(np.float32), 5 * rng.rand(2, 2, 2, 6).astype(np.float32)]
    want = np.mean(
        [np.abs(p - t).reshape(2, -1).mean(1) / np.abs(t).mean() for t, p in zip(bt, bp)], axis=0
    )
    np.testing.assert_allclose(losses.perceptual_per_example(bt, bp), want, rtol=1e-5)
    z = np.zeros((2, 4, 4, 3), np.float32)
    out = losses.face_decoder_loss(
        z,
        z,
        z[:, :2, :, :2],
        z[:, :2, :, :2],
        np.ones((2, 3)),
        np.ones((2, 3)),
        blocks_true=bt,
        blocks_pred=bp,
        perceptual_weight=0.5,
    )
    np.testing.assert_allclose(out["total"], -1.0 + 0.5 * want, rtol=1e-5)  # cos term is -1
    assert "perceptual" not in losses.face_decoder_loss(
        z, z, z[:, :2, :, :2], z[:, :2, :, :2], np.ones((2, 3)), np.ones((2, 3))
    )


def test_edge_term_by_hand():
    # one grey 3 x 3 image, one channel: a sharp step against a soft one
    sharp = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1]], np.float32)[None, :, :, None]
    soft = np.array([[0, 0.5, 1], [0, 0.5, 1], [0, 0.5, 1]], np.float32)[None, :, :, None]
    # column differences: sharp (0, 1), soft (0.5, 0.5) per row -> |diff| 0.5, 0.5: mean 0.5;
    # row differences are all 0: the term is (0.5 + 0) / 2
    np.testing.assert_allclose(losses.edge_l1_per_example(sharp, soft), [0.25], rtol=1e-6)
    # a constant offset has the same edges
    np.testing.assert_allclose(losses.edge_l1_per_example(sharp, sharp + 0.3), [0.0], atol=1e-7)
    rng = np.random.RandomState(5)
    t, p = rng.rand(2, 4, 5, 3).astype(np.float32), rng.rand(2, 4, 5, 3).astype(np.float32)
    rows = np.abs(np.diff(p, axis=1) - np.diff(t, axis=1)).reshape(2, -1).mean(1)
    cols = np.abs(np.diff(p, axis=2) - np.diff(t, axis=2)).reshape(2, -1).mean(1)
    np.testing.assert_allclose(losses.edge_l1_per_example(t, p), 0.5 * (rows + cols), rtol=1e-5)
    z = np.zeros((2, 2, 2), np.float32)
    out = losses.face_decoder_loss(
        t, p, z, z, np.ones((2, 3)), np.ones((2, 3)), texture_weight=0.0, edge_weight=2.0
    )
    np.testing.assert_allclose(out["total"], -1.0 + 2.0 * 0.5 * (rows + cols), rtol=1e-5)
    assert "edges" not in losses.face_decoder_loss(t, p, z, z, np.ones((2, 3)), np.ones((2, 3)))


def test_hinge_terms_by_hand():
    # two examples of 2 x 2 patch scores; the critic is done with a patch beyond +1 (real), -1 (decoded)
    real = np.array([[[2.0, 0.5], [1.0, -1.0]], [[3.0, 3.0], [3.0, 3.0]]], np.float32)
    fake = np.array([[[-2.0, 0.0], [-0.5, 1.0]], [[-1.0, -4.0], [-1.0, -1.0]]], np.float32)
    # example 0: real relu(1 - s) = 0, 0.5, 0, 2 -> 0.625; decoded relu(1 + s) = 0, 1, 0.5, 2 -> 0.875
    np.testing.assert_allclose(losses.hinge_critic_per_example(real, fake), [1.5, 0.0], rtol=1e-6)
    # the decoder's side: minus the mean score of its faces
    np.testing.assert_allclose(losses.hinge_generator_per_example(fake), [0.375, 1.75], rtol=1e-6)


def test_identity_cross_entropy_and_float32_inputs():
    logits = np.array([[2.0, 0.0], [0.0, 0.0]], np.float16)
    ce = losses.identity_cross_entropy_per_example(np.array([0, 1]), logits)
    expected = [np.log(1 + np.exp(-2.0)), np.log(2.0)]
    assert ce.dtype == tf.float32
    np.testing.assert_allclose(ce, expected, rtol=1e-3)
    out = losses.speech2face_loss(*[tf.ones([2, 3], tf.bfloat16)] * 6)
    assert all(v.dtype == tf.float32 for v in out.values())
