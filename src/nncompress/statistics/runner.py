"""One statistics pass: every collector registered for a tensor sees each of its values.

The pass also counts non-finite activation values (``NonFiniteTally``): collectors skip them, the
report and one warning say how many were skipped, and a tensor that never had a finite value in the
whole pass is a ``CalibrationError``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from nncompress.errors import CalibrationError
from nncompress.graph.ir import TensorRef
from nncompress.log import logger
from nncompress.progress import progress_iter
from nncompress.report import NonFiniteSkips


def tensor_label(tensor: TensorRef) -> str:
    """How a tensor is named to the user: the producing node, and the output port when not 0."""
    return tensor.node if tensor.port == 0 else f"{tensor.node}:{tensor.port}"


class NonFiniteTally:
    """Non-finite values per tensor over one statistics pass (one ``isfinite`` per value)."""

    def __init__(self):
        self.values = 0
        self.per_tensor: dict[TensorRef, int] = {}
        self.first_item: dict[TensorRef, int] = {}  # item where the tensor's first non-finite value was
        self.items: set[int] = set()
        self._finite: set[TensorRef] = set()  # tensors that had at least one finite value

    def update(self, item: int, tensor: TensorRef, value) -> None:
        value = np.asarray(value)
        if value.dtype.kind not in "fc" or value.size == 0:
            self._finite.add(tensor)
            return
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
        if bad < value.size:
            self._finite.add(tensor)
        if bad:
            self.values += bad
            self.per_tensor[tensor] = self.per_tensor.get(tensor, 0) + bad
            self.first_item.setdefault(tensor, item)
            self.items.add(item)

    def without_finite_values(self) -> list[TensorRef]:
        """Tensors whose every value in the pass was NaN or Inf."""
        return [t for t in self.per_tensor if t not in self._finite]

    def summary(self) -> NonFiniteSkips | None:
        if not self.values:
            return None
        first = min(self.first_item, key=lambda t: self.first_item[t])  # dicts keep arrival order on ties
        return NonFiniteSkips(self.values, len(self.per_tensor), len(self.items), tensor_label(first),
                              self.first_item[first])


class StatisticsPlan:
    """Collectors per tensor, registered by algorithms before the pass; ``nonfinite`` after it."""

    def __init__(self):
        self.collectors: dict[TensorRef, list] = {}
        self.nonfinite = NonFiniteTally()

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
    """Feed the first ``subset_size`` items through ``model``; returns how many items were used.

    CalibrationError when a tensor had no finite value in any item.
    """
    if not plan:
        return 0
    tensors = sorted(plan.collectors)
    count = 0

    def on_item(values: dict[TensorRef, object]) -> None:
        nonlocal count
        for tensor, collectors in plan.collectors.items():
            plan.nonfinite.update(count, tensor, values[tensor])
            for collector in collectors:
                collector.update(values[tensor])
        count += 1

    total = _expected_total(dataset, subset_size)
    items = progress_iter(calibration_items(dataset, subset_size), total=total, label=label)
    adapter.collect(model, tensors, items, on_item)
    if count == 0:
        raise CalibrationError("the calibration dataset yielded no items; give at least one model input")
    _check_some_finite(plan.nonfinite, count)
    return count


def _check_some_finite(tally: NonFiniteTally, count: int) -> None:
    empty = tally.without_finite_values()
    if empty:
        tensor = empty[0]
        raise CalibrationError(
            f"tensor {tensor_label(tensor)!r} has no finite value in any of the {count} calibration items "
            f"(NaN/Inf first seen in item {tally.first_item[tensor]}"
            + (f"; {len(empty) - 1} more tensors alike" if len(empty) > 1 else "")
            + "): no statistics can be computed for it; check the calibration data (and the model's numerics)"
        )


def report_nonfinite(plan: StatisticsPlan, report) -> None:
    """Put what ``plan``'s pass skipped into ``report`` and log it once as a warning."""
    report.nonfinite = plan.nonfinite.summary()
    if report.nonfinite is not None:
        logger.warning("%s", report.nonfinite)


def _expected_total(dataset, subset_size: int) -> int | None:
    length = dataset.get_length()
    return subset_size if length is None else min(length, subset_size)
