"""MinMax: quantizer ranges from collected statistics, turned into quantizer edits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nncompress.algorithms.quantization.placement import ActivationQuantizer, QuantizationSetup, WeightQuantizer
from nncompress.errors import CalibrationError
from nncompress.graph.edits import FakeQuantParams, QuantizeActivation, QuantizeWeight
from nncompress.hardware.rules import ASYM, SYM
from nncompress.numerics.qparams import asymmetric_range, symmetric_range
from nncompress.parameters import (
    QuantizationParameters,
    QuantizationScheme,
    RangeEstimatorParameters,
    StatisticsCollectorParameters,
)
from nncompress.statistics.collectors import EndEstimator, RangeCollector
from nncompress.statistics.runner import StatisticsPlan, tensor_label


@dataclass
class MinMaxOptions:
    activation_mode: str = SYM  # preset's choice: SYM (PERFORMANCE) or ASYM (MIXED)
    batchwise: bool = False
    activations: QuantizationParameters | None = None
    weights: QuantizationParameters | None = None
    activation_ranges: RangeEstimatorParameters | None = None
    weight_ranges: RangeEstimatorParameters | None = None


def estimators(
    user: RangeEstimatorParameters | None, symmetric: bool, per_channel: bool
) -> tuple[EndEstimator, EndEstimator]:
    """The (min, max) estimators: the user's choices over the defaults.

    Defaults: per-tensor ranges average each call's min and max (abs-max for symmetric quantizers);
    per-channel ranges take the global min and max.
    """
    user = user or RangeEstimatorParameters()
    low = _end(user.min, "min", "min" if per_channel else "mean")
    high = _end(user.max, "abs_max" if symmetric else "max", "max" if per_channel else "mean")
    return low, high


def _end(spec: StatisticsCollectorParameters, reducer: str, aggregator: str) -> EndEstimator:
    return EndEstimator(
        reducer=str(spec.statistics_type.value) if spec.statistics_type else reducer,
        aggregator=str(spec.aggregator_type.value) if spec.aggregator_type else aggregator,
        quantile=spec.quantile_outlier_prob,
        clipping_value=spec.clipping_value,
    )


class MinMaxQuantization:
    """Register range statistics, then produce quantizer edits for a placement ``setup``."""

    def __init__(self, setup: QuantizationSetup, options: MinMaxOptions):
        self.setup = setup
        self.options = options
        self._collectors: dict[int, RangeCollector] = {}

    def _mode(self, q: ActivationQuantizer) -> str:
        user = self.options.activations or QuantizationParameters()
        return _choose_mode(q.modes, user.mode, self.options.activation_mode)

    def register(self, plan: StatisticsPlan) -> None:
        for index, q in enumerate(self.setup.activations):
            low, high = estimators(self.options.activation_ranges, self._mode(q) == SYM, q.per_channel)
            collector = RangeCollector(low, high, 1 if q.per_channel else None, self.options.batchwise)
            self._collectors[index] = plan.add(q.tensor, collector)

    def activation_params(self) -> list[FakeQuantParams]:
        """Quantizer parameters from the collected ranges (CalibrationError for a range that is not finite)."""
        ranges = {i: _with_absmax(*_finite_range(c, self.setup.activations[i])) for i, c in self._collectors.items()}
        ranges = _unify(self.setup.activations, ranges)
        return [self._activation_range(q, ranges[i]) for i, q in enumerate(self.setup.activations)]

    def _activation_range(self, q: ActivationQuantizer, stats) -> FakeQuantParams:
        user = self.options.activations or QuantizationParameters()
        mode = self._mode(q)
        bits = user.num_bits or 8
        lo, hi, absmax = stats
        axis = 1 if q.per_channel else None
        if mode == ASYM:
            low, high, levels = asymmetric_range(lo, hi, bits)
            return FakeQuantParams(low, high, levels, axis, signed=False, narrow=False)
        narrow = bool(user.narrow_range)
        low, high, levels, signed = symmetric_range(lo, absmax, bits, narrow, user.signedness_to_force)
        return FakeQuantParams(low, high, levels, axis, signed=signed, narrow=narrow)

    def weight_params(self, q: WeightQuantizer, weight: np.ndarray) -> FakeQuantParams:
        """Symmetric per-channel narrow-range ranges of ``weight`` (half range for overflow fix)."""
        user = self.options.weights or QuantizationParameters()
        bits = user.num_bits or 8
        per_channel = user.per_channel is not False
        axis = q.axis % weight.ndim if per_channel else None
        w_min, w_max = self._weight_extremes(weight, axis)
        if user.mode is not None and QuantizationScheme(user.mode) is QuantizationScheme.ASYMMETRIC:
            low, high, levels = asymmetric_range(w_min, w_max, bits)
            return FakeQuantParams(low, high, levels, axis, signed=False, narrow=False)
        absmax = np.maximum(np.abs(w_min), np.abs(w_max))
        narrow = user.narrow_range is not False
        low, high, levels, _ = symmetric_range(w_min, absmax, bits, narrow, True)
        if q.half_range:  # overflow fix: weights use half of the integer grid
            return FakeQuantParams(2 * low, 2 * high, levels, axis, signed=True, narrow=narrow)
        return FakeQuantParams(low, high, levels, axis, signed=True, narrow=narrow)


    def _weight_extremes(self, weight: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
        if self.options.weight_ranges is None:
            axes = tuple(a for a in range(weight.ndim) if a != axis) if axis is not None else None
            return weight.min(axis=axes), weight.max(axis=axes)
        low, high = estimators(self.options.weight_ranges, False, axis is not None)
        collector = RangeCollector(low, high, axis)
        collector.update(weight)
        return collector.result()


def _finite_range(collector: RangeCollector, q: ActivationQuantizer) -> tuple[np.ndarray, np.ndarray]:
    """The collector's (min, max); a channel that never had a finite value cannot get a range."""
    low, high = collector.result()
    bad = ~(np.isfinite(low) & np.isfinite(high))
    if np.any(bad):
        where = f"channels {np.flatnonzero(bad)[:8].tolist()} of " if np.ndim(bad) else ""
        raise CalibrationError(
            f"{where}tensor {tensor_label(q.tensor)!r} had no finite value in any calibration item "
            "(every value was NaN or Inf): its quantizer range cannot be computed; check the calibration data"
        )
    return low, high


