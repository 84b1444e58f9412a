"""Statistic collectors: reduce each tensor value as it arrives, aggregate across items.

Non-finite values (NaN, +-Inf) are skipped: every reduction runs over the finite elements only and
each collector counts what it skipped (``skipped``). A reduction slice (a call, a sample, a channel)
with no finite element yields NaN, which the across-calls aggregation skips in turn; a result that is
still NaN means the tensor (or channel) never had a finite value.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


def _other_axes(ndim: int, keep: tuple[int, ...]) -> tuple[int, ...]:
    keep = tuple(a % ndim for a in keep)
    return tuple(a for a in range(ndim) if a not in keep)


@dataclass(frozen=True)
class EndEstimator:
    """How one end of a range is estimated: a per-call reducer and an across-calls aggregator."""

    reducer: str = "min"  # min | max | abs_max | mean | quantile | abs_quantile
    aggregator: str = "mean"  # min | max | mean | median | mean_no_outliers | median_no_outliers
    quantile: float = 1e-4
    clipping_value: float | None = None


def _finite_mask(value: np.ndarray) -> np.ndarray | None:
    """The mask of finite elements, or None when every element is finite (the fast path)."""
    finite = np.isfinite(value)
    return None if finite.all() else finite


def _nan_quiet(function, *args, **kwargs):
    """``function`` with numpy's all-NaN-slice / empty-slice warnings silenced (NaN is the answer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return function(*args, **kwargs)


def _reduce_finite(value: np.ndarray, finite: np.ndarray, axes, reducer: str, upper: bool, q: float) -> np.ndarray:
    """``_reduce`` over the finite elements; NaN where a slice has none."""
    has = finite.any(axis=axes)
    if reducer in ("min", "max", "abs_max"):
        data = np.abs(value) if reducer == "abs_max" else value
        fill = np.inf if reducer == "min" else -np.inf
        reduced = np.where(finite, data, fill)
        reduced = reduced.min(axis=axes) if reducer == "min" else reduced.max(axis=axes)
    elif reducer == "mean":
        reduced = np.where(finite, value, 0).sum(axis=axes) / np.maximum(finite.sum(axis=axes), 1)
    elif reducer in ("quantile", "abs_quantile"):
        data = np.where(finite, np.abs(value) if reducer == "abs_quantile" else value, np.nan)
        reduced = _nan_quiet(np.nanquantile, data, 1 - q if upper else q, axis=axes)
    else:
        raise ValueError(f"unknown reducer {reducer!r}")
    return np.where(has, reduced, np.nan)


def _reduce(value: np.ndarray, axes, reducer: str, upper: bool, q: float) -> np.ndarray:
    if reducer == "min":
        return value.min(axis=axes)
    if reducer == "max":
        return value.max(axis=axes)
    if reducer == "abs_max":
        return np.abs(value).max(axis=axes)
    if reducer == "mean":
        return value.mean(axis=axes)
    if reducer in ("quantile", "abs_quantile"):
        data = np.abs(value) if reducer == "abs_quantile" else value
        return np.quantile(data, 1 - q if upper else q, axis=axes)
    raise ValueError(f"unknown reducer {reducer!r}")


def _aggregate(values: np.ndarray, aggregator: str, q: float) -> np.ndarray:
    """Aggregate per-call values stacked on axis 0, skipping NaN (calls without a finite value)."""
    simple = {"min": np.nanmin, "max": np.nanmax, "mean": np.nanmean, "median": np.nanmedian}
    if aggregator in simple:
        return _nan_quiet(simple[aggregator], values, axis=0)
    if aggregator in ("mean_no_outliers", "median_no_outliers"):
        lo, hi = _nan_quiet(np.nanquantile, values, [q, 1 - q], axis=0)
        kept = np.where((values >= lo) & (values <= hi), values, np.nan)
        return _nan_quiet(np.nanmean if aggregator == "mean_no_outliers" else np.nanmedian, kept, axis=0)
    raise ValueError(f"unknown aggregator {aggregator!r}")


