"""GPTQ (reference section 2.9; Frantar et al. 2022) on one ``[out, in]`` weight with the Hessian of its input.

``H = 2 / tokens * sum x x^T``, collected by the block-wise pipeline from the inputs that the *already
compressed* preceding blocks produce. Dead inputs (``H_ii = 0``) get ``H_ii = 1`` and a zero weight column;
``H += damp_percent * mean(diag H) * I``; ``U = chol(H^-1)`` (upper), from one Cholesky factorization and
one triangular inverse in float64 (``U = P inv(chol_lower(P H P)) P``, ``P`` the reversal permutation).

- Groups are fitted within the sweep: when the sweep reaches a group, its scale (and zero point) comes
  from its current, error-updated columns — round to nearest with a clipping search for the smallest
  GPTQ loss ``sum_j ((w_j - q_j) / U_jj)^2`` of the group, or scale estimation's when it runs too.
- Act-order (``act_order``): whole groups in descending importance (their largest ``H_ii``), the columns
  inside a group in descending ``H_ii``: the most activated inputs go first while the most error can
  still be absorbed, and groups stay contiguous ranges of input channels (the stored format has no
  column permutation). The permutation is undone at the end.
- Static groups (``static_groups``): every group's parameters come from the original weight before the
  sweep (with act-order the columns then go in descending ``H_ii`` over the whole weight), and the
  scales are not refitted.
- Lazy batch updates: columns are quantized ``block_size`` at a time; inside a block a column first takes
  the errors of the block's earlier columns (one vector-matrix product), and the block's errors go to
  every later column with one matrix product.
- Scale refit: with the codes fixed, each output row's group scales are re-solved by least squares for
  the smallest ``(w - w^) H (w - w^)^T`` against the original row (kept where not better once rounded).

Returns the dequantized weight and the group parameters, so encoding reproduces the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.scale_estimation import estimate_grouped
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.numerics.lowbit import (
    code_range,
    code_values,
    codebook,
    compute_scale,
    dequantize_codes,
    quantize_codes,
    round_scale,
)
from nncompress.parallel import map_rows
from nncompress.weight_parameters import AdvancedCompressionParameters

# range shrink factors tried per group by the in-sweep clipping search (1.0: round to nearest)
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)


@dataclass(frozen=True)
class Factor:
    """What GPTQ needs from one Hessian: ``upper`` = chol(H^-1) in processing order, the dead inputs
    (original order), the processing order (None: the original one) and the undamped Hessian (original
    order, dead inputs' diagonal 1) for the scale refit."""

    upper: np.ndarray
    dead: np.ndarray
    order: np.ndarray | None
    hessian: np.ndarray | None = None


def inverse_cholesky(hessian: np.ndarray, damp_percent: float, dtype=np.float64) -> np.ndarray:
    """Upper Cholesky factor of the damped inverse Hessian (computed in float64, returned as ``dtype``); the
    dampening grows tenfold (up to three times) when the damped Hessian is still not positive definite in
    floating point. ``hessian`` is symmetric (its lower triangle is read)."""
    size = len(hessian)
    mean_diag = float(np.mean(np.diag(hessian)))
    damp = max(damp_percent * mean_diag, 1e-8)
    flat = np.ascontiguousarray(hessian, dtype=np.float64).reshape(-1)
    for _ in range(4):
        # P H P (P reverses the channels) in Fortran order is H's buffer reversed (H is symmetric): one
        # sequential copy instead of a transposing one; LAPACK factorizes it in place
        damped = flat[::-1].copy()
        damped[:: size + 1] += damp
        lower, info = lapack.dpotrf(damped.reshape(size, size).T, lower=1, clean=1, overwrite_a=1)
        if info == 0:
            inverse, info = lapack.dtrtri(lower, lower=1, overwrite_c=1)
            if info == 0:
                # U = P L^-1 P: the Fortran buffer of L^-1 reversed is U in Fortran order; one copy to C order
                # and ``dtype`` (a float32 copy moves half the bytes of a float64 one)
                transposed = inverse.T.reshape(-1)[::-1].reshape(size, size)  # U^T, a view
                return np.ascontiguousarray(transposed.T, dtype=dtype)
        damp = max(damp * 10.0, mean_diag * 1e-3, 1e-6)
    raise np.linalg.LinAlgError(f"the Hessian stays singular after dampening with {damp:g}")


def processing_order(diag: np.ndarray, group_size: int | None) -> np.ndarray:
    """Act-order: descending ``diag``; with ``group_size``, whole groups by their largest ``diag`` and the
    columns of each group by descending ``diag``."""
    if group_size is None or group_size >= len(diag):
        return np.argsort(-diag, kind="stable")
    grouped = diag.reshape(-1, group_size)
    inside = np.argsort(-grouped, axis=1, kind="stable")
    groups = np.argsort(-grouped.max(axis=1), kind="stable")
    return (groups[:, None] * group_size + inside[groups]).reshape(-1)


def factorize(hessian: np.ndarray, damp_percent: float, act_order: bool, group_size: int | None = None) -> Factor:
    """GPTQ's factorization of ``hessian`` (``[in, in]``; not modified); ``group_size``: keep act-order's
    groups contiguous (None: descending diagonal over all columns)."""
    hessian = np.array(hessian, dtype=np.float64)
    diag = np.diag(hessian).copy()
    dead = diag == 0
    hessian[dead, dead] = 1.0
    diag[dead] = 1.0
    order = processing_order(diag, group_size) if act_order else None
    permuted = hessian[np.ix_(order, order)] if order is not None else hessian
    return Factor(inverse_cholesky(permuted, damp_percent, np.float32), dead, order, hessian.astype(np.float32))


class GPTQFactors:
    """Memo of ``Factor`` per statistics object and settings: layers reading the same activation (q, k, v)
    share one factorization. Owned by one compression run (or one block); the statistics are not touched."""

    def __init__(self):
        self._cache: dict[tuple, tuple[ActivationStats, Factor]] = {}

    def __call__(
        self, stats: ActivationStats, damp_percent: float, act_order: bool = False, group_size: int | None = None
    ) -> Factor:
        key = (id(stats), damp_percent, act_order, group_size if act_order else None)
        if key not in self._cache:  # the entry holds ``stats``: its id stays unique while cached
            self._cache[key] = (stats, factorize(stats.hessian(), damp_percent, act_order, group_size))
        return self._cache[key][1]


class GroupQuantizer:
    """Per-group scale/zero point ``[out, G, 1]`` of one weight, and the quantization of one column."""

    def __init__(self, layer: WeightLayer, out: int, channels: int,
                 activations: tuple[np.ndarray, np.ndarray] | None, advanced):
        """``activations``: scale estimation's token means ``[n, in]`` and channel magnitudes ``[in]`` when it
        runs too (None: round to nearest with a clipping search)."""
        self.mode = layer.config.mode
        self.integer = codebook(self.mode) is None
        self.lowest, self.highest = code_range(self.mode)
        self.size = layer.config.channels_per_group(channels)
        groups = channels // self.size
        self.scale = np.zeros((out, groups, 1), np.float32)
        self.zero_point = np.zeros((out, groups, 1), np.uint8)
        self.has_zero_point = False
        self.params = advanced.scale_estimation_params
        self.x, self.stat = activations if activations is not None else (None, None)
        self._columns: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}  # contiguous per-group vectors
        self._buffer = np.empty(out, np.float32)

    def fit(self, columns: np.ndarray, originals: np.ndarray, loss_weights: np.ndarray | None = None) -> None:
        """Parameters of the whole groups in ``columns`` ``[out, k * size]``, whose original indices are
        ``originals`` (each run of ``size`` one group); ``loss_weights`` per column: search clipped ranges
        for the smallest weighted squared error (round to nearest only; scale estimation searches itself)."""
        out, width = columns.shape
        count = width // self.size
        grouped = columns.reshape(out, count, self.size).astype(np.float32)
        if self.x is None:
            scale, zero_point = self._nearest(grouped, loss_weights)
        else:  # the activations of the same original columns, in the same order
            x = self.x[:, originals].reshape(len(self.x), count, self.size).astype(np.float32)
            scale, zero_point = estimate_grouped(grouped, x, self.stat[originals].reshape(count, self.size), self.mode,
                                                 self.params)
        groups = originals[:: self.size] // self.size
        self.scale[:, groups] = scale
        if zero_point is not None:
            self.zero_point[:, groups] = zero_point
            self.has_zero_point = True
        for i, g in enumerate(groups):
            shift = None if zero_point is None else zero_point[:, i, 0].astype(np.float32)
            self._columns[int(g)] = (np.ascontiguousarray(scale[:, i, 0]), shift)

    def _nearest(self, grouped: np.ndarray, loss_weights: np.ndarray | None):
        if loss_weights is None:
            return compute_scale(grouped, self.mode, (2,))
        ratios = np.asarray(CLIP_RATIOS, np.float32)[:, None, None, None]
        scales, zero_points = compute_scale(grouped[None] * ratios, self.mode, (3,))  # every ratio at once
        approx = dequantize_codes(quantize_codes(grouped[None], self.mode, scales, zero_points), self.mode, scales,
                                  zero_points)
        approx -= grouped[None]
        np.square(approx, out=approx)
        weights = loss_weights.astype(np.float32).reshape(grouped.shape[1:])
        loss = np.einsum("rogs,gs->rog", approx, weights)
        best = np.argmin(loss, axis=0)[None, ..., None]  # the first ratio (round to nearest) wins ties
        scale = np.take_along_axis(scales, best, axis=0)[0]
        zero_point = None if zero_points is None else np.take_along_axis(zero_points, best, axis=0)[0]
        return scale, zero_point

    def column(self, column: np.ndarray, g: int) -> np.ndarray:
        """The dequantized value of ``column`` ``[out]`` with group ``g``'s parameters (a reused buffer)."""
        scale, shift = self._columns[g]
        if not self.integer:
            codes = quantize_codes(column, self.mode, scale, None if shift is None else shift.astype(np.uint8))
            return dequantize_codes(codes, self.mode, scale)
        values = np.divide(column, scale, out=self._buffer)  # the integer grid inline: this runs once per column
        if shift is not None:
            values += shift
        np.rint(values, out=values)
        np.maximum(values, self.lowest, out=values)
        np.minimum(values, self.highest, out=values)
        if shift is not None:
            values -= shift
        values *= scale
        return values


