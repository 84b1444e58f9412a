"""NNCF's ignored-scope helper functions of nncompress.scopes."""

from __future__ import annotations

import pytest

from nncompress.errors import ValidationError
from nncompress.graph.ops import OpKind as K
from nncompress.scopes import (
    IgnoredScope,
    Subgraph,
    convert_ignored_scope_to_list,
    get_difference_ignored_scope,
    get_ignored_node_names_from_ignored_scope,
    get_ignored_node_names_from_subgraph,
    get_matched_ignored_scope_info,
    validate_ignored_scope,
)

from .graph_builder import G


def _graph(prefix: str = "block"):
    g = G()
    x = g.input("x")
    r = g.op(f"{prefix}1/relu", K.RELU, [x])
    c = g.conv(f"{prefix}1/conv", r)
    g.output(g.op(f"{prefix}2/relu", K.RELU, [c]))
    return g.build()


def test_list_form_and_difference():
    scope = IgnoredScope(names=["a"], patterns=["b.*"])
    assert convert_ignored_scope_to_list(scope) == ["a", "{re}b.*"]
    assert convert_ignored_scope_to_list(None) == []
    with pytest.raises(ValidationError, match="no list form"):
        convert_ignored_scope_to_list(IgnoredScope(types=["relu"]))
    diff = get_difference_ignored_scope(IgnoredScope(names=["a", "b"], types=["t"]), IgnoredScope(names=["b"]))
    assert diff == IgnoredScope(names=["a"], types=["t"])


def test_node_names_from_scope_and_subgraph():
    graph = _graph()
    scope = IgnoredScope(names=["block1/conv"], patterns=["block2/.*"], types=["missing"])
    assert get_ignored_node_names_from_ignored_scope(scope, graph, strict=False) == {"block1/conv", "block2/relu"}
    with pytest.raises(ValidationError, match="type 'missing'"):
        get_ignored_node_names_from_ignored_scope(scope, graph)
    sub = Subgraph(inputs=["block1/relu"], outputs=["block2/relu"])
    assert sorted(get_ignored_node_names_from_subgraph(graph, sub)) == ["block1/conv", "block1/relu", "block2/relu"]


def test_matched_info_over_several_graphs_and_validation():
    graphs = [_graph("block"), _graph("head")]
    scope = IgnoredScope(names=["head1/conv", "nope"], patterns=["block2/.*"], types=["relu"])
    matched, found = get_matched_ignored_scope_info(scope, graphs)
    assert matched == IgnoredScope(names=["head1/conv"], patterns=["block2/.*"], types=["relu"])
    assert found == {
        "names": {"head1/conv"},
        "patterns": {"block2/relu"},
        "types": {"block1/relu", "block2/relu", "head1/relu", "head2/relu"},
    }
    with pytest.raises(ValidationError, match=r"names \['nope'\]"):
        validate_ignored_scope(scope, graphs)
    validate_ignored_scope(matched, graphs)


def test_an_unmatched_name_lists_the_closest_names():
    graph = _graph()
    with pytest.raises(ValidationError, match=r"name 'block1/conv_0' \(closest names: 'block1/conv'"):
        get_ignored_node_names_from_ignored_scope(IgnoredScope(names=["block1/conv_0"]), graph)
    with pytest.raises(ValidationError) as info:
        get_ignored_node_names_from_ignored_scope(IgnoredScope(names=["zzz"]), graph)
    assert "closest" not in str(info.value)
