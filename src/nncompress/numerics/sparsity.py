"""Unstructured sparsity formulas: weight importance, thresholds for a level, RB (regularization-based) masks.

Shared by training-time magnitude / RB / const sparsity and by ``nncompress.prune``. Importance and RB
formulas take numpy arrays or torch tensors (``numerics.xp`` style: torch stays on its device and dtype);
threshold selection works on numpy chunks.

Threshold semantics (NNCF's): for a level ``S`` over ``n`` importances, the threshold is
``sorted(importances)[int((n - 1) * S)]`` and a weight is kept when its importance is strictly greater.
A level of 0 masks nothing (threshold ``-inf``) instead of the minimum weight(s).

``global_threshold`` finds that value over many layers without concatenating or sorting them: it streams
the importances in chunks (``importance_chunks``), counts them into a histogram of ``bins`` bins over the
current candidate range, narrows the range to the bin holding the wanted rank, and, once that bin holds at
most ``cap`` values, collects just those and selects exactly. Memory: one chunk plus ``cap`` values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from nncompress.errors import ValidationError, one_of
from nncompress.numerics.xp import Array, is_torch

IMPORTANCES = ("abs", "normed_abs")
CHUNK_ELEMENTS = 1 << 22  # values per importance chunk (16 MiB of float32)
BINS = 1 << 12
RB_KEEP_PROBABILITY = 0.99
RB_INIT_LOGIT = math.log(RB_KEEP_PROBABILITY / (1 - RB_KEEP_PROBABILITY))  # logit(0.99) ≈ 4.595
RB_EPS = 1e-6
RB_P = 0.05


def check_level(level: float, what: str = "sparsity level") -> float:
    """``level`` as a float in [0, 1); ValidationError otherwise."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} must be a number in [0, 1); got {level!r}") from None
    if not 0.0 <= value < 1.0:
        raise ValidationError(f"{what} must be in [0, 1) (1 would remove every weight); got {level!r}")
    return value


def _numpy(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if is_torch(x) else np.asarray(x)


def _flat_chunks(weight: Array, chunk: int) -> Iterator[np.ndarray]:
    """``weight`` flattened, as numpy float32 chunks (a torch tensor is copied to the CPU a chunk at a time)."""
    flat = weight.detach().reshape(-1) if is_torch(weight) else np.asarray(weight).reshape(-1)
    for start in range(0, flat.shape[0], chunk):
        part = flat[start : start + chunk]
        yield part.float().cpu().numpy() if is_torch(part) else np.asarray(part, dtype=np.float32)


def weight_norm(weight: Array) -> float:
    """``‖W‖₂`` of the whole tensor as a Python float (1.0 for an all-zero tensor, so importances stay finite).

    Accumulated in float64 over fixed chunks, the same way for numpy arrays and torch tensors, so both give
    the same importances bit for bit.
    """
    total = 0.0
    for part in _flat_chunks(weight, CHUNK_ELEMENTS):
        part = part.astype(np.float64)
        total += float(np.dot(part, part))
    return math.sqrt(total) if total > 0 else 1.0


def importance(weight: Array, kind: str = "normed_abs", norm: float | None = None) -> Array:
    """``|w|`` (``abs``) or ``|w| / ‖W‖₂`` (``normed_abs``), in float32 (numpy) or the tensor's float dtype."""
    if kind not in IMPORTANCES:
        raise one_of(kind, IMPORTANCES, "importance")
    if is_torch(weight):
        value = weight.detach().abs()
        value = value if value.is_floating_point() else value.float()
    else:
        value = np.abs(np.asarray(weight, dtype=np.float32))
    if kind == "normed_abs":
        value = value / np.float32(weight_norm(weight) if norm is None else norm)
    return value


def importance_chunks(weight: Array, kind: str = "normed_abs", chunk: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
    """The float32 importances of ``weight`` as flat numpy chunks of at most ``chunk`` values.

    The norm is taken once over the whole tensor, so the chunks equal ``importance(weight)`` cut up.
    """
    norm = weight_norm(weight) if kind == "normed_abs" else None
    for part in _flat_chunks(weight, chunk):
        yield importance(part, kind, norm)


def rank_of(n: int, level: float) -> int:
    """Index into the sorted importances of the threshold for ``level`` (NNCF: ``int((n - 1) * level)``)."""
    return int((n - 1) * level)


def threshold_by_sort(importances: Iterable[Array], level: float) -> float:
    """Reference: concatenate and sort everything (memory: all weights; for tests and the benchmark)."""
    level = check_level(level)
    values = np.sort(np.concatenate([_numpy(v).ravel().astype(np.float32, copy=False) for v in importances]))
    if values.size == 0:
        raise ValidationError("no weights to compute a sparsity threshold over")
    return float("-inf") if level == 0 else float(values[rank_of(values.size, level)])


def local_threshold(values: Array, level: float) -> float:
    """The threshold of one layer's importances for ``level`` (selection, no full sort)."""
    level = check_level(level)
    flat = _numpy(values).ravel()
    if flat.size == 0:
        raise ValidationError("no weights to compute a sparsity threshold over")
    if level == 0:
        return float("-inf")
    k = rank_of(flat.size, level)
    return float(np.partition(flat, k)[k])


def global_threshold(
    chunks: Callable[[], Iterable[np.ndarray]], level: float, bins: int = BINS, cap: int | None = None
) -> float:
    """The threshold for ``level`` over every value ``chunks()`` yields, equal to ``threshold_by_sort``.

    ``chunks`` returns a fresh iterator over flat float chunks each time it is called (one pass each; passes:
    one for count and range, one histogram per narrowing, one collecting the final bin). ``cap`` (default:
    the largest chunk) bounds how many values are collected at once.
    """
    level = check_level(level)
    n, low, high, largest = 0, np.inf, -np.inf, 0
    for part in chunks():
        if part.size:
            n, largest = n + part.size, max(largest, part.size)
            low, high = min(low, float(part.min())), max(high, float(part.max()))
    if n == 0:
        raise ValidationError("no weights to compute a sparsity threshold over")
    if level == 0:
        return float("-inf")
    cap = largest if cap is None else max(1, cap)
    if bins < 2:
        raise ValidationError(f"bins must be at least 2; got {bins}")
    rank = rank_of(n, level)  # among values in [low, high] after `below` smaller ones
    below, everything = 0, True  # the first pass needs no range filter
    while low != high:
        scale = bins / (high - low)
        counts = np.zeros(bins, dtype=np.int64)
        for part in chunks():
            inside = part if everything else _inside(part, low, high)
            counts += np.bincount(_bin_of(inside, low, scale, bins), minlength=bins)
        everything = False
        cumulative = np.cumsum(counts)
        b = int(np.searchsorted(cumulative, rank - below, side="right"))
        below += int(cumulative[b - 1]) if b else 0
        picked, low, high = _scan_bin(chunks, low, high, scale, bins, b, collect=int(counts[b]) <= cap)
        if picked is not None:
            return float(np.partition(picked, rank - below)[rank - below])
    return low  # every candidate left is this value


def _inside(part: np.ndarray, low: float, high: float) -> np.ndarray:
    return part[(part >= low) & (part <= high)]


def _bin_of(values: np.ndarray, low: float, scale: float, bins: int) -> np.ndarray:
    """Bin index of each value: ``floor((v - low) * scale)`` in float64, clipped to the bins.

    Monotone in ``v`` (rounded subtraction and multiplication by a positive number are), so the values
    of one bin form an interval: every value between a bin's smallest and largest member is in it.
    """
    index = np.floor((values - np.float64(low)) * scale).astype(np.int64)
    return np.clip(index, 0, bins - 1, out=index)


def _scan_bin(chunks, low: float, high: float, scale: float, bins: int, b: int, collect: bool):
    """One pass over bin ``b``: its values (``collect``) or None, and the tight range [min, max] of the bin."""
    found: list[np.ndarray] = []
    lo, hi = np.inf, -np.inf
    for part in chunks():
        inside = _inside(part, low, high)
        values = inside[_bin_of(inside, low, scale, bins) == b]
        if values.size:
            lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
            if collect:
                found.append(values)
    if collect:
        return np.concatenate(found), lo, hi
    return None, lo, hi


def binary_mask(values: Array, threshold: float) -> Array:
    """Keep (True) the weights whose importance is strictly above ``threshold``."""
    return values > threshold


def sparsity_of(mask: Array) -> float:
    """Fraction of zeros in a 0/1 or boolean mask."""
    flat = _numpy(mask).ravel()
    return 1.0 - float(np.count_nonzero(flat)) / flat.size if flat.size else 0.0


# --- RB (regularization-based) sparsity ---------------------------------------------------------------


def sigmoid(x: Array) -> Array:
    if is_torch(x):
        return x.sigmoid()
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def logit(p: Array) -> Array:
    if is_torch(p):
        return p.logit()
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1.0 - p))


