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
    canonical_mode,
    compute_scale,
    round_scale,
    unscaled_values,
)
from nncompress.parallel import map_rows
from nncompress.weight_parameters import AdvancedCompressionParameters

CHUNK_ELEMENTS = 1 << 20  # weight values estimated at once (a few MB of temporaries each)


class _Objective:
    """Output error of candidate scales for one grouped weight ``[G, out, gs]`` (groups first: every
    product and reduction runs on contiguous memory)."""

    def __init__(self, w: np.ndarray, x: np.ndarray, mode, zero_point, penalty: float):
        self.w, self.mode, self.zero_point, self.penalty = w, canonical_mode(mode), zero_point, penalty
        self.x = x  # [G, gs, n]
        self.reference = np.matmul(w, x)

    def values(self, scale: np.ndarray) -> np.ndarray:
        return unscaled_values(self.w, self.mode, scale, self.zero_point)

    def __call__(self, scale: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(error ``[G, out, 1]``, the unscaled values of ``scale``)."""
        values = self.values(scale) if values is None else values
        approx = values * scale  # (q - zp) * scale: the dequantized weight
        diff = np.matmul(approx, self.x)
        diff -= self.reference
        error = np.einsum("gon,gon->go", diff, diff) / diff.shape[2]
        if self.penalty > 0:
            approx -= self.w
            error = error + self.penalty * np.mean(approx * approx, axis=2)
        return error[..., None], values


class _IdealScale:
    """``sum_i imp_i |w_i| / |v_i| / sum_i imp_i`` over the group's nonzero values ``v``."""

    def __init__(self, w: np.ndarray, importance: np.ndarray, sign: np.ndarray):
        self.importance = importance  # [G, gs]
        self.weighted = importance[:, None] * np.abs(w)
        self.sign = sign

    def __call__(self, values: np.ndarray) -> np.ndarray:
        magnitude = np.abs(values)
        zero = magnitude == 0
        nonzero = np.logical_not(zero).astype(np.float32)
        total = np.einsum("goi,gi->go", nonzero, self.importance)[..., None]
        magnitude += zero  # a zero value's term is masked out below: any nonzero divisor does
        np.divide(nonzero, magnitude, out=magnitude)
        ratio = np.einsum("goi,goi->go", self.weighted, magnitude)[..., None]
        return round_scale(self.sign * ratio / np.maximum(total, np.finfo(np.float32).tiny))


def estimate_grouped(
    w: np.ndarray, x: np.ndarray, stat: np.ndarray, mode, params
) -> tuple[np.ndarray, np.ndarray | None]:
    """(scale, zero point) ``[out, G, 1]`` for grouped weight ``[out, G, gs]``, activations ``[n, G, gs]``,
    channel magnitudes ``[G, gs]``."""
    w = np.ascontiguousarray(np.asarray(w, np.float32).transpose(1, 0, 2))  # [G, out, gs]
    x = np.ascontiguousarray(np.asarray(x, np.float32).transpose(1, 2, 0))  # [G, gs, n]
    scale, zero_point = compute_scale(w, mode, (2,))
    objective = _Objective(w, x, mode, zero_point, params.weight_penalty)
    sign = np.sign(scale) + (scale == 0)
    ideal = _IdealScale(w, np.asarray(stat, np.float32), sign)
    best_error, best_values = objective(scale)
    best = scale

    def consider(candidate: np.ndarray) -> None:
        nonlocal best, best_error
        error, values = objective(candidate)
        better = error < best_error
        best = np.where(better, candidate, best)
        best_error = np.where(better, error, best_error)
        np.copyto(best_values, values, where=better)  # the values of ``best``: no re-quantizing

    for _ in range(params.initial_steps):
        consider(ideal(best_values))
    for k in range(params.scale_steps):
        shrunk = round_scale(scale * (1.0 - 0.05 * k))
        consider(ideal(objective.values(shrunk)))
    zero_point = None if zero_point is None else np.ascontiguousarray(zero_point.transpose(1, 0, 2))
    return np.ascontiguousarray(best.transpose(1, 0, 2)), zero_point


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
    parts = map_rows(lambda start, stop: estimate_grouped(w[start:stop], x, stat, layer.config.mode, params), out,
                     rows)
    zero_points = [zp for _, zp in parts]
    zero_point = None if zero_points[0] is None else np.concatenate(zero_points)
    return np.concatenate([scale for scale, _ in parts]), zero_point
