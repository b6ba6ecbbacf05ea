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
  (bilinear, clamped to the border pixels). I.e. the flow is the
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

Everything works inside `tf.function` and compiles with XLA
(`jit_compile=True`), including gradients (tested). Shapes are static
wherever the input shapes are static; the batch size may be dynamic.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

__all__ = [
  "interpolate_spline",
  "dense_image_warp",
  "sparse_image_warp",
  "SplineWarp",
]

# Floor for squared distances inside log / sqrt / fractional powers.
_R2_EPS = 1e-10


# ----------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------


def _as_float32(x: Any, name: str) -> tf.Tensor:
  """Converts `x` to a float32 tensor (casting any other float dtype)."""
  x = tf.convert_to_tensor(x, name=name)
  if x.dtype != tf.float32:
    x = tf.cast(x, tf.float32)
  return x


def _dim(x: tf.Tensor, axis: int) -> int | tf.Tensor:
  """Static size of `x` along `axis` if known, else a dynamic scalar."""
  size = x.shape[axis]
  return size if size is not None else tf.shape(x)[axis]


def _check_rank(x: tf.Tensor, rank: int, name: str, layout: str) -> None:
  """Raises ValueError if `x` has a known rank different from `rank`."""
  if x.shape.rank is not None and x.shape.rank != rank:
    raise ValueError(
      f"`{name}` must have rank {rank} ({layout}), got rank "
      f"{x.shape.rank} with shape {x.shape}."
    )


def _check_equal(
  a: int | None, b: int | None, what: str, name_a: str, shape_a: Any,
  name_b: str, shape_b: Any,
) -> None:
  """Raises ValueError if two statically known sizes differ."""
  if a is not None and b is not None and a != b:
    raise ValueError(
      f"{what} mismatch: `{name_a}` has shape {shape_a} but `{name_b}` has "
      f"shape {shape_b}."
    )


def _batch_zeros(ref: tf.Tensor, rows: int, cols: int) -> tf.Tensor:
  """float32 zeros of shape [batch(ref), rows, cols], static where possible."""
  return tf.zeros_like(ref[:, :1, :1]) + tf.zeros([rows, cols], tf.float32)


