"""Filter pruning: importance, FLOPs model and masks on channel groups (numpy only, no backend)."""

from nncompress.algorithms.pruning.filter_pruning import (
    FlopsSearch,
    group_importances,
    masks_for_flops_target,
    masks_for_level,
)
from nncompress.algorithms.pruning.flops import LayerCost, ModelCost, layer_cost, model_cost, pruned_cost
from nncompress.algorithms.pruning.importance import filter_importance, group_importance, pruned_count

__all__ = [
    "FlopsSearch",
    "LayerCost",
    "ModelCost",
    "filter_importance",
    "group_importance",
    "group_importances",
    "layer_cost",
    "masks_for_flops_target",
    "masks_for_level",
    "model_cost",
    "pruned_cost",
    "pruned_count",
]
