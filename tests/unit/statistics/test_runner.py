"""The statistics pass counts non-finite values and rejects a tensor that never had a finite one."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import nncompress as nncf
from nncompress.errors import CalibrationError
from nncompress.graph.ir import TensorRef
from nncompress.report import CompressionReport
from nncompress.statistics.collectors import MeanCollector
from nncompress.statistics.runner import StatisticsPlan, report_nonfinite, run_statistics

A, B = TensorRef("a"), TensorRef("b", 1)


class _Adapter:
    """Each item is already the {tensor: value} dict the model would compute."""

    def collect(self, model, tensors, items, on_item):
        for item in items:
            on_item(item)


def _pass(items: list[dict]) -> tuple[StatisticsPlan, dict]:
    plan = StatisticsPlan()
    means = {t: plan.add(t, MeanCollector(channel_axis=1)) for t in (A, B)}
    run_statistics(_Adapter(), None, plan, nncf.Dataset(items), 100, "test")
    return plan, means


def _item(a, b) -> dict:
    return {A: np.asarray(a, np.float32), B: np.asarray(b, np.float32)}


def test_tally_counts_values_tensors_items_and_names_the_first(caplog):
    items = [
        _item([[1.0, 2.0]], [[1.0, 1.0]]),
        _item([[1.0, 2.0]], [[np.inf, 3.0]]),
        _item([[np.nan, 4.0]], [[np.nan, -np.inf]]),
        _item([[3.0, 6.0]], [[5.0, 1.0]]),
    ]
    plan, means = _pass(items)
    np.testing.assert_allclose(means[A].mean(), [5 / 3, 3.5], rtol=1e-6)
    np.testing.assert_allclose(means[B].mean(), [3.0, 5 / 3], rtol=1e-6)
    report = CompressionReport()
    with caplog.at_level(logging.WARNING, logger="nncompress"):
        report_nonfinite(plan, report)
    skips = report.nonfinite
    assert (skips.values, skips.tensors, skips.items) == (4, 2, 2)
    assert (skips.first_tensor, skips.first_item) == ("b:1", 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "4 non-finite (NaN/Inf) activation values in 2 tensors of 2 calibration items" in warnings[0].getMessage()
    assert "tensor 'b:1' in item 1" in str(report)


def test_clean_pass_reports_nothing(caplog):
    plan, _ = _pass([_item([[1.0, 2.0]], [[1.0, 1.0]])])
    report = CompressionReport()
    with caplog.at_level(logging.WARNING, logger="nncompress"):
        report_nonfinite(plan, report)
    assert report.nonfinite is None and not caplog.records


def test_tensor_without_any_finite_value_is_a_calibration_error_naming_it():
    items = [_item([[1.0, 2.0]], [[1.0, 1.0]])] + [_item([[1.0, 2.0]], [[np.nan, np.inf]])]
    _pass(items)  # b had finite values in item 0: fine
    items = [_item([[1.0, 2.0]], [[np.nan, np.nan]]), _item([[1.0, 2.0]], [[-np.inf, np.nan]])]
    with pytest.raises(CalibrationError, match=r"tensor 'b:1' has no finite value in any of the 2 .*item 0"):
        _pass(items)
