"""Low-bit numerics: exact packing, code grids, error bounds (property tests), stored form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nncompress.numerics.encoding import encode
from nncompress.numerics.grids import nearest_e4m3
from nncompress.numerics.lowbit import (
    NF4_LEVELS,
    NonFiniteWeightError,
    code_range,
    codebook,
    grouped_shape,
    pack_4bit,
    reduction_axes,
    unpack_4bit,
)
from nncompress.parameters import CompressWeightsMode as M

FOUR_BIT = [M.INT4_SYM, M.INT4_ASYM, M.NF4, M.MXFP4, M.FP4, M.NVFP4, M.CB4_F8E4M3]
FLOAT8 = [M.FP8_E4M3, M.MXFP8_E4M3]
ALL = [M.INT8_ASYM, M.INT8_SYM, *FOUR_BIT, *FLOAT8]
GROUPS = {M.NVFP4: 16, M.CB4_F8E4M3: -1, M.INT8_ASYM: -1, M.INT8_SYM: -1}


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
    group = GROUPS.get(mode, 32)
    compressed = encode(weight, mode, axis=1, group_size=group, out_axis=0)
    error = np.abs(compressed.decompress() - weight).reshape(compressed.stored_shape)
    scale = np.abs(compressed.scale) * (compressed.global_scale or 1.0)
    if mode in (M.INT8_ASYM, M.INT4_ASYM, M.INT8_SYM, M.INT4_SYM):
        bound = scale * 1.07  # plus the float16 rounding of the scale times up to 255 steps
    elif mode in FLOAT8:  # relative: half a mantissa step (2^-4) of the value, or the subnormal step
        bound = np.maximum(np.abs(weight).reshape(error.shape) * 2.0**-4, scale * 2.0**-10) * (1 + 1e-3)
    else:
        levels = np.unique(codebook(mode))  # signed: NF4 and CB4 are not symmetric
        if mode is M.NVFP4:  # a group scale rounded down to E4M3 clips its largest weight by up to 1/16
            levels = np.append(levels, 6.0 * (1 + 2.0**-3))
        bound = scale * np.max(np.diff(np.sort(levels))) / 2 * (1 + 1e-3)
    assert np.all(error <= bound + 1e-7)


@pytest.mark.parametrize("mode", ALL)
def test_codes_in_range_and_roundtrip(mode):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 96)).astype(np.float32)
    group = GROUPS.get(mode, 32)
    compressed = encode(weight, mode, 1, group, 0)
    codes = compressed.codes()
    low, high = code_range(mode)
    assert codes.shape == compressed.stored_shape and codes.min() >= low and codes.max() <= high
    assert not np.isnan(compressed.decompress()).any()  # never the NaN codes of E4M3
    if mode is not M.NVFP4:  # re-encoding the dequantized weight with the same scales: the same codes
        again = encode(compressed.decompress(), mode, 1, group, 0, compressed.scale, compressed.zero_point)
        np.testing.assert_array_equal(again.codes(), codes)
    # group-wise scales are float16 values (powers of two for MX formats); per-channel INT8 ones float32
    if mode in (M.MXFP4, M.MXFP8_E4M3):
        np.testing.assert_array_equal(np.exp2(np.round(np.log2(compressed.scale))), compressed.scale)
    else:
        assert compressed.scale_dtype == ("float32" if mode in (M.INT8_ASYM, M.INT8_SYM) else "float16")
    if mode is M.NVFP4:  # group scales are E4M3 values under one float32 tensor scale
        np.testing.assert_array_equal(codebook(M.FP8_E4M3)[nearest_e4m3(compressed.scale)], compressed.scale)
        assert compressed.global_scale > 0


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
    from nncompress.numerics.grids import E2M1_MAGNITUDES, nearest_e2m1, nearest_nf4

    values = np.concatenate([values, (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2]).astype(np.float32)
    mids = ((NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2).astype(np.float32)
    clipped = np.clip(values, -1.5, 1.5)
    np.testing.assert_array_equal(nearest_nf4(clipped), np.searchsorted(mids, clipped, side="left"))
    magnitude = np.abs(values)
    half = (E2M1_MAGNITUDES[1:] + E2M1_MAGNITUDES[:-1]) / 2
    low, high = np.searchsorted(half, magnitude, "left"), np.searchsorted(half, magnitude, "right")
    expected = np.where((low != high) & (low % 2 == 1), high, low)
    got = nearest_e2m1(magnitude)
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 300), elements=st.floats(-500, 500, width=32)))
def test_e4m3_rounding_matches_the_float8_type(values):
    """Round half to even and saturation at 448, against ml_dtypes' float8_e4m3fn conversion."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    ties = (codebook(M.FP8_E4M3)[1:126] + codebook(M.FP8_E4M3)[2:127]) / 2
    values = np.concatenate([values, ties, -ties]).astype(np.float32)
    clipped = np.clip(values, -448, 448)
    expected = clipped.astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    expected = np.where(expected == 0x80, 0, expected)  # -0 is stored as +0
    np.testing.assert_array_equal(nearest_e4m3(values), expected)


