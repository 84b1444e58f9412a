"""Activation statistics drop whole tokens that hold NaN/Inf (means, metrics and the Hessian agree)."""

from __future__ import annotations

import numpy as np

from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.parameters import SensitivityMetric as Metric

ALL = StatsNeeds(means=True, metrics=frozenset(Metric) - {Metric.WEIGHT_QUANTIZATION_ERROR}, hessian=True)


def test_token_with_a_non_finite_value_is_dropped_from_every_statistic():
    stats = ActivationStats(ALL, 100)
    stats.update(np.array([[[1.0, 2.0], [np.nan, 5.0], [3.0, 4.0]]], np.float32))  # token 1 dropped
    assert stats.tokens == [2] and stats.dropped_tokens == 1
    np.testing.assert_array_equal(stats.mean_matrix(), [[2.0, 3.0]])
    np.testing.assert_array_equal(stats.channel_max(), [2.0, 3.0])
    # sum x x^T over the kept tokens [1, 2] and [3, 4], times 2 / 2 tokens
    np.testing.assert_allclose(stats.hessian(), [[10.0, 14.0], [14.0, 20.0]])
    assert stats.metric(Metric.MEAN_ACTIVATION_VARIANCE) == 1.0  # variances over tokens: 1, 1
    assert stats.metric(Metric.MAX_ACTIVATION_VARIANCE) == 1.0
    assert stats.metric(Metric.MEAN_ACTIVATION_MAGNITUDE) == 3.5  # max |x| per channel: 3, 4
    assert stats.metric(Metric.HESSIAN_INPUT_ACTIVATION) == 15.0  # 2 * (1 + 4 + 9 + 16) / (2 tokens * 2)


def test_sample_without_finite_tokens_is_not_a_sample():
    stats = ActivationStats(ALL, 100)
    stats.update(np.array([[[np.inf, 1.0]], [[2.0, 4.0]]], np.float32))  # two samples of one token
    assert stats.count == 1 and stats.tokens == [1] and stats.dropped_tokens == 1
    np.testing.assert_array_equal(stats.mean_matrix(), [[2.0, 4.0]])
    np.testing.assert_allclose(stats.hessian(), [[8.0, 16.0], [16.0, 32.0]])


def test_finite_data_unchanged():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 4)).astype(np.float32)
    stats = ActivationStats(ALL, 100)
    stats.update(x)
    np.testing.assert_allclose(stats.mean_matrix(), x.mean(axis=1), rtol=1e-6)
    flat = x.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(stats.hessian(), 2 * flat.T @ flat / 15, rtol=1e-5)
    assert stats.dropped_tokens == 0
