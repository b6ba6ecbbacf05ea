"""Tests for s2f_tf.models.warp (thin-plate spline sparse image warp)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.interpolate import RBFInterpolator

from s2f_tf.models.warp import (
    SplineWarp,
    dense_image_warp,
    interpolate_spline,
    sparse_image_warp,
)


def _random_landmarks(
    rng: np.random.Generator,
    batch: int,
    k: int,
    low: float = 0.2,
    high: float = 0.8,
) -> np.ndarray:
    """[batch, k, 2] float32 normalised (x, y) landmarks."""
    return rng.uniform(low, high, size=(batch, k, 2)).astype(np.float32)


def _smooth_image(height: int, width: int, channels: int = 1) -> np.ndarray:
    """[1, H, W, C] float32 low-frequency image."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    chans = []
    for c in range(channels):
        chans.append(
            np.sin(2 * np.pi * cols / width * 0.8 + c)
            * np.cos(2 * np.pi * rows / height * 0.6 - 0.5 * c)
            + 0.3 * rows / height
        )
    return np.stack(chans, axis=-1)[None].astype(np.float32)


def _pixel_centre(col: int, row: int, height: int, width: int) -> list[float]:
    """Normalised (x, y) of pixel (row, col)'s centre."""
    return [(col + 0.5) / width, (row + 0.5) / height]


# ----------------------------------------------------------------------------
# 1. interpolate_spline vs scipy
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "order,kernel,rel_tol",
    [
        (2, "thin_plate_spline", 1e-4),
        (1, "linear", 1e-4),
        # r^3 is worse conditioned in float32.
        (3, "cubic", 1e-3),
    ],
)
def test_interpolate_spline_matches_scipy(order: int, kernel: str, rel_tol: float) -> None:
    rng = np.random.default_rng(0)
    batch, n, m, k = 2, 9, 25, 3
    train_points = rng.uniform(size=(batch, n, 2))
    train_values = rng.normal(size=(batch, n, k))
    query_points = rng.uniform(-0.1, 1.1, size=(batch, m, 2))
    out = interpolate_spline(train_points, train_values, query_points, order=order)
    assert out.dtype == tf.float32
    assert out.shape == (batch, m, k)
    for b in range(batch):
        ref = RBFInterpolator(
            train_points[b], train_values[b], kernel=kernel, degree=1, smoothing=0.0
        )(query_points[b])
        scale = np.abs(ref).max()
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=0, atol=rel_tol * scale)


def test_interpolate_spline_regularization_matches_scipy_smoothing() -> None:
    rng = np.random.default_rng(1)
    train_points = rng.uniform(size=(1, 8, 2))
    train_values = rng.normal(size=(1, 8, 2))
    query_points = rng.uniform(size=(1, 20, 2))
    out = interpolate_spline(train_points, train_values, query_points, regularization=0.05).numpy()[
        0
    ]
    ref = RBFInterpolator(
        train_points[0],
        train_values[0],
        kernel="thin_plate_spline",
        degree=1,
        smoothing=0.05,
    )(query_points[0])
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_interpolate_spline_interpolates_training_points() -> None:
    rng = np.random.default_rng(2)
    train_points = rng.uniform(size=(1, 7, 2)).astype(np.float32)
    train_values = rng.normal(size=(1, 7, 2)).astype(np.float32)
    out = interpolate_spline(train_points, train_values, train_points)
    np.testing.assert_allclose(out.numpy(), train_values, atol=1e-4)


# ----------------------------------------------------------------------------
# 2. Identity
# ----------------------------------------------------------------------------


