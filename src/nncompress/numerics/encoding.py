"""Low-bit weights in stored form: ``CompressedWeight`` (codes, scales, zero points, shape) and ``encode``,
which builds it chunk by chunk; round to nearest as a float weight; user codebooks (``Mode.CODEBOOK``).
The formulas are ``numerics.lowbit``'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

from nncompress.numerics.chunked import chunk_bounds, rows_of, run_chunks
from nncompress.numerics.lowbit import (
    INT_MODES,
    MAX_CODEBOOK_SIZE,
    MX_MODES,
    NARROW_BITS,
    _finite,
    canonical_mode,
    code_range,
    codebook,
    compute_scale,
    fake_quantize,
    group,
    grouped_shape,
    is_asymmetric,
    mode_bits,
    nvfp4_scales,
    quantize_codes,
    reduction_axes,
    round_scale,
    search_scale,
)
from nncompress.numerics.packing import pack_4bit, pack_codes, unpack_codes
from nncompress.parameters import CompressWeightsMode as Mode


@dataclass(frozen=True, eq=False)
class CompressedWeight:
    """A weight in low-bit form: everything a backend needs to store and decompress it.

    ``data`` holds the codes: int8/uint8 in ``stored_shape`` for 8-bit modes, ``pack_codes`` bytes
    for 2-, 3- and 4-bit modes (``numerics.packing``). ``scale`` (float32 holding float16 values;
    powers of two for MXFP4) and
    ``zero_point`` (uint8 codes, asymmetric modes only) have ``scale_shape``. ``axis`` is the
    input-channel axis of the original weight, ``group_size`` -1 for per-channel. 8-bit float modes
    keep f8e4m3 bit patterns (uint8) in ``data``.
    """

    mode: Mode
    shape: tuple[int, ...]
    axis: int
    group_size: int
    data: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None = None
    dtype: str = "float32"
    notes: tuple[str, ...] = field(default_factory=tuple)
    global_scale: float | None = None  # NVFP4's float32 tensor scale (``scale`` holds E4M3 values)
    book: np.ndarray | None = None  # Mode.CODEBOOK: the user's sorted codebook (float32)

    @property
    def bits(self) -> int:
        return mode_bits(self.mode)

    @property
    def signed(self) -> bool:
        return code_range(self.mode)[0] < 0

    @property
    def stored_shape(self) -> tuple[int, ...]:
        return grouped_shape(self.shape, self.axis, self.group_size)

    @property
    def scale_dtype(self) -> str:
        """"float16" when every scale is a float16 value (the usual case), else "float32"."""
        exact = np.array_equal(self.scale.astype(np.float16).astype(np.float32), self.scale)
        return "float16" if exact else "float32"

    @property
    def codebook(self) -> np.ndarray | None:
        return self.book if self.book is not None else codebook(self.mode)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def codes(self) -> np.ndarray:
        """The codes unpacked, in ``stored_shape`` (int8 for signed modes, else uint8)."""
        if self.bits == 8:
            return self.data.reshape(self.stored_shape)
        return unpack_codes(self.data, self.size, self.bits, self.signed).reshape(self.stored_shape)

    def decompress(self) -> np.ndarray:
        """The float32 weight in its original shape (the reference every backend must match)."""
        from nncompress.numerics.decode import decode

        global_scale = None if self.global_scale is None else np.float32(self.global_scale)
        return decode(self.data, self.mode, self.shape, self.stored_shape, self.scale, self.zero_point, global_scale,
                      self.book)

    @property
    def nbytes(self) -> int:
        zp = 0 if self.zero_point is None else self.zero_point.size * self.bits / 8
        scale_bytes = 1 if self.mode in MX_MODES or self.mode is Mode.NVFP4 else 2  # E8M0 / E4M3 or float16
        return int(self.data.nbytes + self.scale.size * scale_bytes + zp)


def encode(
    weight: np.ndarray,
    mode: Mode,
    axis: int,
    group_size: int,
    out_axis: int | None = None,
    scale: np.ndarray | None = None,
    zero_point: np.ndarray | None = None,
    search: bool = False,
    book: np.ndarray | None = None,
) -> CompressedWeight:
    """Compress ``weight`` (round to nearest, or with a given ``scale``/``zero_point``; ``search``
    picks per group the best of a few clipped ranges, see ``search_scale``).

    Large weights are processed in cache-sized chunks on a thread pool (``numerics.chunked``).
    """
    mode = canonical_mode(mode)
    dtype = str(weight.dtype)
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    grouped = group(weight, axis, group_size)
    axes = reduction_axes(grouped.ndim, axis, group_size, out_axis)
    find = search_scale if search else compute_scale
    global_scale, quantize = None, quantize_codes
    if mode is Mode.CODEBOOK:
        book = check_codebook(book)
        find, quantize = partial(_book_scale, book=book), partial(_book_codes, book=book)
    if mode is Mode.NVFP4:  # one tensor scale over every group: all group scales first
        scale, global_scale = nvfp4_scales(_finite(np.abs(grouped).max(axis=axes, keepdims=True)))
        data, _, _ = _encode_chunks(grouped, mode, axes, scale * np.float32(global_scale), None, find, quantize)
    else:
        if scale is None and 0 in axes:  # the reduction spans the chunked axis: scales first
            scale, zero_point = find(grouped, mode, axes)
        data, scale, zero_point = _encode_chunks(grouped, mode, axes, scale, zero_point, find, quantize)
    return CompressedWeight(
        mode=mode,
        shape=tuple(weight.shape),
        axis=axis % weight.ndim,
        group_size=group_size,
        data=data,
        scale=np.asarray(scale, dtype=np.float32),
        zero_point=zero_point,
        dtype=dtype,
        global_scale=global_scale,
        book=book,
    )


def _encode_chunks(grouped: np.ndarray, mode: Mode, axes: tuple[int, ...], scale, zero_point, find, quantize):
    """(codes or packed bytes, scale, zero point) computed chunk by chunk along axis 0."""
    rows = grouped.shape[0]
    row_size = grouped[0].size if rows else 0
    four_bit = mode_bits(mode) == 4
    fused = scale is None
    if fused:
        shape = tuple(1 if a in axes else d for a, d in enumerate(grouped.shape))
        scale = np.empty(shape, np.float32)
        zero_point = np.empty(shape, np.uint8) if is_asymmetric(mode) else None
    signed = code_range(mode)[0] < 0
    data = np.empty((grouped.size + 1) // 2, np.uint8) if four_bit else np.empty(
        grouped.shape, np.int8 if signed else np.uint8
    )

    def work(start: int, stop: int) -> None:
        chunk = grouped[start:stop]
        if fused:
            s, z = find(chunk, mode, axes)
            scale[start:stop] = s
            if zero_point is not None:
                zero_point[start:stop] = z
        s, z = rows_of(scale, start, stop, rows), rows_of(zero_point, start, stop, rows)
        codes = quantize(chunk, mode, s, z)
        if four_bit:
            packed = pack_4bit(codes)
            data[start * row_size // 2 : start * row_size // 2 + packed.size] = packed
        else:
            data[start:stop] = codes

    run_chunks(chunk_bounds(rows, row_size, four_bit), work)
    if mode in NARROW_BITS:  # 2 and 3 bits: codes chunk by chunk (int8), packed once at the end
        data = pack_codes(data, mode_bits(mode))
    return data, scale, zero_point


def round_to_nearest(
    weight: np.ndarray, mode: Mode, axis: int, group_size: int, out_axis: int | None = None
) -> np.ndarray:
    """``encode(weight, ...).decompress()`` (round to nearest, float32, the weight's shape); integer
    modes in float arithmetic without codes (faster; the same values)."""
    mode = canonical_mode(mode)
    if mode not in INT_MODES:
        return encode(weight, mode, axis, group_size, out_axis).decompress()
    grouped = group(np.asarray(weight, np.float32), axis, group_size)
    axes = reduction_axes(grouped.ndim, axis, group_size, out_axis)
    return fake_quantize(grouped, mode, axes).reshape(np.shape(weight))


# --------------------------------------------------------------------------- user codebooks (Mode.CODEBOOK)


def check_codebook(book) -> np.ndarray:
    """The codebook as float32, or ValueError naming what a codebook must be."""
    values = np.asarray(book, dtype=np.float32) if book is not None else None
    if values is None or values.ndim != 1 or not 2 <= values.size <= MAX_CODEBOOK_SIZE:
        raise ValueError(
            f"mode='codebook' needs AdvancedCompressionParameters(codebook=...): a 1-D array of 2 to "
            f"{MAX_CODEBOOK_SIZE} values; got {None if book is None else np.shape(book)}"
        )
    if not np.all(np.isfinite(values)) or np.any(np.diff(values) <= 0) or not np.any(values != 0):
        raise ValueError(f"the codebook must be finite, strictly increasing and not all zero; got {values.tolist()}")
    return values


def _book_scale(grouped: np.ndarray, mode: Mode, axes: tuple[int, ...], book: np.ndarray):
    amax = _finite(np.abs(grouped).max(axis=axes, keepdims=True))
    return round_scale(amax / np.abs(book).max()), None


def _book_codes(grouped: np.ndarray, mode: Mode, scale: np.ndarray, zero_point, book: np.ndarray) -> np.ndarray:
    """Indices of the nearest codebook values (mid-points as boundaries, ties to the lower value)."""
    mids = ((book[1:] + book[:-1]) / 2).astype(np.float32)
    return np.searchsorted(mids, np.divide(grouped, scale, dtype=np.float32), side="left").astype(np.uint8)
