"""Channel-dependency groups on hand-built neutral graphs vs hand-written expectations."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from nncompress.errors import GraphCaptureError
from nncompress.graph.channels import ConsumerSlice, PruningRules, channel_groups
from nncompress.graph.ir import BiasInfo, Graph, Node, TensorRef, WeightInfo
from nncompress.graph.ops import OpKind as K

FREE = PruningRules(prune_first_conv=True, prune_downsample_convs=True)


class B:
    """A tiny NCHW graph builder: every node records its output shape."""

    def __init__(self, shape=(1, 3, 8, 8)):
        self.nodes = [Node("x", K.INPUT, "input", [], [shape])]

    def _add(self, name, kind, inputs, shape, weight=None, attrs=None, consts=None):
        ins = [TensorRef(i) for i in inputs]
        const_ports = dict(consts or {})
        for port in sorted(const_ports):
            ins.insert(port, None)
        node = Node(name, kind, kind.value, ins, [shape], ["float"], const_ports, attrs=dict(attrs or {}))
        if weight is not None:
            port = len(node.inputs)
            node.inputs.append(None)
            node.const_ports[port] = weight.shape
            node.weight = weight
        self.nodes.append(node)
        return node

    def shape(self, name):
        return next(n for n in self.nodes if n.name == name).output_shapes[0]

    def conv(self, name, x, cout, groups=1, stride=1, kind=None):
        n, cin, h, w = self.shape(x)
        kind = kind or (K.DEPTHWISE_CONV if groups > 1 and groups == cin == cout else K.CONV)
        info = WeightInfo(1, (cout, cin // groups, 3, 3), 0, 1, groups)
        node = self._add(name, kind, [x], (n, cout, h // stride, w // stride), info,
                         {"groups": groups, "strides": (stride, stride)})
        node.bias = BiasInfo(name, 2, (cout,), TensorRef(name))
        return name

    def linear(self, name, x, out):
        shape = self.shape(x)
        self._add(name, K.LINEAR, [x], (*shape[:-1], out), WeightInfo(1, (out, shape[-1]), 0, 1))
        return name

    def op(self, name, kind, inputs, shape=None, attrs=None, consts=None):
        self._add(name, kind, inputs, shape or self.shape(inputs[0]), attrs=attrs, consts=consts)
        return name

    def out(self, x):
        self.nodes.append(Node(f"output/{x}", K.OUTPUT, "output", [TensorRef(x)]))

    def graph(self):
        return Graph(self.nodes)


def _by_producer(groups):
    return {tuple(g.producers): g for g in groups}


def test_residual_add_joins_producers_and_depthwise_follows():
    b = B()
    b.conv("c1", "x", 16)
    b.op("bn", K.BATCH_NORM, ["c1"])
    b.op("relu", K.RELU, ["bn"])
    b.conv("dw", "relu", 16, groups=16)
    b.conv("c2", "dw", 16)
    b.op("add", K.ADD, ["c2", "relu"])
    b.conv("c3", "add", 8)
    b.op("pool", K.AVG_POOL, ["c3"], (1, 8, 1, 1))
    b.op("flat", K.FLATTEN, ["pool"], (1, 8))
    b.linear("fc", "flat", 4)
    b.out("fc")
    groups = channel_groups(b.graph(), FREE)
    by = _by_producer(groups)
    main = by[("c1", "c2")]
    assert main.prunable and main.channels == 16
    assert main.followers == ["bn", "dw"]
    assert main.consumers == [ConsumerSlice("c2", 0, 1), ConsumerSlice("c3", 0, 1)]
    assert by[("c3",)].prunable and by[("c3",)].consumers == [ConsumerSlice("fc", 0, 1)]
    assert not by[("fc",)].prunable and "model output" in by[("fc",)].reason


def test_concat_offsets_and_flatten_blocks():
    b = B()
    b.conv("a", "x", 8)
    b.conv("c", "x", 16)
    b.op("cat", K.CONCAT, ["a", "c"], (1, 24, 8, 8), attrs={"axis": 1})
    b.conv("d", "cat", 8)
    b.op("flat", K.FLATTEN, ["cat"], (1, 24 * 64))
    b.linear("fc", "flat", 4)
    b.out("fc")
    b.out("d")
    groups = channel_groups(b.graph(), FREE)
    by = _by_producer(groups)
    assert by[("a",)].consumers == [ConsumerSlice("d", 0, 1), ConsumerSlice("fc", 0, 64)]
    assert by[("c",)].consumers == [ConsumerSlice("d", 8, 1), ConsumerSlice("fc", 8 * 64, 64)]
    # the input-feature mask of fc: a's channel 1 dropped -> features 64..127 gone; c's channel 0 -> 576..639
    keep = {by[("a",)].id: np.arange(8) != 1, by[("c",)].id: np.arange(16) != 0}
    masks = groups.node_masks(keep)
    dropped = np.flatnonzero(~masks["fc"].inp)
    assert dropped.tolist() == list(range(64, 128)) + list(range(512, 576))
    assert np.flatnonzero(~masks["d"].inp).tolist() == [1, 8]
    assert masks["a"].out.sum() == 7 and masks["d"].out is None


def test_concat_with_model_input_keeps_its_channels():
    b = B()
    b.conv("a", "x", 8)
    b.op("cat", K.CONCAT, ["x", "a"], (1, 11, 8, 8), attrs={"axis": 1})
    b.conv("d", "cat", 8)
    b.out("d")
    groups = channel_groups(b.graph(), FREE)
    a = _by_producer(groups)[("a",)]
    assert a.prunable and a.consumers == [ConsumerSlice("d", 3, 1)]
    masks = groups.node_masks({a.id: np.arange(8) >= 4})
    assert np.flatnonzero(~masks["d"].inp).tolist() == [3, 4, 5, 6]


def test_shared_layer_merges_its_calls():
    b = B()
    b.conv("c1", "x", 8)
    b.conv("s0", "c1", 8)
    b.op("r", K.RELU, ["s0"])
    b.conv("s1", "r", 8)
    b.conv("c2", "s1", 4)
    b.out("c2")
    groups = channel_groups(b.graph(), FREE, shared=[["s0", "s1"]])
    by = _by_producer(groups)
    # s0 reads c1's channels and s1 reads s0's: one weight -> one mask for all three
    assert by[("c1", "s0", "s1")].prunable
    unshared = _by_producer(channel_groups(b.graph(), FREE))
    assert ("c1",) in unshared and ("s0",) in unshared


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (PruningRules(), ["first convolution", "downsampling conv"]),
        (PruningRules(prune_first_conv=True), ["downsampling conv"]),
        (FREE, []),
    ],
)
def test_first_and_downsample_rules(rules, expected):
    b = B()
    b.conv("c1", "x", 8)
    b.conv("c2", "c1", 8, stride=2)
    b.conv("c3", "c2", 8)
    b.out("c3")
    by = _by_producer(channel_groups(b.graph(), rules))
    reasons = [by[("c1",)].reason or "", by[("c2",)].reason or ""]
    assert [r for r in expected if not any(r in x for x in reasons)] == []
    assert ("first convolution" in reasons[0]) == ("first convolution" in expected)
    assert ("downsampling" in reasons[1]) == ("downsampling conv" in expected)


def test_grouped_conv_blocks_producer_and_consumer():
    b = B()
    b.conv("c1", "x", 16)
    b.conv("g", "c1", 16, groups=4)
    b.conv("c3", "g", 8)
    b.out("c3")
    by = _by_producer(channel_groups(b.graph(), FREE))
    assert "grouped convolution" in by[("c1",)].reason
    assert "not depthwise" in by[("g",)].reason
    assert by[("c3",)].reason is not None  # reaches the output


def test_unknown_op_and_unequal_counts_block(caplog):
    b = B()
    b.conv("c1", "x", 8)
    b.op("soft", K.SOFTMAX, ["c1"])
    b.conv("c2", "soft", 8)
    b.conv("a", "c2", 8)
    b.conv("c", "c2", 8)
    b.op("cat", K.CONCAT, ["a", "c"], (1, 16, 8, 8), attrs={"axis": 1})
    b.conv("d", "c2", 16)
    b.op("add", K.ADD, ["cat", "d"])
    b.conv("e", "add", 8)
    b.out("e")
    with caplog.at_level(logging.INFO, logger="nncompress"):
        groups = channel_groups(b.graph(), FREE)
    by = _by_producer(groups)
    assert "channel semantics are unknown" in by[("c1",)].reason
    assert by[("c2",)].prunable
    for key in [("a",), ("c",), ("d",)]:
        assert "unequal channel counts" in by[key].reason
    skipped = [r for r in caplog.records if "is not pruned" in r.getMessage()]
    assert len(skipped) == sum(1 for g in groups if not g.prunable) == 5


def test_per_channel_constant_and_broadcast():
    b = B()
    b.conv("c1", "x", 8)
    b.op("scale", K.MUL, ["c1"], consts={1: (1, 8, 1, 1)})
    b.conv("c2", "scale", 8)
    b.conv("c3", "c2", 8)
    b.op("half", K.MUL, ["c3"], consts={1: ()})
    b.conv("c4", "half", 8)
    b.out("c4")
    by = _by_producer(channel_groups(b.graph(), FREE))
    assert "per-channel constant" in by[("c1",)].reason
    assert by[("c3",)].prunable


def test_reshape_that_mixes_channels_blocks_and_reduce_over_spatial_passes():
    b = B()
    b.conv("c1", "x", 8)
    b.op("mean", K.REDUCE_MEAN, ["c1"], (1, 8), attrs={"axes": (2, 3), "keepdims": False})
    b.linear("fc1", "mean", 4)
    b.conv("c2", "x", 8)
    b.op("view", K.RESHAPE, ["c2"], (1, 4, 128))
    b.linear("fc2", "view", 4)
    b.out("fc1")
    b.out("fc2")
    by = _by_producer(channel_groups(b.graph(), FREE))
    assert by[("c1",)].consumers == [ConsumerSlice("fc1", 0, 1)]
    assert "mixing the channel axis" in by[("c2",)].reason


def test_module_graph_without_dataflow_is_refused():
    with pytest.raises(GraphCaptureError, match="example input"):
        channel_groups(Graph([], has_dataflow=False))
