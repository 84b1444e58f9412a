"""Row-parallel numpy work on the machine's cores.

Per-row estimation (scale estimation, AWQ's grid search) is numpy arithmetic on independent row ranges
of a weight. numpy's element-wise loops run on one core and release the GIL, so a few threads over row
ranges use every core. Meanwhile BLAS is held at one thread: its own threads on the small products of
each range would compete with ours (three times slower than one BLAS thread on a busy machine).
``NNCOMPRESS_THREADS`` sets the number of threads (default: the cores this process may use, at most 16).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import TypeVar

from threadpoolctl import ThreadpoolController

from nncompress.errors import ValidationError

T = TypeVar("T")
MAX_WORKERS = 16


def worker_count() -> int:
    """Threads for parallel numpy work: ``NNCOMPRESS_THREADS``, else the usable cores (1 to 16)."""
    configured = os.environ.get("NNCOMPRESS_THREADS")
    if configured is not None:
        if not configured.strip().isdigit() or int(configured) < 1:
            raise ValidationError(f"NNCOMPRESS_THREADS={configured!r}: expected a whole number of threads >= 1")
        return min(int(configured), MAX_WORKERS)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    return ThreadpoolController()  # finding the libraries takes milliseconds: once


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS held at one thread: for stretches of small products and factorizations (a few hundred rows),
    where its threads cost more than they give (LoRA correction's solves: 2.5-3x faster on 2 cores)."""
    with _blas().limit(limits=1, user_api="blas"):
        yield


def row_ranges(rows: int, max_rows: int, workers: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``rows``: at least ``workers`` of them when there are that many
    rows (every core gets work), and at most ``max_rows // workers`` rows each, so the ranges running at
    once hold no more temporaries than one range of ``max_rows`` would."""
    workers = max(workers, 1)
    size = max(1, min(max_rows // workers, -(-rows // workers)))
    return [(start, min(start + size, rows)) for start in range(0, rows, size)]


def map_rows(work: Callable[[int, int], T], rows: int, max_rows: int) -> list[T]:
    """``[work(start, stop) for each row range]``, on several threads when there are cores."""
    workers = worker_count()
    ranges = row_ranges(rows, max_rows, workers)
    if workers == 1 or len(ranges) == 1:
        return [work(start, stop) for start, stop in ranges]
    with single_threaded_blas(), ThreadPoolExecutor(min(workers, len(ranges))) as pool:
        return list(pool.map(lambda bounds: work(*bounds), ranges))
