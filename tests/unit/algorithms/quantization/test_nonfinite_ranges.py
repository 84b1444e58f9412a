"""Quantization algorithms on statistics with non-finite values: finite ranges or a named error."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.algorithms.quantization.min_max import MinMaxOptions, MinMaxQuantization
from nncompress.algorithms.quantization.placement import ActivationQuantizer, QuantizationSetup
from nncompress.errors import CalibrationError
from nncompress.graph.ir import TensorRef
from nncompress.hardware.rules import ASYM, SYM
from nncompress.statistics.runner import StatisticsPlan


def _minmax(per_channel: bool) -> tuple[MinMaxQuantization, StatisticsPlan]:
    q = ActivationQuantizer(TensorRef("relu", 0), None, frozenset({SYM, ASYM}), per_channel, ("conv",))
    minmax = MinMaxQuantization(QuantizationSetup(activations=[q]), MinMaxOptions(activation_mode=ASYM))
    plan = StatisticsPlan()
    minmax.register(plan)
    return minmax, plan


def _feed(plan: StatisticsPlan, *values) -> None:
    for value in values:
        for collector in plan.collectors[TensorRef("relu", 0)]:
            collector.update(np.asarray(value, np.float32))


def test_per_tensor_range_from_finite_values_only():
    minmax, plan = _minmax(per_channel=False)
    _feed(plan, [[0.0, np.nan, 2.0]], [[np.inf, 0.0, 4.0]])
    (params,) = minmax.activation_params()
    assert np.isfinite(params.low).all() and np.isfinite(params.high).all()
    assert float(params.low) == 0.0 and float(params.high) == pytest.approx(3.0, rel=1e-2)  # mean of 2 and 4


def test_per_channel_range_never_finite_in_a_channel_is_a_calibration_error():
    minmax, plan = _minmax(per_channel=True)
    _feed(plan, [[[1.0, 2.0], [np.nan, np.inf]]], [[[0.5, 3.0], [np.nan, np.nan]]])
    with pytest.raises(CalibrationError, match=r"channels \[1\] of tensor 'relu' had no finite value"):
        minmax.activation_params()
