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


@dataclass(frozen=True)
class LayerDetail:
    """What the block-wise pipeline did to one layer: the algorithms that ran, its precision, and its
    relative output MSE ``|x (W - W^)^T|^2 / |x W^T|^2`` on sampled calibration inputs of its block for
    round to nearest (``error_before``) and for the result (``error_after``)."""

    algorithms: tuple[str, ...]
    precision: str
    error_before: float
    error_after: float


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
    details: dict[str, LayerDetail] = field(default_factory=dict)  # node -> block-wise per-layer figures

    def add_layer_detail(self, node: str, algorithms: tuple[str, ...], precision: str, before: float,
                         after: float) -> None:
        self.details[node] = LayerDetail(tuple(algorithms), precision, float(before), float(after))

    def details_table(self) -> str:
        """One line per layer the block-wise pipeline measured: algorithms, precision, output errors."""
        rows = [("layer", "algorithms", "precision", "RTN error", "error")]
        rows += [(node, ", ".join(d.algorithms), d.precision, f"{d.error_before:9.2e}", f"{d.error_after:9.2e}")
                 for node, d in self.details.items()]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]  # whole cells: nothing cut off
        return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)

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
        if self.details:
            text += ["Per-layer output error (relative output MSE on sampled calibration inputs):",
                     self.details_table()]
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
