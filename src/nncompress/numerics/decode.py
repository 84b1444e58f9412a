"""Low-bit weight decode, once, for numpy arrays and torch tensors (see ``lowbit`` for the formats).

``decode`` turns stored codes (``pack_4bit`` bytes for 4-bit modes, int8/uint8 codes or f8e4m3 bit
patterns for 8-bit modes) into the float32 weight: ``(value(code) - zero_point) * scale [* global]``,
where ``value`` is the integer code or the grid value (NF4, E2M1, E4M3, CB4, a user codebook).
4-bit bytes are decoded through a 256-row table of (low nibble, high nibble) values, so the codes are
never unpacked into a separate array; 2-bit bytes through a table of their four values, and 3-bit
triples (``numerics.packing``) through a table of the four low parts of bytes 0 and 1 plus a table of
the eight high bits of byte 2 (which also carries the ``-2^(bits-1)`` shift).
On torch every step runs on the data's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from nncompress.numerics import xp
from nncompress.numerics.lowbit import code_range, codebook, mode_bits
from nncompress.numerics.xp import Array
from nncompress.parameters import CompressWeightsMode as Mode


@lru_cache(maxsize=64)
def nibble_values(mode: Mode, book: tuple[float, ...] | None = None) -> tuple[float, ...]:
    """The float32 values of the 16 nibble codes of a 4-bit mode (a user ``book``: its values, padded)."""
    nibbles = np.arange(16)
    book = codebook(mode) if book is None else np.asarray(book, np.float32)
    if book is not None:
        values = book[np.minimum(nibbles, len(book) - 1)]  # nibbles past a short codebook never occur
    elif code_range(mode)[0] < 0:
        values = (nibbles ^ 8) - 8
    else:
        values = nibbles
    return tuple(float(v) for v in np.asarray(values, np.float32))


@lru_cache(maxsize=64)
def pair_table(values: tuple[float, ...]) -> np.ndarray:
    """``[256, 2]`` float32: the values of the low and high nibble of every byte."""
    table = np.asarray(values, np.float32)
    return np.stack([np.tile(table, 16), np.repeat(table, 16)], axis=1).astype(np.float32)


@lru_cache(maxsize=8)
def narrow_tables(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(``[256, 4]`` values of the four 2-bit fields of a byte, ``[256, 8]`` addend of the high bits) of
    the 2-bit (fields from bit 0 up, minus 2) and 3-bit (fields from bit 7 down; high bits times 4,
    minus 4) packed formats."""
    byte = np.arange(256)[:, None]
    if bits == 2:
        return (((byte >> np.array([0, 2, 4, 6])) & 3) - 2).astype(np.float32), np.zeros((256, 8), np.float32)
    low = ((byte >> np.array([6, 4, 2, 0])) & 3).astype(np.float32)
    high = (((byte >> np.arange(7, -1, -1)) & 1) * 4 - 4).astype(np.float32)
    return low, high


def _low_table(bits: int) -> np.ndarray:
    return narrow_tables(bits)[0]


def _high_table(bits: int) -> np.ndarray:
    return narrow_tables(bits)[1]


def narrow_values(data: Array, bits: int, count: int) -> Array:
    """The first ``count`` signed values (float32, flat) of 2- or 3-bit packed symmetric codes."""
    low = xp.constant(_low_table, bits, like=data)
    if bits == 2:
        return xp.take_rows(low, data.reshape(-1)).reshape(-1)[:count]
    triples = data.reshape(-1, 3)
    values = xp.take_rows(low, triples[:, :2]).reshape(-1, 8)
    values = values + xp.take_rows(xp.constant(_high_table, bits, like=data), triples[:, 2])
    return values.reshape(-1)[:count]


@lru_cache(maxsize=16)
def code_table(mode: Mode) -> np.ndarray:
    """The float32 values of all 256 codes of an 8-bit float-grid mode."""
    return np.ascontiguousarray(codebook(mode), dtype=np.float32)


def code_values(data: Array, mode: Mode, stored_shape: tuple[int, ...], book: Sequence[float] | None = None) -> Array:
    """The codes' unscaled values (integer codes or grid values) in float32, in ``stored_shape``; a
    fresh array the caller may write into."""
    count = int(np.prod(stored_shape, dtype=np.int64))
    bits = mode_bits(mode)
    if bits < 4:
        return narrow_values(data, bits, count).reshape(stored_shape)
    if bits == 4:
        values = nibble_values(mode, None if book is None else tuple(book))
        table = xp.constant(pair_table, values, like=data)
        return xp.take_rows(table, data.reshape(-1)).reshape(-1)[:count].reshape(stored_shape)
    if codebook(mode) is not None:  # 8-bit float codes (f8e4m3 bit patterns)
        return xp.take_rows(xp.constant(code_table, mode, like=data), data.reshape(stored_shape))
    return xp.float32(data.reshape(stored_shape))


def dequantize(values: Array, scale: Array, zero_point: Array | None = None,
               global_scale: Array | None = None, inplace: bool = True) -> Array:
    """``(values - zero_point) * (scale [* global_scale])``, written into ``values`` (fresh float32;
    a new array when not ``inplace``: graph tracers follow out-of-place arithmetic only);
    ``scale`` is used as given (a float32 product with ``global_scale``).

    The per-group product ``scale * global_scale`` comes first: runtimes fold it into one scale constant.
    """
    if zero_point is not None:
        zero_point = xp.float32(zero_point)
        values = xp.isub(values, zero_point) if inplace else values - zero_point
    if global_scale is not None:
        scale = xp.float32(scale * global_scale)
    return xp.imul(values, scale) if inplace else values * scale


def decode(data: Array, mode: Mode, shape: tuple[int, ...], stored_shape: tuple[int, ...], scale: Array,
           zero_point: Array | None = None, global_scale: Array | None = None,
           book: Sequence[float] | None = None, inplace: bool = True) -> Array:
    """The float32 weight (in ``shape``) of stored codes ``data`` (see the module docstring)."""
    values = code_values(data, mode, stored_shape, book)
    return dequantize(values, xp.float32(scale), zero_point, global_scale, inplace).reshape(shape)
