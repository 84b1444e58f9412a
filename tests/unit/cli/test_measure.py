"""cli.measure: per-layer and output errors between two models, against hand-computed values."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from nncompress.cli.measure import Measurement, measure, original_graph

torch = pytest.importorskip("torch")


def _models():
    torch.manual_seed(0)
    original = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()
    changed = copy.deepcopy(original)
    delta = torch.tensor([[0.1, 0.0, 0.0, -0.2], [0.0, 0.05, 0.0, 0.0], [0.0, 0.0, 0.0, 0.3]])
    with torch.no_grad():
        changed[0].weight += delta
    items = [torch.randn(1, 4) for _ in range(3)]
    return original, changed, delta, items


def test_layer_and_output_errors_are_relative_l2_over_all_items():
    original, changed, delta, items = _models()
    graph = original_graph(original, items[0])
    layers = [n.name for n in graph if n.weight is not None]
    assert len(layers) == 2
    got = measure(original, changed, layers, items)
    with torch.no_grad():
        first = [original[0](x) for x in items]
        first_new = [changed[0](x) for x in items]
        out, out_new = [original(x) for x in items], [changed(x) for x in items]
    expected_first = np.sqrt(sum(float(((b - a) ** 2).sum()) for a, b in zip(first, first_new))
                             / sum(float((a**2).sum()) for a in first))
    expected_out = np.sqrt(sum(float(((b - a) ** 2).sum()) for a, b in zip(out, out_new))
                           / sum(float((a**2).sum()) for a in out))
    assert got.items == 3 and got.unmatched == []
    assert got.layer_error[layers[0]] == pytest.approx(expected_first, rel=1e-5)
    assert got.layer_error[layers[1]] == pytest.approx(expected_out, rel=1e-5)  # the last layer is the output
    (name, error), = got.output_error.items()
    assert error == pytest.approx(expected_out, rel=1e-5)
    cosines = [float((a * b).sum() / (a.norm() * b.norm())) for a, b in zip(out, out_new)]
    assert got.output_cosine[name] == pytest.approx(np.mean(cosines), rel=1e-6)
    assert 0 < expected_first < 1


def test_identical_models_have_zero_error_and_no_items_measure_nothing():
    original, _, _, items = _models()
    layers = [n.name for n in original_graph(original, items[0]) if n.weight is not None]
    same = measure(original, copy.deepcopy(original), layers + ["not/a/layer"], items)
    assert all(v == 0.0 for v in same.layer_error.values()) and len(same.layer_error) == 2
    assert same.unmatched == ["not/a/layer"]
    assert measure(original, original, layers, []) == Measurement()
