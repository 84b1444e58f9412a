"""Bias correction shrinks the mean output shift INT8 weights cause, on ONNX and OpenVINO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nncf
from tests.contract.models import export_onnx

onnx = pytest.importorskip("onnx")


class NarrowBiasedNet(nn.Module):
    """Coarse weights (few levels used by most channels) so weight quantization shifts the mean."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(4, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 8)
        with torch.no_grad():
            self.conv.weight.mul_(torch.linspace(0.02, 1.0, 16).view(16, 1, 1, 1))
            self.conv.weight[:, :, 0, 0] += 3.0  # one large tap per channel stretches the range
            self.conv.bias.fill_(0.5)
            self.fc.bias.fill_(0.5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def _data(n=32):
    rng = np.random.default_rng(0)
    return [rng.uniform(0.5, 1.5, size=(1, 4, 8, 8)).astype(np.float32) for _ in range(n)]


def _mean_shift(run_fp32, run_int8, data):
    diffs = [run_int8(x) - run_fp32(x) for x in data]
    return float(np.abs(np.mean(diffs, axis=0)).mean())


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("bc") / "net.onnx"
    return onnx.load(export_onnx(NarrowBiasedNet().eval(), torch.zeros(1, 4, 8, 8), path))


def _ort_runner(model):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def _shifts(model, runner_factory):
    data = _data()
    run_fp32 = runner_factory(model)
    shifts = {}
    for name, kwargs in {
        "none": {"advanced_parameters": nncf.AdvancedQuantizationParameters(disable_bias_correction=True)},
        "fast": {},
        "full": {"fast_bias_correction": False},
    }.items():
        int8 = nncf.quantize(model, nncf.Dataset(data), subset_size=32, **kwargs)
        shifts[name] = _mean_shift(run_fp32, runner_factory(int8), data)
    return shifts


def test_bias_correction_shrinks_mean_shift_onnx(onnx_model):
    shifts = _shifts(onnx_model, _ort_runner)
    assert shifts["fast"] < 0.7 * shifts["none"]
    assert shifts["full"] < 0.7 * shifts["none"]


def test_bias_correction_shrinks_mean_shift_openvino(onnx_model, tmp_path):
    ov = pytest.importorskip("openvino")
    path = tmp_path / "net.onnx"
    onnx.save(onnx_model, path)

    def runner(model):
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda x: compiled(x)[0]

    shifts = _shifts(ov.convert_model(str(path)), runner)
    assert shifts["fast"] < 0.7 * shifts["none"]
    assert shifts["full"] < 0.7 * shifts["none"]
