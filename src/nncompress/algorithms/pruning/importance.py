"""Filter importance and keep-masks for filter pruning (numpy only; §6.1 of the NNCF brief).

Importance of filter ``i`` (its weights along the output axis, flattened): ``l1`` = ‖F_i‖₁, ``l2`` =
‖F_i‖₂ (the default), ``geometric_median`` = Σ_j ‖F_i − F_j‖₂ (low: close to the others, redundant).
A group sums the importances of its producers. The kept count is rounded UP to a multiple of 8 and
never reaches zero: a group is never pruned whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from nncompress.errors import ValidationError

IMPORTANCE_KINDS = ("l1", "l2", "geometric_median")
ROUND_TO = 8


def filters(weight: np.ndarray, out_axis: int) -> np.ndarray:
    """The weight as one row per output filter: [C_out, everything else]."""
    weight = np.asarray(weight, dtype=np.float64)
    return np.moveaxis(weight, out_axis, 0).reshape(weight.shape[out_axis], -1)


def filter_importance(weight: np.ndarray, out_axis: int = 0, kind: str = "l2") -> np.ndarray:
    """Importance of every output filter of ``weight`` (a 1-D array of length C_out)."""
    rows = filters(weight, out_axis)
    if kind == "l1":
        return np.abs(rows).sum(axis=1)
    if kind == "l2":
        return np.sqrt((rows * rows).sum(axis=1))
    if kind == "geometric_median":
        sq = (rows * rows).sum(axis=1)
        dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * rows @ rows.T, 0.0)
        return np.sqrt(dist2).sum(axis=1)
    raise ValidationError(f"filter importance {kind!r} is not known; valid: {', '.join(IMPORTANCE_KINDS)}")


def group_importance(
    weights: Sequence[tuple[np.ndarray, int]], kind: str = "l2", normalize: bool = False
) -> np.ndarray:
    """Summed importance over a group's producers, each given as ``(weight, out_axis)``.

    ``normalize``: divide each weight by its L2 norm first (global ranking, NNCF's ``all_weights``).
    """
    total = None
    for weight, out_axis in weights:
        weight = np.asarray(weight, dtype=np.float64)
        if normalize:
            norm = float(np.sqrt((weight * weight).sum()))
            weight = weight / norm if norm > 0 else weight
        imp = filter_importance(weight, out_axis, kind)
        if total is not None and imp.shape != total.shape:
            raise ValidationError(f"producers of one group have {total.size} and {imp.size} filters")
        total = imp if total is None else total + imp
    if total is None:
        raise ValidationError("a pruning group needs at least one producer weight")
    return total


def pruned_count(total: int, level: float) -> int:
    """Filters pruned out of ``total`` at ``level``: ``total - ceil((total - total*level)/8)*8``,
    clipped so that at least one filter (up to 8) is kept."""
    if not 0.0 <= level <= 1.0:
        raise ValidationError(f"pruning level {level} is outside [0, 1]")
    kept = math.ceil((total - total * level) / ROUND_TO - 1e-9) * ROUND_TO
    kept = min(total, max(kept, min(ROUND_TO, total)))
    return total - kept


def rounded_kept(total: int, kept: int) -> int:
    """``kept`` rounded up to a multiple of 8, at least min(8, total), at most ``total``."""
    return min(total, max(math.ceil(kept / ROUND_TO) * ROUND_TO, min(ROUND_TO, total)))


def keep_top(importance: np.ndarray, kept: int) -> np.ndarray:
    """Bool mask keeping the ``kept`` most important entries (ties: the lower index wins)."""
    order = np.argsort(-np.asarray(importance), kind="stable")
    mask = np.zeros(len(importance), bool)
    mask[order[:kept]] = True
    return mask


def uniform_masks(importances: Mapping[int, np.ndarray], level: float) -> dict[int, np.ndarray]:
    """The same level in every group: each keeps its most important filters, the count rounded to 8."""
    return {g: keep_top(imp, len(imp) - pruned_count(len(imp), level)) for g, imp in importances.items()}


def global_masks(importances: Mapping[int, np.ndarray], level: float) -> dict[int, np.ndarray]:
    """One threshold over every group (importances comparable, e.g. from normalised weights): the
    filter at index ``int(level * n)`` of all ``n`` sorted importances; each group's kept count is
    then rounded up to a multiple of 8."""
    if not 0.0 <= level <= 1.0:
        raise ValidationError(f"pruning level {level} is outside [0, 1]")
    if not importances:
        return {}
    everything = np.sort(np.concatenate([np.asarray(v, np.float64) for v in importances.values()]))
    index = min(int(level * everything.size), everything.size - 1)
    threshold = everything[index] if level > 0 else -np.inf
    masks = {}
    for g, imp in importances.items():
        kept = rounded_kept(len(imp), int((np.asarray(imp) >= threshold).sum()))
        masks[g] = keep_top(imp, kept)
    return masks