def test_cb4_and_nvfp4_formats():
    weight = np.array([[3.5, -3.5, 1.2, -0.3] + [0.0] * 12], np.float32)
    cb4 = encode(weight, M.CB4_F8E4M3, 1, -1, 0)
    np.testing.assert_allclose(cb4.decompress()[0, :4], [3.5, -3.5, 1.125, -0.3125])  # nearest codebook values
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((4, 64)).astype(np.float32) * np.array([[1.0], [10.0], [0.01], [0.0]], np.float32)
    nv = encode(weight, M.NVFP4, 1, 16, 0)
    assert nv.scale.shape == (4, 4, 1) and np.isclose(nv.global_scale, np.abs(weight).max() / 6 / 448, rtol=1e-6)
    np.testing.assert_array_equal(nv.decompress()[3], 0.0)  # an all-zero row stays exact
    for row in range(3):  # rows 100x apart in scale keep the same relative error (per-group E4M3 scales)
        error = np.linalg.norm(nv.decompress()[row] - weight[row]) / np.linalg.norm(weight[row])
        assert 0.01 < error < 0.15


def test_fitted_codebook_follows_the_weights():
    """k-means on a two-cluster distribution puts values near both clusters; E4M3 values up to one scale."""
    from nncompress.numerics.grids import E4M3_LEVELS, fit_codebook

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-0.6, 0.02, 4000), rng.normal(0.3, 0.02, 4000), [1.0]]).astype(np.float32)
    book = fit_codebook(values, 4, "f16")
    # the largest magnitude becomes 1 (the scale maps max|w| onto it): no weight is clipped
    assert book.size == 4 and np.all(np.diff(book) > 0) and np.abs(book).max() == 1.0
    assert np.min(np.abs(book + 0.6)) < 0.03 and np.min(np.abs(book - 0.3)) < 0.03
    e4m3 = fit_codebook(values, 16)
    ratio = e4m3 / np.abs(e4m3).max() * 448  # up to one common factor, every value is an E4M3 value
    assert np.all(np.isin(np.round(ratio, 3), np.round(E4M3_LEVELS[:127], 3)) | np.isin(np.round(-ratio, 3),
                  np.round(E4M3_LEVELS[:127], 3)))


@pytest.mark.parametrize("mode", ALL, ids=lambda m: m.value)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("search", [False, True], ids=["rtn", "search"])
def test_a_non_finite_value_anywhere_is_found_from_the_group_extremes(mode, bad, search):
    # large enough to run in several chunks on the pool, the bad value in the last chunk
    weight = np.random.default_rng(0).normal(size=(2048, 256)).astype(np.float32)
    weight[2000, 77] = bad
    with pytest.raises(NonFiniteWeightError):
        encode(weight, mode, 1, GROUPS.get(mode, 32), search=search)


def test_a_user_codebook_also_finds_non_finite_values():
    weight = np.ones((8, 64), np.float32)
    weight[3, 3] = np.nan
    with pytest.raises(NonFiniteWeightError):
        encode(weight, M.CODEBOOK, 1, 32, book=np.array([-1.0, 0.0, 0.5, 1.0], np.float32))


@pytest.mark.parametrize("mode,codes,values", [
    # max |w| = 1.0 is positive, so the signed scale is -1 / 2^(b-1) and 1.0 maps to the lowest code
    (M.INT2_SYM, [-2, 1, 0, -2], [1.0, -0.5, 0.0, 1.0]),  # scale -0.5; w/scale = -2, 1, -0.5, -1.6
    (M.INT3_SYM, [-4, 2, -1, -3], [1.0, -0.5, 0.25, 0.75]),  # scale -0.25; w/scale = -4, 2, -1, -3.2
])
def test_int3_int2_codes_by_hand(mode, codes, values):
    weight = np.array([[1.0, -0.5, 0.25, 0.8]], np.float32)
    compressed = encode(weight, mode, 1, -1)
    assert compressed.bits == {M.INT2_SYM: 2, M.INT3_SYM: 3}[mode] and compressed.signed
    np.testing.assert_array_equal(compressed.scale, [[-1.0 / 2 ** (compressed.bits - 1)]])
    np.testing.assert_array_equal(compressed.codes(), [codes])
    np.testing.assert_array_equal(compressed.decompress(), [values])
    assert code_range(mode) == (-(2 ** (compressed.bits - 1)), 2 ** (compressed.bits - 1) - 1)


