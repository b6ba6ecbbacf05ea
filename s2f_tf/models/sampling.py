"""Sampling an image at fractional pixel positions: the interpolation inside the decoder's warp.

  sample(image [B, H, W, C], query [B, h, w, 2] (row, col) pixels, "bilinear" | "bicubic" | "bspline")
    -> [B, h, w, C]

All three clamp positions to the image (edge pixels repeat outside) and are differentiable in the image
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

Hand-written because nothing maintained samples at arbitrary per-pixel positions with gradients in
TF: tf.image / keras.ops.image.map_coordinates offer orders 0 and 1 only (TensorFlow Addons, which
had the bilinear one, is dead).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from s2f_tf.models.spline import _dim

INTERPOLATIONS = ("bilinear", "bicubic", "bspline")
KEYS_A = -0.5


def sample(image: tf.Tensor, query: tf.Tensor, interpolation: str = "bilinear",
           compiled: bool = False) -> tf.Tensor:
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
  def near(d):                                  # |d| <= 1
    return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0

  def far(d):                                   # 1 < |d| < 2
    return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
  return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


def bspline_weights(t: tf.Tensor) -> list[tf.Tensor]:
  """The cubic B-spline's weights of the taps at offsets -1, 0, 1, 2 from floor(x), for the
  fraction t in [0, 1): four tensors shaped like t, summing to 1 (at t = 0: 1/6, 4/6, 1/6, 0)."""
  u = 1.0 - t
  return [u * u * u / 6.0, ((3.0 * t - 6.0) * t * t + 4.0) / 6.0,
          (((-3.0 * t + 3.0) * t + 3.0) * t + 1.0) / 6.0, t * t * t / 6.0]


def bspline_prefilter(size: int) -> np.ndarray:
  """float32 [size, size] P: the cubic B-spline coefficients of a line of pixels x are c = P x, so
  that sum_k c[k] beta3(i - k) = x[i] at every pixel, with the coefficients beyond the ends
  repeating the end ones (as the sampler's taps do). P is the inverse of the tridiagonal
  (1/6, 4/6, 1/6) matrix whose corners are 5/6."""
  m = np.zeros((size, size))
  for i in range(size):
    for j, w in ((i - 1, 1.0), (i, 4.0), (i + 1, 1.0)):
      m[i, min(max(j, 0), size - 1)] += w / 6.0
  return np.linalg.inv(m).astype(np.float32)


def _prefilter(image: tf.Tensor) -> tf.Tensor:
  """[B, H, W, C] pixels -> [B, H, W, C] B-spline coefficients (the prefilter along rows and columns)."""
  height, width = image.shape[1], image.shape[2]
  if height is None or width is None:
    raise ValueError("bspline sampling needs the image's height and width known when the graph is built")
  rows, cols = tf.constant(bspline_prefilter(height)), tf.constant(bspline_prefilter(width))
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


def _cubic_sample(image: tf.Tensor, query: tf.Tensor, weights) -> tf.Tensor:
  """`image` at (row, col) positions from its 4 x 4 neighbours, each axis weighted by
  `weights(fraction)` (four taps at offsets -1, 0, 1, 2); taps beyond the edge repeat it."""
  height, width = _dim(image, 1), _dim(image, 2)

  def axis(coord: tf.Tensor, size) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    size_f = tf.cast(size, tf.float32)
    coord = tf.clip_by_value(coord, 0.0, size_f - 1.0)  # [B, h, w]
    low = tf.stop_gradient(tf.floor(coord))  # [B, h, w]
    t = coord - low  # [B, h, w] in [0, 1)
    low_i = tf.cast(low, tf.int32)
    last = tf.cast(size, tf.int32) - 1
    taps = [tf.clip_by_value(low_i + k, 0, last) for k in (-1, 0, 1, 2)]  # 4 x [B, h, w]
    return taps, [w[..., None] for w in weights(t)]  # 4 x [B, h, w, 1]

  rows, wy = axis(query[..., 0], height)
  cols, wx = axis(query[..., 1], width)
  gather = _gatherer(image, _dim(query, 1), _dim(query, 2))
  out = 0.0
  for r, w_r in zip(rows, wy):
    line = tf.add_n([w_c * gather(r, c) for c, w_c in zip(cols, wx)])  # [B, h, w, C]
    out = out + w_r * line
  return out


_SAMPLERS = {"bilinear": _bilinear_sample, "bicubic": _bicubic_sample, "bspline": _bspline_sample}
_COMPILED = {name: tf.function(f, jit_compile=True, reduce_retracing=True) for name, f in _SAMPLERS.items()}
