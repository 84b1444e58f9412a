"""The one measurement harness of the benchmarks: repeats, spread, load, interleaved comparisons.

Rules every benchmark follows through this module:

- a measurement is repeated (``REPEATS``, default 5, after a warm-up) and reported as min / median / max;
- the machine's 1-minute load average is read before and after each measurement. ``require_quiet`` refuses
  to start when the load exceeds the core count (unless the caller allows it). During a measurement the
  benchmark's own threads keep up to one runnable thread per core, so a figure is flagged
  (``Measurement.busy``) when the load exceeded the core count by more than ``OWN_LOAD_MARGIN``: one
  competing single-threaded process raises the 1-minute average by about 1;
- a comparison of two variants (FP32 vs INT8, ours vs a baseline) is a ratio measured in one process with
  the variants interleaved (A, B, A, B, ...), one ratio per round, never two absolute figures taken at
  different times.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

REPEATS = int(os.environ.get("NNCOMPRESS_BENCH_REPEATS", "5"))
WARMUP = 1
OWN_LOAD_MARGIN = 0.5  # load above the core count that a quiet machine's benchmark itself may show


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> float:
    """The machine's 1-minute load average."""
    return os.getloadavg()[0]


@dataclass(frozen=True)
class Spread:
    """Repeated values of one figure."""

    values: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def format(self, spec: str = ".3g") -> str:
        """'median (min-max)'."""
        return f"{self.median:{spec}} ({self.min:{spec}}-{self.max:{spec}})"

    def as_dict(self) -> dict[str, float]:
        return {"min": self.min, "median": self.median, "max": self.max, "n": len(self.values)}

    @classmethod
    def from_dict(cls, figure: dict[str, float]) -> Spread:
        """The min/median/max summary written by ``as_dict`` (the values themselves are not kept)."""
        return cls((figure["min"], figure["median"], figure["max"]))


@dataclass
class LoadRecord:
    """Load averages read around measurements."""

    readings: list[float] = field(default_factory=list)

    def read(self) -> None:
        self.readings.append(load_average())

    @property
    def peak(self) -> float:
        return max(self.readings, default=0.0)

    @property
    def busy(self) -> bool:
        """True when a reading exceeded what the benchmark itself explains (the core count plus
        ``OWN_LOAD_MARGIN``): other work competed and the figures are not trustworthy."""
        return self.peak > cores() + OWN_LOAD_MARGIN

    def describe(self) -> str:
        flag = " BUSY: figures not trustworthy" if self.busy else ""
        return f"load {min(self.readings, default=0):.2f}-{self.peak:.2f} on {cores()} cores{flag}"


@dataclass
class Measurement:
    """One repeated figure and the load around it."""

    spread: Spread
    load: LoadRecord

    @property
    def busy(self) -> bool:
        return self.load.busy


def require_quiet(allow_busy: bool = False) -> float:
    """The current load; raises SystemExit when it exceeds the core count unless ``allow_busy``."""
    load = load_average()
    if load > cores() and not allow_busy:
        raise SystemExit(
            f"the machine is busy (1-minute load {load:.2f} > {cores()} cores): figures taken now would "
            "not be trustworthy. Wait for a quiet machine, or pass --allow-busy to measure anyway (flagged)."
        )
    if load > cores():
        print(f"WARNING: measuring on a busy machine (load {load:.2f} > {cores()} cores); figures are flagged")
    return load


def repeat(run: Callable[[], float | None], repeats: int = REPEATS, warmup: int = WARMUP) -> Measurement:
    """Call ``run`` ``warmup`` times, then ``repeats`` times; each call's figure is what it returns, or
    its wall time in seconds when it returns None."""
    for _ in range(warmup):
        run()
    load, values = LoadRecord(), []
    for _ in range(repeats):
        load.read()
        start = time.perf_counter()
        figure = run()
        elapsed = time.perf_counter() - start
        values.append(elapsed if figure is None else float(figure))
    load.read()
    return Measurement(Spread(tuple(values)), load)


def interleaved(
    runs: Mapping[str, Callable[[], float]], repeats: int = REPEATS, warmup: int = WARMUP
) -> tuple[dict[str, Spread], LoadRecord]:
    """Measure several variants in rounds (A, B, A, B, ...); each run returns its figure."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    load = LoadRecord()
    values: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        load.read()
        for name, run in runs.items():
            values[name].append(float(run()))
    load.read()
    return {name: Spread(tuple(v)) for name, v in values.items()}, load


def ratio(numerator: Spread, denominator: Spread) -> Spread:
    """Per-round ratios of two interleaved figures (round i of one over round i of the other)."""
    if len(numerator.values) != len(denominator.values):
        raise ValueError("ratio() needs figures measured in the same rounds")
    return Spread(tuple(a / b for a, b in zip(numerator.values, denominator.values)))


def rate(run: Callable[[], object], items: int, seconds: float) -> Callable[[], float]:
    """A figure-returning run: calls ``run`` for about ``seconds`` and returns ``items`` per second."""

    def measure() -> float:
        calls, start = 0, time.perf_counter()
        while True:
            run()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return calls * items / elapsed

    return measure


def provenance(command: str) -> str:
    """The line under a table: command, date, machine, library versions."""
    import platform
    from datetime import datetime, timezone
    from importlib import metadata

    versions = []
    for package in ("nncompress", "torch", "onnxruntime", "openvino", "numpy"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {cores()} cores, Python {platform.python_version()}"
    return f"`{command}` on {date}; {machine}; " + ", ".join(versions) + "."
