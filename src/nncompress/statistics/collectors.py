"""Statistic collectors: reduce each tensor value as it arrives, aggregate across items."""

from __future__ import annotations

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
    """Aggregate per-call values stacked on axis 0."""
    simple = {"min": np.min, "max": np.max, "mean": np.mean, "median": np.median}
    if aggregator in simple:
        return simple[aggregator](values, axis=0)
    if aggregator in ("mean_no_outliers", "median_no_outliers"):
        lo, hi = np.quantile(values, q, axis=0), np.quantile(values, 1 - q, axis=0)
        kept = np.where((values >= lo) & (values <= hi), values, np.nan)
        return (np.nanmean if aggregator == "mean_no_outliers" else np.nanmedian)(kept, axis=0)
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

    def update(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float32)
        if self.channel_axis is not None:
            axes = _other_axes(value.ndim, (self.channel_axis,))
        elif self.batchwise and value.ndim > 1:
            axes = tuple(range(1, value.ndim))
        else:
            axes = None
        low = _reduce(value, axes, self.low.reducer, False, self.low.quantile)
        high = _reduce(value, axes, self.high.reducer, True, self.high.quantile)
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
        """(min, max): scalars per tensor, arrays per channel."""
        low = _aggregate(np.stack(self._lows), self.low.aggregator, self.low.quantile)
        high = _aggregate(np.stack(self._highs), self.high.aggregator, self.high.quantile)
        if self.low.clipping_value is not None:
            low = np.maximum(low, -abs(self.low.clipping_value))
        if self.high.clipping_value is not None:
            high = np.minimum(high, abs(self.high.clipping_value))
        return np.asarray(low, np.float32), np.asarray(high, np.float32)


class MeanCollector:
    """Per-channel mean over every axis but ``channel_axis``, across all items."""

    def __init__(self, channel_axis: int):
        self.channel_axis = channel_axis
        self._sum: np.ndarray | None = None
        self._count = 0

    def update(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float64)
        axes = _other_axes(value.ndim, (self.channel_axis,))
        total = value.sum(axis=axes)
        self._sum = total if self._sum is None else self._sum + total
        self._count += value.size // total.size

    def mean(self) -> np.ndarray:
        return (self._sum / max(self._count, 1)).astype(np.float32)


class AbsMaxCollector:
    """Per-channel maximum magnitude over every axis but ``channel_axis``, across all items."""

    def __init__(self, channel_axis: int):
        self.channel_axis = channel_axis
        self._max: np.ndarray | None = None

    def update(self, value: np.ndarray) -> None:
        value = np.asarray(value)
        axes = _other_axes(value.ndim, (self.channel_axis,))
        current = np.abs(value).max(axis=axes)
        self._max = current if self._max is None else np.maximum(self._max, current)

    def result(self) -> np.ndarray:
        return self._max.astype(np.float32)
