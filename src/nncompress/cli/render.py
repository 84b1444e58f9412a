"""The ``--report`` file: what was compressed, how, and the error it introduced, per layer (Markdown or
HTML), with a bar chart of the per-layer error."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from nncompress.cli.measure import Measurement
from nncompress.errors import ValidationError
from nncompress.graph.ir import Graph
from nncompress.plot import bar_chart_svg, save_svg
from nncompress.report import CompressionReport

REPORT_SUFFIXES = (".md", ".html", ".htm")
HEADERS = ("#", "layer", "operation", "parameters", "compression", "output error", "note")
MAX_CHART_NAMES = 12  # more layers than this: the chart labels bars by their table row number


@dataclass
class LayerRow:
    name: str
    op_type: str
    params: int | None
    compression: str
    note: str = ""
    error: float | None = None


def check_report_path(report: str | None) -> Path | None:
    if report is None:
        return None
    path = Path(report)
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise ValidationError(f"--report {report!r} must end with .md or .html; got suffix {path.suffix!r}")
    if not path.parent.exists():
        raise ValidationError(f"--report {report!r}: folder {str(path.parent)!r} does not exist")
    return path


def _params(node) -> int | None:
    return math.prod(node.weight.shape) if node.weight is not None else None


def layer_rows(report: CompressionReport, graph: Graph, measured: Measurement) -> list[LayerRow]:
    """One row per compressed or considered layer, in graph order."""
    per_layer = getattr(report, "layers", None)
    describe = _weight_rows if per_layer is not None else _quantizer_rows
    rows = describe(report, graph)
    for row in rows:
        row.error = measured.layer_error.get(row.name)
    return rows


def _weight_rows(report, graph: Graph) -> list[LayerRow]:
    rows = []
    for name in _in_graph_order(report.layers, graph):
        config, note = report.layers[name], report.skipped.get(name, "")
        node = graph.nodes.get(name)
        rows.append(LayerRow(name, node.op_type if node else "", _params(node) if node else None,
                             "float" if note else config, note))
    return rows


def _in_graph_order(names, graph: Graph) -> list[str]:
    """``names`` in graph order; names the graph does not hold (e.g. constant subgraphs a capture leaves out)
    follow in their own order."""
    wanted = set(names)
    ordered = [node.name for node in graph if node.name in wanted]
    return ordered + [name for name in names if name not in graph.nodes]


def _quantizer_rows(report: CompressionReport, graph: Graph) -> list[LayerRow]:
    inputs: dict[str, list[str]] = {}
    weights: dict[str, str] = {}
    for name, desc in report.quantized:
        head, sep, targets = desc.partition(" for ")
        if "/fq_weights_" in name:
            weights[name.rsplit("/fq_weights_", 1)[0]] = desc.removeprefix("weights ")
        elif sep:
            for target in targets.split(", "):
                inputs.setdefault(target, []).append(head.removeprefix("activations "))
    rows = []
    in_graph = [n for n in report.skipped if n in graph.nodes]  # other skipped operations get their own table
    for name in _in_graph_order(list(dict.fromkeys([*weights, *inputs, *in_graph])), graph):
        node = graph.nodes.get(name)
        parts = [f"weights {weights[name]}"] if name in weights else []
        parts += [f"input {desc}" for desc in inputs.get(name, [])]
        rows.append(LayerRow(name, node.op_type if node else "", _params(node) if node else None,
                             "; ".join(parts) or "float", report.skipped.get(name, "")))
    return rows


def _fmt_error(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def chart_svg(rows: list[LayerRow]) -> str | None:
    measured = [(i, r) for i, r in enumerate(rows, 1) if r.error is not None and math.isfinite(r.error)]
    if not measured:
        return None
    by_name = len(measured) <= MAX_CHART_NAMES
    categories = [r.name if by_name else str(i) for i, r in measured]
    return bar_chart_svg(categories, {"relative L2 error": [r.error for _, r in measured]},
                         title="Output error per layer (original vs compressed model)",
                         x_label="layer" if by_name else "layer (row # in the table)", y_label="relative L2 error",
                         width=max(720, 18 * len(measured) + 140))


@dataclass
class ReportContext:
    command: str
    model: str
    output: str
    report: CompressionReport
    rows: list[LayerRow]
    measured: Measurement


def _summary_lines(ctx: ReportContext) -> list[str]:
    lines = [f"command: `{ctx.command}`", f"model: `{ctx.model}`", f"output: `{ctx.output}`"]
    lines += [line.strip() for line in ctx.report.summary().splitlines()]
    if ctx.measured.items:
        lines.append(f"error measured on {ctx.measured.items} input items")
    lines += [f"note: {note}" for note in ctx.measured.notes]
    if ctx.measured.unmatched:
        lines.append(f"no output error for {len(ctx.measured.unmatched)} layers the runtime graph does not name: "
                     f"{', '.join(ctx.measured.unmatched[:5])}{', ...' if len(ctx.measured.unmatched) > 5 else ''}")
    return lines


def _distribution(report: CompressionReport) -> list[tuple[str, ...]]:
    rows = getattr(report, "rows", None)
    return list(rows()) if callable(rows) else []


def _row_cells(index: int, row: LayerRow) -> tuple[str, ...]:
    params = "" if row.params is None else f"{row.params:,}"
    return (str(index), row.name, row.op_type, params, row.compression, _fmt_error(row.error), row.note)


def _output_cells(measured: Measurement) -> list[tuple[str, ...]]:
    return [(name, _fmt_error(error), f"{measured.output_cosine[name]:.6f}")
            for name, error in measured.output_error.items()]


def render_markdown(ctx: ReportContext, chart_file: str | None) -> str:
    out = ["# nncompress report", ""] + [f"- {line}" for line in _summary_lines(ctx)] + [""]
    if _distribution(ctx.report):
        from nncompress.algorithms.weights.report import HEADERS as DIST_HEADERS

        out += ["## Bit-width distribution", "", *_md_table(DIST_HEADERS, _distribution(ctx.report)), ""]
    if ctx.measured.output_error:
        out += ["## Error at the model outputs", "",
                *_md_table(("output", "relative L2 error", "mean cosine"), _output_cells(ctx.measured)), ""]
    out += ["## Layers", ""]
    if chart_file:
        out += [f"![output error per layer]({chart_file})", ""]
    out += [*_md_table(HEADERS, [_row_cells(i, r) for i, r in enumerate(ctx.rows, 1)]), ""]
    extra = {k: v for k, v in ctx.report.skipped.items() if k not in {r.name for r in ctx.rows}}
    if extra:
        out += ["## Other operations left in float", "", *_md_table(("operation", "reason"), extra.items()), ""]
    return "\n".join(out)


def _md_table(headers, rows) -> list[str]:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]


def render_html(ctx: ReportContext, svg: str | None) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>nncompress report</title>',
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>",
           "<h1>nncompress report</h1>", "<ul>"]
    out += [f"<li>{esc(line.replace('`', ''))}</li>" for line in _summary_lines(ctx)] + ["</ul>"]
    if _distribution(ctx.report):
        from nncompress.algorithms.weights.report import HEADERS as DIST_HEADERS

        out += ["<h2>Bit-width distribution</h2>", _html_table(DIST_HEADERS, _distribution(ctx.report))]
    if ctx.measured.output_error:
        out += ["<h2>Error at the model outputs</h2>",
                _html_table(("output", "relative L2 error", "mean cosine"), _output_cells(ctx.measured))]
    out += ["<h2>Layers</h2>"] + ([svg] if svg else [])
    out.append(_html_table(HEADERS, [_row_cells(i, r) for i, r in enumerate(ctx.rows, 1)]))
    extra = {k: v for k, v in ctx.report.skipped.items() if k not in {r.name for r in ctx.rows}}
    if extra:
        out += ["<h2>Other operations left in float</h2>", _html_table(("operation", "reason"), extra.items())]
    return "\n".join(out + ["</body></html>", ""])


def _html_table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(path: Path, ctx: ReportContext) -> list[Path]:
    """Write the report (and, for Markdown, the chart as an .svg beside it); the files written."""
    svg = chart_svg(ctx.rows)
    if path.suffix.lower() == ".md":
        written = [path]
        chart_name = None
        if svg:
            chart = save_svg(svg, path.with_name(path.stem + "_layers.svg"))
            chart_name, written = chart.name, [path, chart]
        path.write_text(render_markdown(ctx, chart_name), encoding="utf-8")
        return written
    path.write_text(render_html(ctx, svg), encoding="utf-8")
    return [path]