def test_identity_warp() -> None:
    rng = np.random.default_rng(3)
    image = rng.uniform(size=(2, 16, 20, 3)).astype(np.float32)
    landmarks = _random_landmarks(rng, 2, 7)
    warped, flow = sparse_image_warp(image, landmarks, landmarks)
    assert warped.shape == image.shape and warped.dtype == tf.float32
    assert flow.shape == (2, 16, 20, 2) and flow.dtype == tf.float32
    np.testing.assert_allclose(flow.numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(warped.numpy(), image, atol=1e-5)


def test_dense_warp_zero_flow_is_exact() -> None:
    rng = np.random.default_rng(4)
    image = rng.uniform(size=(1, 9, 7, 2)).astype(np.float32)
    out = dense_image_warp(image, np.zeros((1, 9, 7, 2), np.float32))
    np.testing.assert_array_equal(out.numpy(), image)


# ----------------------------------------------------------------------------
# 3. Known translations / flow values
# ----------------------------------------------------------------------------


def test_dense_warp_integer_translation_matches_roll() -> None:
    rng = np.random.default_rng(5)
    height, width = 12, 16
    image = rng.uniform(size=(1, height, width, 3)).astype(np.float32)
    dy, dx = 2.0, -3.0
    flow = np.zeros((1, height, width, 2), np.float32)
    flow[..., 0], flow[..., 1] = dy, dx
    out = dense_image_warp(image, flow).numpy()
    # out[i, j] = image[i - dy, j - dx]: content moves down 2, left 3.
    expected = np.roll(image, shift=(2, -3), axis=(1, 2))
    np.testing.assert_allclose(out[:, 2:, : width - 3], expected[:, 2:, : width - 3], atol=1e-6)
    # Outside the image the sample is clamped to the border row / column.
    np.testing.assert_allclose(out[:, 0, : width - 3], image[:, 0, 3:], atol=1e-6)
    np.testing.assert_allclose(out[:, 5, width - 1], image[:, 3, width - 1], atol=1e-6)


def test_dense_warp_fractional_flow_is_bilinear() -> None:
    rng = np.random.default_rng(6)
    image = rng.uniform(size=(1, 8, 8, 1)).astype(np.float32)
    flow = np.zeros((1, 8, 8, 2), np.float32)
    flow[..., 0], flow[..., 1] = 0.25, -0.5
    out = dense_image_warp(image, flow).numpy()
    # Sample at (i - 0.25, j + 0.5) for an interior pixel (3, 4).
    i, j = 3, 4
    top = 0.5 * image[0, i - 1, j] + 0.5 * image[0, i - 1, j + 1]
    bottom = 0.5 * image[0, i, j] + 0.5 * image[0, i, j + 1]
    np.testing.assert_allclose(out[0, i, j], 0.25 * top + 0.75 * bottom, atol=1e-6)


def test_sparse_warp_flow_at_landmarks_equals_displacement() -> None:
    height, width = 24, 32
    # Destinations at pixel centres (row, col), so the flow is sampled there.
    dest_rc = [(6, 8), (6, 22), (12, 15), (18, 10), (17, 24)]
    shift_rc = [(1.0, 2.0), (-1.5, 0.5), (2.0, -2.0), (0.0, 3.0), (-2.0, -1.0)]
    dest = np.array(
        [[_pixel_centre(c, r, height, width) for r, c in dest_rc]], np.float32
    )  # [1, K, 2] (x, y)
    source = dest.copy()
    for k, (sy, sx) in enumerate(shift_rc):
        source[0, k, 0] -= sx / width
        source[0, k, 1] -= sy / height
    image = np.zeros((1, height, width, 1), np.float32)
    _, flow = sparse_image_warp(image, source, dest)
    flow = flow.numpy()
    for (r, c), (sy, sx) in zip(dest_rc, shift_rc):
        np.testing.assert_allclose(flow[0, r, c], [sy, sx], atol=1e-3)
    # Border pixels get only small flows compared to the interior.
    assert np.abs(flow[0, 0, :]).max() < 1.0


# ----------------------------------------------------------------------------
# 4. Landmarks move the content
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("num_border_points", [0, 2, 4])
def test_bright_dot_moves_to_dest(num_border_points: int) -> None:
    height, width = 24, 32  # non-square: catches x/y mix-ups
    src_rc, dst_rc = (8, 10), (13, 19)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    blob = np.exp(-((rows - src_rc[0]) ** 2 + (cols - src_rc[1]) ** 2) / 2.0)
    image = blob[None, :, :, None].astype(np.float32)
    anchors = [(4, 4), (4, 27), (20, 4), (20, 27)]  # fixed landmarks
    source = [_pixel_centre(c, r, height, width) for r, c in [src_rc] + anchors]
    dest = [_pixel_centre(c, r, height, width) for r, c in [dst_rc] + anchors]
    warped, _ = sparse_image_warp(
        image,
        np.array([source], np.float32),
        np.array([dest], np.float32),
        num_border_points=num_border_points,
    )
    warped = warped.numpy()[0, :, :, 0]
    peak = np.unravel_index(np.argmax(warped), warped.shape)
    assert abs(peak[0] - dst_rc[0]) <= 1 and abs(peak[1] - dst_rc[1]) <= 1
    assert warped[dst_rc] > 0.95


# ----------------------------------------------------------------------------
# 5. Gradients
# ----------------------------------------------------------------------------


def test_gradients_finite_and_nonzero() -> None:
    rng = np.random.default_rng(7)
    image = tf.constant(_smooth_image(16, 16, 2))
    source = tf.constant(_random_landmarks(rng, 1, 6))
    dest = tf.Variable(source + rng.normal(0, 0.03, size=source.shape).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(image)
        warped, _ = sparse_image_warp(image, source, dest)
        loss = tf.reduce_sum(warped * warped)
    for grad in (tape.gradient(loss, image), tape.gradient(loss, dest)):
        assert grad is not None
        grad = grad.numpy()
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_gradients_finite_at_identity_and_with_coincident_points() -> None:
    rng = np.random.default_rng(8)
    image = tf.constant(_smooth_image(16, 16))
    source = _random_landmarks(rng, 1, 5)
    # Identity (flows exactly zero) and landmarks on the image border.
    source[0, 0] = [0.0, 0.0]
    source[0, 1] = [1.0, 0.5]
    dest = tf.Variable(source)
    with tf.GradientTape() as tape:
        warped, _ = sparse_image_warp(image, source, dest)
        loss = tf.reduce_sum(warped)
    grad = tape.gradient(loss, dest).numpy()
    assert np.all(np.isfinite(grad))
    # Two identical destination landmarks with conflicting displacements:
    # finite with regularization > 0.
    dest2 = source.copy()
    dest2[0, 3] = dest2[0, 2]
    dest2 = tf.Variable(dest2)
    with tf.GradientTape() as tape:
        warped, flow = sparse_image_warp(image, source, dest2, regularization=1e-3)
        loss = tf.reduce_sum(warped)
    grad = tape.gradient(loss, dest2).numpy()
    assert np.all(np.isfinite(warped.numpy())) and np.all(np.isfinite(grad))
    assert np.all(np.isfinite(flow.numpy()))


def test_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(9)
    image = tf.constant(_smooth_image(16, 16))
    weights = tf.constant(rng.uniform(size=(1, 16, 16, 1)).astype(np.float32))
    source = _random_landmarks(rng, 1, 5, 0.25, 0.75)
    dest0 = source + rng.normal(0, 0.04, size=source.shape).astype(np.float32)

    def objective(dest: tf.Tensor) -> tf.Tensor:
        warped, _ = sparse_image_warp(image, source, dest)
        return tf.reduce_sum(warped * weights)

    dest = tf.Variable(dest0)
    with tf.GradientTape() as tape:
        value = objective(dest)
    grad = tape.gradient(value, dest).numpy()

    h = 2e-3
    fd = np.zeros_like(dest0)
    for idx in np.ndindex(*dest0.shape):
        plus, minus = dest0.copy(), dest0.copy()
        plus[idx] += h
        minus[idx] -= h
        fd[idx] = (objective(plus).numpy() - objective(minus).numpy()) / (2 * h)
    rel = np.linalg.norm(fd - grad) / np.linalg.norm(grad)
    assert rel < 5e-2, (rel, grad, fd)


# ----------------------------------------------------------------------------
# 6. tf.function / XLA
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("jit_compile", [False, True])
def test_tf_function_and_xla(jit_compile: bool) -> None:
    rng = np.random.default_rng(10)
    image = tf.constant(rng.uniform(size=(2, 16, 16, 3)).astype(np.float32))
    source = tf.constant(_random_landmarks(rng, 2, 6))
    dest = tf.constant(source + rng.normal(0, 0.03, size=source.shape).astype(np.float32))

    @tf.function(jit_compile=jit_compile)
    def step(image: tf.Tensor, source: tf.Tensor, dest: tf.Tensor):
        with tf.GradientTape() as tape:
            tape.watch([image, dest])
            warped, flow = sparse_image_warp(image, source, dest)
            loss = tf.reduce_sum(warped * warped)
        grad_image, grad_dest = tape.gradient(loss, [image, dest])
        return warped, flow, grad_image, grad_dest

    warped, flow, grad_image, grad_dest = step(image, source, dest)
    assert warped.shape == (2, 16, 16, 3) and flow.shape == (2, 16, 16, 2)
    eager_warped, eager_flow = sparse_image_warp(image, source, dest)
    np.testing.assert_allclose(warped.numpy(), eager_warped.numpy(), atol=1e-4)
    np.testing.assert_allclose(flow.numpy(), eager_flow.numpy(), atol=1e-4)
    assert np.all(np.isfinite(grad_image.numpy()))
    assert np.all(np.isfinite(grad_dest.numpy()))
    assert np.abs(grad_dest.numpy()).max() > 0


def test_static_shapes_with_unknown_batch() -> None:
    spec_img = tf.TensorSpec([None, 16, 12, 3], tf.float32)
    spec_lm = tf.TensorSpec([None, 5, 2], tf.float32)
    fn = tf.function(lambda i, s, d: sparse_image_warp(i, s, d))
    warped, flow = fn.get_concrete_function(spec_img, spec_lm, spec_lm).structured_outputs
    assert warped.shape.as_list() == [None, 16, 12, 3]
    assert flow.shape.as_list() == [None, 16, 12, 2]


# ----------------------------------------------------------------------------
# 7. Keras layer
# ----------------------------------------------------------------------------


def test_spline_warp_layer_config_round_trip() -> None:
    layer = SplineWarp(num_border_points=3, regularization=1e-3, name="warp")
    config = layer.get_config()
    clone = SplineWarp.from_config(config)
    assert clone.num_border_points == 3 and clone.regularization == 1e-3
    assert clone.name == "warp"
    assert clone.get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, SplineWarp)
    assert restored.get_config() == config

    rng = np.random.default_rng(11)
    image = rng.uniform(size=(1, 16, 16, 1)).astype(np.float32)
    source = _random_landmarks(rng, 1, 5)
    dest = source + 0.02
    np.testing.assert_allclose(
        layer(image, source, dest).numpy(), clone(image, source, dest).numpy(), atol=1e-6
    )


def test_spline_warp_mixed_precision_outputs_float32() -> None:
    rng = np.random.default_rng(12)
    image = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
    source = _random_landmarks(rng, 2, 6)
    dest = source + 0.02
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = SplineWarp()
        out = layer(tf.cast(image, tf.float16), source, dest)
        assert out.dtype == tf.float32
        # Functional model: symbolic output dtype is float32 too.
        inputs = [keras.Input((16, 16, 3)), keras.Input((6, 2)), keras.Input((6, 2))]
        symbolic = SplineWarp()(*inputs)
        assert symbolic.dtype == "float32"
        model = keras.Model(inputs, symbolic)
        out2 = model([image, source, dest])
        assert out2.dtype == tf.float32
        np.testing.assert_allclose(
            out2.numpy(), sparse_image_warp(image, source, dest)[0].numpy(), atol=1e-5
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ----------------------------------------------------------------------------
# 8. Bad inputs
# ----------------------------------------------------------------------------


def test_bad_inputs_raise_value_error() -> None:
    image = np.zeros((1, 8, 8, 1), np.float32)
    lm = np.full((1, 4, 2), 0.5, np.float32)
    with pytest.raises(ValueError, match=r"`image` must have rank 4.*\(8, 8, 1\)"):
        sparse_image_warp(image[0], lm, lm)
    with pytest.raises(ValueError, match=r"`source_landmarks` must have rank 3"):
        sparse_image_warp(image, lm[0], lm)
    with pytest.raises(ValueError, match=r"Landmark count mismatch.*\(1, 4, 2\).*\(1, 3, 2\)"):
        sparse_image_warp(image, lm, lm[:, :3])
    with pytest.raises(
        ValueError,
        match=r"`dest_landmarks` must have last dimension 2.*"
        r"\(1, 4, 3\)",
    ):
        sparse_image_warp(image, lm, np.zeros((1, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"Batch size mismatch"):
        sparse_image_warp(np.zeros((2, 8, 8, 1), np.float32), lm, lm)
    with pytest.raises(ValueError, match=r"num_border_points"):
        sparse_image_warp(image, lm, lm, num_border_points=1)
    with pytest.raises(ValueError, match=r"regularization"):
        sparse_image_warp(image, lm, lm, regularization=-1.0)
    with pytest.raises(ValueError, match=r"num_border_points"):
        SplineWarp(num_border_points=-2)
    with pytest.raises(ValueError, match=r"`flow` must have last dimension 2"):
        dense_image_warp(image, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"Height mismatch"):
        dense_image_warp(image, np.zeros((1, 7, 8, 2), np.float32))
    with pytest.raises(ValueError, match=r"Number of control points mismatch.*\(1, 5, 2\)"):
        interpolate_spline(np.zeros((1, 5, 2)), np.zeros((1, 4, 1)), np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match=r"Point dimension"):
        interpolate_spline(np.zeros((1, 5, 2)), np.zeros((1, 5, 1)), np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match=r"`order` must be an int >= 1"):
        interpolate_spline(np.zeros((1, 5, 2)), np.zeros((1, 5, 1)), np.zeros((1, 3, 2)), order=0)


# ----------------------------------------------------------------------------
# bicubic sampling (s2f_tf/models/sampling.py)
# ----------------------------------------------------------------------------


def _keys_numpy(
    image: np.ndarray, rows: np.ndarray, cols: np.ndarray, a: float = -0.5
) -> np.ndarray:
    """Keys cubic convolution written out per point: image [H, W], positions [N] -> [N]."""

    def kernel(d):
        d = abs(d)
        if d <= 1:
            return (a + 2) * d**3 - (a + 3) * d**2 + 1
        if d < 2:
            return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
        return 0.0

    h, w = image.shape
    out = []
    for r, c in zip(np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)):
        r0, c0 = int(np.floor(r)), int(np.floor(c))
        total = 0.0
        for i in range(r0 - 1, r0 + 3):
            for j in range(c0 - 1, c0 + 3):
                total += (
                    kernel(r - i)
                    * kernel(c - j)
                    * image[min(max(i, 0), h - 1), min(max(j, 0), w - 1)]
                )
        out.append(total)
    return np.asarray(out)


def test_bicubic_sampling_matches_keys_by_hand_and_keeps_quadratics() -> None:
    from s2f_tf.models.sampling import sample

    rng = np.random.default_rng(4)
    image = rng.uniform(0, 1, (9, 11)).astype(np.float32)
    rows, cols = rng.uniform(-1.5, 10, 40), rng.uniform(-1.5, 12, 40)  # some outside: clamped
    query = np.stack([rows, cols], -1).reshape(1, 5, 8, 2).astype(np.float32)
    got = (
        sample(tf.constant(image[None, :, :, None]), tf.constant(query), "bicubic").numpy().ravel()
    )
    np.testing.assert_allclose(got, _keys_numpy(image.astype(np.float64), rows, cols), atol=1e-5)
    # integer positions give the pixels themselves
    grid = np.stack(np.meshgrid(np.arange(9), np.arange(11), indexing="ij"), -1)[None].astype(
        np.float32
    )
    exact = sample(tf.constant(image[None, :, :, None]), tf.constant(grid), "bicubic").numpy()[
        0, :, :, 0
    ]
    np.testing.assert_allclose(exact, image, atol=1e-6)
    # a quadratic image is reproduced exactly away from the border (cubic convolution is 3rd order)
    r, c = np.meshgrid(np.arange(12.0), np.arange(12.0), indexing="ij")
    quad = (0.3 + 0.02 * r - 0.01 * c + 0.004 * r * c + 0.003 * r**2 - 0.002 * c**2).astype(
        np.float32
    )
    pts = rng.uniform(2, 9, (1, 6, 6, 2)).astype(np.float32)
    want = (
        0.3
        + 0.02 * pts[..., 0]
        - 0.01 * pts[..., 1]
        + 0.004 * pts[..., 0] * pts[..., 1]
        + 0.003 * pts[..., 0] ** 2
        - 0.002 * pts[..., 1] ** 2
    )
    np.testing.assert_allclose(
        sample(tf.constant(quad[None, :, :, None]), tf.constant(pts), "bicubic").numpy()[..., 0],
        want,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="interpolation"):
        sample(tf.constant(quad[None, :, :, None]), tf.constant(pts), "lanczos")


def test_bicubic_warp_keeps_more_detail_and_has_gradients() -> None:
    """Gradients reach the image and the flow, also under XLA; a sub-pixel move of sharp edges keeps
    more fine detail with bicubic than with bilinear sampling."""
    smooth = _smooth_image(16, 16)
    shifted = dense_image_warp(smooth, np.full((1, 16, 16, 2), 0.3, np.float32), "bicubic").numpy()
    assert np.isfinite(shifted).all()
    image = tf.Variable(smooth)
    flow_v = tf.Variable(np.full((1, 16, 16, 2), 0.3, np.float32))

    @tf.function(jit_compile=True)
    def grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(dense_image_warp(image, flow_v, "bicubic")))
        return tape.gradient(loss, [image, flow_v])

    g_image, g_flow = grads()
    assert np.isfinite(g_image.numpy()).all() and np.abs(g_flow.numpy()).max() > 0
    # on the synthetic canonical faces' kind of detail (a sharp edge, a sub-pixel move) bicubic keeps
    # more of the mean squared Laplacian than bilinear
    kept = _detail_kept_by_a_subpixel_move(("bilinear", "bicubic"))
    assert kept["bicubic"] > 1.2 * kept["bilinear"], kept


def _detail_kept_by_a_subpixel_move(interpolations) -> dict:
    """Mean squared Laplacian of sharp edges (a step and a grey block) moved by 0.35 px, by method."""
    from s2f_tf.metrics import mean_squared_laplacian

    edge = np.zeros((1, 24, 24, 3), np.float32)
    edge[:, :, 12:] = 1.0
    edge[:, 8:12, 4:9] = 0.5
    move = np.full((1, 24, 24, 2), 0.35, np.float32)
    return {
        m: mean_squared_laplacian(dense_image_warp(edge, move, m).numpy())[0]
        for m in interpolations
    }


def test_bspline_prefilter_and_weights_by_hand() -> None:
    from s2f_tf.models.sampling import bspline5_weights, bspline_prefilter, bspline_weights

    # 3 pixels: the B-spline at pixel i is (c[i-1] + 4 c[i] + c[i+1]) / 6, end coefficients repeated
    m = np.array([[5, 1, 0], [1, 4, 1], [0, 1, 5]]) / 6.0
    np.testing.assert_allclose(bspline_prefilter(3), np.linalg.inv(m), rtol=1e-6)
    np.testing.assert_allclose(bspline_prefilter(1), [[1.0]])
    # the quintic: (c[i-2] + 26 c[i-1] + 66 c[i] + 26 c[i+1] + c[i+2]) / 120, the taps beyond the
    # ends folded onto the end coefficients
    m5 = np.array([[93, 26, 1], [27, 66, 27], [1, 26, 93]]) / 120.0
    np.testing.assert_allclose(bspline_prefilter(3, degree=5), np.linalg.inv(m5), rtol=1e-5)
    w = [x.numpy() for x in bspline_weights(tf.constant([0.0, 0.5, 0.25]))]
    np.testing.assert_allclose(
        np.stack(w, 1)[:2],
        [[1 / 6, 4 / 6, 1 / 6, 0], [1 / 48, 23 / 48, 23 / 48, 1 / 48]],
        atol=1e-7,
    )
    np.testing.assert_allclose(np.sum(w, 0), 1.0, atol=1e-6)
    # quintic B-spline values at the integers and half-integers (x 120 and x 3840)
    w5 = np.stack([x.numpy() for x in bspline5_weights(tf.constant([0.0, 0.5, 0.3]))], 1)
    np.testing.assert_allclose(w5[0], np.array([1, 26, 66, 26, 1, 0]) / 120.0, atol=1e-7)
    np.testing.assert_allclose(w5[1], np.array([1, 237, 1682, 1682, 237, 1]) / 3840.0, atol=1e-7)
    np.testing.assert_allclose(w5.sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize("interpolation, order", [("bspline", 3), ("bspline5", 5)])
def test_bspline_sampling_interpolates_the_pixels_and_matches_scipy(
    interpolation: str, order: int
) -> None:
    """Exact at every pixel (edges too); between pixels scipy.ndimage's spline of the same order,
    away from the border where the two boundary rules differ; and a sub-pixel move of sharp edges
    keeps more fine detail than the interpolation one step below."""
    import scipy.ndimage

    from s2f_tf.models.sampling import sample

    rng = np.random.default_rng(6)
    image = rng.uniform(0, 1, (1, 32, 36, 2)).astype(np.float32)
    grid = np.stack(np.meshgrid(np.arange(32), np.arange(36), indexing="ij"), -1)[None].astype(
        np.float32
    )
    np.testing.assert_allclose(sample(image, grid, interpolation).numpy(), image, atol=1e-5)
    # 13+ pixels from the border: the quintic's boundary rule fades as 0.43 ** distance
    query = (
        np.stack([rng.uniform(13, 18, 30), rng.uniform(13, 22, 30)], -1)
        .reshape(1, 5, 6, 2)
        .astype(np.float32)
    )
    got = sample(image, query, interpolation).numpy()[0]
    for c in range(2):
        want = scipy.ndimage.map_coordinates(
            image[0, :, :, c].astype(np.float64),
            query[0].reshape(-1, 2).T,
            order=order,
            mode="nearest",
        ).reshape(5, 6)
        np.testing.assert_allclose(got[..., c], want, atol=1e-4)
    below = {"bspline": "bicubic", "bspline5": "bspline"}[interpolation]
    kept = _detail_kept_by_a_subpixel_move((below, interpolation))
    assert kept[interpolation] > 1.02 * kept[below], kept
    unknown = tf.function(
        lambda x: sample(x, query, interpolation),
        input_signature=[tf.TensorSpec([1, None, None, 2], tf.float32)],
    )
    with pytest.raises(ValueError, match="height and width known"):
        unknown.get_concrete_function()


# ----------------------------------------------------------------------------
# 7. The spline on a coarse grid (flow_grid)
# ----------------------------------------------------------------------------


def test_linear_upsampler_by_hand() -> None:
    from s2f_tf.models.warp import _linear_upsampler

    # 5 pixel centres from 3 grid points at pixels 0, 2, 4: pixels 1 and 3 are half-way.
    np.testing.assert_allclose(
        _linear_upsampler(5, 3),
        [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]],
        atol=1e-7,
    )
    # 4 pixels, 3 points at pixels 0, 1.5, 3: pixel 1 is 2/3 of the way to the middle point.
    np.testing.assert_allclose(
        _linear_upsampler(4, 3),
        [[1, 0, 0], [1 / 3, 2 / 3, 0], [0, 2 / 3, 1 / 3], [0, 0, 1]],
        atol=1e-6,
    )
    # as many points as pixels: the identity
    np.testing.assert_allclose(_linear_upsampler(6, 6), np.eye(6), atol=1e-7)


def test_flow_grid_interpolates_the_exact_flow() -> None:
    """Where the grid points fall on pixel centres the flow is the exact spline's; in between it is
    their linear interpolation; a face-like layout warps almost as the exact warp does."""
    rng = np.random.default_rng(21)
    size, grid = 33, 9  # grid points on pixels 0, 4, 8, ..., 32
    source = _random_landmarks(rng, 2, 12)
    dest = source + rng.normal(0, 0.02, size=source.shape).astype(np.float32)
    image = np.repeat(_smooth_image(size, size, 3), 2, axis=0)
    exact, flow = sparse_image_warp(
        image, source, dest, regularization=1e-4, interpolation="bicubic"
    )
    coarse, coarse_flow = sparse_image_warp(
        image, source, dest, regularization=1e-4, interpolation="bicubic", flow_grid=grid
    )
    flow, coarse_flow = flow.numpy(), coarse_flow.numpy()
    on_grid = np.arange(0, size, 4)
    np.testing.assert_allclose(
        coarse_flow[:, on_grid][:, :, on_grid], flow[:, on_grid][:, :, on_grid], atol=1e-4
    )
    # bilinear in the cell [0, 4] x [0, 4]: pixel (2, 1) = rows half-way, cols a quarter
    cell = flow[:, [0, 4]][:, :, [0, 4]]  # [B, 2, 2, 2] corners (r, c)
    top = 0.75 * cell[:, 0, 0] + 0.25 * cell[:, 0, 1]
    bottom = 0.75 * cell[:, 1, 0] + 0.25 * cell[:, 1, 1]
    np.testing.assert_allclose(coarse_flow[:, 2, 1], 0.5 * (top + bottom), atol=1e-4)
    assert np.abs(coarse.numpy() - exact.numpy()).mean() < 0.01 * np.abs(exact.numpy()).mean()


def test_flow_grid_gradients_xla_and_layer_config() -> None:
    rng = np.random.default_rng(22)
    image = tf.Variable(_smooth_image(16, 16, 2))
    source = tf.constant(_random_landmarks(rng, 1, 6))
    dest = tf.Variable(source + rng.normal(0, 0.03, size=source.shape).astype(np.float32))
    layer = SplineWarp(regularization=1e-4, interpolation="bicubic", flow_grid=5)

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(image, source, dest)))
        return tape.gradient(loss, [image, dest])

    for grad in step():
        assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).max() > 0
    clone = SplineWarp.from_config(layer.get_config())
    assert clone.flow_grid == 5
    with pytest.raises(ValueError, match=r"flow_grid"):
        SplineWarp(flow_grid=1)
    with pytest.raises(ValueError, match=r"flow_grid.*static"):
        tf.function(
            lambda im: sparse_image_warp(im, source, dest, flow_grid=4)[0]
        ).get_concrete_function(tf.TensorSpec([1, None, None, 2], tf.float32))


