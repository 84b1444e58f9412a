"""Value grids of the float-like weight formats and nearest-value rounding onto them (pure numpy).

Codes index the grid tables below:
- NF4: 16 levels in ascending order (code = index);
- E2M1 (FP4, MXFP4, NVFP4): ``sign << 3 | magnitude index`` over 0, 0.5, 1, 1.5, 2, 3, 4, 6
  (the f4e2m1 bit pattern);
- E4M3 (FP8_E4M3, MXFP8_E4M3): ``sign << 7 | magnitude code`` where the 127 magnitude codes are the
  f8e4m3fn bit patterns 0x00..0x7E, whose values ascend (0x7F is NaN and never produced); 448 is the
  largest value and larger magnitudes saturate to it;
- E5M2 (FP8 quantization, ``quantize(mode=FP8_E5M2)``): the f8e5m2 bit patterns, magnitude codes
  0x00..0x7B (57344 is the largest finite value; larger magnitudes saturate to it);
- CB4: 16 E4M3-representable levels in ascending order (code = index).

Rounding is to the nearest grid value with the mid-points as decision boundaries; an exact tie goes to
the even code for E2M1/E4M3 (IEEE round-half-to-even) and to the lower level for NF4/CB4.
"""

from __future__ import annotations

import numpy as np

NF4_LEVELS = np.array(
    [-1.0, -0.6961928, -0.5250731, -0.3949175, -0.2844414, -0.1847734, -0.0910500, 0.0,
     0.0795803, 0.1609302, 0.2461123, 0.3379152, 0.4407098, 0.5626170, 0.7229568, 1.0],
    dtype=np.float32,
)
CB4_LEVELS = np.array(
    [-3.5, -2.5, -1.875, -1.375, -1.0, -0.625, -0.3125, 0.0, 0.28125, 0.5625, 0.875, 1.125, 1.5, 2.0, 2.5, 3.5],
    dtype=np.float32,
)
E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)
E2M1_LEVELS = np.concatenate([E2M1_MAGNITUDES, -E2M1_MAGNITUDES]).astype(np.float32)


def _e4m3_magnitudes() -> np.ndarray:
    codes = np.arange(127)
    exponent, mantissa = codes >> 3, (codes & 7).astype(np.float64)
    normal = (1.0 + mantissa / 8.0) * np.exp2(exponent - 7.0)
    return np.where(exponent == 0, mantissa * 2.0**-9, normal).astype(np.float32)


E4M3_MAGNITUDES = _e4m3_magnitudes()
E4M3_MAX = float(E4M3_MAGNITUDES[-1])  # 448
E4M3_LEVELS = np.concatenate(
    [E4M3_MAGNITUDES, [np.nan], -E4M3_MAGNITUDES, [np.nan]]
).astype(np.float32)  # indexed by the 8-bit code


def _e5m2_magnitudes() -> np.ndarray:
    codes = np.arange(124)
    exponent, mantissa = codes >> 2, (codes & 3).astype(np.float64)
    normal = (1.0 + mantissa / 4.0) * np.exp2(exponent - 15.0)
    return np.where(exponent == 0, mantissa * 2.0**-16, normal).astype(np.float32)


E5M2_MAGNITUDES = _e5m2_magnitudes()
E5M2_MAX = float(E5M2_MAGNITUDES[-1])  # 57344
E5M2_LEVELS = np.concatenate(
    [E5M2_MAGNITUDES, [np.inf, np.nan, np.nan, np.nan], -E5M2_MAGNITUDES, [-np.inf, np.nan, np.nan, np.nan]]
).astype(np.float32)  # indexed by the 8-bit code


class Midpoints:
    """``count(mids < x)`` for a sorted grid's decision boundaries: a lookup table over uniform bins
    (power-of-two width, no decision boundary near a bin edge) plus one exact comparison."""

    def __init__(self, levels: np.ndarray, low: float, high: float, bins: int = 4096):
        mids = ((levels[1:] + levels[:-1]) / 2).astype(np.float32)
        edges = low + (high - low) * np.arange(bins + 1) / bins
        if np.min(np.abs(mids[:, None] - edges[None, :])) <= 1e-5:
            raise ValueError("a decision boundary sits on a bin edge")
        self.above = np.append(mids, np.float32(np.inf)).astype(np.float32)  # mids[i]
        self.table = np.searchsorted(mids, edges[:-1], side="left").astype(np.int32)
        self.low, self.scale, self.bins = np.float32(low), np.float32(bins / (high - low)), bins

    def count_below(self, x: np.ndarray) -> np.ndarray:
        index = np.subtract(x, self.low, dtype=np.float32)
        index *= self.scale
        index = index.astype(np.int32)
        np.clip(index, 0, self.bins - 1, out=index)
        count = np.take(self.table, index)
        count += x > np.take(self.above, count)
        return count


