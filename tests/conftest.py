"""Shared pytest fixtures: the digits task in every installed backend.

Each fixture is session scoped and skips cleanly (with the reason) when the backend it needs is
not installed. The trained CNN comes from the cache (`$NNCOMPRESS_CACHE` or ~/.cache/nncompress);
the first run trains it in a few seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # makes `examples` and `bench` importable


def _digits_module() -> Any:
    pytest.importorskip("torch", reason="the digits task needs torch")
    pytest.importorskip("sklearn", reason="the digits data needs scikit-learn")
    from examples import digits_cnn

    return digits_cnn


@pytest.fixture(scope="session")
def digits_data() -> Any:
    """DigitsData(x_train, y_train, x_test, y_test); 594 held-out images [N,1,16,16] float32."""
    return _digits_module().load_digits_data()


@pytest.fixture(scope="session")
def digits_torch() -> Any:
    """The trained DigitsCNN (eval mode), loaded from the cache or trained once."""
    return _digits_module().get_trained_digits_cnn()


@pytest.fixture(scope="session")
def digits_onnx_path(digits_torch: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained DigitsCNN exported to an ONNX file (opset 17, dynamic batch)."""
    pytest.importorskip("onnx", reason="ONNX export needs the onnx package")
    path = tmp_path_factory.mktemp("digits") / "digits_cnn.onnx"
    return Path(_digits_module().export_onnx(digits_torch, path))


@pytest.fixture(scope="session")
def digits_onnx(digits_onnx_path: Path) -> Any:
    """The trained DigitsCNN as an onnx.ModelProto (skipped without onnx and onnxruntime)."""
    onnx = pytest.importorskip("onnx", reason="the ONNX backend needs onnx")
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime")
    return onnx.load(str(digits_onnx_path))


@pytest.fixture(scope="session")
def digits_openvino(digits_onnx_path: Path) -> Any:
    """The trained DigitsCNN as an openvino.Model, converted from the ONNX export."""
    pytest.importorskip("openvino", reason="the OpenVINO backend needs openvino")
    return _digits_module().to_openvino(digits_onnx_path)
