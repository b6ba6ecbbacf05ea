"""Polyharmonic (thin-plate) spline interpolation in TensorFlow: the maths under the face
decoder's warp (s2f_tf/models/warp.py), a replacement for the dead TensorFlow Addons'
`tfa.image.interpolate_spline`.

`interpolate_spline(train_points [B, n, d], train_values [B, n, k], query_points [B, m, d], order,
regularization)` fits phi(r) (order 2: r^2 log r, plus a degree-1 polynomial) through the training
points and evaluates it at the queries -> [B, m, k]. phi is evaluated from squared distances with
a safe log (`0.5 * r2 * log(max(r2, eps))`; odd orders use a masked root), so values and gradients
are finite at r = 0. All maths is float32; it runs inside `tf.function` and compiles with XLA,
gradients included. The helpers below (casting, rank and size checks) are shared with warp.py.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

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
    a: int | None,
    b: int | None,
    what: str,
    name_a: str,
    shape_a: Any,
    name_b: str,
    shape_b: Any,
) -> None:
    """Raises ValueError if two statically known sizes differ."""
    if a is not None and b is not None and a != b:
        raise ValueError(
            f"{what} mismatch: `{name_a}` has shape {shape_a} but `{name_b}` has shape {shape_b}."
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
    train_points: tf.Tensor,
    train_values: tf.Tensor,
    order: int,
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
        [
            tf.transpose(matrix_b, [0, 2, 1]),  # [B, d + 1, n]
            _batch_zeros(train_points, d + 1, d + 1),
        ],  # [B, d + 1, d + 1]
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
    query_points: tf.Tensor,
    train_points: tf.Tensor,
    w: tf.Tensor,
    v: tf.Tensor,
    order: int,
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
    _check_equal(tp[1], tv[1], "Number of control points", "train_points", tp, "train_values", tv)
    _check_equal(tp[2], qp[2], "Point dimension (last dim)", "train_points", tp, "query_points", qp)
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
