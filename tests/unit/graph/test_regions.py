"""Regions of a hand-built graph: x -> a -> b -> add(b, a) -> c, plus a second model input y read by c."""

from __future__ import annotations

import pytest

from nncompress.errors import ValidationError
from nncompress.graph.ir import Graph, Node, TensorRef
from nncompress.graph.ops import OpKind as K
from nncompress.graph.regions import region_between, region_from_nodes, scope_region

T = TensorRef


def graph() -> Graph:
    return Graph(
        [
            Node("x", K.INPUT, "input", [], [(1,)]),
            Node("y", K.INPUT, "input", [], [(1,)]),
            Node("blk/a/relu/0", K.RELU, "relu", [T("x")], [(1,)]),
            Node("blk/b/linear/0", K.LINEAR, "linear", [T("blk/a/relu/0"), None], [(1,)]),
            Node("blk/add/0", K.ADD, "add", [T("blk/b/linear/0"), T("blk/a/relu/0")], [(1,)]),
            Node("c/mul/0", K.MUL, "mul", [T("blk/add/0"), T("y")], [(1,)]),
            Node("output/0", K.OUTPUT, "output", [T("c/mul/0")]),
        ]
    )


def test_region_between_stops_at_inputs_and_keeps_graph_order():
    region = region_between(graph(), [T("blk/a/relu/0")], [T("blk/add/0")], name="r")
    assert region == region_between(graph(), [T("blk/a/relu/0")], [T("blk/add/0")], name="r")
    assert region.nodes == ("blk/b/linear/0", "blk/add/0")
    assert region.inputs == (T("blk/a/relu/0"),)
    assert region.outputs == (T("blk/add/0"),)


def test_region_between_names_an_unlisted_model_input():
    with pytest.raises(ValidationError, match="reads y:0, which is neither one of its inputs"):
        region_between(graph(), [T("blk/add/0")], [T("c/mul/0")])
    region = region_between(graph(), [T("blk/add/0"), T("y")], [T("c/mul/0")])
    assert region.nodes == ("c/mul/0",) and region.inputs == (T("blk/add/0"), T("y"))


def test_region_between_reaching_the_model_input_includes_everything_upstream():
    region = region_between(graph(), [T("x")], [T("blk/add/0")])
    assert region.nodes == ("blk/a/relu/0", "blk/b/linear/0", "blk/add/0")
    assert region.inputs == (T("x"),)


def test_scope_region_takes_every_node_of_the_scope_and_its_outside_reads():
    region = scope_region(graph(), "blk")
    assert region.name == "blk" and region.nodes == ("blk/a/relu/0", "blk/b/linear/0", "blk/add/0")
    assert region.inputs == (T("x"),) and region.outputs == (T("blk/add/0"),)
    with pytest.raises(ValidationError, match="no node of the graph is in scope 'nope'"):
        scope_region(graph(), "nope")


def test_region_from_nodes_outputs_are_the_tensors_read_outside():
    region = region_from_nodes(graph(), ["blk/a/relu/0", "blk/b/linear/0"])
    assert region.outputs == (T("blk/a/relu/0"), T("blk/b/linear/0"))  # relu is also read by the add outside
    with pytest.raises(ValidationError, match="not in the graph"):
        region_from_nodes(graph(), ["zzz"])
