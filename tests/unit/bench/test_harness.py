"""bench/harness.py: repeats, spread, load flags and interleaved ratios."""

from __future__ import annotations

import pytest

from bench import harness


def test_spread_statistics_and_format():
    spread = harness.Spread((3.0, 1.0, 2.0, 10.0, 4.0))
    assert (spread.min, spread.median, spread.max) == (1.0, 3.0, 10.0)
    assert spread.format(".1f") == "3.0 (1.0-10.0)"
    assert spread.as_dict() == {"min": 1.0, "median": 3.0, "max": 10.0, "n": 5}


def test_interleaved_runs_variants_in_alternating_rounds():
    calls = []
    runs = {"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}
    spreads, _ = harness.interleaved(runs, repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-up of each, then A, B, A, B, ...
    assert spreads["a"].values == (1.0, 1.0, 1.0) and spreads["b"].values == (2.0, 2.0, 2.0)


def test_ratio_is_taken_per_round():
    fast = harness.Spread((4.0, 9.0, 6.0))
    slow = harness.Spread((2.0, 3.0, 3.0))
    assert harness.ratio(fast, slow).values == (2.0, 3.0, 2.0)
    with pytest.raises(ValueError):
        harness.ratio(fast, harness.Spread((1.0,)))


def test_repeat_times_calls_or_takes_their_figure():
    figures = iter([5.0, 7.0, 6.0, 9.0])
    measured = harness.repeat(lambda: next(figures), repeats=3, warmup=1)
    assert measured.spread.values == (7.0, 6.0, 9.0)
    timed = harness.repeat(lambda: None, repeats=2, warmup=0)
    assert all(0 <= v < 0.1 for v in timed.spread.values)
    assert len(timed.load.readings) == 3  # before each call and after the last


def test_busy_machine_is_flagged_and_refused(monkeypatch):
    monkeypatch.setattr(harness, "cores", lambda: 2)
    monkeypatch.setattr(harness, "load_average", lambda: 3.5)
    measured = harness.repeat(lambda: 1.0, repeats=2, warmup=0)
    assert measured.busy and "BUSY" in measured.load.describe()
    with pytest.raises(SystemExit, match="load 3.50 > 2 cores"):
        harness.require_quiet()
    assert harness.require_quiet(allow_busy=True) == 3.5
    monkeypatch.setattr(harness, "load_average", lambda: 2.3)  # the benchmark's own two threads
    assert not harness.repeat(lambda: 1.0, repeats=2, warmup=0).busy
    with pytest.raises(SystemExit):
        harness.require_quiet()  # but 2.3 before starting means something else runs


def test_rate_returns_items_per_second():
    measure = harness.rate(lambda: None, items=64, seconds=0.01)
    assert measure() > 64 / 0.01
