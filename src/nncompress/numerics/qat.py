"""NNCF's quantization-aware-training (QAT) formulas, once, for numpy arrays and torch tensors.

A QAT quantizer has a real range ``[lo, lo + R]`` on an integer grid ``[L, H]`` of ``N = H - L + 1``
levels. Its grid step is ``R / (H - L)``:

- symmetric (trainable ``scale``, the range bound): ``lo = scale·L/H``, ``R = scale - lo``, so the
  step is ``scale / H`` and the zero point is 0;
- asymmetric (trainable ``input_low``, ``input_range``): ``lo``, ``R`` after the zero-point alignment
  ``tune_range`` (identity backward), so ``-lo / step`` is an integer, the zero point.

NNCF's forward ``y = round((clamp(x, lo, hi) - lo)·s - ZP) / s`` with ``s = (H-L)/R`` and
``ZP = round(-lo·s)`` is, on such a grid, the integer-grid form
``numerics.fake_quant.fake_quantize(x, step, zero_point, L, H)`` (what QuantizeLinear→DequantizeLinear
computes), which is what ``fake_quantize`` evaluates: training and the exported graph compute the same
values. (Where ``lo·s`` is not an integer, NNCF's form shifts the grid by that fraction of a level; the
alignment makes it an integer up to rounding.)

Gradients (NNCF's, ``range_gradients``), with ``in = [lo <= x <= hi]``, ``above = [x > hi]``,
``below = [x < lo]`` and ``alpha = L/H`` (symmetric) or 0 (asymmetric):
``dx = g·in`` (straight-through), ``d range = Σ g·(in·(y-x)/R + above + alpha·below)`` (the gradient of
``scale`` or ``input_range``), ``d input_low = Σ g·(above + below)``, each summed to the parameter's
shape. For a signed symmetric grid the in-range term ``(y-x)/R`` is ``1/(1-alpha)``, about half, of the
exact straight-through derivative ``(y-x)/scale``; NNCF trains with it and so do we.
"""

from __future__ import annotations

import numpy as np

from nncompress.numerics import xp
from nncompress.numerics.fake_quant import fake_quantize as grid_fake_quantize
from nncompress.numerics.qparams import integer_grid, tune_range
from nncompress.numerics.xp import Array

EPS = 1e-16  # |scale| + EPS keeps a zero scale usable (log storage needs none)
SCALE_LOWER_THRESHOLD = 0.1  # symmetric range init floors each scale here (NNCF)
MIN_RANGE_FRACTION = 0.01  # asymmetric range init widens channels to 1% of the widest


def level_range(num_bits: int, signed: bool, narrow_range: bool = False, half_range: bool = False) -> tuple[int, int]:
    """(L, H) of a QAT grid: signed ``[-2^(b-1), 2^(b-1)-1]``, unsigned ``[0, 2^b-1]``.

    ``narrow_range`` drops one level (signed: ``L + 1``; unsigned: ``H - 1``); ``half_range`` (the
    overflow fix) trains on ``b - 1`` bits without narrow range.
    """
    if half_range:
        return integer_grid(num_bits - 1, signed, False)
    low, high = integer_grid(num_bits, signed, False)
    if narrow_range:
        return (low + 1, high) if signed else (low, high - 1)
    return low, high


def export_level_range(level_low: int, level_high: int, half_range: bool) -> tuple[int, int]:
    """(L', H') of the exported grid: a half-range grid doubles to ``(2L, 2H+1)``, the step unchanged."""
    return (2 * level_low, 2 * level_high + 1) if half_range else (level_low, level_high)


def safe_magnitude(value: Array, logarithm: bool) -> Array:
    """The positive range value a parameter stores: ``exp(value)`` (log storage) or ``|value| + EPS``."""
    if logarithm:
        return value.exp() if xp.is_torch(value) else np.exp(value)
    return abs(value) + EPS


def stored_magnitude(value: Array, logarithm: bool) -> Array:
    """The inverse of ``safe_magnitude`` for a positive ``value`` (what range init writes)."""
    if logarithm:
        return value.log() if xp.is_torch(value) else np.log(value)
    return value


def symmetric_grid(scale: Array, level_low: int, level_high: int) -> tuple[Array, Array, Array]:
    """(step, lo, R) of a symmetric quantizer with (positive) range bound ``scale``: ``scale/H``,
    ``scale·L/H``, ``scale - lo``. Its zero point is 0."""
    step = scale / level_high
    low = step * level_low
    return step, low, scale - low


