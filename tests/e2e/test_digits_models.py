"""The digits CNN is accurate in torch, ONNX Runtime and OpenVINO, and the three agree."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the trained digits CNN in three runtimes

MIN_ACCURACY = 0.98
MIN_AGREEMENT = 0.995


def test_digits_split(digits_data: Any) -> None:
    x_train, y_train, x_test, y_test = digits_data
    assert x_test.shape == (594, 1, 16, 16) and x_test.dtype == np.float32
    assert len(x_train) + len(x_test) == 1797 and len(y_train) == len(x_train)
    assert 0.0 <= x_test.min() and x_test.max() <= 1.0
    assert set(np.bincount(y_test)) <= {58, 59, 60}  # stratified


def test_digits_cnn_size(digits_torch: Any) -> None:
    n_params = sum(p.numel() for p in digits_torch.parameters())
    assert 0.3e6 < n_params < 0.4e6


_MODEL_FIXTURES = {"torch": "digits_torch", "onnx": "digits_onnx", "openvino": "digits_openvino"}


def _predict(request: pytest.FixtureRequest, backend: str) -> np.ndarray:
    """Held-out predictions of one backend (its fixture skips the test if it is missing)."""
    from examples import digits_cnn

    model = request.getfixturevalue(_MODEL_FIXTURES[backend])
    predict = getattr(digits_cnn, f"predict_{backend}")
    return predict(model, request.getfixturevalue("digits_data").x_test)


@pytest.mark.parametrize("backend", list(_MODEL_FIXTURES))
def test_held_out_accuracy(request: pytest.FixtureRequest, digits_data: Any, backend: str) -> None:
    accuracy = float((_predict(request, backend) == digits_data.y_test).mean())
    assert accuracy >= MIN_ACCURACY, f"{backend} accuracy {accuracy:.4f} < {MIN_ACCURACY}"


def test_backends_agree(request: pytest.FixtureRequest) -> None:
    torch_pred, onnx_pred, ov_pred = (_predict(request, backend) for backend in _MODEL_FIXTURES)
    same = (torch_pred == onnx_pred) & (torch_pred == ov_pred)
    assert float(same.mean()) >= MIN_AGREEMENT, f"torch, onnx and openvino agree on {same.mean():.4f}"


def test_accuracy_helpers(digits_data: Any, digits_onnx: Any, digits_openvino: Any) -> None:
    from examples import digits_cnn

    x, y = digits_data.x_test, digits_data.y_test
    assert digits_cnn.accuracy_onnx(digits_onnx, x, y) >= MIN_ACCURACY
    assert digits_cnn.accuracy_openvino(digits_openvino, x, y) >= MIN_ACCURACY
