"""Cache-sized, multi-threaded encoding of large weights (same results as the one-shot formulas).

A grouped weight is cut along its first axis into chunks of about ``CHUNK_ELEMENTS`` values; each chunk
computes its scales (when the reduction does not span the first axis), codes and packed bytes while it
is in cache, and chunks run on a thread pool (numpy releases the GIL inside its loops).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from nncompress.parallel import worker_count

CHUNK_ELEMENTS = 1 << 17
_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()  # compress_weights calls in several threads share one pool


def _pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=worker_count(), thread_name_prefix="nncompress"))
        return _POOL[0]


def chunk_bounds(rows: int, row_size: int, even: bool) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of about ``CHUNK_ELEMENTS`` values (an even count when ``even``)."""
    step = max(1, CHUNK_ELEMENTS // max(row_size, 1))
    if even and row_size % 2 and step % 2:
        step += 1
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def run_chunks(bounds: list[tuple[int, int]], work: Callable[[int, int], None]) -> None:
    """Call ``work(start, stop)`` for every range, in parallel when there is more than one."""
    if len(bounds) == 1:
        work(*bounds[0])
        return
    for future in [_pool().submit(work, start, stop) for start, stop in bounds]:
        future.result()


def rows_of(values: np.ndarray | None, start: int, stop: int, rows: int) -> np.ndarray | None:
    """The slice of a per-group array for rows ``start:stop`` (whole when it broadcasts on axis 0)."""
    if values is None or values.ndim == 0 or values.shape[0] != rows:
        return values
    return values[start:stop]


def transpose_2d(values: np.ndarray, rows: int = 32, cols: int = 512) -> np.ndarray:
    """``values.T`` as a contiguous array, copied in small tiles (numpy's plain transposed copy of a
    large matrix misses the TLB on every element and is about ten times slower)."""
    height, width = values.shape
    out = np.empty((width, height), values.dtype)
    blocks = [(start, min(start + cols, width)) for start in range(0, width, cols)]

    def work(first: int, last: int) -> None:
        for start, stop in blocks[first:last]:
            for row in range(0, height, rows):
                out[start:stop, row : row + rows] = values[row : row + rows, start:stop].T

    step = max(1, len(blocks) // 8)
    run_chunks([(i, min(i + step, len(blocks))) for i in range(0, len(blocks), step)], work)
    return out