def ste_threshold(probability: Array) -> Array:
    """``probability > 0.5`` as 0/1 of the same dtype; in torch the gradient passes through unchanged.

    ``p + (h - p)`` equals ``h`` exactly: ``h - p`` is exact (Sterbenz for h = 1, p ≥ 0.5; negation for
    h = 0) and so is the sum, whose exact value 0 or 1 is representable.
    """
    if is_torch(probability):
        hard = (probability > 0.5).to(probability.dtype)
        return probability + (hard - probability).detach()
    return (np.asarray(probability) > 0.5).astype(np.asarray(probability).dtype)


def rb_noise_logit(u: Array, eps: float = RB_EPS) -> Array:
    """``logit(u)`` for uniform samples ``u`` clipped to [eps, 1 - eps]."""
    if is_torch(u):
        return u.clamp(eps, 1 - eps).logit()
    return logit(np.clip(u, eps, 1 - eps))


def rb_mask(logits: Array, u: Array | None = None, eps: float = RB_EPS) -> Array:
    """The RB mask: stochastic ``[sigmoid(m + logit(u)) > 0.5]`` given uniforms ``u``, else ``[sigmoid(m) > 0.5]``."""
    value = logits if u is None else logits + rb_noise_logit(u, eps)
    return ste_threshold(sigmoid(value))


def rb_kept(logits: Array) -> Array:
    """``K`` of one layer: the number of weights the deterministic mask keeps (STE in torch)."""
    return ste_threshold(sigmoid(logits)).sum()


def rb_loss(kept: Array | float, total: int, target_level: float, p: float = RB_P) -> Array | float:
    """Global RB loss ``((K/N - (1 - S_target)) / p)^2``."""
    return ((kept / total - (1.0 - target_level)) / p) ** 2


def rb_local_loss(kept: list, totals: list[int], target_levels: list[float], p: float = RB_P) -> Array | float:
    """Per-layer RB loss ``(Σ_l -|K_l/N_l - (1 - S_l)| / p)^2``."""
    terms = [-abs(k / n - (1.0 - s)) / p for k, n, s in zip(kept, totals, target_levels, strict=True)]
    return sum(terms) ** 2