def run(
    w_oi: np.ndarray,
    stats: ActivationStats,
    layer: WeightLayer,
    advanced: AdvancedCompressionParameters,
    se_stats: ActivationStats | None = None,
    factors: GPTQFactors | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dequantized weight ``[out, in]``, scale ``[out, G, 1]``, zero point or None); ``se_stats``: scale
    estimation's statistics when it runs too; ``factors`` shares Hessian factorizations between layers.
    Output rows are independent given the factorization: ranges of them run on every core."""
    params = advanced.gptq_params
    activations = None
    if se_stats is not None:
        activations = se_stats.mean_matrix(advanced.scale_estimation_params.subset_size), se_stats.channel_max()
    contiguous = layer.config.channels_per_group(w_oi.shape[1]) if params.act_order and not params.static_groups \
        else None
    factor = (factors or GPTQFactors())(stats, params.damp_percent, params.act_order, contiguous)

    def rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        quantizer = GroupQuantizer(layer, stop - start, w_oi.shape[1], activations, advanced)
        weight, scale, zero_point = sweep(w_oi[start:stop], factor, quantizer, params.block_size, params.static_groups)
        if not params.static_groups:
            weight, scale = refit_scales(w_oi[start:stop], weight, quantizer, factor.hessian), quantizer.scale
        return weight, scale, zero_point

    parts = map_rows(rows, len(w_oi), len(w_oi))  # one range per thread
    weight, scale = (np.concatenate([part[k] for part in parts]) for k in (0, 1))
    zero_point = None if parts[0][2] is None else np.concatenate([part[2] for part in parts])
    return weight, scale, zero_point


def sweep(
    w_oi: np.ndarray, factor: Factor, quantizer: GroupQuantizer, block_size: int, static_groups: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """GPTQ's column sweep of ``w_oi`` with ``factor`` (see the module docstring)."""
    weight = np.array(w_oi, dtype=np.float32)  # float32 updates (the factorization itself ran in float64)
    weight[:, factor.dead] = 0.0
    channels = weight.shape[1]
    order = np.arange(channels) if factor.order is None else factor.order
    if static_groups:
        quantizer.fit(weight, np.arange(channels))
    elif np.any(np.diff(order.reshape(-1, quantizer.size) // quantizer.size, axis=1)):
        raise ValueError(f"in-sweep groups need each run of {quantizer.size} processed columns to be one group")
    work = np.ascontiguousarray(weight[:, order].T)  # [in, out] in processing order: a column is a row
    loss_weights = 1.0 / np.square(np.diag(factor.upper).astype(np.float64))
    block = max(int(block_size), 1)
    for start in range(0, channels, block):
        end = min(start + block, channels)
        _quantize_block(work, factor.upper, start, end, quantizer, order, loss_weights, not static_groups)
    weight = np.ascontiguousarray(work.T[:, np.argsort(order)] if factor.order is not None else work.T)
    zero_point = quantizer.zero_point if quantizer.has_zero_point else None
    return weight, quantizer.scale, zero_point


def _quantize_block(
    work: np.ndarray, upper: np.ndarray, start: int, end: int, quantizer: GroupQuantizer, order: np.ndarray,
    loss_weights: np.ndarray, fit_in_sweep: bool,
) -> None:
    """Quantize rows ``start:end`` of ``work`` (``[in, out]``) in place; a row first takes the errors of the
    block's earlier rows, and the block's errors go to the later rows with one product."""
    block = work[start:end]
    lower = np.ascontiguousarray(upper[start:end, start:end].T)  # row i: U[start:end, start + i]
    errors = np.zeros_like(block)
    current = np.empty(block.shape[1], np.float32)
    size = quantizer.size
    groups = order[start:end] // size
    for i in range(end - start):
        row = start + i
        if fit_in_sweep and row % size == 0:  # the group's columns with every error so far
            columns = work[row: row + size] - upper[start:row, row: row + size].T @ errors[:i]
            quantizer.fit(columns.T, order[row: row + size], loss_weights[row: row + size])
        if i:
            np.subtract(block[i], lower[i, :i] @ errors[:i], out=current)
        else:
            current[:] = block[i]
        quantized = quantizer.column(current, groups[i])
        np.subtract(current, quantized, out=errors[i])
        errors[i] /= lower[i, i]
        block[i] = quantized
    if end < len(work):
        work[end:] -= upper[start:end, end:].T @ errors


def refit_scales(
    target: np.ndarray, updated: np.ndarray, quantizer: GroupQuantizer, hessian: np.ndarray
) -> np.ndarray:
    """GPTQ's codes kept, each output row's group scales re-solved by least squares for the smallest
    ``(w - w^) H (w - w^)^T`` (``target`` the original weight); a row keeps its scales where the rounded
    solution is not better. Updates ``quantizer.scale``; returns the dequantized weight."""
    out, channels = target.shape
    scale, size = quantizer.scale, quantizer.size
    count = channels // size
    zero_point = quantizer.zero_point if quantizer.has_zero_point else None
    codes = quantize_codes(updated.reshape(out, count, size), quantizer.mode, scale, zero_point)
    values = code_values(codes, quantizer.mode, zero_point).reshape(out, channels)
    hessian = np.asarray(hessian, dtype=np.float32)  # only read: no copy per row range
    gram = np.empty((out, count, count), np.float32)  # per row: Q^T H Q, Q the row's code values per group
    for g in range(count):
        columns = slice(g * size, (g + 1) * size)
        product = values[:, columns] @ hessian[columns]
        gram[:, :, g] = (values * product).reshape(out, count, size).sum(axis=2)
    rhs = (values * (target.astype(np.float32) @ hessian)).reshape(out, count, size).sum(axis=2)
    ridge = 1e-6 * np.maximum(np.abs(np.diagonal(gram, axis1=1, axis2=2)).max(axis=1), 1e-30)
    solution = np.linalg.solve(gram + ridge[:, None, None] * np.eye(count, dtype=np.float32), rhs[..., None])
    candidate = round_scale(np.nan_to_num(solution, nan=0.0, posinf=0.0, neginf=0.0))

    def loss(s):  # the row objective less the constant w H w
        return (s[..., 0] * (np.matmul(gram, s)[..., 0] - 2.0 * rhs)).sum(axis=1)

    better = loss(candidate) < loss(scale)
    quantizer.scale = np.where(better[:, None, None], candidate, scale).astype(np.float32)
    return dequantize_codes(codes, quantizer.mode, quantizer.scale, zero_point).reshape(out, channels)
