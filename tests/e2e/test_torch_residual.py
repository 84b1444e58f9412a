"""PyTorch INT8 of a torchvision-style ResNet-18 (in-place residual add, one ReLU module called twice)
matches INT8 of the same network exported to ONNX, both quantized by nncompress.

Without bias correction the two backends compute the same quantizers on the same tensors (placement,
signedness and ranges), so top-1 agrees within 0.3 pp. With the defaults the ONNX export also gets
its (BatchNorm-folded) conv biases corrected while the bias-free PyTorch convs before BatchNorm do
not, which can move a couple of images either way.
"""

from __future__ import annotations

import pytest

import nncompress as nncf

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("nncompress.backends.torch.adapter")

from tests.resnet_models import int8_accuracies, train_resnet18  # noqa: E402

WIDTH = 8  # torchvision's structure, narrow so that training takes seconds
EPOCHS = 3
MAX_GAP = 0.003  # PyTorch INT8 vs ONNX INT8 top-1


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batch-1 calibration on shared cores: threads only contend
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def resnet18(digits_data, one_thread):
    return train_resnet18(digits_data, WIDTH, EPOCHS)


@pytest.mark.slow
def test_torch_int8_equals_onnx_int8_on_resnet18(resnet18, digits_data, tmp_path):
    no_bias_correction = nncf.AdvancedQuantizationParameters(disable_bias_correction=True)
    acc = int8_accuracies(resnet18, digits_data, tmp_path, advanced_parameters=no_bias_correction)
    assert acc["fp32"] >= 0.9, acc
    assert abs(acc["torch_int8"] - acc["onnx_int8"]) <= MAX_GAP, acc
    assert acc["torch_int8"] >= acc["fp32"] - 0.02, acc


@pytest.mark.slow
def test_torch_int8_keeps_accuracy_with_default_parameters(resnet18, digits_data, tmp_path):
    acc = int8_accuracies(resnet18, digits_data, tmp_path)
    assert acc["torch_int8"] >= acc["fp32"] - 0.02, acc
    assert abs(acc["torch_int8"] - acc["onnx_int8"]) <= 0.01, acc


@pytest.mark.slow
def test_onnx_full_bias_correction_on_the_exported_resnet18_runs_and_keeps_accuracy(resnet18, digits_data, tmp_path):
    # onnxruntime's layout optimizations used to drop a conv output that the bias-correction pass requested
    from tests.resnet_models import accuracy_onnx, export_onnx

    proto = export_onnx(resnet18, tmp_path / "resnet18.onnx")
    images = digits_data.x_train[:300]
    int8 = nncf.quantize(proto, nncf.Dataset(list(images), lambda i: i[None]), fast_bias_correction=False)
    fp32 = accuracy_onnx(proto, digits_data.x_test, digits_data.y_test)
    assert accuracy_onnx(int8, digits_data.x_test, digits_data.y_test) >= fp32 - 0.02
