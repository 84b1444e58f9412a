"""WeightLayer's [out, in] view is one helper for both weight layouts, and its inverse; layers are frozen and
the group-size fallback returns new records."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nncompress.algorithms.weights.config import LayerConfig
from nncompress.algorithms.weights.selection import select_layers
from nncompress.parameters import CompressWeightsMode as M
from nncompress.weight_parameters import AdvancedCompressionParameters

from .helpers import IN, OUT, linear_layer, relu_linear_graph, weight
from .test_config import options


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


@pytest.mark.parametrize("minimum, expected", [(16, LayerConfig(M.INT4_SYM, 16)), (32, LayerConfig(M.INT8_ASYM))])
def test_group_size_fallback_gives_new_frozen_records(minimum, expected):
    advanced = AdvancedCompressionParameters(min_adjusted_group_size=minimum)
    opts = dataclasses.replace(options(M.INT4_SYM, 32), advanced=advanced)
    (layer,) = select_layers(relu_linear_graph(channels=48), opts).layers  # 48 = 16 * 3: group 32 does not fit
    assert layer.config == expected and layer.ratio_defining is (minimum == 16)
    assert layer.notes and layer.notes[0].startswith("group size 32 does not divide 48 input channels")
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.config = LayerConfig(None)
