"""NNCF entry points nncompress does not implement yet: they exist so that NNCF code imports, and raise."""

from __future__ import annotations

from typing import TypeVar

from nncompress.dataset import Dataset
from nncompress.errors import UnsupportedBackendError

TModel = TypeVar("TModel")


def batch_norm_adaptation(model: TModel, calibration_dataset: Dataset, *, num_iterations: int | None = None) -> TModel:
    """Not implemented yet (planned with the training-time API)."""
    raise UnsupportedBackendError("batch_norm_adaptation is not implemented in nncompress yet")
