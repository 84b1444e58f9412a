"""numerics.decode: low-bit weight decode, hand-computed values, numpy vs torch (bit-exact), devices."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.numerics.decode import decode, nibble_values
from nncompress.numerics.encoding import encode
from nncompress.numerics.grids import NF4_LEVELS
from nncompress.parameters import CompressWeightsMode as Mode

torch = pytest.importorskip("torch")

BOOK = np.array([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0], np.float32)
MODES = [
    (Mode.INT8_ASYM, -1), (Mode.INT8_SYM, -1), (Mode.INT4_ASYM, 16), (Mode.INT4_SYM, 16), (Mode.INT4_ASYM, -1),
    (Mode.NF4, 16), (Mode.FP4, 16), (Mode.MXFP4, 32), (Mode.NVFP4, 16), (Mode.FP8_E4M3, 16),
    (Mode.MXFP8_E4M3, 32), (Mode.CB4_F8E4M3, 16), (Mode.CODEBOOK, 16),
]


def test_int4_asymmetric_hand_computed():
    # codes [0, 15, 3, 8], low nibble first: bytes 0xF0, 0x83; (code - 8) * 0.5
    data = np.array([0xF0, 0x83], np.uint8)
    got = decode(data, Mode.INT4_ASYM, (4,), (4,), np.float32([0.5]), np.uint8([8]))
    assert got.tolist() == [-4.0, 3.5, -2.5, 0.0]
    tgot = decode(torch.from_numpy(data), Mode.INT4_ASYM, (4,), (4,), torch.tensor([0.5]), torch.tensor([8]))
    assert tgot.tolist() == [-4.0, 3.5, -2.5, 0.0]


def test_signed_nibbles_grids_and_e4m3_hand_computed():
    # INT4_SYM nibbles are two's complement: 0x8 = -8, 0xF = -1, 0x7 = 7
    got = decode(np.array([0xF8, 0x07], np.uint8), Mode.INT4_SYM, (2, 2), (2, 2), np.float32([[2.0], [1.0]]))
    assert got.tolist() == [[-16.0, -2.0], [7.0, 0.0]]
    nf4 = decode(np.array([0xF0], np.uint8), Mode.NF4, (2,), (2,), np.float32([3.0]))
    assert nf4.tolist() == [-3.0, 3.0] and nibble_values(Mode.NF4)[1] == float(NF4_LEVELS[1])
    # E2M1 nibble 0x5 = 3.0, 0xC = -2.0; NVFP4: group scale x tensor scale
    fp4 = decode(np.array([0xC5], np.uint8), Mode.NVFP4, (2,), (2,), np.float32([0.5]), None, np.float32(4.0))
    assert fp4.tolist() == [6.0, -4.0]
    # f8e4m3: 0x38 = 1.0, 0xC0 = -2.0, 0x01 = 2^-9
    fp8 = decode(np.array([0x38, 0xC0, 0x01], np.uint8), Mode.FP8_E4M3, (3,), (3,), np.float32([2.0]))
    assert fp8.tolist() == [2.0, -4.0, 2.0**-8]
    book = decode(np.array([0x63], np.uint8), Mode.CODEBOOK, (2,), (2,), np.float32([2.0]), book=BOOK)
    assert book.tolist() == [0.0, 2.0]


def _storage_inputs(weight, device: str = "cpu"):
    from nncompress.backends.torch.weight_storage import CompressedStorage

    storage = CompressedStorage(weight, torch.float32, device)
    book = None if storage.codebook is None else weight.book.tolist()
    return storage, (storage.data, weight.mode, weight.shape, weight.stored_shape, storage.scale, storage.zero_point,
                     storage.tensor_scale, book)


@pytest.mark.parametrize(("mode", "group_size"), MODES, ids=lambda v: str(getattr(v, "value", v)))
def test_numpy_and_torch_decode_agree_bit_for_bit(mode: Mode, group_size: int):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((24, 64)) * rng.uniform(0.01, 2.0, (24, 1))).astype(np.float32)
    weight = encode(w, mode, 1, group_size, out_axis=0, book=BOOK if mode is Mode.CODEBOOK else None)
    want = weight.decompress()
    assert want.shape == w.shape and 0 < np.abs(want - w).max() < np.abs(w).max()
    storage, args = _storage_inputs(weight)
    got = decode(*args)
    assert got.dtype is torch.float32
    np.testing.assert_array_equal(got.numpy(), want)
    with torch.no_grad():
        np.testing.assert_array_equal(storage().numpy(), want)


@pytest.mark.parametrize("mode", [Mode.INT4_ASYM, Mode.NF4, Mode.FP8_E4M3, Mode.NVFP4, Mode.INT8_SYM])
def test_torch_decode_stays_on_the_device(mode: Mode):
    w = np.random.default_rng(1).standard_normal((8, 32)).astype(np.float32)
    weight = encode(w, mode, 1, 16 if mode is not Mode.INT8_SYM else -1, out_axis=0)
    _, args = _storage_inputs(weight, "meta")  # meta tensors have no values: any copy to numpy would fail
    got = decode(*args)
    assert (got.device.type, got.dtype, tuple(got.shape)) == ("meta", torch.float32, (8, 32))


def test_numpy_decode_of_a_stored_weight_does_not_touch_the_stored_arrays():
    w = np.random.default_rng(2).standard_normal((4, 32)).astype(np.float32)
    weight = encode(w, Mode.INT4_ASYM, 1, 16, out_axis=0)
    data, scale, zero_point = weight.data.copy(), weight.scale.copy(), weight.zero_point.copy()
    weight.decompress()
    np.testing.assert_array_equal(weight.data, data)
    np.testing.assert_array_equal(weight.scale, scale)
    np.testing.assert_array_equal(weight.zero_point, zero_point)