_NF4 = Midpoints(NF4_LEVELS, -1.0, 1.0)
_CB4 = Midpoints(CB4_LEVELS, -3.5007, 3.4993)  # bin edges away from the dyadic boundaries
_E2M1 = Midpoints(E2M1_MAGNITUDES, -0.0007, 7.9993)  # bin edges away from the dyadic boundaries
_E4M3_MIDS = ((E4M3_MAGNITUDES[1:] + E4M3_MAGNITUDES[:-1]) / 2).astype(np.float32)
_E5M2_MIDS = ((E5M2_MAGNITUDES[1:] + E5M2_MAGNITUDES[:-1]) / 2).astype(np.float32)


def nearest_nf4(normalized: np.ndarray) -> np.ndarray:
    return _NF4.count_below(normalized).astype(np.uint8)


def nearest_cb4(normalized: np.ndarray) -> np.ndarray:
    return _CB4.count_below(normalized).astype(np.uint8)


def nearest_e2m1(normalized: np.ndarray) -> np.ndarray:
    magnitude = np.abs(normalized)
    index = _E2M1.count_below(magnitude)
    tie = magnitude == np.take(_E2M1.above, index)
    index += tie & (index % 2 == 1)  # ties to the even code
    return (index + 8 * ((normalized < 0) & (index > 0))).astype(np.uint8)


def _nearest_fp8(normalized: np.ndarray, mids: np.ndarray) -> np.ndarray:
    magnitude = np.abs(normalized).astype(np.float32)
    index = np.searchsorted(mids, magnitude, side="left")  # count of mids < magnitude
    tie = (index < mids.size) & (magnitude == np.take(mids, np.minimum(index, mids.size - 1)))
    index += tie & (index % 2 == 1)
    return (index + 128 * ((normalized < 0) & (index > 0))).astype(np.uint8)


def nearest_e4m3(normalized: np.ndarray) -> np.ndarray:
    """f8e4m3fn codes (round half to even, saturating at +-448; -0 is stored as +0)."""
    return _nearest_fp8(normalized, _E4M3_MIDS)


def nearest_e5m2(normalized: np.ndarray) -> np.ndarray:
    """f8e5m2 codes (round half to even, saturating at +-57344; -0 is stored as +0)."""
    return _nearest_fp8(normalized, _E5M2_MIDS)


def e8m0(value: np.ndarray, grid_max: float) -> np.ndarray:
    """MX scales: ``2^clip(ceil(log2(value / grid_max)), -127, 127)`` (a power of two, float32)."""
    exponent = np.ceil(np.log2(np.maximum(value, 2.0**-126) / grid_max))
    return np.exp2(np.clip(exponent, -127, 127)).astype(np.float32)


def fit_codebook(normalized: np.ndarray, size: int, value_type: str = "f8e4m3", iterations: int = 25,
                 max_samples: int = 1 << 16) -> np.ndarray:
    """A sorted codebook of at most ``size`` values for ``normalized`` (values in [-1, 1]): 1-D k-means
    (quantile start, Lloyd iterations over a deterministic subsample), the values rounded to E4M3
    (scaled so that the largest is 448) or float16, duplicates merged, the largest magnitude kept."""
    flat = np.asarray(normalized, dtype=np.float32).reshape(-1)
    if flat.size > max_samples:
        flat = flat[:: flat.size // max_samples]
    flat = np.sort(flat)
    centers = np.quantile(flat, (np.arange(size) + 0.5) / size).astype(np.float32)
    for _ in range(iterations):
        bounds = np.searchsorted(flat, (centers[1:] + centers[:-1]) / 2)
        sums = np.add.reduceat(flat, np.concatenate([[0], bounds])) if flat.size else np.zeros(size)
        counts = np.diff(np.concatenate([[0], bounds, [flat.size]]))
        centers = np.where(counts > 0, sums / np.maximum(counts, 1), centers).astype(np.float32)
        centers = np.sort(centers)
    top = float(np.abs(flat).max()) if flat.size else 1.0
    outer = np.argmax(np.abs(centers))
    centers[outer] = np.sign(centers[outer]) * top  # the largest magnitude reaches max|w|: nothing clips
    if value_type == "f8e4m3":
        peak = max(float(np.abs(centers).max()), 1e-30)
        centers = E4M3_LEVELS[nearest_e4m3(centers * (E4M3_MAX / peak))]
    else:
        centers = centers.astype(np.float16).astype(np.float32)
    values = np.unique(centers)
    return values if values.size >= 2 else np.array([-1.0, 1.0], np.float32)