def asymmetric_grid(input_low: Array, input_range: Array, level_low: int,
                    level_high: int) -> tuple[Array, Array, Array, Array]:
    """(step, zero point, lo, R) of an asymmetric quantizer (``input_range`` positive).

    The range ``[min(lo, 0), max(lo + R, 0)]`` is widened by ``tune_range`` so 0.0 is a level; then the
    step is ``R/(H-L)`` and the zero point ``L - round(lo/step)``, an integer in ``[L, H]``.
    """
    zero = input_low * 0
    low = xp.where(input_low < zero, input_low, zero)
    high = input_low + input_range
    high = xp.where(high > zero, high, zero)
    low, high = tune_range(low, high, level_high - level_low)
    span = high - low
    step = span / (level_high - level_low)
    return step, level_low - xp.rint(low / step), low, span


def fake_quantize(x: Array, step: Array, zero_point: Array | None, level_low: int, level_high: int) -> Array:
    """The QAT forward: ``numerics.fake_quant.fake_quantize`` on the grid of ``symmetric_grid`` or
    ``asymmetric_grid`` (``zero_point`` None: symmetric)."""
    return grid_fake_quantize(x, step, zero_point, level_low, level_high)


def range_gradients(x: Array, y: Array, g: Array, low: Array, span: Array, alpha: float,
                    shape: tuple[int, ...]) -> tuple[Array, Array, Array]:
    """(dx, d_low, d_range): NNCF's gradients of ``y = fake_quantize(x, ...)`` on ``[low, low + span]``
    for upstream ``g``.

    ``d_low`` and ``d_range`` are summed to ``shape`` (the parameters' shape); ``alpha = L/H`` for a
    symmetric quantizer (whose one parameter takes ``d_range``), 0 for an asymmetric one.
    """
    if xp.is_torch(g):
        return _torch_range_gradients(x, y, g, low, span, alpha, shape)
    above = x > low + span
    below = x < low
    dx = np.where(above | below, 0, g).astype(g.dtype)
    g_above = xp.sum_to(g * above, shape)
    g_below = xp.sum_to(g * below, shape)
    d_range = xp.sum_to(dx * (y - x), shape) / span + g_above + g_below * alpha
    return dx, g_above + g_below, d_range


def _torch_range_gradients(x, y, g, low, span, alpha, shape):
    """``range_gradients`` in torch: float arithmetic only (comparisons and ``where`` are several times
    slower on CPU), few full-size passes and two full-size temporaries besides ``dx``.

    ``side = sign(clamp(x, lo, hi) - x)`` is -1 above the range, +1 below, 0 inside; then
    ``Σ g·side = S_below - S_above`` and ``Σ g·|side| = S_below + S_above``.
    """
    torch = xp._torch()
    side = torch.clamp(x, low, low + span).sub_(x).sign_()
    total = _product_sum(g, side, shape)
    outside = _product_sum(g, side.abs_(), shape)
    dx = torch.addcmul(g, g, side, value=-1)  # g where inside, 0 outside
    in_range = _product_sum(torch.sub(y, x, out=side), dx, shape)
    g_above, g_below = (outside - total) / 2, (outside + total) / 2
    return dx, outside, in_range / span + g_above + g_below * alpha


def _product_sum(a, b, shape):
    """``sum_to(a * b, shape)``; one pass without a temporary (a dot product) when summing everything."""
    if len(shape) <= 1 and (not shape or shape[0] == 1) and a.is_contiguous() and b.is_contiguous():
        return xp._torch().dot(a.reshape(-1), b.reshape(-1)).reshape(shape)
    return xp.sum_to(a * b, shape)


def symmetric_init(low: np.ndarray, high: np.ndarray, signed: bool | None = None) -> tuple[bool, np.ndarray]:
    """(signed, scale) from collected minima/maxima: signed when any minimum is negative (unless
    ``signed`` forces it), ``scale = max(|low|, |high|)`` floored elementwise at 0.1."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    if signed is None:
        signed = bool(np.any(low < 0))
    scale = np.maximum(np.abs(low), np.abs(high))
    return signed, np.maximum(scale, np.float32(SCALE_LOWER_THRESHOLD)).astype(np.float32)


def asymmetric_init(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(input_low, input_range) from collected minima/maxima; a range under 1% of the widest channel's
    is widened to it, symmetrically about its centre."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    span = high - low
    widen = np.maximum(MIN_RANGE_FRACTION * np.max(span) - span, 0.0) / 2
    return (low - widen).astype(np.float32), (span + 2 * widen).astype(np.float32)
