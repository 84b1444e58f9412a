"""Dependency-free SVG charts: line charts (one or two y axes) and grouped bar charts.

Each function returns the SVG document as a string; ``save_svg`` writes it. Values that are ``None``
or not finite are left out (a gap in a line, no bar), never drawn as zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

from nncompress.errors import ValidationError

__all__ = ["PALETTE", "bar_chart_svg", "line_chart_svg", "nice_ticks", "save_svg"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_FONT = 'font-family="sans-serif" font-size="12"'
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 64, 36, 52
_LEGEND_ROW = 16


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValidationError(f"axis range must be finite, got [{lo}, {hi}]")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value < hi + step * 0.5:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _check_series(name: str, series: Mapping[str, Sequence], length: int | None) -> None:
    if not isinstance(series, Mapping):
        raise ValidationError(f"{name} must be a mapping of label -> values, got {type(series).__name__}")
    for label, values in series.items():
        if length is not None and len(values) != length:
            raise ValidationError(
                f"{name}[{label!r}] has {len(values)} values but there are {length} x values; "
                "give one value (or None) per x value"
            )


def _fmt(value: float) -> str:
    text = f"{value:.6g}"
    return text if "e" in text else text.rstrip("0").rstrip(".") if "." in text else text


class _Axis:
    """A linear map from data values to pixels, with round tick values."""

    def __init__(self, values: Sequence[float], pixel_lo: float, pixel_hi: float, ticks: int = 5):
        finite = [v for v in values if _finite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        self.ticks = nice_ticks(lo, hi, ticks)
        self.lo, self.hi = self.ticks[0], self.ticks[-1]
        self.pixel_lo, self.pixel_hi = pixel_lo, pixel_hi

    def __call__(self, value: float) -> float:
        return self.pixel_lo + (value - self.lo) / (self.hi - self.lo) * (self.pixel_hi - self.pixel_lo)


def _svg_open(width: int, height: int, title: str) -> list[str]:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
    ]
    if title:
        parts.append(
            f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" {_FONT} font-weight="bold">{escape(title)}</text>'
        )
    return parts


def _y_axis(axis: _Axis, x: float, label: str, right: bool, plot_w: float) -> list[str]:
    anchor, dx = ("start", 6) if right else ("end", -6)
    parts = [f'<line x1="{x:.1f}" y1="{axis.pixel_lo:.1f}" x2="{x:.1f}" y2="{axis.pixel_hi:.1f}" stroke="black"/>']
    for tick in axis.ticks:
        y = axis(tick)
        if not right:
            parts.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + plot_w:.1f}" y2="{y:.1f}" stroke="#e0e0e0"/>')
        parts.append(f'<text x="{x + dx:.1f}" y="{y + 4:.1f}" text-anchor="{anchor}" {_FONT}>{_fmt(tick)}</text>')
    if label:
        lx = x + (48 if right else -48)
        cy = (axis.pixel_lo + axis.pixel_hi) / 2
        parts.append(
            f'<text x="{lx:.1f}" y="{cy:.1f}" text-anchor="middle" {_FONT} '
            f'transform="rotate(-90 {lx:.1f} {cy:.1f})">{escape(label)}</text>'
        )
    return parts


def _legend(labels: Sequence[str], colours: Sequence[str], x: float, y: float, dashed: Sequence[bool]) -> list[str]:
    parts = []
    for i, (label, colour) in enumerate(zip(labels, colours)):
        row = y + i * _LEGEND_ROW
        dash = ' stroke-dasharray="6 3"' if dashed[i] else ""
        parts.append(
            f'<line x1="{x:.1f}" y1="{row:.1f}" x2="{x + 18:.1f}" y2="{row:.1f}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{x + 24:.1f}" y="{row + 4:.1f}" {_FONT}>{escape(str(label))}</text>')
    return parts


def _polyline(xs: Sequence[float], ys: Sequence, x_axis: _Axis, y_axis: _Axis, colour: str, dashed: bool) -> list[str]:
    """One <polyline> per run of finite points, plus a dot on each point."""
    dash = ' stroke-dasharray="6 3"' if dashed else ""
    parts, run = [], []
    for x, y in list(zip(xs, ys)) + [(None, None)]:
        if _finite(x) and _finite(y):
            run.append((x_axis(x), y_axis(y)))
            continue
        if len(run) > 1:
            points = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"/>' for px, py in run)
        run = []
    return parts


def line_chart_svg(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    y2_series: Mapping[str, Sequence[float | None]] | None = None,
    y2_label: str = "",
    width: int = 720,
    height: int = 400,
) -> str:
    """A line chart of ``series`` (label -> one y value per ``x``) against ``x``.

    ``y2_series`` are drawn dashed against a second y axis on the right (e.g. accuracy on the left,
    compression rate on the right).
    """
    y2_series = dict(y2_series or {})
    _check_series("series", series, len(x))
    _check_series("y2_series", y2_series, len(x))
    if not series and not y2_series:
        raise ValidationError("line_chart_svg needs at least one series; got none")
    labels = list(series) + list(y2_series)
    legend_h = _LEGEND_ROW * len(labels)
    plot_left, plot_right = _LEFT, width - _RIGHT
    plot_top, plot_bottom = _TOP, height - _BOTTOM - legend_h
    if plot_bottom - plot_top < 40 or plot_right - plot_left < 40:
        raise ValidationError(f"chart of {width}x{height} pixels is too small for {len(labels)} series")
    x_axis = _Axis(list(x), plot_left, plot_right, ticks=8)
    y_axis = _Axis([v for vs in series.values() for v in vs], plot_bottom, plot_top)
    parts = _svg_open(width, height, title)
    parts += _y_axis(y_axis, plot_left, y_label, right=False, plot_w=plot_right - plot_left)
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(labels))]
    for i, values in enumerate(series.values()):
        parts += _polyline(x, values, x_axis, y_axis, colours[i], dashed=False)
    if y2_series:
        y2_axis = _Axis([v for vs in y2_series.values() for v in vs], plot_bottom, plot_top)
        parts += _y_axis(y2_axis, plot_right, y2_label, right=True, plot_w=0)
        for j, values in enumerate(y2_series.values()):
            parts += _polyline(x, values, x_axis, y2_axis, colours[len(series) + j], dashed=True)
    parts.append(
        f'<line x1="{plot_left}" y1="{plot_bottom:.1f}" x2="{plot_right}" y2="{plot_bottom:.1f}" stroke="black"/>'
    )
    for tick in x_axis.ticks:
        px = x_axis(tick)
        parts.append(f'<text x="{px:.1f}" y="{plot_bottom + 16:.1f}" text-anchor="middle" {_FONT}>{_fmt(tick)}</text>')
    if x_label:
        parts.append(
            f'<text x="{(plot_left + plot_right) / 2:.1f}" y="{plot_bottom + 34:.1f}" '
            f'text-anchor="middle" {_FONT}>{escape(x_label)}</text>'
        )
    dashed = [False] * len(series) + [True] * len(y2_series)
    parts += _legend(labels, colours, plot_left, plot_bottom + 52 - 6, dashed)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def bar_chart_svg(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    width: int = 720,
    height: int = 400,
) -> str:
    """A grouped vertical bar chart: one group per category, one bar per series in each group.

    Axis starts at zero unless values are negative; category names longer than the bar group are
    written rotated.
    """
    _check_series("series", series, len(categories))
    if not series or not categories:
        raise ValidationError(
            f"bar_chart_svg needs at least one category and one series; got {len(categories)} categories, "
            f"{len(series)} series"
        )
    labels = list(series)
    rotate = max(len(str(c)) for c in categories) * 7 > (width - _LEFT - _RIGHT) / len(categories)
    label_h = min(120, max(len(str(c)) for c in categories) * 6) if rotate else 20
    legend_h = _LEGEND_ROW * len(labels) if len(labels) > 1 else 0
    plot_left, plot_right = _LEFT, width - _RIGHT // 2
    plot_top, plot_bottom = _TOP, height - _BOTTOM - label_h - legend_h + 20
    if plot_bottom - plot_top < 40:
        raise ValidationError(f"chart of {width}x{height} pixels is too small for these category labels")
    values = [v for vs in series.values() for v in vs if _finite(v)]
    y_axis = _Axis(values + [0.0], plot_bottom, plot_top)
    parts = _svg_open(width, height, title)
    parts += _y_axis(y_axis, plot_left, y_label, right=False, plot_w=plot_right - plot_left)
    group_w = (plot_right - plot_left) / len(categories)
    bar_w = group_w * 0.8 / len(labels)
    zero = y_axis(0.0)
    for c, category in enumerate(categories):
        gx = plot_left + c * group_w + group_w * 0.1
        for s, label in enumerate(labels):
            value = series[label][c]
            if not _finite(value):
                continue
            top, bottom = sorted((y_axis(value), zero))
            parts.append(
                f'<rect x="{gx + s * bar_w:.1f}" y="{top:.1f}" width="{bar_w * 0.95:.1f}" '
                f'height="{max(bottom - top, 0.5):.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                f"<title>{escape(str(category))} {escape(str(label))}: {_fmt(value)}</title></rect>"
            )
        cx, cy = plot_left + (c + 0.5) * group_w, plot_bottom + 14
        if rotate:
            parts.append(
                f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="end" {_FONT} '
                f'transform="rotate(-45 {cx:.1f} {cy:.1f})">{escape(str(category))}</text>'
            )
        else:
            parts.append(f'<text x="{cx:.1f}" y="{cy:.1f}" text-anchor="middle" {_FONT}>{escape(str(category))}</text>')
    parts.append(f'<line x1="{plot_left}" y1="{zero:.1f}" x2="{plot_right}" y2="{zero:.1f}" stroke="black"/>')
    if x_label:
        parts.append(
            f'<text x="{(plot_left + plot_right) / 2:.1f}" y="{plot_bottom + label_h + 8:.1f}" '
            f'text-anchor="middle" {_FONT}>{escape(x_label)}</text>'
        )
    if len(labels) > 1:
        colours = [PALETTE[i % len(PALETTE)] for i in range(len(labels))]
        parts += _legend(labels, colours, plot_left, plot_bottom + label_h + 24, [False] * len(labels))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def save_svg(svg: str, path: str | Path) -> Path:
    """Write an SVG string to ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg, encoding="utf-8")
    return path
