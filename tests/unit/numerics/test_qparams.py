import numpy as np
import pytest

from nncompress.graph.edits import FakeQuantParams
from nncompress.numerics.qparams import (
    asymmetric_range,
    fake_quantize,
    integer_grid,
    quantize_to_int,
    scale_zero_point,
    symmetric_range,
)


def test_integer_grids():
    assert integer_grid(8, True, False) == (-128, 127)
    assert integer_grid(8, True, True) == (-127, 127)
    assert integer_grid(8, False, False) == (0, 255)
    assert integer_grid(4, True, False) == (-8, 7)


def test_symmetric_signed_full_range_extends_low_by_128_over_127():
    low, high, levels, signed = symmetric_range(-1.0, 2.54, bits=8, narrow=False)
    assert signed and levels == 256
    assert high == pytest.approx(2.54)
    assert low == pytest.approx(-2.54 * 128 / 127)
    scale, zp, _, _ = scale_zero_point(FakeQuantParams(low, high, levels, signed=True))
    assert scale == pytest.approx(0.02)
    assert zp == 0


def test_symmetric_unsigned_when_min_non_negative():
    low, high, levels, signed = symmetric_range(0.0, 5.1, bits=8)
    assert not signed and low == 0 and high == pytest.approx(5.1) and levels == 256
    scale, zp, lo, hi = scale_zero_point(FakeQuantParams(low, high, levels, signed=False))
    assert scale == pytest.approx(0.02) and zp == 0 and (lo, hi) == (0, 255)


def test_symmetric_zero_filter_lifts_tiny_channels():
    low, high, _, _ = symmetric_range(np.array([-1, -1]), np.array([10.0, 0.0]), narrow=True)
    np.testing.assert_allclose(high, [10.0, 0.1])
    np.testing.assert_allclose(low, [-10.0, -0.1])


def test_asymmetric_range_contains_zero_exactly():
    low, high, levels = asymmetric_range(-0.3, 2.0)
    params = FakeQuantParams(low, high, levels, signed=False)
    assert fake_quantize(np.zeros(1, np.float32), params)[0] == 0.0
    assert low <= -0.3 + 1e-6 and high >= 2.0 - 1e-6
    scale, zp, _, _ = scale_zero_point(params)
    assert zp == pytest.approx(np.round(0.3 / scale), abs=1)


def test_asymmetric_range_positive_only_starts_at_zero():
    low, high, _ = asymmetric_range(1.0, 3.0)
    assert low == 0.0 and high == pytest.approx(3.0)


def test_asymmetric_tiny_range_is_widened():
    low, high, _ = asymmetric_range(0.5, 0.5)
    assert high - low > 8e-4


def test_quantize_to_int_per_channel_round_trip():
    w = np.array([[1.27, -0.5], [0.1, -0.254]], dtype=np.float32)
    absmax = np.abs(w).max(axis=1)
    low, high, levels, _ = symmetric_range(w.min(axis=1), absmax, narrow=True, signed=True)
    params = FakeQuantParams(low, high, levels, axis=0, signed=True, narrow=True)
    q, scale, zp = quantize_to_int(w, params)
    assert q.dtype == np.int8 and zp.dtype == np.int8
    np.testing.assert_array_equal(q, [[127, -50], [50, -127]])
    np.testing.assert_allclose(scale, [0.01, 0.002], rtol=1e-6)
    np.testing.assert_allclose(q * scale[:, None], fake_quantize(w, params), rtol=1e-6, atol=1e-7)


def test_fake_quantize_clamps_and_snaps():
    params = FakeQuantParams(np.float32(0.0), np.float32(2.55), 256, signed=False)
    x = np.array([-1.0, 0.014, 0.016, 3.0], dtype=np.float32)
    np.testing.assert_allclose(fake_quantize(x, params), [0.0, 0.01, 0.02, 2.55], atol=1e-6)
