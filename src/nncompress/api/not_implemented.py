"""NNCF entry points nncompress does not implement yet: they exist so that NNCF code imports, and raise."""

from __future__ import annotations

from typing import Any, TypeVar

from nncompress.dataset import Dataset
from nncompress.errors import UnsupportedBackendError
from nncompress.parameters import PruneMode
from nncompress.scopes import IgnoredScope

TModel = TypeVar("TModel")


def prune(
    model: TModel,
    mode: PruneMode,
    *,
    ratio: float | None = None,
    ignored_scope: IgnoredScope | None = None,
    examples_inputs: Any | None = None,
) -> TModel:
    """Not implemented yet (pruning is planned with the training-time API)."""
    raise UnsupportedBackendError(f"prune(mode={getattr(mode, 'value', mode)!r}) is not implemented in nncompress yet")


def pruning_statistic(model: TModel) -> Any:
    """Not implemented yet (see ``prune``)."""
    raise UnsupportedBackendError("pruning_statistic is not implemented in nncompress yet (nor is prune)")


def batch_norm_adaptation(model: TModel, calibration_dataset: Dataset, *, num_iterations: int | None = None) -> TModel:
    """Implemented now: ``nncompress.training.bn_adaptation.batch_norm_adaptation`` (kept here for old imports)."""
    from nncompress.training.bn_adaptation import batch_norm_adaptation as adapt

    return adapt(model, calibration_dataset, num_iterations=num_iterations)
