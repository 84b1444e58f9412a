"""Bit packing of low-bit weight codes (pure numpy), in the byte layouts the runtimes read directly.

- 4 bits: two codes per byte, the first element in the low nibble (OpenVINO u4/i4/nf4/f4e2m1, ONNX
  INT4/UINT4 and MatMulNBits); signed codes are two's complement nibbles.
- 2 bits: four *unsigned* codes per byte, the first element in the lowest two bits (OpenVINO u2,
  MatMulNBits ``bits=2``, ONNX UINT2).
- 3 bits: eight *unsigned* codes in three bytes (OpenVINO u3): bytes 0 and 1 hold the low two bits of
  elements 0-3 and 4-7, the first element in the highest two bits; byte 2 holds the third bit of the
  eight elements, the first element in bit 7.

The 2- and 3-bit formats store symmetric codes ``q`` shifted by ``2^(bits-1)`` (so ``q + 2`` for
INT2_SYM, ``q + 4`` for INT3_SYM); ``unpack_codes(..., signed=True)`` shifts them back.
A trailing partial byte (group of three bytes for 3 bits) is padded with zero codes.
"""

from __future__ import annotations

import numpy as np

PACKED_BITS = (2, 3, 4)


def packed_size(count: int, bits: int) -> int:
    """Bytes holding ``count`` codes of ``bits`` bits (3 bits: whole groups of 8 codes in 3 bytes)."""
    if bits == 3:
        return -(-count // 8) * 3
    return -(-count * bits // 8)


def pack_4bit(codes: np.ndarray) -> np.ndarray:
    """Two 4-bit codes per byte, first element in the low nibble; flat uint8 of ceil(n / 2) bytes.

    Signed codes (-8..7) are stored in two's complement nibbles.
    """
    flat = np.asarray(codes).reshape(-1).astype(np.uint8) & np.uint8(0x0F)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.uint8)])
    return (flat[0::2] | (flat[1::2] << np.uint8(4))).astype(np.uint8)


def unpack_4bit(packed: np.ndarray, count: int, signed: bool = False) -> np.ndarray:
    """The first ``count`` codes of ``pack_4bit`` output (int8 -8..7 when ``signed``, else uint8)."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2] = packed & np.uint8(0x0F)
    codes[1::2] = packed >> np.uint8(4)
    codes = codes[:count]
    if signed:
        return ((codes.astype(np.int8) ^ np.int8(8)) - np.int8(8)).astype(np.int8)
    return codes


def _padded(codes: np.ndarray, multiple: int) -> np.ndarray:
    flat = np.asarray(codes).reshape(-1).astype(np.uint8)
    pad = -flat.size % multiple
    return np.concatenate([flat, np.zeros(pad, np.uint8)]) if pad else flat


def pack_2bit(codes: np.ndarray) -> np.ndarray:
    """Four unsigned 2-bit codes (0..3) per byte, first element in bits 0-1."""
    quads = _padded(codes, 4).reshape(-1, 4)
    return (quads[:, 0] | quads[:, 1] << 2 | quads[:, 2] << 4 | quads[:, 3] << 6).astype(np.uint8)


def pack_3bit(codes: np.ndarray) -> np.ndarray:
    """Eight unsigned 3-bit codes (0..7) in three bytes (OpenVINO u3, see the module docstring)."""
    octets = _padded(codes, 8).reshape(-1, 8)
    low, high = octets & np.uint8(3), octets >> np.uint8(2)
    out = np.empty((octets.shape[0], 3), np.uint8)
    for byte, first in ((0, 0), (1, 4)):
        part = low[:, first : first + 4]
        out[:, byte] = part[:, 0] << 6 | part[:, 1] << 4 | part[:, 2] << 2 | part[:, 3]
    out[:, 2] = np.packbits(high & np.uint8(1), axis=1, bitorder="big")[:, 0]
    return out.reshape(-1)


def unpack_2bit(packed: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` unsigned codes of ``pack_2bit`` output (uint8)."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1, 1)
    shifts = np.array([0, 2, 4, 6], np.uint8)
    return ((packed >> shifts) & np.uint8(3)).reshape(-1)[:count]


def unpack_3bit(packed: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` unsigned codes of ``pack_3bit`` output (uint8)."""
    triples = np.asarray(packed, dtype=np.uint8).reshape(-1, 3)
    shifts = np.array([6, 4, 2, 0], np.uint8)
    low = (triples[:, :2, None] >> shifts) & np.uint8(3)  # [n, 2, 4]
    high = np.unpackbits(triples[:, 2:3], axis=1, bitorder="big")  # [n, 8]
    return (low.reshape(-1, 8) | high << np.uint8(2)).reshape(-1)[:count]


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Packed bytes of ``codes`` (4 bits: signed or unsigned nibbles; 2 and 3 bits: signed codes, stored
    shifted by ``2^(bits-1)`` when they are signed integers)."""
    if bits == 4:
        return pack_4bit(codes)
    codes = np.asarray(codes)
    if codes.dtype.kind == "i":
        codes = codes.astype(np.int16) + (1 << (bits - 1))
    return pack_2bit(codes) if bits == 2 else pack_3bit(codes)


def unpack_codes(packed: np.ndarray, count: int, bits: int, signed: bool) -> np.ndarray:
    """The first ``count`` codes of ``pack_codes`` output (int8 when ``signed``, else uint8)."""
    if bits == 4:
        return unpack_4bit(packed, count, signed)
    codes = unpack_2bit(packed, count) if bits == 2 else unpack_3bit(packed, count)
    return (codes.astype(np.int8) - np.int8(1 << (bits - 1))) if signed else codes
