"""LoRA correction (reference section 2.10): a low-rank adapter absorbing the quantization residual.

``R = W - W^`` (``[in, out]``); its (activation-weighted, for grouped weights) top singular vectors give
rank-``r`` factors
``U [in, r]``, ``V [r, out]``, refined by alternating least squares so that ``X U V`` matches the noise
``N = X R`` on the token-mean activations ``X`` (with regularization: ``U V`` also matches ``R``).
Normal equations are solved with a Cholesky factor of ``I + X^T X`` computed once per layer.
The adapters ``A = U^T`` and ``B = V^T`` are stored INT8_ASYM per channel by default.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from nncompress.algorithms.weights.activations import ActivationStats
from nncompress.algorithms.weights.selection import WeightLayer
from nncompress.graph.edits import AddLowRankCorrection
from nncompress.numerics.encoding import CompressedWeight, encode
from nncompress.parallel import single_threaded_blas
from nncompress.parameters import CompressWeightsMode as Mode
from nncompress.weight_parameters import AdvancedCompressionParameters


def _svd_init(residual: np.ndarray, stat: np.ndarray, group: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``rank`` factors of the residual rows weighted by normalized activation magnitudes."""
    weights = stat.reshape(-1, group).astype(np.float64)
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    weights = weights / np.maximum(weights.max(axis=1, keepdims=True), 1e-12)
    return _top_singular(residual * weights.reshape(-1, 1), rank)


def _top_singular(matrix: np.ndarray, rank: int, power_iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``U [m, r]`` and ``diag(S) V^T [r, n]`` of the top ``rank`` singular triplets (randomized range finder
    with power iterations: a few thin products instead of a full SVD of the weight-sized residual)."""
    omega = np.random.default_rng(0).standard_normal((matrix.shape[1], min(rank + 8, min(matrix.shape))))
    basis = np.linalg.qr(matrix @ omega)[0]
    for _ in range(power_iterations):
        basis = np.linalg.qr(matrix @ (matrix.T @ basis))[0]
    u, s, vt = np.linalg.svd(basis.T @ matrix, full_matrices=False)
    return (basis @ u)[:, :rank], s[:rank, None] * vt[:rank]


def _solve_v(u: np.ndarray, xu: np.ndarray, residual: np.ndarray, noise: np.ndarray, regularize: bool) -> np.ndarray:
    gram = xu.T @ xu + (u.T @ u if regularize else 0.0)
    rhs = xu.T @ noise + (u.T @ residual if regularize else 0.0)
    return np.linalg.lstsq(gram, rhs, rcond=None)[0]


def _regularized_solver(x: np.ndarray):
    """``b -> (I + X^T X)^-1 b`` for ``x`` ``[n, in]`` with few rows: by the push-through identity
    ``(I + X^T X)^-1 = I - X^T (I + X X^T)^-1 X``, one ``[n, n]`` Cholesky factor instead of ``[in, in]``."""
    gram = x @ x.T
    gram[np.diag_indices_from(gram)] += 1.0
    factor = scipy.linalg.cho_factor(gram)
    return lambda b: b - x.T @ scipy.linalg.cho_solve(factor, x @ b)


def low_rank_factors(
    residual: np.ndarray, x: np.ndarray, stat: np.ndarray, group: int, rank: int, iterations: int, regularize: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``U [in, r]`` and ``V [r, out]`` with ``X U V ~ X R`` (and ``U V ~ R`` when regularizing)."""
    residual = residual.astype(np.float64)
    x = x.astype(np.float64)
    u, v = _svd_init(residual, stat, group, rank)
    noise = x @ residual
    solve = _regularized_solver(x) if regularize else None
    pinv_x = None if regularize else np.linalg.pinv(x)
    for _ in range(iterations):
        v = _solve_v(u, x @ u, residual, noise, regularize)
        v_pinv = np.linalg.pinv(v)
        if regularize:
            u = solve(residual @ v_pinv + x.T @ (noise @ v_pinv))
        else:
            u = pinv_x @ (noise @ v_pinv)
    return u.astype(np.float32), v.astype(np.float32)


def correction(
    layer: WeightLayer,
    weight: np.ndarray,
    compressed: CompressedWeight,
    stats: ActivationStats,
    advanced: AdvancedCompressionParameters,
) -> AddLowRankCorrection:
    """The LoRA-correction edit of ``layer`` (``weight`` is the float weight that was compressed)."""
    params = advanced.lora_correction_params
    residual = (weight - compressed.decompress()).astype(np.float32)
    residual = layer.to_oi(residual).T  # [in, out]
    group = layer.config.channels_per_group(residual.shape[0])
    rank = max(1, min(params.adapter_rank, *residual.shape))
    with single_threaded_blas():  # products of rank and item-count width
        u, v = low_rank_factors(
            residual, stats.mean_matrix(params.subset_size), stats.channel_max(), group, rank,
            params.num_iterations, params.apply_regularization,
        )
    a, b = np.ascontiguousarray(u.T), np.ascontiguousarray(v.T)  # [r, in], [out, r]
    if params.use_int8_adapters:
        a, b = (encode(m, Mode.INT8_ASYM, 1, -1, 0) for m in (a, b))
    return AddLowRankCorrection(layer.node, 0, a, b, f"{layer.node}/lora")
