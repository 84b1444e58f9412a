"""Calls of the user's ``validation_fn``: one backend-ready model per candidate, results checked."""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nncompress.errors import ValidationError

logger = logging.getLogger("nncompress")


@dataclass
class Evaluation:
    """A metric (as returned) and its per-item values when ``validation_fn`` gave them."""

    metric: float
    values: list[float] | None


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if hasattr(value, "item") and not isinstance(value, numbers.Number):
        value = value.item()  # torch / numpy scalars
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValidationError(
            f"validation_fn must return a finite number or (number, per-sample values); {what} was {value!r}"
        )
    return float(value)


def _per_item(values: Any) -> list[float] | None:
    """Per-item values as floats, or None when absent or not scalars (e.g. per-item outputs)."""
    if values is None:
        return None
    try:
        items = list(values)
    except TypeError:
        return None
    out = []
    for v in items:
        array = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        if array.size != 1 or array.dtype.kind not in "biuf":
            return None
        out.append(float(array.reshape(())))
    return out


def parse_result(result: Any) -> Evaluation:
    """``validation_fn``'s result as an Evaluation (a bare number has no per-item values)."""
    if isinstance(result, (tuple, list)):
        if len(result) != 2:
            raise ValidationError(
                f"validation_fn must return a number or a pair (metric, per-sample values); got a "
                f"{type(result).__name__} of {len(result)}"
            )
        return Evaluation(_as_float(result[0], "the metric"), _per_item(result[1]))
    return Evaluation(_as_float(result, "the result"), None)


class Evaluator:
    """Runs ``validation_fn`` on backend-ready models and counts the calls and their time."""

    def __init__(self, adapter, validation_fn: Callable, dataset) -> None:
        self.validation_fn = validation_fn
        self.dataset = dataset
        self.calls = 0
        self.seconds = 0.0
        self.prepare: Callable[[Any], Any] = adapter.prepare_for_validation  # part of the adapter contract

    def __call__(self, model: Any, indices: Sequence[int] | None = None) -> Evaluation:
        """Evaluate ``model`` (prepared once here) on all items, or on the sorted ``indices``."""
        start = time.perf_counter()
        ready = self.prepare(model)
        data = self.dataset.get_data(None if indices is None else sorted(indices))
        result = self.validation_fn(ready, data)
        self.calls += 1
        self.seconds += time.perf_counter() - start
        return parse_result(result)
