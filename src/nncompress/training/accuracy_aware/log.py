"""The per-epoch record of an accuracy-aware loop, written as CSV, JSON and an SVG chart in ``log_dir``."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from nncompress.plot import line_chart_svg, save_svg

LOG_CSV = "accuracy_aware_log.csv"
LOG_JSON = "accuracy_aware_log.json"
PLOT_SVG = "accuracy_aware_progress.svg"


@dataclass(frozen=True)
class EpochRecord:
    """One validation of the loop. ``epoch`` counts training epochs done (0: before any training)."""

    epoch: int
    phase: str  # "initial" (no training yet), "fine_tuning" (early exit), "initial_training", "search"
    compression_rate: float | None
    accuracy: float
    accuracy_drop: float  # uncompressed - accuracy, in the metric's units
    relative_drop_percent: float
    within_budget: bool
    compression_stage: int
    learning_rate: float | None
    compression_rate_step: float | None = None  # adaptive_compression_level's current step

    def as_row(self) -> dict:
        return asdict(self)


def write_logs(records: list[EpochRecord], log_dir: str | Path, uncompressed: float, maximal_drop: float,
               summary: dict) -> dict[str, Path]:
    """Write (overwrite) the CSV, the JSON (records + ``summary``) and the chart; their paths by kind."""
    folder = Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / LOG_CSV, "json": folder / LOG_JSON, "plot": folder / PLOT_SVG}
    names = [f.name for f in fields(EpochRecord)]
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(r.as_row() for r in records)
    payload = {"uncompressed_accuracy": uncompressed, "maximal_accuracy_drop": maximal_drop, **summary,
               "epochs": [r.as_row() for r in records]}
    paths["json"].write_text(json.dumps(payload, indent=1), encoding="utf-8")
    save_svg(progress_chart(records, uncompressed, maximal_drop, summary.get("mode", "")), paths["plot"])
    return paths


def progress_chart(records: list[EpochRecord], uncompressed: float, maximal_drop: float, mode: str = "") -> str:
    """Accuracy (with the uncompressed accuracy and the budget's floor) on the left axis, compression rate
    (dashed) on the right, per epoch."""
    x = [r.epoch for r in records]
    series = {
        "accuracy": [r.accuracy for r in records],
        "uncompressed accuracy": [uncompressed] * len(records),
        "budget floor": [uncompressed - maximal_drop] * len(records),
    }
    rates = [r.compression_rate for r in records]
    y2 = {"compression rate": rates} if any(v is not None for v in rates) else None
    return line_chart_svg(x, series, y2_series=y2, title=f"Accuracy-aware training ({mode})".replace(" ()", ""),
                          x_label="epoch", y_label="accuracy", y2_label="compression rate")


def format_table(records: list[EpochRecord]) -> str:
    """The records as a Markdown table (for logs and BENCHMARKS.md)."""
    head = "| epoch | phase | compression rate | accuracy | drop | within budget | stage | lr |"
    rows = [head, "|---:|---|---:|---:|---:|---|---:|---:|"]
    for r in records:
        rate = "—" if r.compression_rate is None else f"{r.compression_rate:.4f}"
        lr = "—" if r.learning_rate is None else f"{r.learning_rate:.2e}"
        rows.append(f"| {r.epoch} | {r.phase} | {rate} | {r.accuracy:.4f} | {r.accuracy_drop:+.4f} | "
                    f"{'yes' if r.within_budget else 'no'} | {r.compression_stage} | {lr} |")
    return "\n".join(rows)
