"""GPTQ (reference section 2.9; Frantar et al. 2022) on one ``[out, in]`` weight with the Hessian of its input.

``H = 2 / tokens * sum x x^T``, collected by the block-wise pipeline from the inputs that the *already
compressed* preceding blocks produce. Dead inputs (``H_ii = 0``) get ``H_ii = 1`` and a zero weight column;
``H += damp_percent * mean(diag H) * I``; ``U = chol(H^-1)`` (upper).

- Act-order (``act_order``): columns are processed in descending ``diag H`` (the most activated inputs
  first, while the most error can still be absorbed); the permutation is undone at the end.
- Static groups (always with act-order, else ``static_groups``): every group's scale (and zero point)
  comes from the original weight, in the original column order, before the sweep, so groups stay
  contiguous ranges of input channels whatever order the columns are quantized in. Otherwise a group's
  scale comes from its current, error-updated columns when the sweep reaches its first column.
  Scales are round-to-nearest ones, or scale estimation's when it runs too.
- Lazy batch updates: columns are quantized ``block_size`` at a time; inside a block the error of a
  column goes to the block's later columns, and the block's errors go to every later column with one
  matrix product.

Returns the dequantized weight and the group parameters, so encoding reproduces the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.scale_estimation import estimate_grouped
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.numerics.lowbit import code_range, codebook, compute_scale, dequantize_codes, quantize_codes
from nncompress.weight_parameters import AdvancedCompressionParameters


@dataclass(frozen=True)
class Factor:
    """What GPTQ needs from one Hessian: ``upper`` = chol(H^-1) in processing order, the dead inputs
    (original order) and the processing order (None: the original one)."""

    upper: np.ndarray
    dead: np.ndarray
    order: np.ndarray | None


def inverse_cholesky(hessian: np.ndarray, damp_percent: float) -> np.ndarray:
    """Upper Cholesky factor of the damped inverse Hessian; the dampening grows tenfold (up to three
    times) when the damped Hessian is still not positive definite in floating point."""
    mean_diag = float(np.mean(np.diag(hessian)))
    damp = max(damp_percent * mean_diag, 1e-8)
    for _ in range(4):
        try:
            lower = scipy.linalg.cholesky(hessian + np.eye(len(hessian)) * damp, lower=True)
            inverse = scipy.linalg.cho_solve((lower, True), np.eye(len(hessian)))
            return scipy.linalg.cholesky(inverse, lower=False)
        except np.linalg.LinAlgError:
            damp = max(damp * 10.0, mean_diag * 1e-3, 1e-6)
    raise np.linalg.LinAlgError(f"the Hessian stays singular after dampening with {damp:g}")


def factorize(hessian: np.ndarray, damp_percent: float, act_order: bool) -> Factor:
    """GPTQ's factorization of ``hessian`` (float64 ``[in, in]``; not modified)."""
    hessian = np.array(hessian, dtype=np.float64)
    diag = np.diag(hessian).copy()
    dead = diag == 0
    hessian[dead, dead] = 1.0
    diag[dead] = 1.0
    order = np.argsort(-diag, kind="stable") if act_order else None
    if order is not None:
        hessian = hessian[np.ix_(order, order)]
    return Factor(inverse_cholesky(hessian, damp_percent).astype(np.float32), dead, order)


class GPTQFactors:
    """Memo of ``Factor`` per statistics object and settings: layers reading the same activation (q, k, v)
    share one factorization. Owned by one compression run (or one block); the statistics are not touched."""

    def __init__(self):
        self._cache: dict[tuple[int, float, bool], tuple[ActivationStats, Factor]] = {}

    def __call__(self, stats: ActivationStats, damp_percent: float, act_order: bool = False) -> Factor:
        key = (id(stats), damp_percent, act_order)
        if key not in self._cache:  # the entry holds ``stats``: its id stays unique while cached
            self._cache[key] = (stats, factorize(stats.hessian(), damp_percent, act_order))
        return self._cache[key][1]


