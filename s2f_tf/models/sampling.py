"""Sampling an image at fractional pixel positions: the interpolation inside the decoder's warp.

  sample(image [B, H, W, C], query [B, h, w, 2] (row, col) pixels,
         "bilinear" | "bicubic" | "bspline" | "bspline5") -> [B, h, w, C]

All four clamp positions to the image (edge pixels repeat outside) and are differentiable in the image
and in the positions; all maths is float32.

- "bilinear": the 2 x 2 neighbours (tfa's dense_image_warp, the paper's decoder).
- "bicubic": Keys' cubic convolution (a = -0.5, the kernel of most image libraries' "bicubic"),
  the 4 x 4 neighbours. It reproduces quadratic images exactly and keeps much more fine detail:
  on the synthetic canonical faces one warp to the mean layout kept 51% of the mean squared
  Laplacian with bilinear sampling; a warp there and back 32%, so no decoder could be sharper than
  that through a bilinear warp. Values may overshoot the input range slightly (clip afterwards).
- "bspline": cubic B-spline interpolation (Unser, 1999; scipy.ndimage's order 3): the image is
  first turned into B-spline coefficients (a separable prefilter, here two small constant matmuls,
  `bspline_prefilter`) whose cubic B-spline passes through every pixel, then the coefficients are
  sampled with the B-spline's 4 x 4 weights. Keys' kernel is a mild low-pass; this one keeps
  nearly everything below the Nyquist rate: a warp of the synthetic canonical faces to the mean
  layout and back kept 75% of the mean squared Laplacian (bicubic 62%, bilinear 34%). Same gathers
  as "bicubic"; it may overshoot more near hard edges (clip afterwards).
- "bspline5": the quintic B-spline (scipy.ndimage's order 5), the 6 x 6 neighbours of the
  degree-5 coefficients: there and back through the demo's warp 83% (the cubic B-spline 74%), at
  about twice the cubic's sampling time.

Hand-written because nothing maintained samples at arbitrary per-pixel positions with gradients in
TF: tf.image / keras.ops.image.map_coordinates offer orders 0 and 1 only (TensorFlow Addons, which
had the bilinear one, is dead).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from s2f_tf.models.spline import _dim

INTERPOLATIONS = ("bilinear", "bicubic", "bspline", "bspline5")
KEYS_A = -0.5


def sample(
    image: tf.Tensor, query: tf.Tensor, interpolation: str = "bilinear", compiled: bool = False
) -> tf.Tensor:
    """Samples `image` [B, H, W, C] float32 at (row, col) pixel positions `query` [B, h, w, 2].

    compiled: run the sampling (and its gradient) as one XLA computation even when the graph
    around it is not compiled. Its many small gathers and their scatter-add gradients then take a
    third of the time on a CPU (the demo decoder's training step: 165 -> 190 examples/s). Training
    only: a SavedModel with XLA functions in it needs XLA where it is served, which TF Serving
    offers only behind an experimental flag.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if compiled:
        return _COMPILED[interpolation](image, query)
    return _SAMPLERS[interpolation](image, query)


def _gatherer(image: tf.Tensor, out_h, out_w):
    """gather(rows [B, h, w] int, cols [B, h, w] int) -> image values [B, h, w, C]."""
    height, width, channels = _dim(image, 1), _dim(image, 2), _dim(image, 3)
    flat_image = tf.reshape(image, [-1, height * width, channels])  # [B, H*W, C]

    def gather(y: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        index = tf.reshape(y * width + x, [-1, out_h * out_w])  # [B, h*w]
        values = tf.gather(flat_image, index, batch_dims=1)  # [B, h*w, C]
        return tf.reshape(values, [-1, out_h, out_w, channels])  # [B, h, w, C]

    return gather


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
    gather = _gatherer(image, _dim(query, 1), _dim(query, 2))

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


def keys_weights(t: tf.Tensor, a: float = KEYS_A) -> list[tf.Tensor]:
    """Keys' cubic-convolution weights of the taps at offsets -1, 0, 1, 2 from floor(x), for the
    fraction t = x - floor(x) in [0, 1): four tensors shaped like t, summing to 1."""

    def near(d):  # |d| <= 1
        return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a

    return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


def bspline_weights(t: tf.Tensor) -> list[tf.Tensor]:
    """The cubic B-spline's weights of the taps at offsets -1, 0, 1, 2 from floor(x), for the
    fraction t in [0, 1): four tensors shaped like t, summing to 1 (at t = 0: 1/6, 4/6, 1/6, 0)."""
    u = 1.0 - t
    return [
        u * u * u / 6.0,
        ((3.0 * t - 6.0) * t * t + 4.0) / 6.0,
        (((-3.0 * t + 3.0) * t + 3.0) * t + 1.0) / 6.0,
        t * t * t / 6.0,
    ]


def bspline5_weights(t: tf.Tensor) -> list[tf.Tensor]:
    """The quintic B-spline's weights of the taps at offsets -2 .. 3 from floor(x), for the fraction
    t in [0, 1): six tensors shaped like t, summing to 1 (at t = 0: 1, 26, 66, 26, 1, 0 over 120)."""

    def power(x):  # (x)_+ ** 5
        x = tf.maximum(x, 0.0)
        return x * x * x * x * x

    def beta(d):  # the spline at distance d in [0, 3], as truncated powers
        return (power(3.0 - d) - 6.0 * power(2.0 - d) + 15.0 * power(1.0 - d)) / 120.0

    return [beta(t + 2.0), beta(t + 1.0), beta(t), beta(1.0 - t), beta(2.0 - t), beta(3.0 - t)]


# each spline's values at the integers 0, +-1, +-2 (the taps that weigh a pixel's own coefficient)
_BSPLINE_KNOTS = {3: (np.array([4.0, 1.0]) / 6.0), 5: (np.array([66.0, 26.0, 1.0]) / 120.0)}


def bspline_prefilter(size: int, degree: int = 3) -> np.ndarray:
    """float32 [size, size] P: the B-spline coefficients (degree 3 or 5) of a line of pixels x are
    c = P x, so that sum_k c[k] beta(i - k) = x[i] at every pixel, with the coefficients beyond the
    ends repeating the end ones (as the sampler's taps do). P is the inverse of the banded matrix of
    the spline's values at the integers (1, 4, 1)/6 or (1, 26, 66, 26, 1)/120, its out-of-range
    entries folded onto the end columns."""
    knots = _BSPLINE_KNOTS[degree]
    m = np.zeros((size, size))
    for i in range(size):
        for d in range(-len(knots) + 1, len(knots)):
            m[i, min(max(i + d, 0), size - 1)] += knots[abs(d)]
    return np.linalg.inv(m).astype(np.float32)


def _prefilter(image: tf.Tensor, degree: int = 3) -> tf.Tensor:
    """[B, H, W, C] pixels -> [B, H, W, C] B-spline coefficients (the prefilter along rows and columns)."""
    height, width = image.shape[1], image.shape[2]
    if height is None or width is None:
        raise ValueError(
            "bspline sampling needs the image's height and width known when the graph is built"
        )
    rows, cols = (
        tf.constant(bspline_prefilter(height, degree)),
        tf.constant(bspline_prefilter(width, degree)),
    )
    x = tf.einsum("hk,bkwc->bhwc", rows, image)
    return tf.einsum("wk,bhkc->bhwc", cols, x)


def _bicubic_sample(image: tf.Tensor, query: tf.Tensor) -> tf.Tensor:
    """Keys bicubic sampling at (row, col) positions [B, h, w, 2] -> [B, h, w, C]; positions are
    clamped to the image and taps beyond the edge repeat the edge pixels."""
    return _cubic_sample(image, query, keys_weights)


def _bspline_sample(image: tf.Tensor, query: tf.Tensor) -> tf.Tensor:
    """Cubic B-spline interpolation at (row, col) positions [B, h, w, 2] -> [B, h, w, C]: the
    prefiltered coefficients sampled with the B-spline weights, clamped like the bicubic sampler."""
    return _cubic_sample(_prefilter(image), query, bspline_weights)


def _bspline5_sample(image: tf.Tensor, query: tf.Tensor) -> tf.Tensor:
    """Quintic B-spline interpolation at (row, col) positions [B, h, w, 2] -> [B, h, w, C]: the
    degree-5 coefficients sampled with the 6 x 6 weights, clamped like the other samplers."""
    return _cubic_sample(
        _prefilter(image, 5), query, bspline5_weights, offsets=(-2, -1, 0, 1, 2, 3)
    )


def _cubic_sample(image: tf.Tensor, query: tf.Tensor, weights, offsets=(-1, 0, 1, 2)) -> tf.Tensor:
    """`image` at (row, col) positions from its neighbours at `offsets` from floor(position) on each
    axis (4 x 4 for the cubics, 6 x 6 for the quintic), weighted by `weights(fraction)`; taps beyond
    the edge repeat it.

    Its gradient is written out (the weights' derivatives by forward-mode autodiff, the image's
    gradient as one segment sum over all taps): under XLA on a 2-core CPU the 6 x 6 sampling with
    both gradients took 54 ms instead of autodiff's 75 ms (the demo decoder's batch of 32), the
    4 x 4 one as long as before (22 ms)."""
    height, width, channels = _dim(image, 1), _dim(image, 2), _dim(image, 3)
    out_h, out_w = _dim(query, 1), _dim(query, 2)

    @tf.custom_gradient
    def run(image, query):
        flat = tf.reshape(image, [-1, height * width, channels])  # [B, H*W, C]
        rows, wy, dwy, inside_y = _cubic_axis(query[..., 0], height, weights, offsets)
        cols, wx, dwx, inside_x = _cubic_axis(query[..., 1], width, weights, offsets)
        index = [
            tf.reshape(r * width + c, [-1, out_h * out_w]) for r in rows for c in cols
        ]  # n*n x [B, h*w]
        values = [
            tf.reshape(tf.gather(flat, i, batch_dims=1), [-1, out_h, out_w, channels])
            for i in index
        ]
        n = len(offsets)
        grid = [values[i * n : (i + 1) * n] for i in range(n)]  # [row tap][col tap] -> [B, h, w, C]
        lines = _along_cols(grid, wx)
        out = tf.add_n([w[..., None] * line for w, line in zip(wy, lines)])  # [B, h, w, C]

        def grad(upstream):  # [B, h, w, C]
            batch = tf.shape(flat)[0]
            updates = tf.stack(
                [(w_r * w_c)[..., None] * upstream for w_r in wy for w_c in wx]
            )  # [n*n, B, h, w, C]
            segments = (
                tf.stack(index) + (tf.range(batch) * (height * width))[None, :, None]
            )  # [n*n, B, h*w]
            d_image = tf.math.unsorted_segment_sum(
                tf.reshape(updates, [-1, channels]),
                tf.reshape(segments, [-1]),
                batch * height * width,
            )
            d_row = tf.add_n([w[..., None] * line for w, line in zip(dwy, lines)])  # d out / d row
            d_col = tf.add_n(
                [w[..., None] * line for w, line in zip(wy, _along_cols(grid, dwx))]
            )  # d out / d col
            d_query = tf.stack(
                [
                    tf.reduce_sum(upstream * d_row, -1) * inside_y,
                    tf.reduce_sum(upstream * d_col, -1) * inside_x,
                ],
                axis=-1,
            )  # [B, h, w, 2]
            return tf.reshape(d_image, tf.shape(image)), d_query

        return out, grad

    return run(image, query)


def _cubic_axis(coord: tf.Tensor, size, weights, offsets):
    """One axis of `_cubic_sample`: -> taps n x [B, h, w] int, weights and their derivatives
    n x [B, h, w], and 1 where the position is inside the image (the clamp's gradient)."""
    size_f = tf.cast(size, tf.float32)
    inside = tf.cast((coord >= 0.0) & (coord <= size_f - 1.0), tf.float32)
    coord = tf.clip_by_value(coord, 0.0, size_f - 1.0)
    low = tf.floor(coord)
    t = coord - low  # [B, h, w] in [0, 1)
    with tf.autodiff.ForwardAccumulator(t, tf.ones_like(t)) as acc:
        w = weights(t)
    low_i, last = tf.cast(low, tf.int32), tf.cast(size, tf.int32) - 1
    return (
        [tf.clip_by_value(low_i + k, 0, last) for k in offsets],
        w,
        [acc.jvp(x) for x in w],
        inside,
    )


def _along_cols(grid: list[list[tf.Tensor]], col_weights: list[tf.Tensor]) -> list[tf.Tensor]:
    """Per row tap of `grid` ([row tap][col tap] -> [B, h, w, C]): the sum over its column taps."""
    return [tf.add_n([w[..., None] * v for w, v in zip(col_weights, line)]) for line in grid]


_SAMPLERS = {
    "bilinear": _bilinear_sample,
    "bicubic": _bicubic_sample,
    "bspline": _bspline_sample,
    "bspline5": _bspline5_sample,
}
_COMPILED = {
    name: tf.function(f, jit_compile=True, reduce_retracing=True) for name, f in _SAMPLERS.items()
}
