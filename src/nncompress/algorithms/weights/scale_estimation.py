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


class _Objective:
    """Output error of candidate scales for one grouped weight."""

    def __init__(self, w: np.ndarray, x: np.ndarray, mode, zero_point, penalty: float):
        self.w, self.x, self.mode, self.zero_point, self.penalty = w, x, mode, zero_point, penalty
        self.reference = np.einsum("ogk,ngk->ogn", w, x)

    def __call__(self, scale: np.ndarray) -> np.ndarray:
        codes = quantize_codes(self.w, self.mode, scale, self.zero_point)
        approx = dequantize_codes(codes, self.mode, scale, self.zero_point)
        error = np.mean((np.einsum("ogk,ngk->ogn", approx, self.x) - self.reference) ** 2, axis=2)
        if self.penalty > 0:
            error = error + self.penalty * np.mean((approx - self.w) ** 2, axis=2)
        return error[..., None]


def _ideal_scale(w: np.ndarray, codes: np.ndarray, mode, zero_point, importance: np.ndarray, sign) -> np.ndarray:
    values = code_values(codes, mode, zero_point)
    weights = importance * (values != 0)
    weights = weights / np.maximum(weights.sum(axis=2, keepdims=True), np.finfo(np.float32).tiny)
    ratio = np.abs(w) / (np.abs(values) + 0.001 * (values == 0))
    return round_scale(sign * np.sum(weights * ratio, axis=2, keepdims=True))


def estimate_grouped(
    w: np.ndarray, x: np.ndarray, stat: np.ndarray, mode, params
) -> tuple[np.ndarray, np.ndarray | None]:
    """(scale, zero point) for grouped weight ``[out, G, gs]``, activations ``[n, G, gs]``, channel
    magnitudes ``[G, gs]``."""
    scale, zero_point = compute_scale(w, mode, (2,))
    objective = _Objective(w, x, mode, zero_point, params.weight_penalty)
    importance = np.broadcast_to(stat[None].astype(np.float32), w.shape)
    sign = np.sign(scale) + (scale == 0)
    best, best_error = scale, objective(scale)

    def consider(candidate: np.ndarray) -> None:
        nonlocal best, best_error
        error = objective(candidate)
        better = error < best_error
        best = np.where(better, candidate, best)
        best_error = np.where(better, error, best_error)

    current = scale
    for _ in range(params.initial_steps):
        current = _ideal_scale(w, quantize_codes(w, mode, current, zero_point), mode, zero_point, importance, sign)
        consider(current)
        current = best
    for k in range(params.scale_steps):
        shrunk = round_scale(scale * (1.0 - 0.05 * k))
        consider(_ideal_scale(w, quantize_codes(w, mode, shrunk, zero_point), mode, zero_point, importance, sign))
    return best, zero_point


def estimate(
    w_oi: np.ndarray, x: np.ndarray, stat: np.ndarray, layer: WeightLayer, advanced: AdvancedCompressionParameters
) -> tuple[np.ndarray, np.ndarray | None]:
    """(scale, zero point) ``[out, G, 1]`` for weight ``[out, in]`` and token means ``x`` ``[n, in]``."""
    out, channels = w_oi.shape
    size = layer.config.group_size if layer.config.group_size != -1 else channels
    groups = channels // size
    return estimate_grouped(
        w_oi.reshape(out, groups, size),
        x.reshape(x.shape[0], groups, size).astype(np.float32),
        stat.reshape(groups, size),
        layer.config.mode,
        advanced.scale_estimation_params,
    )
