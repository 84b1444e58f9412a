"""The FLOPs/params model of a small CNN vs a hand count, under masks, and the FLOPs-target search."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.algorithms.pruning import masks_for_flops_target, masks_for_level, model_cost, pruned_cost
from nncompress.algorithms.pruning.filter_pruning import group_importances
from nncompress.errors import ValidationError
from nncompress.graph.channels import PruningRules, channel_groups
from nncompress.graph.ops import OpKind as K
from tests.unit.graph.test_channels import B

FREE = PruningRules(prune_first_conv=True, prune_downsample_convs=True)


def _cnn():
    """conv 3->16 (3x3, 8x8) -> depthwise 16 (3x3, stride 2 -> 4x4) -> conv 16->32 (3x3, 4x4)
    -> mean -> linear 32->10."""
    b = B()
    b.conv("c1", "x", 16)
    b.conv("dw", "c1", 16, groups=16, stride=2)
    b.conv("c2", "dw", 32)
    b.op("pool", K.AVG_POOL, ["c2"], (1, 32, 1, 1))
    b.op("flat", K.FLATTEN, ["pool"], (1, 32))
    b.linear("fc", "flat", 10)
    b.out("fc")
    return b.graph()

# hand count, per sample: MACs = kernel * C_in * C_out / groups * positions
C1 = 9 * 3 * 16 * 64  # 27648
DW = 9 * 16 * 16 // 16 * 16  # 2304
C2 = 9 * 16 * 32 * 16  # 73728
FC = 32 * 10  # 320
PARAMS = (9 * 3 * 16 + 16) + (9 * 16 + 16) + (9 * 16 * 32 + 32) + 320  # fc has no bias here


def test_full_cost_matches_hand_count():
    cost = model_cost(_cnn())
    assert cost.flops == 2 * (C1 + DW + C2 + FC)
    assert cost.params == PARAMS
    assert cost.filters == 16 + 16 + 32 + 10


def test_cost_under_masks_matches_hand_count():
    graph = _cnn()
    groups = channel_groups(graph, FREE)
    g1 = groups.group_of("c1")
    g2 = groups.group_of("c2")
    cost = pruned_cost(groups, {g1.id: np.arange(16) < 8, g2.id: np.arange(32) < 16})
    c1 = 9 * 3 * 8 * 64
    dw = 9 * 8 * 16
    c2 = 9 * 8 * 16 * 16
    fc = 16 * 10
    assert cost.flops == 2 * (c1 + dw + c2 + fc)
    assert cost.params == (9 * 3 * 8 + 8) + (9 * 8 + 8) + (9 * 8 * 16 + 16) + fc


def test_flops_target_search_reaches_target_within_tolerance():
    graph = _cnn()
    groups = channel_groups(graph, FREE)
    rng = np.random.default_rng(0)
    imps = group_importances(groups, lambda n: rng.normal(size=graph.node(n).weight.shape))
    found = masks_for_flops_target(groups, imps, 0.3)
    assert found.pruned.flops <= 0.7 * found.full.flops
    # a level 0.01 lower would not reach it (the search returns the smallest level that does)
    lower = pruned_cost(groups, masks_for_level(imps, max(found.level - 0.011, 0.0)))
    assert lower.flops > 0.7 * found.full.flops or lower.flops == found.pruned.flops
    assert all(m.sum() % 8 == 0 for m in found.masks.values())


def test_unreachable_flops_target_says_how_far_it_gets():
    graph = _cnn()
    groups = channel_groups(graph, FREE)
    imps = group_importances(groups, lambda n: np.ones(graph.node(n).weight.shape))
    with pytest.raises(ValidationError, match="cannot be reached: .* removes 0\\.\\d+"):
        masks_for_flops_target(groups, imps, 0.95)
    with pytest.raises(ValidationError, match="1.5"):
        masks_for_flops_target(groups, imps, 1.5)


def test_global_ranking_search_also_reaches_target():
    graph = _cnn()
    groups = channel_groups(graph, FREE)
    rng = np.random.default_rng(1)
    imps = group_importances(groups, lambda n: rng.normal(size=graph.node(n).weight.shape), normalize=True)
    found = masks_for_flops_target(groups, imps, 0.3, all_weights=True)
    assert found.pruned.flops <= 0.7 * found.full.flops
    assert found.pruned == pruned_cost(groups, found.masks)
