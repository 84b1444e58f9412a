"""statistics.range_init: the six QAT range-init collectors vs hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.errors import CalibrationError, ValidationError
from nncompress.statistics import range_init
from nncompress.statistics.range_init import make_range_collector

# two batches of activations [N=2, 3]: per-sample minima -2, -1, -3 and maxima 3, 4, 1 (abs max 3, 4, 3)
BATCHES = [np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]]), np.array([[-3.0, 1.0, 0.0]])]


def _collect(kind: str, batches=BATCHES, **kwargs):
    options = {"per_channel_axis": None, "is_weights": False, **kwargs}
    collector = make_range_collector(kind, **options)
    for batch in batches:
        collector.update(batch)
    return tuple(float(v) if np.ndim(v) == 0 else v.tolist() for v in collector.result()), collector


@pytest.mark.parametrize(
    ("kind", "options", "expected"),
    [
        ("min_max", {}, (-3.0, 4.0)),
        ("mean_min_max", {}, (-2.0, 8 / 3)),
        ("mixed_min_max", {"symmetric": True}, (-3.0, 10 / 3)),  # global min; mean of per-sample abs max
        ("mixed_min_max", {"symmetric": False}, (-2.0, 8 / 3)),  # means of per-sample min and max
        ("mixed_min_max", {"is_weights": True}, (-3.0, 4.0)),  # weights: plain min/max
        ("mean_percentile", {"min_percentile": 50.0, "max_percentile": 100.0}, (0.5, 8 / 3)),  # medians 1, .5, 0
    ],
)
def test_reduced_kinds_by_hand(kind, options, expected):
    result, _ = _collect(kind, **options)
    assert result == pytest.approx(expected)


def test_percentile_and_threesigma_by_hand():
    # values: 1, -2, 3, 0.5, 4, -1, -3, 1, 0 -> sorted -3 -2 -1 0 0.5 1 1 3 4
    assert _collect("percentile", min_percentile=0.0, max_percentile=100.0)[0] == (-3.0, 4.0)
    assert _collect("percentile", min_percentile=25.0, max_percentile=75.0)[0] == pytest.approx((-1.0, 1.0))
    # median 0.5; |x - 0.5| sorted: 0 0.5 0.5 0.5 1.5 1.5 2.5 3.5 3.5 -> MAD 1.5
    low, high = _collect("threesigma")[0]
    assert (low, high) == pytest.approx((0.5 - 3 * 1.4826 * 1.5, 0.5 + 3 * 1.4826 * 1.5))


@pytest.mark.parametrize("kind", range_init.RANGE_INIT_TYPES)
def test_per_channel(kind):
    x = np.stack([np.arange(8.0).reshape(2, 4), -np.arange(8.0).reshape(2, 4) * 2], axis=1)  # [2, C=2, 4]
    collector = make_range_collector(kind, per_channel_axis=1, min_percentile=0.0, max_percentile=100.0,
                                     is_weights=False)
    collector.update(x)
    low, high = collector.result()
    assert low.shape == high.shape == (2,)
    if kind == "threesigma":  # channel 0: 0..7, median 3.5, MAD 2
        assert low[0] == pytest.approx(3.5 - 3 * 1.4826 * 2) and high[1] == pytest.approx(-7 + 3 * 1.4826 * 4)
    else:  # one call: every per-call reduction is the channel's min and max
        np.testing.assert_allclose(low, [0.0, -14.0])
        np.testing.assert_allclose(high, [7.0, 0.0])


@pytest.mark.parametrize("kind", range_init.RANGE_INIT_TYPES)
def test_non_finite_values_are_skipped(kind):
    clean, _ = _collect(kind, [BATCHES[0]])
    dirty = BATCHES[0].copy()
    dirty[0, 0] = np.nan  # replaces 1.0: no per-sample extreme changes
    dirty = np.concatenate([dirty, [[np.inf, np.nan], [-np.inf, np.nan]]], axis=1)
    result, collector = _collect(kind, [dirty])
    assert collector.skipped == 5
    if kind not in ("threesigma", "percentile", "mean_percentile"):
        assert result == pytest.approx(clean)
    assert np.all(np.isfinite(result))


def test_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    collector = make_range_collector("min_max", per_channel_axis=0, is_weights=True)
    collector.update(torch.tensor([[1.0, -2.0], [3.0, 5.0]], dtype=torch.float16))
    low, high = collector.result()
    assert low.tolist() == [-2.0, 3.0] and high.tolist() == [1.0, 5.0]


def test_sampled_kinds_keep_a_bounded_uniform_sample(monkeypatch):
    monkeypatch.setattr(range_init, "SAMPLE_CAP", 2000)
    monkeypatch.setattr(range_init, "MIN_CHANNEL_SAMPLES", 10)
    collector = make_range_collector("percentile", per_channel_axis=None, min_percentile=10.0, max_percentile=90.0,
                                     is_weights=False)
    for start in range(0, 100_000, 1000):  # values 0 .. 99999 in order: a biased sample would show
        collector.update(np.arange(start, start + 1000, dtype=np.float32))
    assert collector._sample.shape == (1, 2000)
    low, high = collector.result()
    assert low == pytest.approx(10_000, rel=0.1) and high == pytest.approx(90_000, rel=0.05)


def test_bad_arguments():
    with pytest.raises(ValidationError, match="min_max, mean_min_max, mixed_min_max"):
        make_range_collector("minmax", per_channel_axis=None, is_weights=False)
    with pytest.raises(ValidationError, match="percentile"):
        make_range_collector("percentile", per_channel_axis=None, min_percentile=90, max_percentile=10,
                             is_weights=False)
    with pytest.raises(CalibrationError, match="no values"):
        make_range_collector("min_max", per_channel_axis=None, is_weights=False).result()
