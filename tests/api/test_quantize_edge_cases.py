"""Documented behaviour for unusual models and data: NaN weights (an error), constant activations, dynamic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nncf
from tests.contract.models import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _model(tmp_path, mutate=None):
    module = TwoConvs().eval()
    if mutate:
        with torch.no_grad():
            mutate(module)
    return onnx.load(export_onnx(module, torch.zeros(1, 3, 8, 8), tmp_path / "m.onnx"))


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _data(n=8, batch=1):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(batch, 3, 8, 8)).astype(np.float32) for _ in range(n)]


def test_layer_with_nan_weights_is_a_validation_error_naming_it(tmp_path):
    model = _model(tmp_path, lambda m: m.b.weight.__setitem__((0, 0, 0, 0), float("nan")))
    with pytest.raises(nncf.ValidationError, match=r"weight of '/b/Conv'.* 1 non-finite values .*index \[0, 0, 0, 0\]"):
        nncf.quantize(model, nncf.Dataset(_data()))


def test_constant_activation_gets_a_small_valid_range(tmp_path):
    model = _model(tmp_path, lambda m: (m.a.weight.zero_(), m.a.bias.fill_(0.25)))  # relu(a(x)) == 0.25
    data = _data()
    int8 = nncf.quantize(model, nncf.Dataset(data))
    np.testing.assert_allclose(_run(int8, data[0]), _run(model, data[0]), atol=0.05)


def test_constant_input_does_not_break_ranges(tmp_path):
    model = _model(tmp_path)
    zeros = [np.zeros((1, 3, 8, 8), np.float32)] * 4
    int8 = nncf.quantize(model, nncf.Dataset(zeros))
    assert np.all(np.isfinite(_run(int8, _data(1)[0])))


def test_dynamic_batch_calibration_items_of_different_sizes(tmp_path):
    model = _model(tmp_path)
    data = _data(4, batch=1) + _data(4, batch=5)
    int8 = nncf.quantize(model, nncf.Dataset(data))
    x = _data(1, batch=3)[0]
    assert _run(int8, x).shape == (3, 4, 8, 8)
    np.testing.assert_allclose(_run(int8, x), _run(model, x), atol=0.1)


def test_batched_loader_turns_on_batchwise_statistics(tmp_path):
    class Loader(list):
        batch_size = 4

    model = _model(tmp_path)
    nncf.quantize(model, nncf.Dataset(Loader(_data(3, batch=4))))
    assert nncf.last_report().calibration_items == 3
