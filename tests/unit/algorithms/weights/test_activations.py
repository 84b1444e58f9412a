"""Activation statistics drop whole tokens that hold NaN/Inf (means, metrics and the Hessian agree)."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.algorithms.weights import activations
from nncompress.algorithms.weights.activations import ActivationStats, StatsNeeds
from nncompress.parameters import SensitivityMetric as Metric


@pytest.fixture(autouse=True)
def _flushes_of_512_tokens(monkeypatch):
    """The tests' updates of 600 tokens each flush into the Hessian sum (the default buffers 2048)."""
    monkeypatch.setattr(activations, "FLUSH_TOKENS", 512)

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


def _hessian_stats() -> ActivationStats:
    return ActivationStats(StatsNeeds(hessian=True), 10_000)


def test_hessian_sum_by_hand_is_symmetric():
    # tokens [1, 2, 0], [0, 1, 3]: sum x x^T = [[1, 2, 0], [2, 5, 3], [0, 3, 9]]
    stats = _hessian_stats()
    stats.update(np.array([[[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]]], np.float32))
    assert stats.hessian_sum is None  # still buffered
    stats._flush()
    want = [[1.0, 2.0, 0.0], [2.0, 5.0, 3.0], [0.0, 3.0, 9.0]]
    np.testing.assert_array_equal(stats.hessian_sum, want)
    np.testing.assert_array_equal(stats.hessian(), np.multiply(want, 2.0 / 2))
    np.testing.assert_array_equal(stats._gram, np.triu(want))  # one triangle kept, the other never written


def test_rank_k_updates_over_several_flushes_equal_the_full_product():
    rng = np.random.default_rng(3)
    parts = [rng.standard_normal((2, 300, 24)).astype(np.float32) for _ in range(5)]  # 3000 tokens: 5 flushes
    stats = _hessian_stats()
    for part in parts:
        stats.update(part)
    flat = np.concatenate([p.reshape(-1, 24) for p in parts]).astype(np.float64)
    assert stats.hessian_tokens + stats._pending_tokens == len(flat) and stats.hessian_tokens > 0
    # each update (600 tokens) is one flush; the sum is rounded like float32 per-flush products added in turn
    expected = None
    for part in parts:
        chunk = part.reshape(-1, 24)
        expected = chunk.T @ chunk if expected is None else expected + chunk.T @ chunk
    np.testing.assert_array_equal(stats.hessian_sum, expected)
    hessian = stats.hessian()
    np.testing.assert_allclose(hessian, 2.0 * flat.T @ flat / len(flat), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(hessian, hessian.T)
    assert hessian.dtype == np.float64 and stats._gram.dtype == np.float32


def test_scaled_inputs_leave_the_original_sums_alone():
    rng = np.random.default_rng(4)
    stats = ActivationStats(StatsNeeds(means=True, hessian=True), 100)
    stats.update(rng.standard_normal((1, 600, 5)).astype(np.float32))  # flushed
    stats.update(rng.standard_normal((1, 7, 5)).astype(np.float32))  # buffered
    before, pending = stats.hessian_sum.copy(), stats._pending_tokens
    inverse = np.array([1.0, 0.5, 2.0, 0.25, 4.0])
    scaled = stats.scaled_inputs(inverse)
    np.testing.assert_array_equal(stats.hessian_sum, before)  # the scaled copy flushed into its own sum
    assert stats._pending_tokens == pending
    np.testing.assert_allclose(scaled.hessian(), stats.hessian() * np.outer(inverse, inverse), rtol=1e-6)


def test_saved_hessian_sum_round_trips():
    rng = np.random.default_rng(5)
    stats = _hessian_stats()
    stats.update(rng.standard_normal((1, 600, 6)).astype(np.float32))
    loaded = ActivationStats.from_arrays(StatsNeeds(hessian=True), 100, stats.to_arrays())
    np.testing.assert_array_equal(loaded.hessian_sum, stats.hessian_sum)
    np.testing.assert_array_equal(loaded.hessian(), stats.hessian())


def test_symmetric_fills_the_lower_triangle_across_blocks():
    upper = np.triu(np.random.default_rng(6).standard_normal((600, 600)))  # three 256-blocks, the last partial
    full = activations._symmetric(np.asfortranarray(upper), np.float64)
    assert full.flags.c_contiguous
    np.testing.assert_array_equal(full, upper + np.triu(upper, 1).T)
    np.testing.assert_array_equal(activations._symmetric(np.array([[2.0, 3.0], [0.0, 5.0]])), [[2, 3], [3, 5]])
