"""Low-bit weight formats (pure numpy): scales, codes, exact 4-bit packing, dequantization.

Every mode quantizes along *reduction axes* of a weight: per output channel (``group_size == -1``,
reduce over the input-channel axis and trailing kernel axes) or group-wise (the input-channel axis
``axis`` of size ``r`` is split into ``r // group_size`` groups; the stored shape inserts the group
axis: ``[..., r / gs, gs, ...]`` and scales have shape ``[..., r / gs, 1, ...]``).

Formulas (reference section 2.3):
- asymmetric integer: ``scale = (max - min) / (2^b - 1)``, ``zp = clip(-round(min / scale))``,
  ``q = clip(round(w / scale + zp))``, ``w^ = (q - zp) * scale``; the range always holds 0 so the zero
  point never clips;
- symmetric integer: a signed scale maps the largest-magnitude weight to ``-2^(b-1)``,
  ``q = clip(round(w / scale), -2^(b-1), 2^(b-1) - 1)``, ``w^ = q * scale``;
- NF4 / E2M1 (MXFP4): ``scale = max|w| / max|grid|`` (MXFP4: a power of two), nearest grid value.

Scales are rounded to float16 before the codes are computed, so storing them in float16 is exact.
4-bit codes are packed two per byte, the first element in the low nibble (OpenVINO u4/i4/nf4/f4e2m1
and ONNX INT4/UINT4 use this order); INT3_SYM / INT2_SYM (``[-4, 3]`` / ``[-2, 1]``, the symmetric
formula) pack ``q + 4`` / ``q + 2`` in OpenVINO's u3 / u2 layouts (``numerics.packing``). The stored form
(``CompressedWeight``, ``encode``) is ``numerics.encoding``.
"""

from __future__ import annotations

import numpy as np

from nncompress.numerics import grids
from nncompress.numerics.grids import E2M1_LEVELS, E2M1_MAGNITUDES, NF4_LEVELS  # noqa: F401 - re-exported
from nncompress.numerics.packing import pack_4bit, pack_codes, unpack_4bit, unpack_codes  # noqa: F401 - re-exported
from nncompress.parameters import CompressWeightsMode as Mode

F16_NORMAL = 2.0**-14  # smallest normal float16: smaller scales are kept in float32
F32_TINY = 1e-30


class NonFiniteWeightError(ValueError):
    """A weight holds NaN or Inf (found from its group extremes, which NaN and Inf always reach)."""


def _finite(extreme: np.ndarray) -> np.ndarray:
    """``extreme`` (per-group min, max or max |w|) unchanged; NonFiniteWeightError when not finite.

    Checking the small per-group extremes instead of every element keeps the check nearly free: a NaN
    makes its group's min and max NaN, and an Inf becomes its group's max (or min)."""
    if not np.isfinite(extreme).all():
        raise NonFiniteWeightError("the weight holds NaN or Inf values")
    return extreme

SYMMETRIC_INT_MODES = frozenset({Mode.INT8_SYM, Mode.INT4_SYM, Mode.INT3_SYM, Mode.INT2_SYM})
INT_MODES = frozenset({Mode.INT8_ASYM, Mode.INT4_ASYM, *SYMMETRIC_INT_MODES})
NARROW_BITS = {Mode.INT3_SYM: 3, Mode.INT2_SYM: 2}  # below 4 bits: packed unsigned (q + 2^(b-1))
FOUR_BIT_MODES = frozenset(
    {Mode.INT4_ASYM, Mode.INT4_SYM, Mode.NF4, Mode.MXFP4, Mode.FP4, Mode.NVFP4, Mode.CB4_F8E4M3, Mode.CODEBOOK,
     Mode.ADAPTIVE_CODEBOOK}
)
MAX_CODEBOOK_SIZE = 16  # user codebooks: 4-bit indices
_GRIDS = {  # float-grid modes: (grid indexed by code, nearest-code function)
    Mode.NF4: (grids.NF4_LEVELS, grids.nearest_nf4),
    Mode.CB4_F8E4M3: (grids.CB4_LEVELS, grids.nearest_cb4),
    Mode.MXFP4: (grids.E2M1_LEVELS, grids.nearest_e2m1),
    Mode.FP4: (grids.E2M1_LEVELS, grids.nearest_e2m1),
    Mode.NVFP4: (grids.E2M1_LEVELS, grids.nearest_e2m1),
    Mode.FP8_E4M3: (grids.E4M3_LEVELS, grids.nearest_e4m3),
    Mode.MXFP8_E4M3: (grids.E4M3_LEVELS, grids.nearest_e4m3),
}
CODEBOOK_MODES = frozenset(_GRIDS)  # fixed grids; Mode.CODEBOOK carries its own (``book``)
MX_MODES = frozenset({Mode.MXFP4, Mode.MXFP8_E4M3})  # power-of-two (E8M0) scales, groups of 32
FIXED_GROUP_SIZES = {Mode.MXFP4: 32, Mode.MXFP8_E4M3: 32, Mode.NVFP4: 16}
SEARCHABLE_MODES = frozenset({Mode.INT4_ASYM, Mode.INT4_SYM, Mode.INT3_SYM, Mode.INT2_SYM, Mode.NF4})  # range search
# NNCF backs these up with FP8_E4M3 (same group size) or MXFP8_E4M3 instead of INT8_ASYM
FLOAT_BACKUP = {Mode.FP4: Mode.FP8_E4M3, Mode.FP8_E4M3: Mode.FP8_E4M3,
                Mode.MXFP4: Mode.MXFP8_E4M3, Mode.MXFP8_E4M3: Mode.MXFP8_E4M3}


