"""One statistics pass: every collector registered for a tensor sees each of its values."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from nncompress.errors import CalibrationError
from nncompress.graph.ir import TensorRef
from nncompress.progress import progress_iter


class StatisticsPlan:
    """Collectors per tensor, registered by algorithms before the pass."""

    def __init__(self):
        self.collectors: dict[TensorRef, list] = {}

    def add(self, tensor: TensorRef, collector):
        self.collectors.setdefault(tensor, []).append(collector)
        return collector

    def __bool__(self) -> bool:
        return bool(self.collectors)


def require_several_passes(dataset, reason: str) -> None:
    """Called before the first of several passes: a one-shot dataset raises ``OneShotDatasetError`` now."""
    check = getattr(dataset, "require_reiterable", None)
    if check is not None:
        check(reason)


def calibration_items(dataset, subset_size: int) -> Iterator:
    """The first ``subset_size`` model inputs of ``dataset``."""
    return itertools.islice(dataset.get_inference_data(), subset_size)


def run_statistics(adapter, model, plan: StatisticsPlan, dataset, subset_size: int, label: str) -> int:
    """Feed the first ``subset_size`` items through ``model``; returns how many items were used."""
    if not plan:
        return 0
    tensors = sorted(plan.collectors)
    count = 0

    def on_item(values: dict[TensorRef, object]) -> None:
        nonlocal count
        count += 1
        for tensor, collectors in plan.collectors.items():
            for collector in collectors:
                collector.update(values[tensor])

    total = _expected_total(dataset, subset_size)
    items = progress_iter(calibration_items(dataset, subset_size), total=total, label=label)
    adapter.collect(model, tensors, items, on_item)
    if count == 0:
        raise CalibrationError("the calibration dataset yielded no items; give at least one model input")
    return count


def _expected_total(dataset, subset_size: int) -> int | None:
    length = dataset.get_length()
    return subset_size if length is None else min(length, subset_size)
