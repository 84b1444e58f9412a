"""Range-initialisation collectors of quantization-aware training (NNCF's six ``range_init`` types).

``make_range_collector(type, ...)`` returns a collector with ``update(x)`` (a numpy array or torch
tensor, one call per batch) and ``result() -> (low, high)``: 0-d arrays per tensor, 1-D arrays of C
values per channel (``per_channel_axis``). Types:

- ``min_max``: the minimum and maximum of every value seen;
- ``mean_min_max``: the mean over samples of each sample's minimum and maximum;
- ``mixed_min_max`` (NNCF's default): per-tensor activations take the maximum as the mean of the
  per-sample maxima (of magnitudes, for a symmetric quantizer) and the minimum as the global minimum
  (symmetric) or the mean of per-sample minima (asymmetric); weights and per-channel: ``min_max``;
- ``threesigma``: ``median ± 3·1.4826·MAD`` (MAD: median absolute deviation from the median);
- ``percentile``: the ``min_percentile``/``max_percentile`` percentiles of the values seen;
- ``mean_percentile``: the mean over samples of each sample's percentiles.

A "sample" is one item of the batch (axis 0) for per-tensor activations, and one ``update`` call for
weights and per-channel quantizers. Memory: the min/max and mean kinds keep running values only; the
``threesigma`` and ``percentile`` kinds need all values and keep a uniform random sample (reservoir,
seeded) of at most ``SAMPLE_CAP`` values per tensor (at least ``MIN_CHANNEL_SAMPLES`` per channel), so
on larger inputs their result is an estimate. Non-finite values (NaN, ±Inf) are skipped and counted in
``skipped``, as the post-training collectors do.
"""

from __future__ import annotations

import numpy as np

from nncompress.errors import CalibrationError, ValidationError
from nncompress.statistics.collectors import _finite_mask, _nan_quiet, _other_axes, _reduce, _reduce_finite

RANGE_INIT_TYPES = ("min_max", "mean_min_max", "mixed_min_max", "threesigma", "percentile", "mean_percentile")
SAMPLE_CAP = 2**20
MIN_CHANNEL_SAMPLES = 1024
MAD_TO_SIGMA = 1.4826


def _as_numpy(x) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


class _Base:
    """Shared: reduction axes (per channel or per sample) and the count of skipped values."""

    def __init__(self, per_channel_axis: int | None, batchwise: bool):
        self.axis = per_channel_axis
        self.batchwise = batchwise and per_channel_axis is None
        self.skipped = 0
        self.updates = 0

    def _axes(self, ndim: int):
        if self.axis is not None:
            return _other_axes(ndim, (self.axis,))
        return tuple(range(1, ndim)) if self.batchwise and ndim > 1 else None

    def _reduce(self, value: np.ndarray, reducer: str, upper: bool = False, q: float = 0.0) -> np.ndarray:
        """Per channel, per sample or whole-tensor reduction of the finite values (NaN where none)."""
        finite = _finite_mask(value)
        axes = self._axes(value.ndim)
        if finite is None:
            return np.asarray(_reduce(value, axes, reducer, upper, q), np.float64)
        return np.asarray(_reduce_finite(value, finite, axes, reducer, upper, q), np.float64)

    def _count_skipped(self, value: np.ndarray) -> None:
        self.skipped += value.size - int(np.count_nonzero(np.isfinite(value)))
        self.updates += 1

    def _check(self) -> None:
        if not self.updates:
            raise CalibrationError("range initialisation collected no values: no forward pass reached this quantizer")


class _Running:
    """One end's streaming aggregate of reduced values: min, max or mean (NaN entries skipped)."""

    def __init__(self, aggregator: str):
        self.aggregator = aggregator
        self.value = None
        self.count = None

    def add(self, reduced: np.ndarray, batched: bool) -> None:
        """Add one reduction (``batched``: one per sample, stacked on axis 0)."""
        values = reduced if batched else reduced[None]
        if self.aggregator == "mean":
            total, count = np.nansum(values, axis=0), np.sum(~np.isnan(values), axis=0)
            self.value = total if self.value is None else self.value + total
            self.count = count if self.count is None else self.count + count
            return
        part = _nan_quiet(np.nanmin if self.aggregator == "min" else np.nanmax, values, axis=0)
        combine = np.fmin if self.aggregator == "min" else np.fmax  # a NaN loses
        self.value = part if self.value is None else combine(self.value, part)

    def result(self) -> np.ndarray:
        if self.aggregator == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(self.count > 0, self.value / np.maximum(self.count, 1), np.nan)
        return self.value