@pytest.mark.parametrize("mode,bits", [(M.INT3_SYM, 3), (M.INT2_SYM, 2)])
def test_int3_int2_packed_storage_size_and_decode(mode, bits):
    torch = pytest.importorskip("torch")
    from nncompress.numerics.decode import decode

    weight = np.random.default_rng(bits).standard_normal((24, 256)).astype(np.float32)
    compressed = encode(weight, mode, 1, 128)
    assert compressed.data.dtype == np.uint8 and compressed.data.nbytes == 24 * 256 * bits // 8
    assert compressed.nbytes == 24 * 256 * bits // 8 + 24 * 2 * 2  # + one float16 scale per group
    codes = compressed.codes()
    np.testing.assert_array_equal(compressed.decompress(), (codes * compressed.scale).reshape(24, 256))
    on_torch = decode(torch.from_numpy(compressed.data), mode, compressed.shape, compressed.stored_shape,
                      torch.from_numpy(compressed.scale))
    np.testing.assert_array_equal(on_torch.numpy(), compressed.decompress())


def test_fewer_bits_larger_error():
    weight = np.random.default_rng(0).standard_normal((32, 256)).astype(np.float32)
    errors = [np.abs(encode(weight, m, 1, 128).decompress() - weight).mean()
              for m in (M.INT4_SYM, M.INT3_SYM, M.INT2_SYM)]
    assert errors[0] < errors[1] < errors[2]
    # the grid step doubles with each bit removed: the mean error roughly doubles too
    assert 1.6 < errors[1] / errors[0] < 2.6 and 1.6 < errors[2] / errors[1] < 2.8


@pytest.mark.parametrize("mode", [M.INT4_SYM, M.INT4_ASYM, M.INT8_ASYM, M.INT3_SYM, M.NF4, M.FP4])
def test_unscaled_values_are_the_codes_values_without_the_integer_round_trip(mode):
    from nncompress.numerics.lowbit import code_values, compute_scale, quantize_codes, unscaled_values

    grouped = np.random.default_rng(3).standard_normal((6, 4, 16)).astype(np.float32)
    grouped[0, 0, :3] = [0.0, 1e-9, -1e-9]  # zero and tiny values next to a group's largest
    scale, zero_point = compute_scale(grouped, mode, (2,))
    expected = code_values(quantize_codes(grouped, mode, scale, zero_point), mode, zero_point)
    np.testing.assert_array_equal(unscaled_values(grouped, mode, scale, zero_point), expected)


def test_unscaled_values_by_hand():
    from nncompress.numerics.lowbit import unscaled_values

    w = np.array([[[-1.0, 0.24, 0.26, 9.0]]], np.float32)
    # asymmetric 4-bit, scale 0.5, zero point 2: rint(w / 0.5 + 2) clipped to [0, 15], minus 2
    values = unscaled_values(w, M.INT4_ASYM, np.float32(0.5), np.array([[[2]]], np.uint8))
    np.testing.assert_array_equal(values, [[[-2.0, 0.0, 1.0, 13.0]]])


@pytest.mark.parametrize("mode", [M.INT4_SYM, M.INT4_ASYM, M.INT8_ASYM, M.INT8_SYM, M.INT2_SYM, M.NF4, M.MXFP4])
@pytest.mark.parametrize("axis", [0, 1])
def test_round_to_nearest_equals_the_decompressed_encoding(mode, axis):
    from nncompress.numerics.encoding import round_to_nearest

    weight = np.random.default_rng(4).standard_normal((64, 96)).astype(np.float32)
    group_size = -1 if mode in (M.INT8_ASYM, M.INT8_SYM) else 32
    expected = encode(weight, mode, axis, group_size, 1 - axis).decompress()
    np.testing.assert_array_equal(round_to_nearest(weight, mode, axis, group_size, 1 - axis), expected)
