"""WeightLayer's [out, in] view is one helper for both weight layouts, and its inverse."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.parameters import CompressWeightsMode as M

from .helpers import IN, OUT, linear_layer, weight


@pytest.mark.parametrize("in_axis", [0, 1])
def test_oi_view_and_back(in_axis):
    layer = linear_layer(in_axis=in_axis)
    w = weight(in_axis=in_axis)
    oi = layer.to_oi(w)
    assert oi.shape == (OUT, IN)
    np.testing.assert_array_equal(oi, weight(in_axis=1))
    assert np.shares_memory(oi, w)
    np.testing.assert_array_equal(layer.from_oi(oi), w)


def test_channels_per_group_of_a_layer():
    assert linear_layer(M.INT4_SYM, 16).channels_per_group == 16
    assert linear_layer(M.INT4_SYM, -1).channels_per_group == IN
