"""check_finite_weight: finite weights pass however large; a NaN or an Inf is named with its index."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.algorithms.checks import check_finite_weight
from nncompress.errors import ValidationError


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_largest_finite_values_pass(dtype):
    weight = np.full((64, 32), np.finfo(dtype).max, dtype=dtype)
    weight[::2] *= -1
    weight[0, 0] = np.finfo(dtype).max  # the sum of a float64 weight overflows: the exact check decides
    check_finite_weight(weight, "fc")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_named_with_its_index(bad):
    weight = np.ones((4, 5), np.float32)
    weight[2, 3] = bad
    with pytest.raises(ValidationError, match=r"'fc'.*\[4, 5\].*1 non-finite values.*at index \[2, 3\]"):
        check_finite_weight(weight, "fc")


def test_opposite_infinities_are_found_though_they_would_cancel_in_a_sum():
    weight = np.zeros((3, 3), np.float32)
    weight[0, 1], weight[2, 2] = np.inf, -np.inf
    with pytest.raises(ValidationError, match="2 non-finite values"):
        check_finite_weight(weight, "fc")
