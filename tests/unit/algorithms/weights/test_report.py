"""WeightCompressionReport: the bit-width table and the per-layer output errors, every cell whole."""

from __future__ import annotations

from nncompress.algorithms.weights.report import WeightCompressionReport


def _report() -> WeightCompressionReport:
    report = WeightCompressionReport(backend="torch", algorithm="WeightCompression")
    long_name = "model/" + "very_long_scope/" * 6 + "down_proj/linear/0"
    report.add_layer("model/layers/0/q_proj/linear/0", "int4_asym, group size 64", 4, 64, True)
    report.add_layer(long_name, "int4_asym, group size 128", 4, 128, True)
    report.add_layer_detail("model/layers/0/q_proj/linear/0", ("AWQ", "scale estimation"),
                            "int4_asym, group size 64", 1.5e-2, 2.5e-4)
    report.add_layer_detail(long_name, ("AWQ", "scale estimation", "GPTQ", "LoRA correction"),
                            "int4_asym, group size 128", 4.75e-3, 9.45e-6)
    return report


def test_the_per_layer_table_keeps_every_cell_whole():
    # "group size 128" used to be cut to "group size 12", long layer names and algorithm lists cut too
    lines = _report().details_table().splitlines()
    assert [cell.strip() for cell in lines[0].split(" | ")] == ["layer", "algorithms", "precision", "RTN error",
                                                                  "error"]
    last = [cell.strip() for cell in lines[2].split(" | ")]
    assert last == ["model/" + "very_long_scope/" * 6 + "down_proj/linear/0",
                    "AWQ, scale estimation, GPTQ, LoRA correction", "int4_asym, group size 128", "4.75e-03", "9.45e-06"]
    assert len({line.index(" | ") for line in lines}) == 1  # the columns line up


def test_the_report_text_holds_both_tables():
    text = str(_report())
    assert "Statistics of the bitwidth distribution:" in text
    assert "int4_asym, group size 128" in text and "Per-layer output error" in text
