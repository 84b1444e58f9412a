"""MinMax: quantizer ranges from collected statistics, turned into quantizer edits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nncompress.algorithms.quantization.placement import ActivationQuantizer, QuantizationSetup, WeightQuantizer
from nncompress.graph.edits import FakeQuantParams, QuantizeActivation, QuantizeWeight
from nncompress.hardware.rules import ASYM, SYM
from nncompress.numerics.qparams import asymmetric_range, symmetric_range
from nncompress.parameters import QuantizationParameters, QuantizationScheme
from nncompress.statistics.collectors import MinMaxCollector
from nncompress.statistics.runner import StatisticsPlan


@dataclass
class MinMaxOptions:
    activation_mode: str = SYM  # preset's choice: SYM (PERFORMANCE) or ASYM (MIXED)
    batchwise: bool = False
    activations: QuantizationParameters | None = None
    weights: QuantizationParameters | None = None


class MinMaxQuantization:
    """Register range statistics, then produce quantizer edits for a placement ``setup``."""

    def __init__(self, setup: QuantizationSetup, options: MinMaxOptions):
        self.setup = setup
        self.options = options
        self._collectors: dict[int, MinMaxCollector] = {}

    def register(self, plan: StatisticsPlan) -> None:
        for index, q in enumerate(self.setup.activations):
            axis = 1 if q.per_channel else None
            self._collectors[index] = plan.add(q.tensor, MinMaxCollector(axis, self.options.batchwise))

    def activation_params(self) -> list[FakeQuantParams]:
        ranges = {i: c.minmax() for i, c in self._collectors.items()}
        ranges = _unify(self.setup.activations, ranges)
        return [self._activation_range(q, ranges[i]) for i, q in enumerate(self.setup.activations)]

    def _activation_range(self, q: ActivationQuantizer, stats) -> FakeQuantParams:
        user = self.options.activations or QuantizationParameters()
        mode = _choose_mode(q.modes, user.mode, self.options.activation_mode)
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
        axes = tuple(a for a in range(weight.ndim) if a != q.axis % weight.ndim) if per_channel else None
        w_min, w_max = weight.min(axis=axes), weight.max(axis=axes)
        axis = q.axis % weight.ndim if per_channel else None
        if user.mode is not None and QuantizationScheme(user.mode) is QuantizationScheme.ASYMMETRIC:
            low, high, levels = asymmetric_range(w_min, w_max, bits)
            return FakeQuantParams(low, high, levels, axis, signed=False, narrow=False)
        absmax = np.maximum(np.abs(w_min), np.abs(w_max))
        narrow = user.narrow_range is not False
        low, high, levels, _ = symmetric_range(w_min, absmax, bits, narrow, True)
        if q.half_range:  # overflow fix: weights use half of the integer grid
            return FakeQuantParams(2 * low, 2 * high, levels, axis, signed=True, narrow=narrow)
        return FakeQuantParams(low, high, levels, axis, signed=True, narrow=narrow)


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
