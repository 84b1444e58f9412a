"""Low-bit numerics: exact packing, code grids, error bounds (property tests), stored form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nncompress.numerics.lowbit import (
    E2M1_LEVELS,
    NF4_LEVELS,
    code_range,
    encode,
    grouped_shape,
    pack_4bit,
    reduction_axes,
    unpack_4bit,
)
from nncompress.parameters import CompressWeightsMode as M

FOUR_BIT = [M.INT4_SYM, M.INT4_ASYM, M.NF4, M.MXFP4]
ALL = [M.INT8_ASYM, M.INT8_SYM, *FOUR_BIT]


@given(hnp.arrays(np.uint8, st.integers(0, 257), elements=st.integers(0, 15)))
def test_pack_unpack_unsigned_exact(codes):
    packed = pack_4bit(codes)
    assert packed.dtype == np.uint8 and packed.size == (codes.size + 1) // 2
    np.testing.assert_array_equal(unpack_4bit(packed, codes.size), codes)


@given(hnp.arrays(np.int8, st.integers(0, 257), elements=st.integers(-8, 7)))
def test_pack_unpack_signed_exact(codes):
    np.testing.assert_array_equal(unpack_4bit(pack_4bit(codes), codes.size, signed=True), codes)


def test_pack_order_low_nibble_first():
    assert pack_4bit(np.array([1, 2, 3], np.uint8)).tolist() == [0x21, 0x03]
    assert pack_4bit(np.array([-1, 7], np.int8)).tolist() == [0x7F]


def test_grouped_layout():
    assert grouped_shape((6, 256), 1, 128) == (6, 2, 128)
    assert grouped_shape((256, 6), 0, 64) == (4, 64, 6)
    assert grouped_shape((6, 256), 1, -1) == (6, 256)
    assert reduction_axes(3, 1, 128) == (2,)
    assert reduction_axes(4, 1, -1, out_axis=0) == (1, 2, 3)  # conv OIHW: one scale per output channel
    assert reduction_axes(5, 2, -1, out_axis=0) == (2, 3, 4)  # OpenVINO GroupConvolution [G, O/G, I/G, k, k]


def _weights(draw_shape=(8, 64)):
    return hnp.arrays(
        np.float32, draw_shape, elements=st.floats(-4, 4, width=32, allow_nan=False, allow_infinity=False)
    )


@settings(max_examples=60, deadline=None)
@given(_weights(), st.sampled_from(ALL))
def test_error_bounds(weight, mode):
    """|w - w^| is at most one step for integer modes (the rounded zero point or the clipped top code can
    cost up to one step at the range ends; half a step inside), half the widest grid gap for NF4/E2M1."""
    group = -1 if mode in (M.INT8_ASYM, M.INT8_SYM) else 32
    compressed = encode(weight, mode, axis=1, group_size=group, out_axis=0)
    error = np.abs(compressed.decompress() - weight).reshape(compressed.stored_shape)
    scale = np.abs(compressed.scale)
    if mode in (M.INT8_ASYM, M.INT4_ASYM, M.INT8_SYM, M.INT4_SYM):
        bound = scale * 1.07  # plus the float16 rounding of the scale times up to 255 steps
    else:
        levels = NF4_LEVELS if mode is M.NF4 else np.unique(np.abs(E2M1_LEVELS))
        bound = scale * np.max(np.diff(np.sort(levels))) / 2 * (1 + 1e-3)
    assert np.all(error <= bound + 1e-7)


@pytest.mark.parametrize("mode", ALL)
def test_codes_in_range_and_roundtrip(mode):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 96)).astype(np.float32)
    group = -1 if mode in (M.INT8_ASYM, M.INT8_SYM) else 32
    compressed = encode(weight, mode, 1, group, 0)
    codes = compressed.codes()
    low, high = code_range(mode)
    assert codes.shape == compressed.stored_shape and codes.min() >= low and codes.max() <= high
    # encoding the dequantized weight with the same scales gives the same codes (stable storage)
    again = encode(compressed.decompress(), mode, 1, group, 0, compressed.scale, compressed.zero_point)
    np.testing.assert_array_equal(again.codes(), codes)
    # 4-bit scales are float16 values (powers of two for MXFP4); per-channel 8-bit ones stay float32
    assert compressed.scale_dtype == ("float16" if mode in (M.INT4_SYM, M.INT4_ASYM, M.NF4) else "float32") or (
        mode is M.MXFP4
    )
    if mode is M.MXFP4:
        np.testing.assert_array_equal(np.exp2(np.round(np.log2(compressed.scale))), compressed.scale)


def test_symmetric_uses_the_full_signed_grid():
    weight = np.array([[-1.0, 0.5, 0.25, 0.0] * 8], np.float32)
    compressed = encode(weight, M.INT4_SYM, 1, 32, 0)
    assert compressed.codes().min() == -8  # the largest magnitude maps to -8
    np.testing.assert_allclose(compressed.decompress(), weight, atol=1e-6)


def test_asymmetric_constant_group_is_exact():
    weight = np.full((2, 32), 0.3, np.float32)
    compressed = encode(weight, M.INT4_ASYM, 1, 32, 0)
    np.testing.assert_allclose(compressed.decompress(), weight, rtol=1e-3)


def test_float_grids_round_to_nearest_level():
    weight = np.array([[1.0, -1.0, 0.4407098, 0.0795803, -0.6961928] + [0.0] * 27], np.float32)
    nf4 = encode(weight, M.NF4, 1, 32, 0)
    np.testing.assert_allclose(nf4.decompress(), weight, atol=1e-6)
    e2m1 = encode(np.array([[6.0, 5.0, 2.5, 0.25, -0.75] + [0.0] * 27], np.float32), M.MXFP4, 1, 32, 0)
    # ties go to the even code: 5 -> 4, 2.5 -> 2, 0.25 -> 0, -0.75 -> -1 (ties-to-even in E2M1 codes)
    np.testing.assert_allclose(e2m1.decompress()[0, :5], [6.0, 4.0, 2.0, 0.0, -1.0])


def test_tiny_weights_keep_float32_scales():
    weight = np.full((4, 32), 8e-5, np.float32)
    weight[:, ::2] = -3e-5
    compressed = encode(weight, M.INT4_ASYM, 1, 32, 0)
    assert compressed.scale_dtype == "float32"
    np.testing.assert_allclose(compressed.decompress(), weight, atol=float(compressed.scale.max()))


@pytest.mark.parametrize("mode", [M.INT4_SYM, M.INT4_ASYM, M.NF4])
def test_range_search_never_increases_weight_error(mode):
    weight = np.random.default_rng(3).standard_t(3, (64, 256)).astype(np.float32)  # heavy tails
    plain = encode(weight, mode, 1, 128, 0)
    searched = encode(weight, mode, 1, 128, 0, search=True)
    plain_error = ((plain.decompress() - weight) ** 2).reshape(64, 2, 128).sum(-1)
    searched_error = ((searched.decompress() - weight) ** 2).reshape(64, 2, 128).sum(-1)
    assert np.all(searched_error <= plain_error * (1 + 1e-5)) and searched_error.sum() < 0.95 * plain_error.sum()


def test_nbytes_shrink():
    weight = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    assert encode(weight, M.INT8_ASYM, 1, -1, 0).nbytes < weight.nbytes / 3.9
    assert encode(weight, M.INT4_SYM, 1, 128, 0).nbytes < weight.nbytes / 7.5


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 300), elements=st.floats(-7, 7, width=32)))
def test_grid_lookup_equals_nearest_level(values):
    from nncompress.numerics.lowbit import E2M1_MAGNITUDES, _nearest_level

    values = np.concatenate([values, (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2]).astype(np.float32)
    mids = ((NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2).astype(np.float32)
    clipped = np.clip(values, -1.5, 1.5)
    np.testing.assert_array_equal(_nearest_level(clipped, M.NF4), np.searchsorted(mids, clipped, side="left"))
    magnitude = np.abs(values)
    half = (E2M1_MAGNITUDES[1:] + E2M1_MAGNITUDES[:-1]) / 2
    low, high = np.searchsorted(half, magnitude, "left"), np.searchsorted(half, magnitude, "right")
    expected = np.where((low != high) & (low % 2 == 1), high, low)
    got = _nearest_level(magnitude, M.MXFP4)
    np.testing.assert_array_equal(got, expected)
