"""NNCF entry points nncompress does not implement yet: they exist so that NNCF code imports, and raise."""

from __future__ import annotations

from typing import TypeVar

from nncompress.dataset import Dataset

TModel = TypeVar("TModel")


def batch_norm_adaptation(model: TModel, calibration_dataset: Dataset, *, num_iterations: int | None = None) -> TModel:
    """Implemented now: ``nncompress.training.bn_adaptation.batch_norm_adaptation`` (kept here for old imports)."""
    from nncompress.training.bn_adaptation import batch_norm_adaptation as adapt

    return adapt(model, calibration_dataset, num_iterations=num_iterations)
