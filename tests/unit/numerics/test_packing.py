"""Bit packing of 2-, 3- and 4-bit codes: byte layouts checked bit by bit, round trips, sizes."""

from __future__ import annotations

import numpy as np
import pytest

from nncompress.numerics.packing import (
    pack_2bit,
    pack_3bit,
    pack_codes,
    packed_size,
    unpack_2bit,
    unpack_3bit,
    unpack_codes,
)


def test_2bit_layout_first_code_in_lowest_bits():
    # codes 1, 2, 3, 0 -> 0b00_11_10_01
    assert pack_2bit(np.array([1, 2, 3, 0], np.uint8)).tolist() == [0b00111001]
    assert pack_2bit(np.array([3], np.uint8)).tolist() == [3]  # padded with zero codes


def test_3bit_layout_matches_openvino_u3():
    # eight codes 0..7: low two bits 0,1,2,3 | 0,1,2,3 (first code in bits 7-6); high bits 0,0,0,0,1,1,1,1
    packed = pack_3bit(np.arange(8, dtype=np.uint8))
    assert packed.tolist() == [0b00011011, 0b00011011, 0b00001111]
    one = np.zeros(8, np.uint8)
    one[0] = 4  # only the high bit of the first code: bit 7 of byte 2
    assert pack_3bit(one).tolist() == [0, 0, 0b10000000]


@pytest.mark.parametrize("bits,count", [(2, 1), (2, 7), (2, 64), (3, 5), (3, 8), (3, 67)])
def test_round_trip_and_size(bits, count):
    rng = np.random.default_rng(bits * 100 + count)
    codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=count).astype(np.int8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_size(count, bits)
    assert packed.size == (-(-count // 4) if bits == 2 else -(-count // 8) * 3)
    np.testing.assert_array_equal(unpack_codes(packed, count, bits, signed=True), codes)
    unsigned = codes.astype(np.int16) + (1 << (bits - 1))
    unpack = unpack_2bit if bits == 2 else unpack_3bit
    np.testing.assert_array_equal(unpack(packed, count), unsigned)


def test_signed_codes_are_stored_shifted():
    # INT2_SYM -2..1 stored as 0..3; INT3_SYM -4..3 as 0..7
    assert pack_codes(np.array([-2, -1, 0, 1], np.int8), 2).tolist() == [0b11100100]
    np.testing.assert_array_equal(unpack_codes(pack_codes(np.arange(-4, 4, dtype=np.int8), 3), 8, 3, False),
                                  np.arange(8))
