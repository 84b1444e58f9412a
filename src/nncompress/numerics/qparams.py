"""Quantizer ranges and integer parameters (numpy; the grid formula itself is in ``fake_quant``).

Ranges follow FakeQuantize semantics: ``levels`` evenly spaced values from ``low`` to ``high``.
"""

from __future__ import annotations

import numpy as np

from nncompress.graph.edits import FakeQuantParams
from nncompress.numerics import xp
from nncompress.numerics.fake_quant import fake_quantize as grid_fake_quantize
from nncompress.numerics.fake_quant import quantize_levels

ZERO_FILTER_EPS = 8e-5
ASYM_MIN_WIDTH = 8e-4


def integer_grid(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """(level_low, level_high) of a ``bits``-wide integer grid."""
    if signed:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    return (low + 1, high) if narrow else (low, high)


def symmetric_range(
    min_values, abs_max, bits: int = 8, narrow: bool = False, signed: bool | None = None
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(low, high, levels, signed) of a symmetric quantizer.

    ``abs_max`` is the collected maximum magnitude (scalar or per channel); ``min_values`` decides
    signedness when ``signed`` is None. Tiny channels are lifted to 1% of the largest (zero filter).
    """
    abs_max = np.asarray(abs_max, dtype=np.float32)
    floor = max(0.01 * float(np.max(abs_max)), ZERO_FILTER_EPS)
    high = np.maximum(abs_max, np.float32(floor)).astype(np.float32)
    if signed is None:
        signed = bool(np.any(np.asarray(min_values) < 0))
    levels = 2**bits - 1 if narrow else 2**bits
    if not signed:
        return np.zeros_like(high), high, levels, False
    low = -high if narrow else -high * (levels / 2) / (levels / 2 - 1)
    return low.astype(np.float32), high, levels, True


def asymmetric_range(min_values, max_values, bits: int = 8) -> tuple[np.ndarray, np.ndarray, int]:
    """(low, high, levels) of an asymmetric quantizer whose grid holds 0.0 exactly."""
    low = np.asarray(min_values, dtype=np.float64)
    high = np.asarray(max_values, dtype=np.float64)
    narrow_width = (high - low) <= ASYM_MIN_WIDTH
    low = np.where(narrow_width, low - ASYM_MIN_WIDTH, low)
    high = np.where(narrow_width, high + ASYM_MIN_WIDTH, high)
    low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)
    low, high = tune_range(low, high, 2**bits - 1)
    return low.astype(np.float32), high.astype(np.float32), 2**bits


def tune_range(low, high, steps: int):
    """Widen [low, high] (low <= 0 <= high) the least so that 0.0 falls exactly on a grid of ``steps`` steps.

    Moves the low end (to ``ZP/(ZP-steps)·high``) or the high end (to ``(ZP-steps)/ZP·low``), whichever
    gives the wider range (low on a tie), with ``ZP = round(-low·steps/(high-low))``; a zero point at an
    edge keeps the range. numpy arrays or torch tensors (NNCF's TuneRange; QAT runs it every step).
    """
    scale = steps / (high - low)
    zero_level = xp.rint(-low * scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        low_moved = xp.where(zero_level < steps, zero_level / (zero_level - steps) * high, low)
        high_moved = xp.where(zero_level > 0, (zero_level - steps) / zero_level * low, high)
    widen_low = (high - low_moved) >= (high_moved - low)
    new_low = xp.where(widen_low, low_moved, low)
    new_high = xp.where(widen_low, high, high_moved)
    on_grid = (zero_level <= 0) | (zero_level >= steps)
    return xp.where(on_grid, low, new_low), xp.where(on_grid, high, new_high)


def scale_zero_point(params: FakeQuantParams) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(scale, zero_point, level_low, level_high) equivalent to ``params`` on its integer grid."""
    bits = int(np.ceil(np.log2(params.levels)))
    level_low, level_high = integer_grid(bits, params.signed, params.narrow)
    low = np.asarray(params.low, dtype=np.float64)
    high = np.asarray(params.high, dtype=np.float64)
    scale = np.maximum((high - low) / (params.levels - 1), np.finfo(np.float32).tiny)
    zero_point = np.clip(level_low - np.round(low / scale), level_low, level_high)
    return scale.astype(np.float32), zero_point.astype(np.int32), level_low, level_high


def quantize_to_int(values: np.ndarray, params: FakeQuantParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(integers, scale, zero_point): ``values`` on the grid of ``params`` (int8 or uint8)."""
    scale, zero_point, level_low, level_high = scale_zero_point(params)
    shape = _channel_shape(values.ndim, params.axis)
    zero = zero_point.reshape(shape).astype(np.float32)
    q = quantize_levels(values, scale.reshape(shape), zero, level_low, level_high)
    dtype = np.int8 if level_low < 0 else np.uint8
    return q.astype(dtype), scale, zero_point.astype(dtype)


def fake_quantize(values: np.ndarray, params: FakeQuantParams) -> np.ndarray:
    """Quantize-dequantize ``values``: the integer-grid form of FakeQuantize (as QuantizeLinear ->
    DequantizeLinear computes it, so 0.0 stays exact; the formula is ``numerics.fake_quant``'s)."""
    scale, zero_point, level_low, level_high = scale_zero_point(params)
    shape = _channel_shape(values.ndim, params.axis)
    scale, zero_point = scale.reshape(shape), zero_point.reshape(shape).astype(np.float32)
    return np.asarray(grid_fake_quantize(values, scale, zero_point, level_low, level_high), dtype=np.float32)


def _channel_shape(ndim: int, axis: int | None) -> tuple[int, ...]:
    if axis is None:
        return ()
    shape = [1] * ndim
    shape[axis] = -1
    return tuple(shape)
