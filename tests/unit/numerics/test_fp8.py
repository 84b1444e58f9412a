"""FP8 quantization numerics: hand-checked E4M3 / E5M2 rounding, saturation, scales, numpy == torch."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.numerics.fp8 import fake_convert, fp8_codes, fp8_round, fp8_scale
from nncompress.numerics.grids import E4M3_LEVELS, E5M2_LEVELS

# (value, E4M3, E5M2): steps are 0.125 / 0.25 on [1, 2), 0.25 / 0.5 on [2, 4), 2 / 4 on [16, 32)
HAND = [
    (1.1, 1.125, 1.0),
    (1.2, 1.25, 1.25),
    (3.3, 3.25, 3.5),
    (0.3, 0.3125, 0.3125),  # E4M3 step 1/32 on [0.25, 0.5): 9.6 steps -> 10; E5M2 step 1/16: 4.8 -> 5
    (1.0625, 1.0, 1.0),  # E4M3 tie between 1.0 and 1.125: the even mantissa
    (1.125, 1.125, 1.0),  # E5M2 tie between 1.0 and 1.25: the even mantissa
    (17.0, 16.0, 16.0),  # E4M3 tie between 16 and 18 -> 16
    (0.003, 0.00390625, 0.0029296875),  # E4M3 subnormal step 2^-9; E5M2 normal step 2^-11 at [2^-9, 2^-8)
    (500.0, 448.0, 512.0),  # E4M3 saturates at 448
    (1e5, 448.0, 57344.0),  # both saturate
    (-3.3, -3.25, -3.5),
]


@pytest.mark.parametrize("value,e4m3,e5m2", HAND)
def test_rounding_by_hand(value, e4m3, e5m2):
    x = np.array([value], np.float32)
    assert fp8_round(x, "f8e4m3")[0] == np.float32(e4m3)
    assert fp8_round(x, "f8e5m2")[0] == np.float32(e5m2)
    assert E4M3_LEVELS[fp8_codes(x, "f8e4m3")][0] == np.float32(e4m3)
    assert E5M2_LEVELS[fp8_codes(x, "f8e5m2")][0] == np.float32(e5m2)


def test_known_bit_patterns():
    assert fp8_codes(np.array([1.0, -2.0, 448.0], np.float32), "f8e4m3").tolist() == [0x38, 0xC0, 0x7E]
    assert fp8_codes(np.array([1.0, -2.0, 57344.0], np.float32), "f8e5m2").tolist() == [0x3C, 0xC0, 0x7B]


def test_scale_follows_the_reference():
    # scale = fp8_max / max(|min|, |max|); halved for per-tensor activations
    np.testing.assert_allclose(fp8_scale(np.array(-2.0), np.array(4.0), "f8e4m3", False), 112.0)
    np.testing.assert_allclose(fp8_scale(np.array(-2.0), np.array(4.0), "f8e4m3", True), 56.0)
    np.testing.assert_allclose(fp8_scale(np.array([-1.0, 0.0]), np.array([0.5, 8.0]), "f8e5m2", False),
                               [57344.0, 7168.0])
    assert np.isfinite(fp8_scale(np.array(0.0), np.array(0.0), "f8e4m3", True))  # an all-zero range


@pytest.mark.parametrize("destination", ["f8e4m3", "f8e5m2"])
def test_fake_convert_numpy_equals_torch(destination):
    torch = pytest.importorskip("torch")
    x = (np.random.default_rng(0).standard_normal((64, 32)) * 5).astype(np.float32)
    scale = np.float32(448.0 / 20.0)
    want = fake_convert(x, scale, None, destination)
    got = fake_convert(torch.from_numpy(x), torch.tensor(scale), None, destination).numpy()
    np.testing.assert_array_equal(got, want)
    # y = fp8(x * scale) / scale: e.g. 1.1 / 22.4 -> fp8(1.1) / 22.4
    np.testing.assert_allclose(fake_convert(np.array([1.1 / scale], np.float32), scale, None, "f8e4m3"),
                               [1.125 / scale], rtol=1e-6)


def test_unknown_destination_is_refused():
    with pytest.raises(ValueError, match="must be one of .*got 'f8e3m4'"):
        fp8_round(np.ones(2, np.float32), "f8e3m4")
