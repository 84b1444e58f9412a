"""GPTQ (reference section 2.9) on one ``[out, in]`` weight with the Hessian of its input.

``H = 2 / tokens * sum x x^T`` (collected on the float model); dead inputs (``H_ii = 0``) are zeroed,
``H += damp * mean(diag H) * I``; ``U = chol(H^-1)`` (upper). Columns are quantized in blocks: each group's
scale (and zero point) comes from its current, error-updated columns (round to nearest, or scale
estimation); the quantization error of a column is spread over the remaining columns through ``U``.
Returns the dequantized weight and the group parameters, so encoding reproduces the same codes.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.scale_estimation import estimate_grouped
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.numerics.lowbit import code_range, codebook, compute_scale, dequantize_codes, quantize_codes
from nncompress.weight_parameters import AdvancedCompressionParameters


def _inverse_cholesky(hessian: np.ndarray, damp_percent: float) -> np.ndarray:
    """Upper Cholesky factor of the damped inverse Hessian."""
    damp = damp_percent * float(np.mean(np.diag(hessian)))
    hessian = hessian + np.eye(len(hessian)) * max(damp, 1e-8)
    lower = scipy.linalg.cholesky(hessian, lower=True)
    inverse = scipy.linalg.cho_solve((lower, True), np.eye(len(hessian)))
    return scipy.linalg.cholesky(inverse, lower=False)


class GPTQFactors:
    """Memo of ``(upper Cholesky factor of the damped inverse Hessian, dead inputs)`` per statistics
    object and dampening: layers reading the same activation (q, k, v) share one factorization.
    Owned by one compression run; the statistics themselves are not touched."""

    def __init__(self):
        self._cache: dict[tuple[int, float], tuple[ActivationStats, np.ndarray, np.ndarray]] = {}

    def __call__(self, stats: ActivationStats, damp_percent: float) -> tuple[np.ndarray, np.ndarray]:
        key = (id(stats), damp_percent)
        if key not in self._cache:  # the entry holds ``stats``: its id stays unique while cached
            hessian = stats.hessian()
            dead = np.diag(hessian) == 0
            hessian[dead, dead] = 1.0
            self._cache[key] = (stats, _inverse_cholesky(hessian, damp_percent).astype(np.float32), dead)
        return self._cache[key][1:]


class _GroupQuantizer:
    """Scale/zero point of each group, computed when its first column is reached."""

    def __init__(self, layer: WeightLayer, out: int, channels: int, stats: ActivationStats | None, advanced):
        self.mode = layer.config.mode
        self.integer = codebook(self.mode) is None
        self.lowest, self.highest = code_range(self.mode)
        self.size = layer.config.channels_per_group(channels)
        groups = channels // self.size
        self.scale = np.zeros((out, groups, 1), np.float32)
        self.zero_point = np.zeros((out, groups, 1), np.uint8)
        self.has_zero_point = False
        self.stats, self.advanced = stats, advanced
        self.x = stats.mean_matrix(advanced.scale_estimation_params.subset_size) if stats is not None else None
        self.stat = stats.channel_max() if stats is not None else None

    def start_group(self, columns: np.ndarray, first: int) -> None:
        g = first // self.size
        grouped = columns[:, None, :].astype(np.float32)
        if self.x is None:
            scale, zero_point = compute_scale(grouped, self.mode, (2,))
        else:
            cols = slice(first, first + self.size)
            scale, zero_point = estimate_grouped(
                grouped, self.x[:, None, cols].astype(np.float32), self.stat[None, cols], self.mode,
                self.advanced.scale_estimation_params,
            )
        self.scale[:, g] = scale[:, 0]
        if zero_point is not None:
            self.zero_point[:, g] = zero_point[:, 0]
            self.has_zero_point = True

    def quantize(self, column: np.ndarray, index: int) -> np.ndarray:
        g = index // self.size
        scale = self.scale[:, g, 0]
        zero_point = self.zero_point[:, g, 0] if self.has_zero_point else None
        if self.integer:  # the integer grid inline: this runs once per column
            shift = zero_point.astype(np.float32) if zero_point is not None else 0.0
            codes = np.clip(np.rint(column / scale + shift), self.lowest, self.highest)
            return (codes - shift) * scale
        codes = quantize_codes(column, self.mode, scale, zero_point)
        return dequantize_codes(codes, self.mode, scale, zero_point)


def run(
    w_oi: np.ndarray,
    stats: ActivationStats,
    layer: WeightLayer,
    advanced: AdvancedCompressionParameters,
    se_stats: ActivationStats | None = None,
    factors: GPTQFactors | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dequantized weight ``[out, in]``, scale ``[out, G, 1]``, zero point or None); ``factors`` shares
    Hessian factorizations between layers of one run."""
    params = advanced.gptq_params
    upper, dead = (factors or GPTQFactors())(stats, params.damp_percent)
    weight = w_oi.astype(np.float32)  # float32 updates (the factorization itself runs in float64)
    weight[:, dead] = 0.0
    out, channels = weight.shape
    quantizer = _GroupQuantizer(layer, out, channels, se_stats, advanced)
    block = max(params.block_size, 1)
    for start in range(0, channels, block):
        end = min(start + block, channels)
        _quantize_block(weight, upper, start, end, quantizer)
    zero_point = quantizer.zero_point if quantizer.has_zero_point else None
    return weight.astype(np.float32), quantizer.scale, zero_point


def _quantize_block(weight: np.ndarray, upper: np.ndarray, start: int, end: int, quantizer: _GroupQuantizer) -> None:
    """Quantize columns ``start:end`` in place and propagate their error to the later columns."""
    block = weight[:, start:end].copy()
    errors = np.zeros_like(block)
    local = upper[start:end, start:end]
    for i in range(end - start):
        column = start + i
        if column % quantizer.size == 0:
            group = np.concatenate([block[:, i:], weight[:, end:]], axis=1)[:, : quantizer.size]
            quantizer.start_group(group, column)
        quantized = quantizer.quantize(block[:, i], column)
        error = (block[:, i] - quantized) / local[i, i]
        block[:, i] = quantized
        block[:, i + 1 :] -= error[:, None] * local[i, i + 1 :]
        errors[:, i] = error
    weight[:, start:end] = block
    weight[:, end:] -= errors @ upper[start:end, end:]
