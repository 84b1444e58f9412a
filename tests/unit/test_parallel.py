import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from nncompress import parallel
from nncompress.errors import ValidationError


def test_row_ranges_cover_every_row_once_and_give_each_worker_work():
    assert parallel.row_ranges(10, 4, 2) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]  # 2 x 2 rows at once
    assert parallel.row_ranges(10, 4, 1) == [(0, 4), (4, 8), (8, 10)]
    assert parallel.row_ranges(10, 100, 2) == [(0, 5), (5, 10)]  # split although one range would fit
    assert parallel.row_ranges(3, 100, 8) == [(0, 1), (1, 2), (2, 3)]
    assert parallel.row_ranges(0, 4, 2) == []


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_map_rows_returns_the_serial_results_in_order(monkeypatch, threads):
    monkeypatch.setenv("NNCOMPRESS_THREADS", threads)
    rows = np.random.default_rng(0).standard_normal((37, 5)).astype(np.float32)
    parts = parallel.map_rows(lambda start, stop: rows[start:stop] @ rows[start:stop].T, len(rows), 8)
    assert [len(p) for p in parts] == [len(range(*r)) for r in parallel.row_ranges(37, 8, int(threads))]
    expected = [rows[a:b] @ rows[a:b].T for a, b in parallel.row_ranges(37, 8, int(threads))]
    for got, want in zip(parts, expected):
        np.testing.assert_array_equal(got, want)


def test_map_rows_runs_on_several_threads_with_blas_held_at_one(monkeypatch):
    monkeypatch.setenv("NNCOMPRESS_THREADS", "2")
    barrier = threading.Barrier(2, timeout=10)  # both ranges must run at the same time to pass it

    def work(start, stop):
        barrier.wait()
        return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]

    counts = parallel.map_rows(work, 2, 1)
    assert all(n == 1 for per_range in counts for n in per_range)


@pytest.mark.parametrize("value", ["many", "0", "-2", "1.5"])
def test_an_invalid_thread_count_is_refused_naming_it(monkeypatch, value):
    monkeypatch.setenv("NNCOMPRESS_THREADS", value)
    with pytest.raises(ValidationError, match=f"NNCOMPRESS_THREADS='{value}'"):
        parallel.worker_count()


def test_the_thread_count_comes_from_the_environment_capped_at_16(monkeypatch):
    monkeypatch.setenv("NNCOMPRESS_THREADS", "5")
    assert parallel.worker_count() == 5
    monkeypatch.setenv("NNCOMPRESS_THREADS", "64")
    assert parallel.worker_count() == 16
    monkeypatch.delenv("NNCOMPRESS_THREADS")
    assert 1 <= parallel.worker_count() <= 16
