"""What a compression call did: quantized, skipped and why, timings. Returned and printable."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NonFiniteSkips:
    """Non-finite (NaN/Inf) activation values that the calibration statistics left out."""

    values: int
    tensors: int
    items: int
    first_tensor: str
    first_item: int

    def __str__(self) -> str:
        return (
            f"skipped {_count(self.values, 'non-finite (NaN/Inf) activation value')} in "
            f"{_count(self.tensors, 'tensor')} of {_count(self.items, 'calibration item')} (first: tensor "
            f"{self.first_tensor!r} in item {self.first_item}); statistics use the finite values only"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class CompressionReport:
    backend: str = ""
    algorithm: str = ""
    quantized: list[tuple[str, str]] = field(default_factory=list)  # (quantizer name, description)
    skipped: dict[str, str] = field(default_factory=dict)  # operation -> reason
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    calibration_items: int = 0
    nonfinite: NonFiniteSkips | None = None  # what the main statistics pass skipped

    def summary(self) -> str:
        weights = sum(1 for name, _ in self.quantized if "fq_weights" in name)
        lines = [
            f"{self.algorithm} ({self.backend}): {len(self.quantized) - weights} activation and "
            f"{weights} weight quantizers, {len(self.skipped)} operations left in float, "
            f"{self.calibration_items} calibration items",
        ]
        return "\n".join(lines + self._note_lines())

    def _note_lines(self) -> list[str]:
        lines = [f"  warning: {self.nonfinite}"] if self.nonfinite else []
        lines += [f"  note: {n}" for n in self.notes]
        return lines + [f"  time {k}: {v:.3f} s" for k, v in self.timings.items()]

    def __str__(self) -> str:
        lines = [self.summary(), "Quantized:"]
        lines += [f"  {name}: {desc}" for name, desc in self.quantized]
        return "\n".join(lines + self._skipped_lines())

    def _skipped_lines(self) -> list[str]:
        if not self.skipped:
            return []
        return ["Left in float:"] + [f"  {name}: {why}" for name, why in self.skipped.items()]

    def _print_skipped(self, console) -> None:
        if not self.skipped:
            return
        from rich.table import Table

        table = Table("operation", "reason", title="Left in float")
        for name, why in self.skipped.items():
            table.add_row(name, why)
        console.print(table)

    def print(self) -> None:
        """Print the report as tables on the terminal."""
        from rich.console import Console
        from rich.table import Table

        console = Console()
        console.print(self.summary())
        table = Table("quantizer", "configuration", title="Quantized")
        for name, desc in self.quantized:
            table.add_row(name, desc)
        console.print(table)
        self._print_skipped(console)


_LAST: list[CompressionReport] = []
_THREAD_LAST = threading.local()


def set_last_report(report: CompressionReport) -> None:
    _LAST[:] = [report]
    _THREAD_LAST.report = report


def last_report() -> CompressionReport | None:
    """The report of this thread's most recent compression call; in a thread that made none, the
    report of the most recent call in this process."""
    mine = getattr(_THREAD_LAST, "report", None)
    if mine is not None:
        return mine
    return _LAST[0] if _LAST else None
