"""Differentiable sparse image warping with polyharmonic (thin-plate) splines.

A from-scratch replacement for the (dead) TensorFlow Addons functions
`tfa.image.interpolate_spline`, `tfa.image.dense_image_warp` and
`tfa.image.sparse_image_warp`, used by the face decoder (Cole et al. 2017):
a texture aligned to the mean-face landmarks is warped so that the mean
landmarks move onto the predicted landmarks.

Conventions
-----------
* Landmarks are `(x, y)` pairs normalised to [0, 1] of the image width and
  height (x to the right, y down), shape `[batch, K, 2]`. Pixel column `j`
  has its centre at `x = (j + 0.5) / W` (row `i` at `y = (i + 0.5) / H`), so
  internally a landmark becomes the pixel coordinate
  `(row, col) = (y * H - 0.5, x * W - 0.5)`.
* Flows follow tfa: `flow[b, i, j] = (dy, dx)` in PIXELS, in (row, col)
  order (note: the reverse of the landmarks' (x, y) order), and
  `dense_image_warp(image, flow)[b, i, j] = image[b, i - dy, j - dx]`
  (bilinear by default, or bicubic; clamped to the border pixels). I.e. the flow is the
  displacement by which content moves. `sparse_image_warp` returns the flow
  in this convention; at a destination landmark it equals
  `dest_px - source_px` (in pixels, (dy, dx)).
* All maths is float32; inputs of any float dtype (e.g. float16 under a
  `mixed_float16` policy) are cast to float32 and outputs are float32.

Spline details
--------------
`sparse_image_warp` fits a thin-plate spline (order 2, phi(r) = r^2 log r,
plus a degree-1 polynomial) to the control-point flows at the DESTINATION
positions and evaluates it at every pixel centre, then samples the image at
`pixel - flow`, so content at a source landmark lands on its destination.
The spline is fitted in isotropically scaled coordinates
`pixel / max(H, W)` (values O(1), better float32 conditioning). For
`regularization == 0` this gives exactly the same interpolant as fitting in
pixels (the thin-plate spline is invariant to isotropic scaling); a non-zero
`regularization` lambda is in these scaled units and equals tfa's
`regularization = lambda * max(H, W)**2` in pixel units.

Border control points (zero flow) are placed on the ring of pixel centres
just OUTSIDE the image, at pixel rows/cols -1 and H / W (normalised
-0.5/W and 1 + 0.5/W), `num_border_points` per edge including the corners,
`4 * (num_border_points - 1)` distinct points in total. Landmarks inside the
closed unit square therefore never coincide with a border point. Exactly
coincident control points (e.g. two identical destination landmarks, or
fewer than 3 non-collinear control points when `num_border_points == 0`)
make the interpolation system singular: eager/graph `tf.linalg.solve` then
raises "Input matrix is not invertible" and under XLA the result is
non-finite. Pass `regularization > 0` (e.g. 1e-4..1e-2) if predicted
landmarks can collide; with at least the 4 border corners and
`regularization > 0` the system is always non-singular.

phi is evaluated from squared distances with a safe log
(`0.5 * r2 * log(max(r2, eps))`; odd orders use a masked root), so values and
gradients are finite at r = 0.

The spline itself is `s2f_tf/models/spline.py`. Everything works inside `tf.function` and compiles with XLA
(`jit_compile=True`), including gradients (tested). Shapes are static
wherever the input shapes are static; the batch size may be dynamic.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from s2f_tf.models.sampling import INTERPOLATIONS, sample
from s2f_tf.models.spline import _as_float32, _check_equal, _check_rank, _dim, interpolate_spline

__all__ = [
    "interpolate_spline",
    "dense_image_warp",
    "sparse_image_warp",
    "SplineWarp",
]


# ----------------------------------------------------------------------------
# Dense warping
# ----------------------------------------------------------------------------


def _pixel_grid(height: int | tf.Tensor, width: int | tf.Tensor) -> tf.Tensor:
    """(row, col) pixel-centre coordinates, [H, W, 2] float32."""
    rows = tf.range(height, dtype=tf.float32)  # [H]
    cols = tf.range(width, dtype=tf.float32)  # [W]
    grid_r, grid_c = tf.meshgrid(rows, cols, indexing="ij")  # [H, W] each
    return tf.stack([grid_r, grid_c], axis=-1)  # [H, W, 2]


def _linear_upsampler(size: int, points: int) -> np.ndarray:
    """[size, points] weights: values at `points` evenly spaced positions spanning pixel centres
    0 .. size - 1 -> linearly interpolated values at every pixel centre (rows sum to 1)."""
    position = np.arange(size, dtype=np.float64) * (points - 1) / max(size - 1, 1)  # [size]
    low = np.minimum(np.floor(position).astype(np.int64), points - 2)
    frac = position - low
    weights = np.zeros((size, points), np.float64)
    weights[np.arange(size), low] = 1.0 - frac
    weights[np.arange(size), low + 1] += frac
    return weights.astype(np.float32)


def dense_image_warp(
    image: Any, flow: Any, interpolation: str = "bilinear", compiled: bool = False
) -> tf.Tensor:
    """Warps `image` with a dense per-pixel flow (tfa convention).

    out[b, i, j] = image[b, i - flow[b, i, j, 0], j - flow[b, i, j, 1]], sampled
    with `interpolation` (s2f_tf/models/sampling.py: "bilinear" as tfa,
    "bicubic", "bspline" or "bspline5") and clamped to the border pixels. The flow is in PIXELS and in
    (dy, dx) = (row, col) order: content moves BY the flow.

    Args:
      image: [B, H, W, C] any float dtype.
      flow: [B, H, W, 2] any float dtype, (dy, dx) in pixels.
      interpolation: "bilinear", "bicubic", "bspline" or "bspline5" (s2f_tf/models/sampling.py).

    Returns:
      [B, H, W, C] float32 warped image.

    Raises:
      ValueError: on bad ranks or mismatching shapes.
    """
    image = _as_float32(image, "image")  # [B, H, W, C]
    flow = _as_float32(flow, "flow")  # [B, H, W, 2]
    _check_rank(image, 4, "image", "[batch, height, width, channels]")
    _check_rank(flow, 4, "flow", "[batch, height, width, 2]")
    if flow.shape[-1] is not None and flow.shape[-1] != 2:
        raise ValueError(f"`flow` must have last dimension 2 (dy, dx), got shape {flow.shape}.")
    for axis, what in ((0, "Batch size"), (1, "Height"), (2, "Width")):
        _check_equal(
            image.shape[axis], flow.shape[axis], what, "image", image.shape, "flow", flow.shape
        )

    grid = _pixel_grid(_dim(image, 1), _dim(image, 2))  # [H, W, 2]
    query = grid[None] - flow  # [B, H, W, 2]
    warped = sample(image, query, interpolation, compiled)  # [B, H, W, C]
    warped.set_shape(image.shape)
    return warped


# ----------------------------------------------------------------------------
# Sparse warping
# ----------------------------------------------------------------------------


def _border_points(height: int | tf.Tensor, width: int | tf.Tensor, num_per_edge: int) -> tf.Tensor:
    """Zero-flow border control points just outside the image.

    On the ring of pixel centres at rows -1 and H and cols -1 and W,
    `num_per_edge` evenly spaced points per edge including the corners.

    Returns:
      [4 * (num_per_edge - 1), 2] float32 (row, col) pixel coordinates.
    """
    top_r, bottom_r = -1.0, tf.cast(height, tf.float32)
    left_c, right_c = -1.0, tf.cast(width, tf.float32)
    cols = tf.linspace(left_c, right_c, num_per_edge)  # [N]
    rows = tf.linspace(top_r, bottom_r, num_per_edge)[1:-1]  # [N - 2]
    n_cols = tf.ones_like(cols)  # [N]
    n_rows = tf.ones_like(rows)  # [N - 2]
    top = tf.stack([top_r * n_cols, cols], axis=1)  # [N, 2]
    bottom = tf.stack([bottom_r * n_cols, cols], axis=1)  # [N, 2]
    left = tf.stack([rows, left_c * n_rows], axis=1)  # [N - 2, 2]
    right = tf.stack([rows, right_c * n_rows], axis=1)  # [N - 2, 2]
    points = tf.concat([top, bottom, left, right], axis=0)  # [4N - 4, 2]
    points.set_shape([4 * (num_per_edge - 1), 2])
    return points


def _landmarks_to_pixels(
    landmarks: tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor
) -> tf.Tensor:
    """Normalised (x, y) landmarks -> (row, col) pixel coordinates.

    Args:
      landmarks: [B, K, 2] float32, (x, y) in [0, 1].

    Returns:
      [B, K, 2] float32, (row, col) = (y * H - 0.5, x * W - 0.5).
    """
    x = landmarks[..., 0] * tf.cast(width, tf.float32) - 0.5  # [B, K]
    y = landmarks[..., 1] * tf.cast(height, tf.float32) - 0.5  # [B, K]
    return tf.stack([y, x], axis=-1)  # [B, K, 2]


def _validate_warp_inputs(image: tf.Tensor, source: tf.Tensor, dest: tf.Tensor) -> None:
    """Static shape checks for sparse_image_warp / SplineWarp."""
    _check_rank(image, 4, "image", "[batch, height, width, channels]")
    _check_rank(source, 3, "source_landmarks", "[batch, K, 2]")
    _check_rank(dest, 3, "dest_landmarks", "[batch, K, 2]")
    for name, lm in (("source_landmarks", source), ("dest_landmarks", dest)):
        if lm.shape[-1] is not None and lm.shape[-1] != 2:
            raise ValueError(f"`{name}` must have last dimension 2 (x, y), got shape {lm.shape}.")
    _check_equal(
        source.shape[1],
        dest.shape[1],
        "Landmark count",
        "source_landmarks",
        source.shape,
        "dest_landmarks",
        dest.shape,
    )
    _check_equal(
        source.shape[0],
        dest.shape[0],
        "Batch size",
        "source_landmarks",
        source.shape,
        "dest_landmarks",
        dest.shape,
    )
    _check_equal(
        image.shape[0],
        dest.shape[0],
        "Batch size",
        "image",
        image.shape,
        "dest_landmarks",
        dest.shape,
    )


def _validate_warp_params(
    num_border_points: int,
    regularization: float | tf.Tensor,
    interpolation: str = "bilinear",
    flow_grid: int = 0,
) -> None:
    """Checks num_border_points / regularization / interpolation / flow_grid values."""
    if (
        isinstance(flow_grid, bool)
        or not isinstance(flow_grid, int)
        or flow_grid < 0
        or flow_grid == 1
    ):
        raise ValueError(
            f"`flow_grid` must be 0 (the spline at every pixel) or an int >= 2, got {flow_grid!r}."
        )
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"`interpolation` must be one of {INTERPOLATIONS}, got {interpolation!r}.")
    if (
        isinstance(num_border_points, bool)
        or not isinstance(num_border_points, int)
        or num_border_points < 0
        or num_border_points == 1
    ):
        raise ValueError(
            "`num_border_points` must be 0 (no border points) or an int >= 2 "
            f"(points per edge, corners included), got {num_border_points!r}."
        )
    if isinstance(regularization, (int, float)) and regularization < 0:
        raise ValueError(f"`regularization` must be >= 0, got {regularization}.")


def sparse_image_warp(
    image: Any,
    source_landmarks: Any,
    dest_landmarks: Any,
    num_border_points: int = 4,
    regularization: float | tf.Tensor = 0.0,
    interpolation: str = "bilinear",
    flow_grid: int = 0,
    compiled_sampling: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Warps `image` so content at `source_landmarks` moves to `dest_landmarks`.

    A thin-plate spline (order 2) interpolates the landmark displacements,
    fitted at the destination landmarks plus zero-displacement border points
    (see the module docstring), into a dense flow; the image is then warped
    with `dense_image_warp`.

    Args:
      image: [B, H, W, C] any float dtype.
      source_landmarks: [B, K, 2] normalised (x, y) in the input image.
      dest_landmarks: [B, K, 2] normalised (x, y) where that content should go.
      num_border_points: zero-flow control points per image edge, corners
        included (0 disables; otherwise >= 2; 4 * (n - 1) points in total).
        They sit one pixel-centre ring outside the image.
      regularization: lambda >= 0 for the spline, in coordinates scaled by
        1 / max(H, W) (tfa's pixel-unit value is lambda * max(H, W)**2).
      interpolation: how the image is sampled, "bilinear" (tfa), "bicubic", "bspline" or "bspline5"
        (keep more fine detail: s2f_tf/models/sampling.py).
      flow_grid: 0 evaluates the spline at every pixel (exact). N >= 2 evaluates it on an N x N
        grid of positions spanning the pixel centres and interpolates the flow linearly between
        them (two small matmuls): the spline, and above all its gradient with respect to the
        landmarks, cost N^2 / (H W) as much. The flow is smooth, so the image barely changes
        (tests/test_warp.py measures it); needs static H and W.
      compiled_sampling: sample with XLA even outside a compiled graph (training only; see
        s2f_tf/models/sampling.py).

    Returns:
      warped: [B, H, W, C] float32.
      flow: [B, H, W, 2] float32, (dy, dx) in pixels, such that
        warped[b, i, j] = image[b, i - dy, j - dx].

    Raises:
      ValueError: on bad ranks, last dim != 2, mismatching landmark counts or
        batch sizes, or bad num_border_points / regularization.
    """
    image = _as_float32(image, "image")  # [B, H, W, C]
    source = _as_float32(source_landmarks, "source_landmarks")  # [B, K, 2]
    dest = _as_float32(dest_landmarks, "dest_landmarks")  # [B, K, 2]
    _validate_warp_inputs(image, source, dest)
    _validate_warp_params(num_border_points, regularization, interpolation, flow_grid)

    height, width = _dim(image, 1), _dim(image, 2)
    if flow_grid and not (isinstance(height, int) and isinstance(width, int)):
        raise ValueError(
            f"`flow_grid` needs a static image height and width, got shape {image.shape}."
        )
    if isinstance(height, int) and isinstance(width, int):
        scale = 1.0 / float(max(height, width))
    else:
        scale = 1.0 / tf.cast(tf.maximum(height, width), tf.float32)

    source_px = _landmarks_to_pixels(source, height, width)  # [B, K, 2] (r, c)
    dest_px = _landmarks_to_pixels(dest, height, width)  # [B, K, 2] (r, c)
    control_points, control_flow = _control_points(
        source_px, dest_px, height, width, num_border_points
    )
    query = _flow_queries(dest_px, height, width, flow_grid)  # [B, N*N or H*W, 2]
    dense_flow = interpolate_spline(
        control_points * scale,
        control_flow,
        query * scale,
        order=2,
        regularization=regularization,
    )  # [B, N*N or H*W, 2]
    flow = _flow_image(dense_flow, height, width, flow_grid)  # [B, H, W, 2]
    flow.set_shape(image.shape[:3].concatenate([2]))

    warped = dense_image_warp(image, flow, interpolation, compiled_sampling)  # [B, H, W, C]
    return warped, flow


