"""WeightLayer's [out, in] view is one helper for both weight layouts, and its inverse; layers are frozen and
the group-size fallback returns new records."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nncompress.algorithms.weights.config import LayerConfig
from nncompress.algorithms.weights.selection import select_layers
from nncompress.graph.ir import Graph, Node, TensorRef, WeightInfo
from nncompress.graph.ops import OpKind as K
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


def _tied_graph(shape_of_head=(10, IN)) -> Graph:
    """ids -> Embedding (weight "emb.weight" [10, 32]) -> Relu -> Linear fc -> Linear head (reads "emb.weight")."""
    names = {"constant_names": {1: "emb.weight"}}
    return Graph([
        Node("ids", K.INPUT, "input", [], [(1, 4)], ["int"]),
        Node("emb", K.EMBEDDING, "embedding", [TensorRef("ids"), None], [(1, 4, IN)], ["float"], {1: (10, IN)},
             weight=WeightInfo(1, (10, IN), 0, 1), attrs=dict(names)),
        Node("relu", K.RELU, "relu", [TensorRef("emb")], [(1, 4, IN)], ["float"]),
        Node("fc", K.LINEAR, "linear", [TensorRef("relu"), None], [(1, 4, IN)], ["float"], {1: (IN, IN)},
             weight=WeightInfo(1, (IN, IN), 0, 1)),
        Node("head", K.LINEAR, "linear", [TensorRef("fc"), None], [(1, 4, 10)], ["float"], {1: shape_of_head},
             weight=WeightInfo(1, shape_of_head, 0, 1), attrs=dict(names)),
        Node("output/out", K.OUTPUT, "output", [TensorRef("head")], [], []),
    ])


def test_a_weight_read_by_two_operations_is_one_layer():
    opts = dataclasses.replace(options(M.INT4_ASYM, 16), all_layers=False)
    selection = select_layers(_tied_graph(), opts)
    emb, fc = selection.layers
    assert (emb.node, emb.shares, emb.activation) == ("emb", (("head", 1),), None)
    assert emb.size == 10 * IN and fc.size == IN * IN  # the shared weight counts once
    # the head is still the last Linear: no other Linear leaves the ratio-defining set
    assert fc.ratio_defining and fc.config == LayerConfig(M.INT4_ASYM, 16)
    assert not emb.ratio_defining and emb.config == LayerConfig(M.INT8_ASYM)
    assert any("head read(s) the weight of emb" in note for note in selection.notes)


def test_the_same_name_with_another_shape_is_not_shared():
    opts = dataclasses.replace(options(M.INT4_ASYM, 16), all_layers=False)
    layers = select_layers(_tied_graph(shape_of_head=(12, IN)), opts).layers
    assert [(layer.node, layer.shares) for layer in layers] == [("emb", ()), ("fc", ()), ("head", ())]