def _with_absmax(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return low, high, np.maximum(np.abs(high), np.abs(low)) if np.ndim(low) else np.float32(max(abs(high), abs(low)))


def _choose_mode(allowed: frozenset[str], user_mode, preset_mode: str) -> str:
    if user_mode is not None:
        wanted = SYM if QuantizationScheme(user_mode) is QuantizationScheme.SYMMETRIC else ASYM
        if wanted in allowed:
            return wanted
    return preset_mode if preset_mode in allowed else sorted(allowed)[0]


def _unify(quantizers: list[ActivationQuantizer], ranges: dict) -> dict:
    """Quantizers of one unified group share the widest range of their members."""
    groups: dict[int, list[int]] = {}
    for index, q in enumerate(quantizers):
        if q.unified is not None:
            groups.setdefault(q.unified, []).append(index)
    for members in groups.values():
        lo = np.float32(min(ranges[i][0] for i in members))
        hi = np.float32(max(ranges[i][1] for i in members))
        absmax = np.float32(max(ranges[i][2] for i in members))
        for i in members:
            ranges[i] = (lo, hi, absmax)
    return ranges


def quantizer_edits(setup: QuantizationSetup, act_params: list, weight_params: dict) -> list:
    """Edits for every quantizer of ``setup``; ``weight_params`` maps node name to its params."""
    edits: list = []
    for q, params in zip(setup.activations, act_params):
        edits.append(QuantizeActivation(q.tensor, q.consumers, params, q.name))
    for w in setup.weights:
        edits.append(QuantizeWeight(w.node, w.port, weight_params[w.node], w.name))
    return edits