def canonical_mode(mode: Mode) -> Mode:
    """The mode an alias stands for (INT8 -> INT8_ASYM, E2M1 -> MXFP4, CB4 -> CB4_F8E4M3)."""
    aliases = {Mode.INT8: Mode.INT8_ASYM, Mode.E2M1: Mode.MXFP4, Mode.CB4: Mode.CB4_F8E4M3}
    return aliases.get(Mode(mode), Mode(mode))


def mode_bits(mode: Mode) -> int:
    """Bits per stored code: 2 (INT2_SYM), 3 (INT3_SYM), 4 (4-bit modes) or 8."""
    mode = canonical_mode(mode)
    return NARROW_BITS.get(mode, 4 if mode in FOUR_BIT_MODES else 8)


def is_low_bit(mode: Mode) -> bool:
    """Whether ``mode`` stores fewer than 8 bits per weight (the primary modes of the data-aware methods)."""
    return mode_bits(mode) < 8


def is_int8_mode(mode: Mode) -> bool:
    """INT8_ASYM/INT8_SYM: every weight per channel, no ratio, no backup (NNCF's "8-bit modes")."""
    return canonical_mode(mode) in (Mode.INT8_ASYM, Mode.INT8_SYM)


def is_asymmetric(mode: Mode) -> bool:
    return canonical_mode(mode) in (Mode.INT8_ASYM, Mode.INT4_ASYM)


def codebook(mode: Mode) -> np.ndarray | None:
    """The grid values indexed by the codes of a float-grid mode (None for integer modes)."""
    entry = _GRIDS.get(canonical_mode(mode))
    return None if entry is None else entry[0]


def grid_max(mode: Mode) -> float:
    """The largest magnitude of a float-grid mode (the scale maps max|w| onto it)."""
    book = codebook(mode)
    return float(np.nanmax(np.abs(book)))


def code_range(mode: Mode) -> tuple[int, int]:
    """(lowest, highest) integer code of ``mode``."""
    mode = canonical_mode(mode)
    bits = mode_bits(mode)
    if mode in SYMMETRIC_INT_MODES:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


# --------------------------------------------------------------------------- layout


