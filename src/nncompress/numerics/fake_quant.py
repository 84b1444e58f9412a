"""The integer-grid FakeQuantize formula, once, for numpy arrays and torch tensors.

``q = clip(round(x / scale) + zero_point, level_low, level_high)``, ``y = (q - zero_point) * scale``:
the form QuantizeLinear -> DequantizeLinear computes, so 0.0 stays exact. ``scale`` and ``zero_point``
are broadcast against ``x`` by the caller (per tensor or per channel); ``zero_point=None`` is a
symmetric grid (no zero point added). The result has ``x``'s type, device and (promoted) dtype.

``ste=True`` (torch, when gradients are needed) builds the autograd graph of quantization-aware
training: round has a straight-through gradient, ``clamp`` passes gradient inside the range only.
Without it the value is computed in one temporary, updated in place.
"""

from __future__ import annotations

from nncompress.numerics import xp
from nncompress.numerics.xp import Array


def quantize_levels(x: Array, scale: Array, zero_point: Array | None, level_low: int, level_high: int,
                    *, ste: bool = False) -> Array:
    """``clip(round(x / scale) + zero_point, level_low, level_high)``: the grid levels, as floats."""
    if ste:
        q = xp.round_ste(x / scale)
        if zero_point is not None:
            q = q + zero_point
        return xp.clip(q, level_low, level_high)
    q = xp.round_(xp.fresh(x / scale))
    if zero_point is not None:
        q = xp.iadd(q, zero_point)
    return xp.clip_(q, level_low, level_high)


def fake_quantize(x: Array, scale: Array, zero_point: Array | None, level_low: int, level_high: int,
                  *, ste: bool = False) -> Array:
    """Quantize-dequantize ``x`` on the integer grid ``[level_low, level_high]``."""
    q = quantize_levels(x, scale, zero_point, level_low, level_high, ste=ste)
    if ste:
        return (q - zero_point) * scale if zero_point is not None else q * scale
    if zero_point is not None:
        q = xp.isub(q, zero_point)
    return xp.imul(q, scale)