def _squared_distance(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
  """Pairwise squared Euclidean distances.

  Computed from explicit differences (not the |a|^2 - 2ab + |b|^2 expansion)
  so coincident points give exactly 0 and there is no cancellation error.

  Args:
    a: [B, m, d] float32.
    b: [B, n, d] float32.

  Returns:
    [B, m, n] float32.
  """
  d = a.shape[-1]
  if d is not None:
    r2 = None
    for k in range(d):
      diff = a[:, :, k, None] - b[:, None, :, k]  # [B, m, n]
      sq = diff * diff  # [B, m, n]
      r2 = sq if r2 is None else r2 + sq
    return r2  # [B, m, n]
  diff = a[:, :, None, :] - b[:, None, :, :]  # [B, m, n, d]
  return tf.reduce_sum(diff * diff, axis=-1)  # [B, m, n]


def _phi(r2: tf.Tensor, order: int) -> tf.Tensor:
  """Polyharmonic kernel as a function of the SQUARED distance r2 = r^2.

  order 1: r; even order k: r^k log r = 0.5 r2^(k/2) log r2; odd order k: r^k.
  The log uses max(r2, eps) and the odd-order root is masked below eps, so
  phi and its gradient are finite at r2 = 0.
  """
  if order % 2 == 0:
    power = r2
    for _ in range(order // 2 - 1):
      power = power * r2
    return 0.5 * power * tf.math.log(tf.maximum(r2, _R2_EPS))
  # Odd order: r^k. "Double where" so that phi(0) is exactly 0 (a floor on
  # r2 would act like a spurious regularization of eps^(k/2)) while the
  # gradient stays finite (zero) at r2 = 0.
  positive = r2 > _R2_EPS
  safe_r2 = tf.where(positive, r2, tf.ones_like(r2))
  value = tf.sqrt(safe_r2) if order == 1 else tf.pow(safe_r2, 0.5 * order)
  return tf.where(positive, value, tf.zeros_like(r2))


# ----------------------------------------------------------------------------
# Polyharmonic spline interpolation
# ----------------------------------------------------------------------------


def _solve_interpolation(
  train_points: tf.Tensor, train_values: tf.Tensor, order: int,
  regularization: float | tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
  """Solves for the RBF weights w and polynomial coefficients v.

  System (A = phi(|c_i - c_j|), P = [c, 1]):
      [[A + lambda I, P], [P^T, 0]] [w; v] = [f; 0].

  Args:
    train_points: [B, n, d] float32.
    train_values: [B, n, k] float32.
    order: kernel order.
    regularization: lambda >= 0 (ridge on the RBF block).

  Returns:
    w: [B, n, k], v: [B, d + 1, k].
  """
  n = train_points.shape[1]
  d = train_points.shape[2]
  k = train_values.shape[2]
  matrix_a = _phi(_squared_distance(train_points, train_points), order)  # [B, n, n]
  if not (isinstance(regularization, (int, float)) and regularization == 0):
    n_dyn = _dim(train_points, 1)
    eye = tf.eye(n_dyn, dtype=tf.float32)  # [n, n]
    matrix_a = matrix_a + tf.cast(regularization, tf.float32) * eye  # [B, n, n]

  ones = tf.ones_like(train_points[:, :, :1])  # [B, n, 1]
  matrix_b = tf.concat([train_points, ones], axis=2)  # [B, n, d + 1]
  top = tf.concat([matrix_a, matrix_b], axis=2)  # [B, n, n + d + 1]
  bottom = tf.concat(
    [tf.transpose(matrix_b, [0, 2, 1]),  # [B, d + 1, n]
     _batch_zeros(train_points, d + 1, d + 1)],  # [B, d + 1, d + 1]
    axis=2,
  )  # [B, d + 1, n + d + 1]
  lhs = tf.concat([top, bottom], axis=1)  # [B, n + d + 1, n + d + 1]
  rhs = tf.concat(
    [train_values, _batch_zeros(train_values, d + 1, k)], axis=1
  )  # [B, n + d + 1, k]

  solution = tf.linalg.solve(lhs, rhs)  # [B, n + d + 1, k]
  n_dyn = n if n is not None else tf.shape(train_points)[1]
  w = solution[:, :n_dyn, :]  # [B, n, k]
  v = solution[:, n_dyn:, :]  # [B, d + 1, k]
  return w, v


def _apply_interpolation(
  query_points: tf.Tensor, train_points: tf.Tensor, w: tf.Tensor,
  v: tf.Tensor, order: int,
) -> tf.Tensor:
  """Evaluates the spline sum_i w_i phi(|x - c_i|) + v^T [x, 1] at queries.

  Args:
    query_points: [B, m, d]; train_points: [B, n, d]; w: [B, n, k];
    v: [B, d + 1, k].

  Returns:
    [B, m, k] float32.
  """
  phi = _phi(_squared_distance(query_points, train_points), order)  # [B, m, n]
  rbf_term = tf.matmul(phi, w)  # [B, m, k]
  ones = tf.ones_like(query_points[:, :, :1])  # [B, m, 1]
  query_padded = tf.concat([query_points, ones], axis=2)  # [B, m, d + 1]
  linear_term = tf.matmul(query_padded, v)  # [B, m, k]
  return rbf_term + linear_term  # [B, m, k]


def interpolate_spline(
  train_points: Any,
  train_values: Any,
  query_points: Any,
  order: int = 2,
  regularization: float | tf.Tensor = 0.0,
) -> tf.Tensor:
  """Polyharmonic spline interpolation with a degree-1 polynomial term.

  Fits f(x) = sum_i w_i phi(|x - c_i|) + v^T [x, 1] through
  (train_points, train_values) and evaluates it at query_points.
  order=1: phi(r) = r; order=2 (thin-plate spline): phi(r) = r^2 log r;
  other even k: r^k log r; odd k: r^k. With order=2 and regularization=0
  this equals scipy's `RBFInterpolator(kernel='thin_plate_spline',
  degree=1, smoothing=0)`. Computation is float32; for good conditioning
  pass coordinates of order 1 (e.g. normalised, not pixels).

  Args:
    train_points: [B, n, d] control point locations.
    train_values: [B, n, k] values at the control points.
    query_points: [B, m, d] where to evaluate.
    order: kernel order, an int >= 1.
    regularization: lambda >= 0 added to the diagonal of the kernel block
      (smoothing; 0 = exact interpolation). In the units of the points.

  Returns:
    [B, m, k] float32 interpolated values.

  Raises:
    ValueError: on bad ranks, mismatching batch / point counts / dims, or
      a bad `order` / negative `regularization`.
  """
  train_points = _as_float32(train_points, "train_points")  # [B, n, d]
  train_values = _as_float32(train_values, "train_values")  # [B, n, k]
  query_points = _as_float32(query_points, "query_points")  # [B, m, d]
  _check_rank(train_points, 3, "train_points", "[batch, n, d]")
  _check_rank(train_values, 3, "train_values", "[batch, n, k]")
  _check_rank(query_points, 3, "query_points", "[batch, m, d]")
  tp, tv, qp = train_points.shape, train_values.shape, query_points.shape
  _check_equal(tp[0], tv[0], "Batch size", "train_points", tp, "train_values", tv)
  _check_equal(tp[0], qp[0], "Batch size", "train_points", tp, "query_points", qp)
  _check_equal(tp[1], tv[1], "Number of control points", "train_points", tp,
               "train_values", tv)
  _check_equal(tp[2], qp[2], "Point dimension (last dim)", "train_points", tp,
               "query_points", qp)
  if tp[2] is None or tv[2] is None:
    raise ValueError(
      "The last dimension of `train_points` and `train_values` must be "
      f"statically known, got shapes {tp} and {tv}."
    )
  if isinstance(order, bool) or not isinstance(order, int) or order < 1:
    raise ValueError(f"`order` must be an int >= 1, got {order!r}.")
  if isinstance(regularization, (int, float)) and regularization < 0:
    raise ValueError(f"`regularization` must be >= 0, got {regularization}.")

  w, v = _solve_interpolation(train_points, train_values, order, regularization)
  # w: [B, n, k], v: [B, d + 1, k]
  return _apply_interpolation(query_points, train_points, w, v, order)  # [B, m, k]


# ----------------------------------------------------------------------------
# Dense warping
# ----------------------------------------------------------------------------


def _bilinear_sample(image: tf.Tensor, query: tf.Tensor) -> tf.Tensor:
  """Bilinearly samples `image` at fractional (row, col) pixel positions.

  Positions outside the image are clamped to the border (edge pixels are
  repeated, and the gradient w.r.t. the position is zero out there).

  Args:
    image: [B, H, W, C] float32.
    query: [B, h, w, 2] float32 (row, col) pixel coordinates.

  Returns:
    [B, h, w, C] float32.
  """
  height, width = _dim(image, 1), _dim(image, 2)
  channels = _dim(image, 3)
  out_h, out_w = _dim(query, 1), _dim(query, 2)

  def axis_weights(
    coord: tf.Tensor, size: int | tf.Tensor
  ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    size_f = tf.cast(size, tf.float32)
    coord = tf.clip_by_value(coord, 0.0, size_f - 1.0)  # [B, h, w]
    # Lower neighbour, at most size - 2 so the upper one stays in range
    # (tfa convention; gives a one-sided gradient on the last pixel).
    low = tf.stop_gradient(
      tf.clip_by_value(tf.floor(coord), 0.0, tf.maximum(size_f - 2.0, 0.0))
    )  # [B, h, w]
    alpha = coord - low  # [B, h, w] in [0, 1]
    low_i = tf.cast(low, tf.int32)  # [B, h, w]
    high_i = tf.minimum(low_i + 1, tf.cast(size, tf.int32) - 1)  # [B, h, w]
    return low_i, high_i, alpha

  y0, y1, alpha_y = axis_weights(query[..., 0], height)  # [B, h, w] each
  x0, x1, alpha_x = axis_weights(query[..., 1], width)  # [B, h, w] each

  flat_image = tf.reshape(image, [-1, height * width, channels])  # [B, H*W, C]

  def gather(y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    index = tf.reshape(y * width + x, [-1, out_h * out_w])  # [B, h*w]
    values = tf.gather(flat_image, index, batch_dims=1)  # [B, h*w, C]
    return tf.reshape(values, [-1, out_h, out_w, channels])  # [B, h, w, C]

  top_left = gather(y0, x0)  # [B, h, w, C]
  top_right = gather(y0, x1)  # [B, h, w, C]
  bottom_left = gather(y1, x0)  # [B, h, w, C]
  bottom_right = gather(y1, x1)  # [B, h, w, C]

  ax = alpha_x[..., None]  # [B, h, w, 1]
  ay = alpha_y[..., None]  # [B, h, w, 1]
  # Weighted form (not a + t * (b - a)) so alpha in {0, 1} is exact.
  top = (1.0 - ax) * top_left + ax * top_right  # [B, h, w, C]
  bottom = (1.0 - ax) * bottom_left + ax * bottom_right  # [B, h, w, C]
  return (1.0 - ay) * top + ay * bottom  # [B, h, w, C]


def _pixel_grid(height: int | tf.Tensor, width: int | tf.Tensor) -> tf.Tensor:
  """(row, col) pixel-centre coordinates, [H, W, 2] float32."""
  rows = tf.range(height, dtype=tf.float32)  # [H]
  cols = tf.range(width, dtype=tf.float32)  # [W]
  grid_r, grid_c = tf.meshgrid(rows, cols, indexing="ij")  # [H, W] each
  return tf.stack([grid_r, grid_c], axis=-1)  # [H, W, 2]


def dense_image_warp(image: Any, flow: Any) -> tf.Tensor:
  """Warps `image` with a dense per-pixel flow (tfa convention).

  out[b, i, j] = image[b, i - flow[b, i, j, 0], j - flow[b, i, j, 1]], sampled
  bilinearly and clamped to the border pixels. The flow is in PIXELS and in
  (dy, dx) = (row, col) order: content moves BY the flow.

  Args:
    image: [B, H, W, C] any float dtype.
    flow: [B, H, W, 2] any float dtype, (dy, dx) in pixels.

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
    raise ValueError(
      f"`flow` must have last dimension 2 (dy, dx), got shape {flow.shape}."
    )
  for axis, what in ((0, "Batch size"), (1, "Height"), (2, "Width")):
    _check_equal(image.shape[axis], flow.shape[axis], what, "image",
                 image.shape, "flow", flow.shape)

  grid = _pixel_grid(_dim(image, 1), _dim(image, 2))  # [H, W, 2]
  query = grid[None] - flow  # [B, H, W, 2]
  warped = _bilinear_sample(image, query)  # [B, H, W, C]
  warped.set_shape(image.shape)
  return warped


# ----------------------------------------------------------------------------
# Sparse warping
# ----------------------------------------------------------------------------


def _border_points(
  height: int | tf.Tensor, width: int | tf.Tensor, num_per_edge: int
) -> tf.Tensor:
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


def _validate_warp_inputs(
  image: tf.Tensor, source: tf.Tensor, dest: tf.Tensor
) -> None:
  """Static shape checks for sparse_image_warp / SplineWarp."""
  _check_rank(image, 4, "image", "[batch, height, width, channels]")
  _check_rank(source, 3, "source_landmarks", "[batch, K, 2]")
  _check_rank(dest, 3, "dest_landmarks", "[batch, K, 2]")
  for name, lm in (("source_landmarks", source), ("dest_landmarks", dest)):
    if lm.shape[-1] is not None and lm.shape[-1] != 2:
      raise ValueError(
        f"`{name}` must have last dimension 2 (x, y), got shape {lm.shape}."
      )
  _check_equal(source.shape[1], dest.shape[1], "Landmark count",
               "source_landmarks", source.shape, "dest_landmarks", dest.shape)
  _check_equal(source.shape[0], dest.shape[0], "Batch size",
               "source_landmarks", source.shape, "dest_landmarks", dest.shape)
  _check_equal(image.shape[0], dest.shape[0], "Batch size", "image",
               image.shape, "dest_landmarks", dest.shape)


def _validate_warp_params(
  num_border_points: int, regularization: float | tf.Tensor
) -> None:
  """Checks num_border_points / regularization values."""
  if (isinstance(num_border_points, bool)
      or not isinstance(num_border_points, int)
      or num_border_points < 0 or num_border_points == 1):
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
  _validate_warp_params(num_border_points, regularization)

  height, width = _dim(image, 1), _dim(image, 2)
  if isinstance(height, int) and isinstance(width, int):
    scale = 1.0 / float(max(height, width))
  else:
    scale = 1.0 / tf.cast(tf.maximum(height, width), tf.float32)

  source_px = _landmarks_to_pixels(source, height, width)  # [B, K, 2] (r, c)
  dest_px = _landmarks_to_pixels(dest, height, width)  # [B, K, 2] (r, c)
  control_flow = dest_px - source_px  # [B, K, 2] (dy, dx)
  control_points = dest_px  # [B, K, 2]

  if num_border_points:
    border = _border_points(height, width, num_border_points)  # [Nb, 2]
    border = tf.zeros_like(dest_px[:, :1, :1]) + border[None]  # [B, Nb, 2]
    control_points = tf.concat([control_points, border], axis=1)  # [B, K+Nb, 2]
    control_flow = tf.concat(
      [control_flow, tf.zeros_like(border)], axis=1
    )  # [B, K+Nb, 2]

  grid = tf.reshape(_pixel_grid(height, width), [-1, 2])  # [H*W, 2]
  query = tf.zeros_like(dest_px[:, :1, :1]) + grid[None]  # [B, H*W, 2]

  dense_flow = interpolate_spline(
    control_points * scale, control_flow, query * scale, order=2,
    regularization=regularization,
  )  # [B, H*W, 2]
  flow = tf.reshape(dense_flow, [-1, height, width, 2])  # [B, H, W, 2]
  flow.set_shape(image.shape[:3].concatenate([2]))

  warped = dense_image_warp(image, flow)  # [B, H, W, C]
  return warped, flow


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
    **kwargs: standard Layer kwargs (name, dtype, trainable, ...).
  """

  def __init__(
    self, num_border_points: int = 4, regularization: float = 0.0,
    **kwargs: Any,
  ) -> None:
    super().__init__(**kwargs)
    _validate_warp_params(num_border_points, regularization)
    self.num_border_points = int(num_border_points)
    self.regularization = float(regularization)
    # Keep float32 landmarks/images as float32 under mixed precision.
    self.autocast = False

  def call(
    self, image: tf.Tensor, source_landmarks: tf.Tensor,
    dest_landmarks: tf.Tensor,
  ) -> tf.Tensor:
    """[B, H, W, C], [B, K, 2], [B, K, 2] -> [B, H, W, C] float32."""
    warped, _ = sparse_image_warp(
      image, source_landmarks, dest_landmarks,
      num_border_points=self.num_border_points,
      regularization=self.regularization,
    )  # [B, H, W, C]
    return warped

  def get_config(self) -> dict[str, Any]:
    """Serialisable constructor arguments."""
    config = super().get_config()
    config.update(
      num_border_points=self.num_border_points,
      regularization=self.regularization,
    )
    return config
