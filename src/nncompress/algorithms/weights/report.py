"""The report of a ``compress_weights`` call: bit-width distribution table and per-layer choices."""

from __future__ import annotations

from dataclasses import dataclass, field

from nncompress.report import CompressionReport

HEADERS = ("weight compression mode", "% all parameters (layers)", "% ratio-defining parameters (layers)")


@dataclass
class DistributionRow:
    config: str
    bits: int
    params: int = 0
    layers: int = 0
    ratio_params: int = 0
    ratio_layers: int = 0


@dataclass
class WeightCompressionReport(CompressionReport):
    """A ``CompressionReport`` plus the bit-width distribution (``distribution``, ``table()``) and
    the configuration of every weight (``layers``: node -> description)."""

    distribution: list[DistributionRow] = field(default_factory=list)
    layers: dict[str, str] = field(default_factory=dict)
    total_params: int = 0
    total_layers: int = 0
    ratio_params: int = 0
    ratio_layers: int = 0

    def add_layer(self, node: str, config: str, bits: int, params: int, ratio_defining: bool) -> None:
        row = next((r for r in self.distribution if r.config == config), None)
        if row is None:
            row = DistributionRow(config, bits)
            self.distribution.append(row)
        row.params += params
        row.layers += 1
        self.total_params += params
        self.total_layers += 1
        if ratio_defining:
            row.ratio_params += params
            row.ratio_layers += 1
            self.ratio_params += params
            self.ratio_layers += 1
        self.layers[node] = config

    def rows(self) -> list[tuple[str, str, str]]:
        """The distribution as text cells, widest bit width first."""
        rows = []
        for row in sorted(self.distribution, key=lambda r: (-r.bits, r.config)):
            share = _cell(row.params, self.total_params, row.layers, self.total_layers)
            ratio = _cell(row.ratio_params, self.ratio_params, row.ratio_layers, self.ratio_layers)
            rows.append((row.config, share, ratio))
        return rows

    def table(self) -> str:
        """The distribution as a plain-text table."""
        rows = [HEADERS, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)

    def summary(self) -> str:
        compressed = sum(r.layers for r in self.distribution if r.config != "float")
        lines = [
            f"{self.algorithm} ({self.backend}): {compressed} of {self.total_layers} weights compressed, "
            f"{self.calibration_items} calibration items",
        ]
        return "\n".join(lines + self._note_lines())

    def __str__(self) -> str:
        text = [self.summary(), "Statistics of the bitwidth distribution:", self.table()]
        return "\n".join(text + self._skipped_lines())

    def print(self) -> None:
        """Print the summary and the bit-width distribution as tables on the terminal."""
        from rich.console import Console
        from rich.table import Table

        console = Console()
        console.print(self.summary())
        table = Table(*HEADERS, title="Statistics of the bitwidth distribution")
        for row in self.rows():
            table.add_row(*row)
        console.print(table)
        self._print_skipped(console)


def _cell(part: int, whole: int, layers: int, all_layers: int) -> str:
    share = 100.0 * part / whole if whole else 0.0
    return f"{share:.0f}% ({layers} / {all_layers})"