class RangeCollector:
    """A quantizer's (min, max) from the values a tensor takes.

    Each call reduces the value (per channel on ``channel_axis``; per sample when ``batchwise``) with
    each end's reducer; ``result`` aggregates the calls with each end's aggregator.
    """

    def __init__(self, low: EndEstimator, high: EndEstimator, channel_axis: int | None = None, batchwise=False):
        self.low, self.high = low, high
        self.channel_axis = channel_axis
        self.batchwise = batchwise and channel_axis is None
        self._lows: list[np.ndarray] = []
        self._highs: list[np.ndarray] = []
        self.skipped = 0  # non-finite elements left out

    def update(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float32)
        if self.channel_axis is not None:
            axes = _other_axes(value.ndim, (self.channel_axis,))
        elif self.batchwise and value.ndim > 1:
            axes = tuple(range(1, value.ndim))
        else:
            axes = None
        finite = _finite_mask(value)
        if finite is None:
            low = _reduce(value, axes, self.low.reducer, False, self.low.quantile)
            high = _reduce(value, axes, self.high.reducer, True, self.high.quantile)
        else:
            self.skipped += value.size - int(np.count_nonzero(finite))
            low = _reduce_finite(value, finite, axes, self.low.reducer, False, self.low.quantile)
            high = _reduce_finite(value, finite, axes, self.high.reducer, True, self.high.quantile)
        if self.channel_axis is None:  # one value per call (or per sample): stack along axis 0
            self._lows.extend(np.atleast_1d(low))
            self._highs.extend(np.atleast_1d(high))
        else:
            self._lows.append(low)
            self._highs.append(high)

    @property
    def empty(self) -> bool:
        return not self._lows

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max): scalars per tensor, arrays per channel; NaN where no finite value was seen."""
        low = _aggregate(np.stack(self._lows), self.low.aggregator, self.low.quantile)
        high = _aggregate(np.stack(self._highs), self.high.aggregator, self.high.quantile)
        if self.low.clipping_value is not None:
            low = np.maximum(low, -abs(self.low.clipping_value))
        if self.high.clipping_value is not None:
            high = np.minimum(high, abs(self.high.clipping_value))
        return np.asarray(low, np.float32), np.asarray(high, np.float32)


class MeanCollector:
    """Per-channel mean of the finite values over every axis but ``channel_axis``, across all items."""

    def __init__(self, channel_axis: int):
        self.channel_axis = channel_axis
        self._sum: np.ndarray | None = None
        self._count: np.ndarray | int = 0  # finite values per channel
        self.skipped = 0

    def update(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float64)
        axes = _other_axes(value.ndim, (self.channel_axis,))
        finite = _finite_mask(value)
        if finite is None:
            total = value.sum(axis=axes)
            count = np.full(total.shape, value.size // max(total.size, 1))
        else:
            total = np.where(finite, value, 0.0).sum(axis=axes)
            count = finite.sum(axis=axes)
            self.skipped += value.size - int(count.sum())
        self._sum = total if self._sum is None else self._sum + total
        self._count = self._count + count

    def update_finite(self, value: np.ndarray) -> None:
        """``update`` for a value expected to be all finite: one float64-accumulated sum, no mask
        (falls back to ``update`` when the sums show a NaN/Inf)."""
        value = np.asarray(value)
        total = value.sum(axis=_other_axes(value.ndim, (self.channel_axis,)), dtype=np.float64)
        if not np.all(np.isfinite(total)):
            self.update(value)
            return
        self._sum = total if self._sum is None else self._sum + total
        self._count = self._count + value.size // max(total.size, 1)

    def mean(self) -> np.ndarray:
        """Per-channel means; NaN for a channel that never had a finite value."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._count > 0, self._sum / self._count, np.nan).astype(np.float32)


class AbsMaxCollector:
    """Per-channel maximum finite magnitude over every axis but ``channel_axis``, across all items."""

    def __init__(self, channel_axis: int):
        self.channel_axis = channel_axis
        self._max: np.ndarray | None = None
        self.skipped = 0

    def update(self, value: np.ndarray) -> None:
        value = np.asarray(value)
        axes = _other_axes(value.ndim, (self.channel_axis,))
        finite = _finite_mask(value)
        if finite is None:
            current = np.abs(value).max(axis=axes)
        else:
            self.skipped += value.size - int(np.count_nonzero(finite))
            current = _reduce_finite(value, finite, axes, "abs_max", True, 0.0)
        self._max = current if self._max is None else np.fmax(self._max, current)  # fmax: NaN loses

    def result(self) -> np.ndarray:
        """Per-channel maxima; NaN for a channel that never had a finite value."""
        return self._max.astype(np.float32)
