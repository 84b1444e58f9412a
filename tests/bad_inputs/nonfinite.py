"""Shared by the NaN/Inf cases of the bad-input matrix: one NaN pixel in one of 32 items must not change the
compressed model (statistics skip non-finite values, the report counts them); an input that is never finite is a
CalibrationError naming it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nncf
from tests.contract.models import build, export_onnx

__all__ = ["build"]

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

BACKENDS = ["openvino", "onnx", "torch"]
ITEMS, BAD_ITEM = 32, 5


class MLP(nn.Module):
    """x [batch, tokens, 64] -> Linear -> ReLU -> Linear -> ReLU -> Linear: AWQ's Activation->Linear pattern."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 32)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def as_backend(module: nn.Module, example: torch.Tensor, backend: str, tmp_path):
    if backend == "torch":
        return module
    path = export_onnx(module, example, tmp_path / "model.onnx")
    return onnx.load(path) if backend == "onnx" else ov.convert_model(path)


def run(model, x: np.ndarray) -> np.ndarray:
    if isinstance(model, nn.Module):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    if isinstance(model, onnx.ModelProto):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]


def dataset(items: list[np.ndarray], backend: str) -> nncf.Dataset:
    return nncf.Dataset(items, torch.from_numpy if backend == "torch" else None)


def items(shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(ITEMS)]


def one_nan(items: list[np.ndarray]) -> list[np.ndarray]:
    dirty = [item.copy() for item in items]
    dirty[BAD_ITEM].reshape(-1)[7] = np.nan
    return dirty


def check_report(report, clean_report) -> None:
    assert clean_report.nonfinite is None
    skips = report.nonfinite
    assert skips is not None and skips.values >= 1 and skips.items == 1
    assert (skips.first_tensor, skips.first_item) == ("x", BAD_ITEM)
    assert f"tensor 'x' in item {BAD_ITEM}" in str(report)


def check_close(got: np.ndarray, want: np.ndarray, reference: np.ndarray) -> None:
    """``got`` (NaN in calibration) is finite, as accurate as ``want`` (clean calibration) and close to it."""
    assert np.all(np.isfinite(got))
    error, clean_error = np.abs(got - reference).mean(), np.abs(want - reference).mean()
    assert error < 1.2 * clean_error + 1e-4
    assert np.abs(got - want).mean() < 0.75 * clean_error + 1e-4