def grouped_shape(shape: tuple[int, ...], axis: int, group_size: int) -> tuple[int, ...]:
    """``shape`` with ``axis`` split into (groups, group_size); unchanged for ``group_size == -1``."""
    if group_size == -1:
        return tuple(shape)
    axis %= len(shape)
    return (*shape[:axis], shape[axis] // group_size, group_size, *shape[axis + 1 :])


def reduction_axes(ndim: int, axis: int, group_size: int, out_axis: int | None = None) -> tuple[int, ...]:
    """Axes of the stored (grouped) weight that one scale covers.

    Group-wise: the in-group axis. Per channel: the input axis and the kernel axes after both the
    input and output axes (convolutions), so one scale per output channel remains.
    """
    axis %= ndim
    if group_size != -1:
        return (axis + 1,)
    last = max(axis, (out_axis if out_axis is not None else axis) % ndim)
    return tuple(sorted({axis, *range(last + 1, ndim)}))


def group(weight: np.ndarray, axis: int, group_size: int) -> np.ndarray:
    """A view of ``weight`` in its stored (grouped) shape."""
    return weight.reshape(grouped_shape(weight.shape, axis, group_size))


# --------------------------------------------------------------------------- scales and codes


def round_scale(scale: np.ndarray) -> np.ndarray:
    """``scale`` rounded to float16 where float16 keeps full precision (normal range), never 0 or inf;
    tiny scales (below 2^-14) stay float32, and such weights store float32 scales."""
    magnitude = np.clip(np.abs(scale), F32_TINY, 65504.0).astype(np.float32)
    rounded = np.where(magnitude >= F16_NORMAL, magnitude.astype(np.float16).astype(np.float32), magnitude)
    return (np.sign(scale) + (scale == 0)).astype(np.float32) * rounded


def _extremes(grouped: np.ndarray, mode: Mode, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) per group for integer modes; (max |w|, unused) for float grids."""
    if mode in INT_MODES:
        return _finite(grouped.min(axis=axes, keepdims=True)), _finite(grouped.max(axis=axes, keepdims=True))
    amax = _finite(np.abs(grouped).max(axis=axes, keepdims=True))
    return amax, amax


def _finish(scale: np.ndarray, mode: Mode) -> np.ndarray:
    """Group-wise scales (4-bit modes, FP8) are stored in float16; INT8 per-channel ones stay float32."""
    if not is_int8_mode(mode):
        return round_scale(scale)
    magnitude = np.maximum(np.abs(scale), F32_TINY)
    return ((np.sign(scale) + (scale == 0)) * magnitude).astype(np.float32)


def _scale_from(low: np.ndarray, high: np.ndarray, mode: Mode, shrink=(1.0, 1.0)):
    bits = mode_bits(mode)
    if mode in (Mode.INT8_ASYM, Mode.INT4_ASYM):
        low, high = np.minimum(low, 0.0) * shrink[0], np.maximum(high, 0.0) * shrink[1]
        scale = _finish((high - low) / (2**bits - 1), mode)
        return scale, np.clip(-np.round(low / scale), 0, 2**bits - 1).astype(np.uint8)
    if mode in SYMMETRIC_INT_MODES:
        signed_max = np.where((low < 0) & (np.abs(low) >= np.abs(high)), np.abs(low), -high)
        return _finish(signed_max * shrink[0] / 2 ** (bits - 1), mode), None
    if mode in MX_MODES:
        return grids.e8m0(low, grid_max(mode)), None
    if mode is Mode.NVFP4:
        group_scale, global_scale = nvfp4_scales(low)
        return group_scale * np.float32(global_scale), None
    return _finish(low * shrink[0] / grid_max(mode), mode), None


def nvfp4_scales(amax: np.ndarray) -> tuple[np.ndarray, float]:
    """NVFP4's two-level scale: per-group ``max|w| / 6`` rounded to FP8 E4M3 relative to one float32
    tensor scale ``max(group scales) / 448``. Returns (E4M3 group scales as float32, tensor scale);
    groups whose scale rounds to 0 get the smallest E4M3 value instead (their codes are then 0)."""
    ideal = np.asarray(amax, dtype=np.float32) / 6.0
    top = float(ideal.max()) if ideal.size else 0.0
    global_scale = np.float32(top / grids.E4M3_MAX if top > 0 else 1.0)
    codes = grids.nearest_e4m3(ideal / global_scale)
    values = grids.E4M3_LEVELS[codes]
    return np.where(values > 0, values, grids.E4M3_MAGNITUDES[1]).astype(np.float32), float(global_scale)


def compute_scale(
    grouped: np.ndarray, mode: Mode, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray | None]:
    """(scale, zero point or None) of round-to-nearest quantization, reduced over ``axes``."""
    mode = canonical_mode(mode)
    return _scale_from(*_extremes(grouped, mode, axes), mode)


# clipped ranges tried by ``search_scale``: (low, high) shrink factors
SEARCH_ASYMMETRIC = ((0.9, 1.0), (1.0, 0.9), (0.85, 0.85))
SEARCH_SYMMETRIC = ((0.85, 0.85), (0.925, 0.925))


def squared_error(
    grouped: np.ndarray, mode: Mode, axes: tuple[int, ...], scale: np.ndarray, zero_point: np.ndarray | None
) -> np.ndarray:
    """Per-group sum of squared quantization errors for the given parameters."""
    values = unscaled_values(grouped, mode, scale, zero_point)
    values *= scale
    values -= grouped
    if axes == (grouped.ndim - 1,):
        return np.einsum("...k,...k->...", values, values)[..., None]
    np.square(values, out=values)
    return values.sum(axis=axes, keepdims=True)


def search_scale(
    grouped: np.ndarray, mode: Mode, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Round-to-nearest parameters, or per group a clipped range when it gives a smaller weight error
    (4-bit integer and NF4 modes; the other modes keep the round-to-nearest ones)."""
    mode = canonical_mode(mode)
    low, high = _extremes(grouped, mode, axes)
    scale, zero_point = _scale_from(low, high, mode)
    if mode not in SEARCHABLE_MODES:
        return scale, zero_point
    best = squared_error(grouped, mode, axes, scale, zero_point)
    for shrink in SEARCH_ASYMMETRIC if zero_point is not None else SEARCH_SYMMETRIC:
        candidate, candidate_zp = _scale_from(low, high, mode, shrink)
        error = squared_error(grouped, mode, axes, candidate, candidate_zp)
        better = error < best
        best = np.where(better, error, best)
        scale = np.where(better, candidate, scale)
        if zero_point is not None:
            zero_point = np.where(better, candidate_zp, zero_point)
    return scale, zero_point


def _grid_codes(grouped: np.ndarray, mode: Mode, scale: np.ndarray, zero_point: np.ndarray | None) -> np.ndarray:
    """The nearest integer codes of ``grouped / scale`` (+ zero point), clipped to the range, as float32."""
    lowest, highest = code_range(mode)
    codes = np.divide(grouped, scale, dtype=np.float32)
    if zero_point is not None:
        codes += zero_point
    np.rint(codes, out=codes)
    return np.clip(codes, lowest, highest, out=codes)


def quantize_codes(
    grouped: np.ndarray, mode: Mode, scale: np.ndarray, zero_point: np.ndarray | None = None
) -> np.ndarray:
    """Integer codes of ``grouped`` for given scale (and zero point): int8 or uint8 array."""
    mode = canonical_mode(mode)
    if mode in CODEBOOK_MODES:
        return _GRIDS[mode][1](np.divide(grouped, scale, dtype=np.float32))
    return _grid_codes(grouped, mode, scale, zero_point).astype(np.int8 if code_range(mode)[0] < 0 else np.uint8)


def dequantize_codes(
    codes: np.ndarray, mode: Mode, scale: np.ndarray, zero_point: np.ndarray | None = None,
    global_scale: float | None = None, book: np.ndarray | None = None,
) -> np.ndarray:
    """Float32 values of ``codes`` (in the stored, grouped shape): ``(value - zp) * (scale [* global])``;
    ``book``: the values of a user codebook (Mode.CODEBOOK)."""
    from nncompress.numerics.decode import dequantize

    mode = canonical_mode(mode)
    book = codebook(mode) if book is None else book
    values = book[codes] if book is not None else codes.astype(np.float32)
    global_scale = None if global_scale is None else np.float32(global_scale)
    return dequantize(values, scale, zero_point, global_scale).astype(np.float32, copy=False)


def code_values(codes: np.ndarray, mode: Mode, zero_point: np.ndarray | None = None) -> np.ndarray:
    """The unscaled values of ``codes``: ``q - zp`` or the grid value (float32)."""
    book = codebook(canonical_mode(mode))
    values = book[codes] if book is not None else codes.astype(np.float32)
    return values - zero_point.astype(np.float32) if zero_point is not None else values


def unscaled_values(
    grouped: np.ndarray, mode: Mode, scale: np.ndarray, zero_point: np.ndarray | None = None
) -> np.ndarray:
    """``code_values(quantize_codes(...))`` without the integer round trip: the float32 values
    ``q - zp`` (or grid values) of the codes nearest to ``grouped / scale``; times ``scale``, the
    dequantized weight."""
    mode = canonical_mode(mode)
    if mode in CODEBOOK_MODES:
        return code_values(quantize_codes(grouped, mode, scale), mode)
    values = _grid_codes(grouped, mode, scale, zero_point)
    if zero_point is not None:
        values -= zero_point.astype(np.float32, copy=False)
    return values


def fake_quantize(grouped: np.ndarray, mode: Mode, axes: tuple[int, ...]) -> np.ndarray:
    """Round-to-nearest quantize-dequantize of a grouped weight (float32, same shape)."""
    scale, zero_point = compute_scale(grouped, mode, axes)
    values = unscaled_values(grouped, mode, scale, zero_point)
    values *= scale
    return values
