"""Shared by the NaN/Inf cases of the bad-input matrix: one NaN pixel in one of 32 items must not change the
compressed model (statistics skip non-finite values, the report counts them); an input that is never finite is a
CalibrationError naming it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.contract.backends import BACKENDS, MLP, as_backend, dataset, run
from tests.contract.models import build

__all__ = ["BACKENDS", "MLP", "as_backend", "build", "dataset", "run"]

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

ITEMS, BAD_ITEM = 32, 5


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
