import pytest

import nncompress as nc
from nncompress.errors import CalibrationError, ValidationError
from nncompress.graph.ops import OpKind as K
from nncompress.parameters import coerce_enum
from nncompress.scopes import match_ignored_scope

from .graph_builder import G


def test_dataset_transform_indices_and_lengths():
    ds = nc.Dataset([1, 2, 3, 4], lambda v: v * 10)
    assert list(ds.get_inference_data()) == [10, 20, 30, 40]
    assert list(ds.get_data([3, 1])) == [2, 4]
    assert list(ds.get_inference_data([0, 2])) == [10, 30]
    assert ds.get_length() == 4 and ds.get_batch_size() is None


def test_dataset_accepts_generator_factory_and_reiterates():
    ds = nc.Dataset(lambda: (i for i in range(3)))
    assert list(ds.get_data()) == [0, 1, 2] == list(ds.get_data())
    assert ds.get_length() is None


def test_dataset_reports_transform_failures_with_item_position():
    ds = nc.Dataset([1, "x"], lambda v: v + 1)
    with pytest.raises(CalibrationError, match="item 1"):
        list(ds.get_inference_data())


def test_dataset_rejects_non_iterables():
    with pytest.raises(ValidationError, match="data_source"):
        nc.Dataset(5)
    with pytest.raises(ValidationError, match="transform_fn"):
        nc.Dataset([1], transform_fn=3)


def test_enums_accept_members_values_and_names_and_reject_others():
    assert coerce_enum("mixed", nc.QuantizationPreset, "preset") is nc.QuantizationPreset.MIXED
    assert coerce_enum("MIXED", nc.QuantizationPreset, "preset") is nc.QuantizationPreset.MIXED
    with pytest.raises(ValidationError, match="'performance', 'mixed'"):
        coerce_enum("fast", nc.QuantizationPreset, "preset")


def _graph():
    g = G()
    x = g.input("x")
    r = g.op("block1/relu", K.RELU, [x])
    c = g.conv("block1/conv", r)
    g.output(g.op("block2/relu", K.RELU, [c]))
    return g.build()


def test_ignored_scope_names_patterns_types_and_subgraphs():
    graph = _graph()
    scope = nc.IgnoredScope(names=["block1/conv"], patterns=["block2/.*"], types=["relu"])
    matched = match_ignored_scope(scope, graph)
    assert set(matched) == {"block1/conv", "block2/relu", "block1/relu"}
    sub = nc.IgnoredScope(subgraphs=[nc.Subgraph(inputs=["block1/relu"], outputs=["block2/relu"])])
    assert set(match_ignored_scope(sub, graph)) == {"block1/relu", "block1/conv", "block2/relu"}


def test_ignored_scope_is_strict_and_lists_unmatched_rules():
    with pytest.raises(ValidationError, match="name 'nope'.*pattern 'zzz'"):
        match_ignored_scope(nc.IgnoredScope(names=["nope"], patterns=["zzz"]), _graph())
    assert match_ignored_scope(nc.IgnoredScope(names=["nope"], validate=False), _graph()) == {}
    with pytest.raises(ValidationError, match="regular expression"):
        match_ignored_scope(nc.IgnoredScope(patterns=["("]), _graph())
