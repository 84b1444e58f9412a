"""Statistic collectors: reduce each tensor value as it arrives, aggregate across items."""

from __future__ import annotations

import numpy as np


def _other_axes(ndim: int, keep: tuple[int, ...]) -> tuple[int, ...]:
    keep = tuple(a % ndim for a in keep)
    return tuple(a for a in range(ndim) if a not in keep)


class MinMaxCollector:
    """Activation/weight ranges.

    Per tensor (``channel_axis`` None): each item's min, max and abs-max, averaged over items
    (per sample when ``batchwise``). Per channel: global min and max per channel.
    """

    def __init__(self, channel_axis: int | None = None, batchwise: bool = False):
        self.channel_axis = channel_axis
        self.batchwise = batchwise
        self._mins: list[np.ndarray] = []
        self._maxs: list[np.ndarray] = []
        self._absmaxs: list[np.ndarray] = []
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None

    def update(self, value: np.ndarray) -> None:
        value = np.asarray(value, dtype=np.float32)
        if self.channel_axis is not None:
            axes = _other_axes(value.ndim, (self.channel_axis,))
            lo, hi = value.min(axis=axes), value.max(axis=axes)
            self._min = lo if self._min is None else np.minimum(self._min, lo)
            self._max = hi if self._max is None else np.maximum(self._max, hi)
            return
        axes = tuple(range(1, value.ndim)) if self.batchwise and value.ndim > 1 else None
        lo, hi = np.atleast_1d(value.min(axis=axes)), np.atleast_1d(value.max(axis=axes))
        self._mins.append(lo)
        self._maxs.append(hi)
        self._absmaxs.append(np.maximum(np.abs(lo), np.abs(hi)))

    @property
    def empty(self) -> bool:
        return self._min is None and not self._mins

    def minmax(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(min, max, abs_max): scalars per tensor, arrays per channel."""
        if self.channel_axis is not None:
            return self._min, self._max, np.maximum(np.abs(self._min), np.abs(self._max))
        return (
            np.float32(np.mean(np.concatenate(self._mins))),
            np.float32(np.mean(np.concatenate(self._maxs))),
            np.float32(np.mean(np.concatenate(self._absmaxs))),
        )


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
