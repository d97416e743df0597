"""Line charts as inline SVG: the report's loss and lr curves, drawn without any script or library.

A chart is a plain function of its series, so the page needs nothing but a browser to show it and stays
the same bytes for the same metrics.
"""

from __future__ import annotations

import itertools
import math
from html import escape

WIDTH, HEIGHT = 520, 260  # two side by side on a laptop screen
LEFT, RIGHT, TOP, BOTTOM = 64, 22, 12, 28  # margins around the plot area, px
MAX_POINTS = 800  # a longer series is thinned to this many points (keeps the page small)
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

Series = dict[str, list[tuple[float, float]]]


def metric_series(rows: list[dict], prefix: str) -> Series:
    """`{key: [(step, value), …]}` for every finite numeric key of metrics.jsonl rows starting with `prefix`."""
    series: Series = {}
    for row in rows:
        for key, value in row.items():
            if not key.startswith(prefix) or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                series.setdefault(key, []).append((float(row["step"]), float(value)))
    return series


def line_chart(title: str, series: Series, x_label: str = "step") -> str:
    """One SVG with a line per series, axes with round ticks and a legend; log scale when the values are
    all positive and span more than two decades (learning rates under warmup, adaptive d·lr)."""
    series = {k: _thin(v) for k, v in series.items() if v}
    if not series:
        return ""
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points]
    log_y = min(ys) > 0 and max(ys) / min(ys) > 100
    to_y = math.log10 if log_y else float
    x_range = _span(min(xs), max(xs))
    y_range = _span(to_y(min(ys)), to_y(max(ys)))

    def px(x: float, y: float) -> str:
        left = LEFT + (x - x_range[0]) / (x_range[1] - x_range[0]) * (WIDTH - LEFT - RIGHT)
        top = TOP + (1 - (to_y(y) - y_range[0]) / (y_range[1] - y_range[0])) * (HEIGHT - TOP - BOTTOM)
        return f"{left:.1f},{top:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
        'fill="#fff" stroke="#ccc"/>',
    ]
    parts += _y_ticks(y_range, log_y)
    parts += _x_ticks(x_range, x_label)
    for colour, (key, points) in zip(itertools.cycle(COLOURS), series.items(), strict=False):
        if len(points) == 1:
            x, y = px(*points[0]).split(",")
            parts.append(
                f'<circle cx="{x}" cy="{y}" r="3" fill="{colour}"><title>{escape(key)}</title></circle>'
            )
        else:
            line = " ".join(px(x, y) for x, y in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>')
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>{escape(key)}</span>'
        for colour, key in zip(itertools.cycle(COLOURS), series, strict=False)
    )
    scale = " (log scale)" if log_y else ""
    return f'<figure><figcaption>{escape(title)}{scale}</figcaption>{"".join(parts)}<div class="legend">{legend}</div></figure>'


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round numbers (1, 2, 5 × 10^k apart) covering [low, high], about `count` of them."""
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _y_ticks(y_range: tuple[float, float], log_y: bool) -> list[str]:
    low, high = y_range
    if log_y:
        ticks = list(range(math.ceil(low), math.floor(high) + 1)) or [low]
    else:
        ticks = nice_ticks(low, high)
    lines = []
    for tick in ticks:
        top = TOP + (1 - (tick - low) / (high - low)) * (HEIGHT - TOP - BOTTOM)
        label = f"1e{tick:g}" if log_y else f"{tick:.4g}"
        lines.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{top:.1f}" y2="{top:.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 4}" y="{top + 4:.1f}" text-anchor="end" font-size="11">{label}</text>'
        )
    return lines


def _x_ticks(x_range: tuple[float, float], x_label: str) -> list[str]:
    low, high = x_range
    lines = []
    for tick in nice_ticks(low, high):
        left = LEFT + (tick - low) / (high - low) * (WIDTH - LEFT - RIGHT)
        lines.append(
            f'<text x="{left:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" font-size="11">{tick:g}</text>'
        )
    lines.append(  # under the y axis' labels, clear of the last x tick
        f'<text x="{LEFT - 4}" y="{HEIGHT - BOTTOM + 14}" text-anchor="end" font-size="11">{escape(x_label)}</text>'
    )
    return lines


def _span(low: float, high: float) -> tuple[float, float]:
    """A range with room: a flat series gets a band around its value instead of a zero-height axis."""
    if high - low < 1e-12:
        pad = abs(low) * 0.1 or 1.0
        return low - pad, high + pad
    return low, high


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Every k-th point (the last always kept), so a long run's curve stays a few kilobytes."""
    if len(points) <= MAX_POINTS:
        return points
    stride = math.ceil(len(points) / MAX_POINTS)
    return points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])