@pytest.mark.parametrize("interpolation", ["bicubic", "bspline", "bspline5"])
def test_written_out_sampling_gradient_equals_autodiff(interpolation: str) -> None:
    """The cubic and quintic samplers' hand-written gradients (image and positions, some positions
    outside the image) equal TensorFlow's autodiff of the plain formula: every tap gathered,
    weighted and summed (after the B-splines' prefilter)."""
    from s2f_tf.models import sampling

    weights, offsets, degree = {
        "bicubic": (sampling.keys_weights, (-1, 0, 1, 2), 0),
        "bspline": (sampling.bspline_weights, (-1, 0, 1, 2), 3),
        "bspline5": (sampling.bspline5_weights, (-2, -1, 0, 1, 2, 3), 5),
    }[interpolation]
    rng = np.random.default_rng(24)
    image = tf.constant(rng.uniform(size=(2, 9, 7, 3)).astype(np.float32))
    query = tf.constant(rng.uniform(-2, 10, size=(2, 5, 6, 2)).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(2, 5, 6, 3)).astype(np.float32))

    def plain(image, query):
        if degree:
            image = sampling._prefilter(image, degree)  # pixels -> B-spline coefficients

        def axis(coord, size):
            coord = tf.clip_by_value(coord, 0.0, size - 1.0)
            low = tf.floor(coord)
            return [
                tf.clip_by_value(tf.cast(low, tf.int32) + k, 0, size - 1) for k in offsets
            ], weights(coord - low)

        rows, wy = axis(query[..., 0], 9)
        cols, wx = axis(query[..., 1], 7)
        return tf.add_n(
            [
                (w_r * w_c)[..., None] * tf.gather_nd(image, tf.stack([r, c], -1), batch_dims=1)
                for r, w_r in zip(rows, wy)
                for c, w_c in zip(cols, wx)
            ]
        )

    def grads(f):
        with tf.GradientTape() as tape:
            tape.watch([image, query])
            out = f(image, query)
            loss = tf.reduce_sum(out * upstream)
        return [out] + tape.gradient(loss, [image, query])

    for got, want in zip(grads(sampling._SAMPLERS[interpolation]), grads(plain)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "interpolation",
    ["bilinear", "bicubic", "bspline", pytest.param("bspline5", marks=pytest.mark.slow)],
)
def test_compiled_sampling_equals_the_graph_one_with_its_gradients(interpolation: str) -> None:
    from s2f_tf.models.sampling import sample

    rng = np.random.default_rng(23)
    image = tf.Variable(rng.uniform(size=(2, 9, 7, 3)).astype(np.float32))
    query = tf.Variable(rng.uniform(-2, 10, size=(2, 5, 6, 2)).astype(np.float32))

    @tf.function  # the decoder stage's graph is not compiled
    def run(compiled):
        with tf.GradientTape() as tape:
            out = sample(image, query, interpolation, compiled=compiled)
            loss = tf.reduce_sum(out * tf.range(3, dtype=tf.float32))
        return [out] + tape.gradient(loss, [image, query])

    for a, b in zip(run(True), run(False)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    layer = SplineWarp(interpolation=interpolation)
    assert layer.compiled_sampling is False and "compiled_sampling" not in layer.get_config()
