"""Collectors skip NaN/Inf elements (and count them): values hand-computed from the finite elements."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.algorithms.quantization.min_max import estimators
from nncompress.parameters import RangeEstimatorParametersSet
from nncompress.statistics.collectors import AbsMaxCollector, MeanCollector, RangeCollector

NAN, INF = np.nan, np.inf


def _range(symmetric=False, per_channel=False, user=None, batchwise=False) -> RangeCollector:
    low, high = estimators(user, symmetric, per_channel)
    return RangeCollector(low, high, 1 if per_channel else None, batchwise)


def test_per_tensor_range_uses_finite_elements_and_counts_the_rest():
    c = _range()
    c.update(np.array([[-1.0, NAN, 2.0, INF]]))  # finite: -1, 2
    c.update(np.array([[-3.0, 4.0, -INF]]))  # finite: -3, 4
    assert c.result() == (-2.0, 3.0)  # mean of per-call min / max
    assert c.skipped == 3
    c.update(np.array([[NAN, INF]]))  # a call without a finite value takes no part in the mean
    assert c.result() == (-2.0, 3.0)
    assert c.skipped == 5


def test_symmetric_abs_max_ignores_infinities():
    c = _range(symmetric=True)
    c.update(np.array([[-INF, -5.0, 1.0]]))
    c.update(np.array([[3.0, INF, NAN]]))
    assert c.result() == (-1.0, 4.0)  # min: mean(-5, 3); abs max: mean(5, 3)


def test_per_channel_range_skips_per_channel_and_keeps_nan_for_a_channel_never_finite():
    c = _range(per_channel=True)
    c.update(np.array([[[1.0, NAN], [INF, -2.0], [NAN, NAN]]]))  # [1, 3 channels, 2]
    c.update(np.array([[[3.0, -1.0], [NAN, NAN], [INF, -INF]]]))
    lo, hi = c.result()
    np.testing.assert_array_equal(lo, [-1.0, -2.0, NAN])
    np.testing.assert_array_equal(hi, [3.0, -2.0, NAN])
    assert c.skipped == 8


def test_batchwise_range_skips_samples_without_finite_values():
    c = _range(batchwise=True)
    c.update(np.array([[-1.0, NAN, 3.0], [NAN, NAN, INF], [-3.0, 5.0, NAN]]))
    assert c.result() == (-2.0, 4.0)  # samples 0 and 2 only
    assert c.skipped == 5


@pytest.mark.parametrize(
    "user",
    [RangeEstimatorParametersSet.MINMAX, RangeEstimatorParametersSet.MEDIAN_MINMAX,
     RangeEstimatorParametersSet.MEAN_QUANTILE, RangeEstimatorParametersSet.MEAN_NO_OUTLIERS_MINMAX],
)
def test_every_estimator_gives_the_clean_result_with_non_finite_elements_added(user):
    rng = np.random.default_rng(0)
    items = [rng.normal(size=(1, 200)).astype(np.float32) for _ in range(6)]
    clean, dirty = _range(user=user), _range(user=user)
    for i, item in enumerate(items):
        clean.update(item)
        dirty.update(np.concatenate([item, [[NAN, INF, -INF][: i % 4]] if i % 4 else item[:, :0]], axis=1))
    dirty.update(np.full((1, 5), NAN))  # a call with no finite value at all
    np.testing.assert_allclose(dirty.result(), clean.result(), rtol=1e-6)
    assert dirty.skipped == 1 + 2 + 3 + 1 + 5


def test_clipping_still_applies_after_skipping():
    from nncompress.parameters import RangeEstimatorParameters, StatisticsCollectorParameters

    c = _range(user=RangeEstimatorParameters(max=StatisticsCollectorParameters(clipping_value=1.5)))
    c.update(np.array([[0.0, 2.0, INF]]))
    assert c.result() == (0.0, 1.5)


def test_mean_collector_averages_finite_values_per_channel():
    c = MeanCollector(channel_axis=1)
    c.update(np.array([[1.0, NAN], [3.0, 4.0]]))  # channel 0: 1, 3; channel 1: 4
    c.update(np.array([[INF, 2.0]]))  # channel 1: 2
    np.testing.assert_array_equal(c.mean(), [2.0, 3.0])
    assert c.skipped == 2


def test_mean_collector_channel_without_finite_values_is_nan():
    c = MeanCollector(channel_axis=1)
    c.update(np.array([[1.0, NAN], [3.0, -INF]]))
    np.testing.assert_array_equal(c.mean(), [2.0, NAN])


def test_mean_collector_unchanged_on_finite_data():
    c = MeanCollector(channel_axis=1)
    c.update(np.arange(12, dtype=np.float32).reshape(2, 3, 2))
    np.testing.assert_allclose(c.mean(), [0.5 + 3, 2.5 + 3, 4.5 + 3])
    assert c.skipped == 0


def test_abs_max_collector_skips_non_finite_values():
    c = AbsMaxCollector(channel_axis=1)
    c.update(np.array([[-5.0, NAN], [2.0, -INF]]))
    np.testing.assert_array_equal(c.result(), [5.0, NAN])  # channel 1 had no finite value yet
    c.update(np.array([[1.0, -3.0]]))
    np.testing.assert_array_equal(c.result(), [5.0, 3.0])
    assert c.skipped == 2