class ReducedRangeCollector(_Base):
    """Each end: a reducer per sample/call/channel (min, max, abs_max, quantile) and a running aggregate."""

    def __init__(self, low: tuple[str, str], high: tuple[str, str], per_channel_axis: int | None,
                 batchwise: bool, low_q: float = 0.0, high_q: float = 0.0):
        super().__init__(per_channel_axis, batchwise)
        self.low_reducer, self.high_reducer = low[0], high[0]
        self.low_q, self.high_q = low_q, high_q
        self._low, self._high = _Running(low[1]), _Running(high[1])

    def update(self, x) -> None:
        value = _as_numpy(x)
        self._count_skipped(value)
        if self.batchwise and value.ndim <= 1:
            value = value.reshape(1, -1)  # one sample
        self._low.add(self._reduce(value, self.low_reducer, False, self.low_q), self.batchwise)
        self._high.add(self._reduce(value, self.high_reducer, True, self.high_q), self.batchwise)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._check()
        return np.asarray(self._low.result(), np.float32), np.asarray(self._high.result(), np.float32)


class SampledRangeCollector(_Base):
    """Keeps a bounded uniform sample of the values (per channel) and computes the range from it."""

    def __init__(self, kind: str, per_channel_axis: int | None, min_percentile: float, max_percentile: float,
                 seed: int = 0):
        super().__init__(per_channel_axis, False)
        self.kind, self.min_percentile, self.max_percentile = kind, min_percentile, max_percentile
        self._rng = np.random.default_rng(seed)
        self._sample: np.ndarray | None = None  # [channels, kept]
        self._seen = 0  # values seen per channel

    def update(self, x) -> None:
        value = _as_numpy(x)
        self._count_skipped(value)
        rows = np.moveaxis(value, self.axis, 0).reshape(value.shape[self.axis], -1) if self.axis is not None \
            else value.reshape(1, -1)
        rows = np.where(np.isfinite(rows), rows, np.nan)  # kept as NaN, ignored by the nan-aware result
        cap = max(SAMPLE_CAP // rows.shape[0], MIN_CHANNEL_SAMPLES)
        if self._sample is None:
            self._sample = rows[:, :0]
        if self._seen + rows.shape[1] <= cap:
            self._sample = np.concatenate([self._sample, rows], axis=1)
        else:  # a uniform cap-subset of old and new values: old ones drawn hypergeometrically
            keep_old = int(self._rng.hypergeometric(self._seen, rows.shape[1], cap))
            old = self._rng.choice(self._sample.shape[1], keep_old, replace=False)
            new = self._rng.choice(rows.shape[1], cap - keep_old, replace=False)
            self._sample = np.concatenate([self._sample[:, np.sort(old)], rows[:, np.sort(new)]], axis=1)
        self._seen += rows.shape[1]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._check()
        data = self._sample.astype(np.float64)
        if self.kind == "percentile":
            low, high = _nan_quiet(np.nanpercentile, data, [self.min_percentile, self.max_percentile], axis=1)
        else:  # threesigma
            median = _nan_quiet(np.nanmedian, data, axis=1)
            mad = _nan_quiet(np.nanmedian, np.abs(data - median[:, None]), axis=1)
            low, high = median - 3 * MAD_TO_SIGMA * mad, median + 3 * MAD_TO_SIGMA * mad
        shape = () if self.axis is None else (-1,)
        return np.asarray(low, np.float32).reshape(shape), np.asarray(high, np.float32).reshape(shape)


def make_range_collector(spec_type: str, *, per_channel_axis: int | None, min_percentile: float = 0.1,
                         max_percentile: float = 99.9, is_weights: bool, symmetric: bool = True):
    """The collector of range-init type ``spec_type`` for one quantizer's input.

    ``symmetric`` (used by ``mixed_min_max`` only) says whether the quantizer is symmetric.
    """
    if spec_type not in RANGE_INIT_TYPES:
        raise ValidationError(f"unknown range init type {spec_type!r}; valid types: {', '.join(RANGE_INIT_TYPES)}")
    if not 0.0 <= min_percentile < max_percentile <= 100.0:
        raise ValidationError(
            f"percentiles must satisfy 0 <= min_percentile < max_percentile <= 100; got {min_percentile}, "
            f"{max_percentile}"
        )
    samples = not is_weights and per_channel_axis is None  # per-sample reductions
    if spec_type in ("threesigma", "percentile"):
        return SampledRangeCollector(spec_type, per_channel_axis, min_percentile, max_percentile)
    if spec_type == "mean_percentile":
        return ReducedRangeCollector(("quantile", "mean"), ("quantile", "mean"), per_channel_axis, samples,
                                     min_percentile / 100, 1 - max_percentile / 100)
    if spec_type == "mean_min_max":
        return ReducedRangeCollector(("min", "mean"), ("max", "mean"), per_channel_axis, samples)
    if spec_type == "mixed_min_max" and samples:
        low = ("min", "min") if symmetric else ("min", "mean")
        high = ("abs_max", "mean") if symmetric else ("max", "mean")
        return ReducedRangeCollector(low, high, per_channel_axis, True)
    return ReducedRangeCollector(("min", "min"), ("max", "max"), per_channel_axis, False)