def _control_points(
    source_px: tf.Tensor,
    dest_px: tf.Tensor,
    height: int | tf.Tensor,
    width: int | tf.Tensor,
    num_border_points: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The spline's control points [B, K(+Nb), 2] (r, c): the destination landmarks, with their
    displacements (dy, dx), plus the zero-displacement border points."""
    control_flow = dest_px - source_px  # [B, K, 2] (dy, dx)
    control_points = dest_px  # [B, K, 2]
    if num_border_points:
        border = _border_points(height, width, num_border_points)  # [Nb, 2]
        border = tf.zeros_like(dest_px[:, :1, :1]) + border[None]  # [B, Nb, 2]
        control_points = tf.concat([control_points, border], axis=1)  # [B, K+Nb, 2]
        control_flow = tf.concat([control_flow, tf.zeros_like(border)], axis=1)  # [B, K+Nb, 2]
    return control_points, control_flow


def _flow_queries(
    dest_px: tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor, flow_grid: int
) -> tf.Tensor:
    """[B, N*N or H*W, 2] (r, c): where the spline is evaluated, the flow_grid's N x N positions
    spanning the pixel centres, or every pixel."""
    if flow_grid:
        rows = tf.linspace(0.0, height - 1.0, flow_grid)  # [N]
        cols = tf.linspace(0.0, width - 1.0, flow_grid)  # [N]
        grid = tf.reshape(
            tf.stack(tf.meshgrid(rows, cols, indexing="ij"), axis=-1), [-1, 2]
        )  # [N*N, 2]
    else:
        grid = tf.reshape(_pixel_grid(height, width), [-1, 2])  # [H*W, 2]
    return tf.zeros_like(dest_px[:, :1, :1]) + grid[None]  # [B, N*N or H*W, 2]


def _flow_image(
    dense_flow: tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor, flow_grid: int
) -> tf.Tensor:
    """The spline's values at the queries -> the flow [B, H, W, 2] (linearly upsampled from the
    flow_grid's N x N)."""
    if flow_grid:
        coarse = tf.reshape(dense_flow, [-1, flow_grid, flow_grid, 2])  # [B, N, N, 2]
        return tf.einsum(
            "hn,bnmc,wm->bhwc",
            _linear_upsampler(height, flow_grid),
            coarse,
            _linear_upsampler(width, flow_grid),
        )  # [B, H, W, 2]
    return tf.reshape(dense_flow, [-1, height, width, 2])  # [B, H, W, 2]


# ----------------------------------------------------------------------------
# Keras layer
# ----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="s2f")
class SplineWarp(keras.layers.Layer):
    """Thin-plate-spline sparse image warp as a Keras layer (no weights).

    call(image, source_landmarks, dest_landmarks) -> warped image
    ([B, H, W, C] float32); see `sparse_image_warp` for conventions. Inputs are
    NOT autocast to the layer's compute dtype (landmark precision matters), all
    maths is float32 and the output is float32 even under `mixed_float16`.

    Args:
      num_border_points: zero-flow control points per image edge (0 or >= 2).
      regularization: spline regularization (see `sparse_image_warp`).
      interpolation: "bilinear", "bicubic", "bspline" or "bspline5" (see `dense_image_warp`).
      flow_grid: 0, or the N x N grid the spline is evaluated on (see `sparse_image_warp`).
      **kwargs: standard Layer kwargs (name, dtype, trainable, ...).
    """

    def __init__(
        self,
        num_border_points: int = 4,
        regularization: float = 0.0,
        interpolation: str = "bilinear",
        flow_grid: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _validate_warp_params(num_border_points, regularization, interpolation, flow_grid)
        self.num_border_points = int(num_border_points)
        self.regularization = float(regularization)
        self.interpolation = interpolation
        self.flow_grid = int(flow_grid)
        # Set by the decoder's training stage, never saved: exported models sample without XLA.
        self.compiled_sampling = False
        # Keep float32 landmarks/images as float32 under mixed precision.
        self.autocast = False

    def call(
        self,
        image: tf.Tensor,
        source_landmarks: tf.Tensor,
        dest_landmarks: tf.Tensor,
    ) -> tf.Tensor:
        """[B, H, W, C], [B, K, 2], [B, K, 2] -> [B, H, W, C] float32."""
        warped, _ = sparse_image_warp(
            image,
            source_landmarks,
            dest_landmarks,
            num_border_points=self.num_border_points,
            regularization=self.regularization,
            interpolation=self.interpolation,
            flow_grid=self.flow_grid,
            compiled_sampling=self.compiled_sampling,
        )  # [B, H, W, C]
        return warped

    def get_config(self) -> dict[str, Any]:
        """Serialisable constructor arguments."""
        config = super().get_config()
        config.update(
            num_border_points=self.num_border_points,
            regularization=self.regularization,
            interpolation=self.interpolation,
            flow_grid=self.flow_grid,
        )
        return config