class GroupQuantizer:
    """Per-group scale/zero point ``[out, G, 1]`` of one weight, and the quantization of one column."""

    def __init__(self, layer: WeightLayer, out: int, channels: int, stats: ActivationStats | None, advanced):
        self.mode = layer.config.mode
        self.integer = codebook(self.mode) is None
        self.lowest, self.highest = code_range(self.mode)
        self.size = layer.config.channels_per_group(channels)
        groups = channels // self.size
        self.scale = np.zeros((out, groups, 1), np.float32)
        self.zero_point = np.zeros((out, groups, 1), np.uint8)
        self.has_zero_point = False
        self.params = advanced.scale_estimation_params
        self.x = stats.mean_matrix(self.params.subset_size) if stats is not None else None
        self.stat = stats.channel_max() if stats is not None else None

    def fit(self, columns: np.ndarray, first: int) -> None:
        """Parameters of the groups covering ``columns`` ``[out, k * size]`` (original order from ``first``)."""
        out, width = columns.shape
        count = width // self.size
        grouped = columns.reshape(out, count, self.size).astype(np.float32)
        cols = slice(first, first + width)
        if self.x is None:
            scale, zero_point = compute_scale(grouped, self.mode, (2,))
        else:
            x = self.x[:, cols].reshape(len(self.x), count, self.size).astype(np.float32)
            scale, zero_point = estimate_grouped(grouped, x, self.stat[cols].reshape(count, self.size), self.mode,
                                                 self.params)
        g = first // self.size
        self.scale[:, g: g + count] = scale
        if zero_point is not None:
            self.zero_point[:, g: g + count] = zero_point
            self.has_zero_point = True

    def quantize(self, column: np.ndarray, g: int) -> np.ndarray:
        """The dequantized value of ``column`` ``[out]`` with group ``g``'s parameters."""
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
    """(dequantized weight ``[out, in]``, scale ``[out, G, 1]``, zero point or None); ``se_stats``: scale
    estimation's statistics when it runs too; ``factors`` shares Hessian factorizations between layers."""
    params = advanced.gptq_params
    factor = (factors or GPTQFactors())(stats, params.damp_percent, params.act_order)
    return sweep(w_oi, factor, GroupQuantizer(layer, *w_oi.shape, se_stats, advanced), params.block_size,
                 params.act_order or params.static_groups)


def sweep(
    w_oi: np.ndarray, factor: Factor, quantizer: GroupQuantizer, block_size: int, static_groups: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """GPTQ's column sweep of ``w_oi`` with ``factor`` (see the module docstring)."""
    weight = np.array(w_oi, dtype=np.float32)  # float32 updates (the factorization itself ran in float64)
    weight[:, factor.dead] = 0.0
    channels = weight.shape[1]
    if static_groups:
        quantizer.fit(weight, 0)
    order = np.arange(channels) if factor.order is None else factor.order
    if factor.order is not None:
        weight = weight[:, order]
    groups = order // quantizer.size
    block = max(int(block_size), 1)
    for start in range(0, channels, block):
        end = min(start + block, channels)
        _quantize_block(weight, factor.upper, start, end, quantizer, groups, not static_groups)
    if factor.order is not None:
        weight = weight[:, np.argsort(order)]
    zero_point = quantizer.zero_point if quantizer.has_zero_point else None
    return weight, quantizer.scale, zero_point


def _quantize_block(
    weight: np.ndarray, upper: np.ndarray, start: int, end: int, quantizer: GroupQuantizer, groups: np.ndarray,
    fit_in_sweep: bool,
) -> None:
    """Quantize columns ``start:end`` in place; their error goes to the later columns (one product)."""
    block = weight[:, start:end].copy()
    errors = np.zeros_like(block)
    local = upper[start:end, start:end]
    size = quantizer.size
    for i in range(end - start):
        column = start + i
        if fit_in_sweep and column % size == 0:  # the group's columns as updated so far
            quantizer.fit(np.concatenate([block[:, i:], weight[:, end:]], axis=1)[:, :size], column)
        quantized = quantizer.quantize(block[:, i], groups[column])
        error = (block[:, i] - quantized) / local[i, i]
        block[:, i] = quantized
        block[:, i + 1:] -= np.outer(error, local[i, i + 1:])
        errors[:, i] = error
    weight[:, start:end] = block
    if end < weight.shape[1]:
        weight[:, end:] -= errors @ upper[start:end, end:]
