"""NaN/Inf in calibration activations, end to end on every backend (issue 11 section 4).

One NaN pixel in one of 32 items must not change the compressed model: statistics skip non-finite
values, the report counts them, and an input that is never finite is a CalibrationError naming it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nncompress as nncf

from .contract.models import build, export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

BACKENDS = ["openvino", "onnx", "torch"]
ITEMS, BAD_ITEM = 32, 5


class _MLP(nn.Module):
    """x [batch, tokens, 64] -> Linear -> ReLU -> Linear -> ReLU -> Linear: AWQ's Activation->Linear pattern."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 32)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _as_backend(module: nn.Module, example: torch.Tensor, backend: str, tmp_path):
    if backend == "torch":
        return module
    path = export_onnx(module, example, tmp_path / "model.onnx")
    return onnx.load(path) if backend == "onnx" else ov.convert_model(path)


def _run(model, x: np.ndarray) -> np.ndarray:
    if isinstance(model, nn.Module):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()
    if isinstance(model, onnx.ModelProto):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]


def _dataset(items: list[np.ndarray], backend: str) -> nncf.Dataset:
    return nncf.Dataset(items, torch.from_numpy if backend == "torch" else None)


def _items(shape: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(ITEMS)]


def _one_nan(items: list[np.ndarray]) -> list[np.ndarray]:
    dirty = [item.copy() for item in items]
    dirty[BAD_ITEM].reshape(-1)[7] = np.nan
    return dirty


def _check_report(report, clean_report) -> None:
    assert clean_report.nonfinite is None
    skips = report.nonfinite
    assert skips is not None and skips.values >= 1 and skips.items == 1
    assert (skips.first_tensor, skips.first_item) == ("x", BAD_ITEM)
    assert f"tensor 'x' in item {BAD_ITEM}" in str(report)


def _check_close(got: np.ndarray, want: np.ndarray, reference: np.ndarray) -> None:
    """``got`` (NaN in calibration) is finite, as accurate as ``want`` (clean calibration) and close to it."""
    assert np.all(np.isfinite(got))
    error, clean_error = np.abs(got - reference).mean(), np.abs(want - reference).mean()
    assert error < 1.2 * clean_error + 1e-4
    assert np.abs(got - want).mean() < 0.75 * clean_error + 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantize_one_nan_pixel_gives_the_clean_result(backend, tmp_path):
    module, example = build("conv_bn_relu_pool_linear")
    model = _as_backend(module, example, backend, tmp_path)
    items = _items((1, 3, 8, 8))
    clean = nncf.quantize(model, _dataset(items, backend), subset_size=ITEMS)
    clean_report = nncf.last_report()
    dirty = nncf.quantize(model, _dataset(_one_nan(items), backend), subset_size=ITEMS)
    x = np.random.default_rng(1).normal(size=(4, 3, 8, 8)).astype(np.float32)
    _check_close(_run(dirty, x), _run(clean, x), _run(model, x))
    _check_report(nncf.last_report(), clean_report)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "kwargs", [{"awq": True, "scale_estimation": True, "ratio": 0.7}, {"gptq": True}], ids=["awq_se_ratio", "gptq"]
)
def test_compress_weights_one_nan_value_gives_the_clean_result(backend, kwargs, tmp_path):
    module, example = _MLP().eval(), torch.zeros(1, 8, 64)
    model = _as_backend(module, example, backend, tmp_path)
    items = _items((1, 8, 64))
    options = dict(mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32, subset_size=ITEMS, **kwargs)
    clean = nncf.compress_weights(model, dataset=_dataset(items, backend), **options)
    clean_report = nncf.last_report()
    dirty = nncf.compress_weights(model, dataset=_dataset(_one_nan(items), backend), **options)
    x = np.random.default_rng(1).normal(size=(2, 8, 64)).astype(np.float32)
    _check_close(_run(dirty, x), _run(clean, x), _run(model, x))
    _check_report(nncf.last_report(), clean_report)


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantize_input_never_finite_is_a_calibration_error_naming_it(backend, tmp_path):
    module, example = build("conv_bn_relu_pool_linear")
    model = _as_backend(module, example, backend, tmp_path)
    items = [np.full((1, 3, 8, 8), np.nan, np.float32)] * 4
    with pytest.raises(nncf.CalibrationError, match=r"tensor 'x' has no finite value in any of the 4 .*item 0"):
        nncf.quantize(model, _dataset(items, backend), subset_size=4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compress_weights_input_never_finite_is_a_calibration_error_naming_it(backend, tmp_path):
    model = _as_backend(_MLP().eval(), torch.zeros(1, 8, 64), backend, tmp_path)
    items = [np.full((1, 8, 64), np.inf, np.float32)] * 4
    with pytest.raises(nncf.CalibrationError, match=r"tensor '.*' has no finite value in any of the 4 .*item 0"):
        nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32, awq=True,
                              dataset=_dataset(items, backend), subset_size=4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_weight_is_a_validation_error_naming_it(backend, tmp_path):
    module = _MLP().eval()
    with torch.no_grad():
        module.fc2.weight[3, 5] = float("inf")
    model = _as_backend(module, torch.zeros(1, 8, 64), backend, tmp_path)
    items = _items((1, 8, 64))[:4]
    with pytest.raises(nncf.ValidationError, match=r"weight of '.*fc2.*' .* 1 non-finite values"):
        nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT4_ASYM, group_size=32)
    with pytest.raises(nncf.ValidationError, match=r"weight of '.*fc2.*' .* 1 non-finite values"):
        nncf.quantize(model, _dataset(items, backend), subset_size=4)
