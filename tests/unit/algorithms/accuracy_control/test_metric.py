"""MetricScale.within: a drop equal to max_drop up to float rounding is within the budget."""

from __future__ import annotations

import pytest

from nncompress.algorithms.accuracy_control import MetricScale
from nncompress.parameters import DropType


def test_a_drop_equal_to_max_drop_after_rounding_fits():
    scale = MetricScale(0.9, DropType.ABSOLUTE)
    drop = scale.drop(0.89)
    assert drop == 0.010000000000000009 and drop > 0.01  # the float edge itself
    assert scale.within(drop, 0.01)


@pytest.mark.parametrize(
    "fp32, metric, max_drop, drop_type, fits",
    [
        (0.9, 0.8899, 0.01, DropType.ABSOLUTE, False),  # a real excess is not forgiven
        (0.9, 0.89 - 1e-8, 0.01, DropType.ABSOLUTE, False),
        (100.0, 99.99, 0.01, DropType.ABSOLUTE, True),  # 100 - 99.99 = 0.010000000000005116
        (100.0, 99.99 - 1e-6, 0.01, DropType.ABSOLUTE, False),
        (0.9, 0.891, 0.01, DropType.RELATIVE, True),  # (0.9 - 0.891) / 0.9 rounds around 0.01
        (0.9, 0.8909, 0.01, DropType.RELATIVE, False),
        (0.5, 0.5, 0.0, DropType.ABSOLUTE, True),
        (0.5, 0.5 - 1e-6, 0.0, DropType.ABSOLUTE, False),
    ],
)
def test_within_tolerates_rounding_only(fp32, metric, max_drop, drop_type, fits):
    scale = MetricScale(fp32, drop_type)
    assert scale.within(scale.drop(metric), max_drop) is fits


def test_lower_is_better_metrics_use_the_same_budget():
    scale = MetricScale(0.89, DropType.ABSOLUTE, sign=-1)  # a loss: 0.9 is 0.01 worse
    assert scale.drop(0.9) > 0.01 and scale.within(scale.drop(0.9), 0.01)
    assert not scale.within(scale.drop(0.9001), 0.01)
