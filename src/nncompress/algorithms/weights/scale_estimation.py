"""Scale estimation (reference section 2.8): per-group scales minimising the output error.

For a weight ``[out, in]`` grouped ``[out, G, gs]`` and token-mean activations ``X`` ``[n, in]``, the
objective per (output channel, group) is ``mean_n ((W_g - W^_g) . X_g)^2`` (plus an optional weight
penalty). Starting from round-to-nearest, the "ideal" scale ``sum_i imp_i |w_i| / |q_i|`` (importance =
activation magnitude of the input channel, 0 where the code value is 0) is re-estimated
``initial_steps`` times, then from ``scale_steps`` shrunk starting scales ``(1 - 0.05 k) s_RTN``; each
group keeps its best scale. The zero point stays the round-to-nearest one.
"""

from __future__ import annotations

import numpy as np

from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.numerics.lowbit import (
    code_values,
    compute_scale,
    dequantize_codes,
    quantize_codes,
    round_scale,
)
from nncompress.weight_parameters import AdvancedCompressionParameters

CHUNK_ELEMENTS = 1 << 20  # weight values estimated at once (a few MB of temporaries each)


def _group_products(w: np.ndarray, x_gkn: np.ndarray) -> np.ndarray:
    """``[out, G, n]``: every group of ``w`` ``[out, G, gs]`` times every sample's group (batched GEMM)."""
    return np.matmul(w.transpose(1, 0, 2), x_gkn).transpose(1, 0, 2)


class _Objective:
    """Output error of candidate scales for one grouped weight."""

    def __init__(self, w: np.ndarray, x: np.ndarray, mode, zero_point, penalty: float):
        self.w, self.mode, self.zero_point, self.penalty = w, mode, zero_point, penalty
        self.x = np.ascontiguousarray(x.transpose(1, 2, 0))  # [G, gs, n]
        self.reference = _group_products(w, self.x)

    def __call__(self, scale: np.ndarray) -> np.ndarray:
        codes = quantize_codes(self.w, self.mode, scale, self.zero_point)
        approx = dequantize_codes(codes, self.mode, scale, self.zero_point)
        diff = _group_products(approx, self.x)
        diff -= self.reference
        error = np.einsum("ogn,ogn->og", diff, diff) / diff.shape[2]
        if self.penalty > 0:
            error = error + self.penalty * np.mean((approx - self.w) ** 2, axis=2)
        return error[..., None]


class _IdealScale:
    """``sum_i imp_i |w_i| / |v_i| / sum_i imp_i`` over the group's nonzero code values ``v``."""

    def __init__(self, w: np.ndarray, importance: np.ndarray, mode, zero_point, sign: np.ndarray):
        self.importance = importance
        self.weighted = importance * np.abs(w)
        self.mode, self.zero_point, self.sign = mode, zero_point, sign

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        values = np.abs(code_values(codes, self.mode, self.zero_point))
        nonzero = values != 0
        total = np.where(nonzero, self.importance, 0.0).sum(axis=2, keepdims=True)
        ratio = np.divide(self.weighted, values, out=np.zeros_like(values), where=nonzero).sum(axis=2, keepdims=True)
        return round_scale(self.sign * ratio / np.maximum(total, np.finfo(np.float32).tiny))


def estimate_grouped(
    w: np.ndarray, x: np.ndarray, stat: np.ndarray, mode, params
) -> tuple[np.ndarray, np.ndarray | None]:
    """(scale, zero point) for grouped weight ``[out, G, gs]``, activations ``[n, G, gs]``, channel
    magnitudes ``[G, gs]``."""
    scale, zero_point = compute_scale(w, mode, (2,))
    objective = _Objective(w, x, mode, zero_point, params.weight_penalty)
    importance = np.broadcast_to(stat[None].astype(np.float32), w.shape)
    sign = np.sign(scale) + (scale == 0)
    ideal = _IdealScale(w, importance, mode, zero_point, sign)
    best, best_error = scale, objective(scale)

    def consider(candidate: np.ndarray) -> None:
        nonlocal best, best_error
        error = objective(candidate)
        better = error < best_error
        best = np.where(better, candidate, best)
        best_error = np.where(better, error, best_error)

    current = scale
    for _ in range(params.initial_steps):
        current = ideal(quantize_codes(w, mode, current, zero_point))
        consider(current)
        current = best
    for k in range(params.scale_steps):
        shrunk = round_scale(scale * (1.0 - 0.05 * k))
        consider(ideal(quantize_codes(w, mode, shrunk, zero_point)))
    return best, zero_point


def estimate(
    w_oi: np.ndarray, x: np.ndarray, stat: np.ndarray, layer: WeightLayer, advanced: AdvancedCompressionParameters
) -> tuple[np.ndarray, np.ndarray | None]:
    """(scale, zero point) ``[out, G, 1]`` for weight ``[out, in]`` and token means ``x`` ``[n, in]``."""
    out, channels = w_oi.shape
    size = layer.config.channels_per_group(channels)
    groups = channels // size
    w = w_oi.reshape(out, groups, size)
    x = x.reshape(x.shape[0], groups, size).astype(np.float32)
    stat = stat.reshape(groups, size)
    params = advanced.scale_estimation_params
    # every (output channel, group) is estimated on its own: rows in chunks bound the temporaries
    rows = max(1, CHUNK_ELEMENTS // max(channels, 1))
    parts = [estimate_grouped(w[start : start + rows], x, stat, layer.config.mode, params)
             for start in range(0, out, rows)]
    zero_points = [zp for _, zp in parts]
    zero_point = None if zero_points[0] is None else np.concatenate(zero_points)
    return np.concatenate([scale for scale, _ in parts]), zero_point
