import numpy as np
import pytest

from nncompress.algorithms.quantization.bias_correction import weight_error_shift
from nncompress.graph.ir import WeightInfo
from nncompress.statistics.collectors import AbsMaxCollector, MeanCollector, MinMaxCollector


def test_per_tensor_minmax_is_mean_of_per_item_extremes():
    c = MinMaxCollector()
    c.update(np.array([[-1.0, 2.0]]))
    c.update(np.array([[-3.0, 4.0]]))
    lo, hi, absmax = c.minmax()
    assert (lo, hi, absmax) == (-2.0, 3.0, 3.0)


def test_batchwise_minmax_averages_per_sample():
    c = MinMaxCollector(batchwise=True)
    c.update(np.array([[-1.0, 2.0], [0.0, 6.0]]))
    lo, hi, _ = c.minmax()
    assert lo == -0.5 and hi == 4.0


def test_per_channel_minmax_is_global_extreme_per_channel():
    c = MinMaxCollector(channel_axis=1)
    c.update(np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    c.update(-np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2))
    lo, hi, absmax = c.minmax()
    np.testing.assert_array_equal(lo, [-3, -7])
    np.testing.assert_array_equal(hi, [3, 7])
    np.testing.assert_array_equal(absmax, [3, 7])


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
