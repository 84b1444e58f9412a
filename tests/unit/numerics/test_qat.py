"""numerics.qat: NNCF's QAT level tables, zero-point alignment, forward and gradients (numpy and torch)."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.numerics import qat

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((8, True), (-128, 127)),
        ((8, True, True), (-127, 127)),  # narrow signed: L + 1
        ((8, False), (0, 255)),
        ((8, False, True), (0, 254)),  # narrow unsigned: H - 1
        ((8, True, False, True), (-64, 63)),  # half range: 7 bits
        ((8, True, True, True), (-64, 63)),  # half range ignores narrow range
        ((8, False, False, True), (0, 127)),
        ((4, True), (-8, 7)),
        ((4, False, True), (0, 14)),
    ],
)
def test_level_tables(args, expected):
    assert qat.level_range(*args) == expected


def test_export_levels_double_a_half_range_grid():
    assert qat.export_level_range(-64, 63, True) == (-128, 127)
    assert qat.export_level_range(0, 127, True) == (0, 255)
    assert qat.export_level_range(-127, 127, False) == (-127, 127)


def test_symmetric_grid():
    step, low, span = qat.symmetric_grid(np.float32(1.27), -128, 127)
    assert step == pytest.approx(0.01)
    assert low == pytest.approx(-1.28) and span == pytest.approx(2.55)


def _aligned(low: float, span: float, levels=(0, 255)):
    step, zero_point, lo, r = qat.asymmetric_grid(np.float64(low), np.float64(span), *levels)
    return float(lo), float(lo + r), float(zero_point), float(step)


def test_tune_range_moves_high_when_zero_point_rounds_down():
    # ZP = round(0.3 * 255) = round(76.5) = 76: moving high gives the wider range
    lo, hi, zp, step = _aligned(-0.3, 1.0)
    assert (lo, hi) == pytest.approx((-0.3, 179 / 76 * 0.3))
    assert zp == 76 and -lo / step == pytest.approx(76)


def test_tune_range_moves_low_when_zero_point_rounds_up():
    # ZP = round(0.25 * 255) = round(63.75) = 64: low moves to 64/(64-255)*0.75
    lo, hi, zp, _ = _aligned(-0.25, 1.0)
    assert (lo, hi) == pytest.approx((-64 / 191 * 0.75, 0.75))
    assert zp == 64


@pytest.mark.parametrize(
    ("low", "span", "expected", "zp"),
    [
        (-0.2, 1.0, (-0.2, 0.8), 51),  # exactly on the grid: unchanged
        (0.5, 1.0, (0.0, 1.5), 0),  # all positive: low becomes 0 (ZP at the low edge)
        (-2.0, 1.0, (-2.0, 0.0), 255),  # all negative: high becomes 0 (ZP at the high edge)
        (-0.001, 1.001, (-0.001, 1.0), 0),  # ZP rounds to the edge: the range is kept
    ],
)
def test_tune_range_edges(low, span, expected, zp):
    lo, hi, got_zp, _ = _aligned(low, span)
    assert (lo, hi) == pytest.approx(expected, abs=1e-7)
    assert got_zp == zp


def test_forward_values_by_hand():
    x = np.array([-1.0, -0.26, 0.04, 0.16, 0.5], np.float32)
    step, low, span = qat.symmetric_grid(np.float32(0.3), -4, 3)  # step 0.1, range [-0.4, 0.3]
    y = qat.fake_quantize(x, step, None, -4, 3)
    np.testing.assert_allclose(y, [-0.4, -0.3, 0.0, 0.2, 0.3], atol=1e-7)
    step, zero_point, low, span = qat.asymmetric_grid(np.float32(-0.2), np.float32(0.7), 0, 7)
    assert zero_point == 2 and step == pytest.approx(0.1)
    y = qat.fake_quantize(np.array([-1.0, -0.14, 0.26, 0.9], np.float32), step, zero_point, 0, 7)
    np.testing.assert_allclose(y, [-0.2, -0.1, 0.3, 0.5], atol=1e-7)


def test_forward_equals_nncf_formula_on_aligned_ranges():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 1000)) * 2
    input_low, input_range = rng.uniform(-2, 0.5, size=(4, 1)), rng.uniform(0.5, 4, size=(4, 1))
    step, zero_point, lo, r = qat.asymmetric_grid(input_low, input_range, 0, 255)
    s = 255 / r
    nncf = np.round((np.clip(x, lo, lo + r) - lo) * s - np.round(-lo * s)) / s
    np.testing.assert_allclose(qat.fake_quantize(x, step, zero_point, 0, 255), nncf, atol=1e-9)


def test_range_gradients_by_hand():
    x = np.array([-1.0, -0.26, 0.16, 0.5], np.float32)  # below, in, in, above of [-0.4, 0.3]
    g = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    step, low, span = qat.symmetric_grid(np.float32(0.3), -4, 3)
    y = qat.fake_quantize(x, step, None, -4, 3)  # in range: -0.3, 0.2
    dx, d_low, d_range = qat.range_gradients(x, y, g, low, span, -4 / 3, (1,))
    np.testing.assert_array_equal(dx, [0, 2, 3, 0])
    in_range = (2 * (-0.3 + 0.26) + 3 * (0.2 - 0.16)) / 0.7
    np.testing.assert_allclose(d_range, [in_range + 4 * 1 + 1 * (-4 / 3)], rtol=1e-5)
    np.testing.assert_allclose(d_low, [1 + 4])


def test_range_gradients_sum_to_the_parameter_shape():
    rng = np.random.default_rng(1)
    x, g = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    low, span = np.full((1, 3, 1), -0.5), np.full((1, 3, 1), 1.0)
    y = qat.fake_quantize(x, span / 255, 128 - np.zeros_like(low), 0, 255)
    dx, d_low, d_range = qat.range_gradients(x, y, g, low, span, 0.0, (1, 3, 1))
    assert dx.shape == x.shape and d_low.shape == d_range.shape == (1, 3, 1)
    outside = (x < -0.5) | (x > 0.5)
    np.testing.assert_allclose(d_low.ravel(), (g * outside).sum(axis=(0, 2)))


def test_numpy_and_torch_agree():
    rng = np.random.default_rng(2)
    x, g = rng.normal(size=(3, 4, 5)).astype(np.float32), rng.normal(size=(3, 4, 5)).astype(np.float32)
    input_low = rng.uniform(-2, 0, size=(1, 4, 1)).astype(np.float32)
    input_range = rng.uniform(0.5, 3, size=(1, 4, 1)).astype(np.float32)
    results = []
    for convert in (np.asarray, torch.from_numpy):
        step, zero_point, low, span = qat.asymmetric_grid(convert(input_low), convert(input_range), 0, 255)
        y = qat.fake_quantize(convert(x), step, zero_point, 0, 255)
        grads = qat.range_gradients(convert(x), y, convert(g), low, span, 0.0, (1, 4, 1))
        results.append([np.asarray(v) for v in (step, zero_point, y, *grads)])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_safe_magnitude_and_storage():
    assert qat.safe_magnitude(np.float64(-0.5), False) == 0.5 + qat.EPS
    assert qat.safe_magnitude(np.float64(np.log(0.5)), True) == pytest.approx(0.5)
    assert qat.stored_magnitude(torch.tensor(0.5), True).item() == pytest.approx(np.log(0.5))


def test_symmetric_init_signedness_and_floor():
    signed, scale = qat.symmetric_init(np.array([-0.05, 0.0]), np.array([0.02, 0.5]))
    assert signed is True
    np.testing.assert_allclose(scale, [0.1, 0.5])  # 0.05 floored at 0.1
    assert qat.symmetric_init(np.array([0.0, 1.0]), np.array([2.0, 3.0]))[0] is False
    assert qat.symmetric_init(np.array([-1.0]), np.array([2.0]), signed=False) == (False, pytest.approx([2.0]))


def test_asymmetric_init_widens_tiny_channels():
    input_low, input_range = qat.asymmetric_init(np.array([0.0, 1.0]), np.array([10.0, 1.02]))
    np.testing.assert_allclose(input_low, [0.0, 0.96], rtol=1e-6)  # 0.02 widened to 1% of 10, centred
    np.testing.assert_allclose(input_range, [10.0, 0.1], rtol=1e-6)
