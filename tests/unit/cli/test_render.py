"""cli.render: per-layer rows from the API's reports, Markdown and HTML files with the chart."""

from __future__ import annotations

import pytest

from nncompress.algorithms.weights.report import WeightCompressionReport
from nncompress.cli.measure import Measurement, original_graph
from nncompress.cli.render import ReportContext, check_report_path, layer_rows, write_report
from nncompress.errors import ValidationError
from nncompress.report import CompressionReport

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def graph():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()
    return original_graph(model, torch.zeros(1, 4))


def _layers(graph) -> list[str]:
    return [n.name for n in graph if n.weight is not None]


def test_weight_report_rows_and_markdown(graph, tmp_path):
    first, second = _layers(graph)
    report = WeightCompressionReport(backend="torch", algorithm="WeightCompression")
    report.add_layer(first, "int4_asym, group size 4", 4, 12, True)
    report.add_layer(second, "float", 32, 0, False)
    report.skipped[second] = "ignored scope: name"
    report.add_layer("constant/embedding", "int8_asym, per-channel", 8, 20, False)  # a name the graph lacks
    measured = Measurement(items=2, layer_error={first: 0.0123456}, output_error={"output/o": 0.02},
                           output_cosine={"output/o": 0.9998})
    rows = layer_rows(report, graph, measured)
    assert [(r.name, r.params, r.compression, r.note, r.error) for r in rows] == [
        (first, 12, "int4_asym, group size 4", "", 0.0123456),
        (second, 6, "float", "ignored scope: name", None),
        ("constant/embedding", None, "int8_asym, per-channel", "", None),  # listed, never dropped
    ]
    ctx = ReportContext("nncompress compress-weights m -o o", "m", "o", report, rows, measured)
    written = write_report(tmp_path / "r.md", ctx)
    assert [p.name for p in written] == ["r.md", "r_layers.svg"]
    text = (tmp_path / "r.md").read_text()
    assert f"| 1 | {first} | linear | 12 | int4_asym, group size 4 | 0.01235 |  |" in text
    assert f"| 2 | {second} | linear | 6 | float | n/a | ignored scope: name |" in text
    assert "| output/o | 0.02 | 0.999800 |" in text
    assert "| 3 | constant/embedding |  |  | int8_asym, per-channel | n/a |  |" in text
    assert "![output error per layer](r_layers.svg)" in text
    assert "| int4_asym, group size 4 | 38% (1 / 3) | 100% (1 / 1) |" in text  # the API's distribution rows
    svg = (tmp_path / "r_layers.svg").read_text()
    assert svg.startswith("<svg") and first in svg and second not in svg  # no bar for an unmeasured layer


def test_quantizer_report_rows_and_html(graph, tmp_path):
    first, second = _layers(graph)
    report = CompressionReport(backend="torch", algorithm="PostTrainingQuantization")
    report.quantized = [(f"{first}/fq_weights_1", "weights per-channel axis 0 255 levels"),
                        ("x/fq_output_0", f"activations per-tensor unsigned 256 levels for {first}, {second}")]
    report.skipped = {second: "reverted by accuracy control", "elsewhere": "no weights"}
    rows = layer_rows(report, graph, Measurement())
    assert [(r.name, r.compression, r.note) for r in rows] == [
        (first, "weights per-channel axis 0 255 levels; input per-tensor unsigned 256 levels", ""),
        (second, "input per-tensor unsigned 256 levels", "reverted by accuracy control"),
    ]
    rows[0].error = 0.5
    ctx = ReportContext("cmd <x>", "m.onnx", "o.onnx", report, rows, Measurement(items=1))
    assert write_report(tmp_path / "r.html", ctx) == [tmp_path / "r.html"]
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "cmd &lt;x&gt;" in page
    assert f"<td>{first}</td>" in page and "<td>0.5</td>" in page
    assert "<h2>Other operations left in float</h2>" in page and "<td>elsewhere</td><td>no weights</td>" in page


def test_report_path_must_be_markdown_or_html(tmp_path):
    assert check_report_path(None) is None
    assert check_report_path(str(tmp_path / "r.html")).suffix == ".html"
    with pytest.raises(ValidationError, match="must end with .md or .html; got suffix '.pdf'"):
        check_report_path(str(tmp_path / "r.pdf"))
