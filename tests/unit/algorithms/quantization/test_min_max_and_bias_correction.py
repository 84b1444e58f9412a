import numpy as np
import pytest

from nncompress.algorithms.quantization.bias_correction import weight_error_shift
from nncompress.algorithms.quantization.min_max import estimators
from nncompress.graph.ir import WeightInfo
from nncompress.parameters import (
    AggregatorType,
    RangeEstimatorParameters,
    RangeEstimatorParametersSet,
    StatisticsCollectorParameters,
)
from nncompress.statistics.collectors import AbsMaxCollector, MeanCollector, RangeCollector


def _collector(symmetric=False, per_channel=False, user=None, batchwise=False):
    low, high = estimators(user, symmetric, per_channel)
    return RangeCollector(low, high, 1 if per_channel else None, batchwise)


def test_default_per_tensor_range_is_mean_of_per_item_extremes():
    c = _collector()
    c.update(np.array([[-1.0, 2.0]]))
    c.update(np.array([[-3.0, 4.0]]))
    assert c.result() == (-2.0, 3.0)
    sym = _collector(symmetric=True)
    sym.update(np.array([[-1.0, 2.0]]))
    sym.update(np.array([[-5.0, 4.0]]))
    assert sym.result() == (-3.0, 3.5)  # abs-max reducer for the upper end


def test_batchwise_range_averages_per_sample():
    c = _collector(batchwise=True)
    c.update(np.array([[-1.0, 2.0], [0.0, 6.0]]))
    assert c.result() == (-0.5, 4.0)


def test_default_per_channel_range_is_global_extreme_per_channel():
    c = _collector(per_channel=True)
    c.update(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    c.update(-np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    lo, hi = c.result()
    np.testing.assert_array_equal(lo, [-3, -7])
    np.testing.assert_array_equal(hi, [3, 7])


def test_user_estimators_median_minmax_quantile_and_clipping():
    items = [np.array([[v, 10 * v]]) for v in (1.0, 2.0, 9.0)]
    cases = {
        RangeEstimatorParametersSet.MINMAX: (1.0, 90.0),
        RangeEstimatorParametersSet.MEDIAN_MINMAX: (2.0, 20.0),
        RangeEstimatorParameters(max=StatisticsCollectorParameters(clipping_value=15.0)): (4.0, 15.0),
    }
    for user, expected in cases.items():
        c = _collector(user=user)
        for item in items:
            c.update(item)
        np.testing.assert_allclose(c.result(), expected)
    quantile = _collector(user=RangeEstimatorParametersSet.MEAN_QUANTILE)
    quantile.update(np.linspace(0, 1, 10001)[None])
    np.testing.assert_allclose(quantile.result(), (1e-4, 1 - 1e-4), atol=1e-6)


def test_mean_no_outliers_drops_extreme_calls():
    user = RangeEstimatorParameters(
        max=StatisticsCollectorParameters(aggregator_type=AggregatorType.MEAN_NO_OUTLIERS, quantile_outlier_prob=0.1)
    )
    c = _collector(user=user)
    for v in (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0):
        c.update(np.array([[0.0, v]]))
    assert c.result()[1] == 1.0


def test_mean_and_absmax_collectors_reduce_all_but_channel_axis():
    m, a = MeanCollector(-1), AbsMaxCollector(-1)
    for value in (np.array([[[1.0, -2.0]]]), np.array([[[3.0, 6.0]], [[5.0, -10.0]]])):
        m.update(value)
        a.update(value)
    np.testing.assert_allclose(m.mean(), [3.0, -2.0])
    np.testing.assert_allclose(a.result(), [5.0, 10.0])


def test_weight_error_shift_linear_matches_matrix_product():
    rng = np.random.default_rng(0)
    delta = rng.normal(size=(4, 3)).astype(np.float32)  # [out, in]
    x = rng.normal(size=3).astype(np.float32)
    shift = weight_error_shift(delta, WeightInfo(1, (4, 3), out_axis=0, in_axis=1), x)
    np.testing.assert_allclose(shift, delta @ x, rtol=1e-5)
    shift_t = weight_error_shift(delta.T.copy(), WeightInfo(1, (3, 4), out_axis=1, in_axis=0), x)
    np.testing.assert_allclose(shift_t, delta @ x, rtol=1e-5)


def test_weight_error_shift_conv_sums_kernel_and_respects_groups():
    delta = np.ones((4, 1, 3, 3), dtype=np.float32)
    delta[1] *= 2
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    shift = weight_error_shift(delta, WeightInfo(1, delta.shape, 0, 1, groups=4), x)
    np.testing.assert_allclose(shift, [9.0, 36.0, 27.0, 36.0])
    dense = np.ones((2, 4, 1, 1), dtype=np.float32)
    np.testing.assert_allclose(weight_error_shift(dense, WeightInfo(1, dense.shape, 0, 1), x), [10.0, 10.0])


def test_weight_error_shift_rejects_mismatched_input():
    with pytest.raises(ValueError):
        weight_error_shift(np.ones((2, 3)), WeightInfo(1, (2, 3), 0, 1), np.ones(4))
