"""Filter importance, rounding of the kept count to 8, uniform and global masks vs hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.algorithms.pruning.importance import (
    filter_importance,
    global_masks,
    group_importance,
    keep_top,
    pruned_count,
    uniform_masks,
)
from nncompress.errors import ValidationError

# three filters of a [3, 1, 2] conv weight
W = np.array([[[1.0, -2.0]], [[3.0, 4.0]], [[0.0, 0.0]]])


def test_l1_l2_by_hand():
    assert filter_importance(W, 0, "l1").tolist() == [3.0, 7.0, 0.0]
    assert filter_importance(W, 0, "l2") == pytest.approx([5**0.5, 5.0, 0.0])


def test_geometric_median_sums_pairwise_distances():
    # d(0,1) = |(-2,-6)| = sqrt(40); d(0,2) = sqrt(5); d(1,2) = 5
    expected = [40**0.5 + 5**0.5, 40**0.5 + 5.0, 5**0.5 + 5.0]
    assert filter_importance(W, 0, "geometric_median") == pytest.approx(expected)


def test_out_axis_1_for_transposed_conv_layout():
    wt = np.moveaxis(W, 0, 1)  # [1, 3, 2]: filters along axis 1
    assert filter_importance(wt, 1, "l1").tolist() == [3.0, 7.0, 0.0]


def test_group_sums_producers_and_normalises_per_tensor():
    other = np.array([[2.0], [0.0], [1.0]])
    assert group_importance([(W, 0), (other, 0)], "l1").tolist() == [5.0, 7.0, 1.0]
    # per-tensor L2 normalisation: W has norm sqrt(30), other sqrt(5)
    expected = np.array([3.0, 7.0, 0.0]) / 30**0.5 + np.array([2.0, 0.0, 1.0]) / 5**0.5
    assert group_importance([(W, 0), (other, 0)], "l1", normalize=True) == pytest.approx(expected)


def test_unknown_kind_and_mismatched_producers_are_refused():
    with pytest.raises(ValidationError, match="'l3'.*l1, l2, geometric_median"):
        filter_importance(W, 0, "l3")
    with pytest.raises(ValidationError, match="3 and 2 filters"):
        group_importance([(W, 0), (np.ones((2, 4)), 0)])


@pytest.mark.parametrize(
    ("total", "level", "pruned"),
    [
        (64, 0.5, 32),  # 32 kept, already a multiple of 8
        (64, 0.3, 16),  # 44.8 kept -> 48
        (64, 0.9, 56),  # 6.4 kept -> 8
        (64, 1.0, 56),  # never the whole group: 8 kept
        (20, 0.5, 4),  # 10 kept -> 16
        (8, 0.7, 0),  # 2.4 kept -> 8: nothing pruned
        (4, 0.9, 0),  # fewer than 8 channels: all kept
        (64, 0.0, 0),
    ],
)
def test_kept_count_rounds_up_to_multiple_of_8(total, level, pruned):
    assert pruned_count(total, level) == pruned


def test_level_outside_unit_interval_is_refused():
    with pytest.raises(ValidationError, match="1.5"):
        pruned_count(16, 1.5)


def test_uniform_masks_keep_the_most_important():
    imp = np.arange(16, dtype=float)[::-1]  # filter 0 most important
    masks = uniform_masks({0: imp, 1: np.arange(32, dtype=float)}, 0.5)
    assert np.flatnonzero(masks[0]).tolist() == list(range(8))
    assert np.flatnonzero(masks[1]).tolist() == list(range(16, 32))


def test_keep_top_breaks_ties_by_index():
    assert keep_top(np.array([1.0, 2.0, 2.0, 2.0]), 2).tolist() == [False, True, True, False]


def test_global_threshold_prunes_the_weaker_group_more():
    weak, strong = np.linspace(0.0, 1.0, 32), np.linspace(2.0, 3.0, 32)
    masks = global_masks({0: weak, 1: strong}, 0.4)
    # threshold at index int(0.4*64) = 25 of the sorted 64 -> weak[25]; weak keeps 7 -> rounded to 8
    assert masks[0].sum() == 8 and masks[0][-8:].all()
    assert masks[1].all()
