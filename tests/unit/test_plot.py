"""SVG charts: well-formed XML, points where the data says, gaps for missing values, clear errors."""

import xml.etree.ElementTree as ET

import pytest

from nncompress.errors import ValidationError
from nncompress.plot import bar_chart_svg, line_chart_svg, nice_ticks, save_svg

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _points(poly: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in poly.get("points").split()]


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 47) == [0, 10, 20, 30, 40, 50]
    ticks = nice_ticks(5.0, 5.0)
    assert ticks[0] < 5.0 < ticks[-1]


def test_line_chart_maps_values_linearly_and_uses_two_axes():
    svg = line_chart_svg(
        [0, 1, 2, 3],
        {"accuracy": [0.0, 0.5, 1.0, 0.5]},
        y2_series={"rate": [0, 10, 20, 30]},
        title="t <&>",
        x_label="epoch",
        y_label="acc",
        y2_label="rate",
    )
    root = _parse(svg)  # escaping keeps it well-formed
    solid, dashed = root.findall(f"{NS}polyline")
    pts = _points(solid)
    assert len(pts) == 4
    xs = [p[0] for p in pts]
    assert xs[1] - xs[0] == pytest.approx(xs[3] - xs[2], abs=0.2)  # evenly spaced x
    ys = [p[1] for p in pts]
    assert ys[1] == pytest.approx((ys[0] + ys[2]) / 2, abs=0.2)  # 0.5 halfway between 0 and 1
    assert ys[2] < ys[0]  # larger values higher up
    assert dashed.get("stroke-dasharray")
    dys = [p[1] for p in _points(dashed)]
    assert dys[0] - dys[1] == pytest.approx(dys[2] - dys[3], abs=0.2)
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "t <&>" in texts and "accuracy" in texts and "rate" in texts


def test_line_chart_leaves_gaps_for_missing_values():
    root = _parse(line_chart_svg([0, 1, 2, 3, 4], {"a": [1.0, 2.0, None, 3.0, float("nan")]}))
    lines = root.findall(f"{NS}polyline")
    assert [len(_points(p)) for p in lines] == [2]  # the run 3.0 alone is a dot, not a line
    assert len(root.findall(f"{NS}circle")) == 3


def test_bar_chart_heights_are_proportional_to_values():
    root = _parse(bar_chart_svg(["conv1", "conv2", "fc"], {"error": [1.0, 2.0, 4.0], "b": [0.5, None, 1.0]}))
    rects = [r for r in root.findall(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(rects) == 5  # the None bar is not drawn
    heights = {r.find(f"{NS}title").text: float(r.get("height")) for r in rects}
    assert heights["conv2 error: 2"] == pytest.approx(2 * heights["conv1 error: 1"], rel=0.01)
    assert heights["fc error: 4"] == pytest.approx(4 * heights["conv1 error: 1"], rel=0.01)


def test_charts_reject_mismatched_lengths_and_empty_input(tmp_path):
    with pytest.raises(ValidationError, match=r"series\['a'\] has 2 values but there are 3 x values"):
        line_chart_svg([0, 1, 2], {"a": [1, 2]})
    with pytest.raises(ValidationError, match="at least one series"):
        line_chart_svg([0, 1], {})
    with pytest.raises(ValidationError, match="at least one category"):
        bar_chart_svg([], {"a": []})
    path = save_svg(line_chart_svg([0, 1], {"a": [1, 2]}), tmp_path / "sub" / "c.svg")
    assert path.read_text().startswith("<svg")


def _coordinates(root: ET.Element):
    for element in root.iter():
        for attr in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy"):
            if element.get(attr) is not None:
                yield attr, float(element.get(attr))
        if element.get("points"):
            for x, y in _points(element):
                yield "x", x
                yield "y", y


@pytest.mark.parametrize("svg", [
    line_chart_svg(list(range(12)), {"accuracy": [0.9 + 0.001 * i for i in range(12)], "floor": [0.89] * 12},
                   y2_series={"rate": [0.1 * i for i in range(12)]}, title="t", x_label="epoch", y_label="a",
                   y2_label="r", width=500, height=300),
    bar_chart_svg([f"layer_{i}.conv.weight" for i in range(9)], {"err": [i * 0.1 for i in range(9)], "b": [1] * 9},
                  title="t", y_label="e", width=500, height=400),
], ids=["line", "bar"])
def test_everything_is_drawn_inside_the_canvas(svg):
    root = _parse(svg)
    width, height = float(root.get("width")), float(root.get("height"))
    for attr, value in _coordinates(root):
        limit = width if attr.startswith(("x", "cx")) else height
        assert 0 <= value <= limit, (attr, value)
