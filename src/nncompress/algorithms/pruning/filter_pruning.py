"""Filter pruning masks from channel groups and producer weights (numpy only).

``group_importances`` ranks the filters of every prunable group; ``masks_for_level`` turns a pruning
level into keep-masks (uniform per group, or one global threshold with ``all_weights``);
``masks_for_flops_target`` binary-searches the uniform level whose modelled FLOPs drop by the target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from nncompress.algorithms.pruning.flops import ModelCost, model_cost, pruned_cost
from nncompress.algorithms.pruning.importance import global_masks, group_importance, uniform_masks
from nncompress.errors import ValidationError
from nncompress.graph.channels import ChannelGroups

FLOPS_TOLERANCE = 0.01  # on the level, as NNCF's binary search

WeightGetter = Callable[[str], np.ndarray]  # producer node name -> its weight


def group_importances(
    groups: ChannelGroups, weight_of: WeightGetter, kind: str = "l2", normalize: bool = False
) -> dict[int, np.ndarray]:
    """Importance per filter of every prunable group, summed over its producers."""
    result = {}
    for group in groups.prunable():
        weights = []
        for name in group.producers:
            info = groups.graph.node(name).weight
            weights.append((weight_of(name), info.out_axis))
        result[group.id] = group_importance(weights, kind, normalize)
    return result


def masks_for_level(importances: Mapping[int, np.ndarray], level: float, all_weights: bool = False):
    """Keep-masks (group id -> bool array) at pruning ``level``."""
    return global_masks(importances, level) if all_weights else uniform_masks(importances, level)


@dataclass(frozen=True)
class FlopsSearch:
    level: float  # the uniform level found
    masks: dict[int, np.ndarray]
    full: ModelCost
    pruned: ModelCost


def masks_for_flops_target(
    groups: ChannelGroups, importances: Mapping[int, np.ndarray], target: float, all_weights: bool = False
) -> FlopsSearch:
    """The smallest level (within 0.01) whose masks remove at least ``target`` of the modelled FLOPs."""
    if not 0.0 < target < 1.0:
        raise ValidationError(f"pruning_flops_target {target} must lie in (0, 1)")
    full = model_cost(groups.graph)
    goal = (1.0 - target) * full.flops

    def cost(level: float) -> tuple[dict, ModelCost]:
        masks = masks_for_level(importances, level, all_weights)
        return masks, pruned_cost(groups, masks)

    masks, best = cost(1.0)
    if best.flops > goal:
        raise ValidationError(
            f"pruning_flops_target {target} cannot be reached: pruning every prunable group as far as allowed "
            f"removes {best.level(full):.3f} of the FLOPs ({len(importances)} prunable groups)"
        )
    low, high = 0.0, 1.0
    while high - low > FLOPS_TOLERANCE:
        mid = (low + high) / 2
        mid_masks, mid_cost = cost(mid)
        if mid_cost.flops <= goal:
            high, masks, best = mid, mid_masks, mid_cost
        else:
            low = mid
    return FlopsSearch(high, masks, full, best)
