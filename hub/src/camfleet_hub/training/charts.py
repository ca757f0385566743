"""Training curves as inline SVG, drawn on the server: no chart library, no script needed to see them."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any

WIDTH = 360
HEIGHT = 200
PAD_LEFT = 44
PAD_RIGHT = 12
PAD_TOP = 26
PAD_BOTTOM = 30


@dataclass(frozen=True)
class Series:
    """One line of a chart: its legend name, colour and (x, y) points."""

    name: str
    colour: str
    points: list[tuple[float, float]]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def line_chart(title: str, series: list[Series], y_min: float | None = None, y_max: float | None = None) -> str:
    """An SVG line chart of ``series`` over a shared x axis (epochs), with axis ticks and a legend."""
    points = [p for s in series for p in s.points]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<text x="{PAD_LEFT}" y="16" font-size="12" font-weight="600" fill="#1d2327">{escape(title)}</text>',
    ]
    if not points:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" font-size="12" fill="#6b7280" text-anchor="middle">'
            "no epochs yet</text></svg>"
        )
        return "".join(parts)
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    lo = min(ys) if y_min is None else y_min
    hi = max(ys) if y_max is None else y_max
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def sx(x: float) -> float:
        return PAD_LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return PAD_TOP + (1 - (min(max(y, lo), hi) - lo) / (hi - lo)) * plot_h

    bottom = PAD_TOP + plot_h
    parts.append(f'<path d="M{PAD_LEFT},{PAD_TOP} V{bottom} H{PAD_LEFT + plot_w}" stroke="#9ca3af" fill="none"/>')
    for i in range(5):
        y = lo + (hi - lo) * i / 4
        parts.append(
            f'<line x1="{PAD_LEFT}" x2="{PAD_LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#f0f0f0"/>'
            f'<text x="{PAD_LEFT - 4}" y="{sy(y) + 4:.1f}" font-size="10" fill="#6b7280" '
            f'text-anchor="end">{_fmt(y)}</text>'
        )
    step = max(1, round((x1 - x0) / 6))
    x = x0
    while x <= x1:
        parts.append(
            f'<text x="{sx(x):.1f}" y="{bottom + 14}" font-size="10" fill="#6b7280" text-anchor="middle">'
            f"{_fmt(x)}</text>"
        )
        x += step
    parts.append(
        f'<text x="{PAD_LEFT + plot_w}" y="{HEIGHT - 3}" font-size="10" fill="#6b7280" text-anchor="end">epoch</text>'
    )
    for n, s in enumerate(series):
        if not s.points:
            continue
        coords = " ".join(f"{sx(px):.1f},{sy(py):.1f}" for px, py in sorted(s.points))
        colour = escape(s.colour)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{sx(px):.1f}" cy="{sy(py):.1f}" r="2.5" fill="{colour}"/>' for px, py in s.points)
        lx = PAD_LEFT + 150 + n * 80
        parts.append(
            f'<rect x="{lx}" y="8" width="10" height="3" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="13" font-size="10" fill="#1d2327">{escape(s.name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _series(epochs: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    out = []
    for point in epochs:
        value = point.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append((float(point["epoch"]), float(value)))
    return out


def training_charts(epochs: list[dict[str, Any]]) -> str:
    """Loss and accuracy per epoch, side by side, as one HTML fragment of two SVGs."""
    loss = line_chart(
        "loss",
        [Series("train", "#2563eb", _series(epochs, "loss")), Series("val", "#b45309", _series(epochs, "val_loss"))],
        y_min=0.0,
    )
    accuracy = line_chart(
        "accuracy",
        [
            Series("train", "#2563eb", _series(epochs, "train_acc")),
            Series("val", "#15803d", _series(epochs, "val_acc")),
        ],
        y_min=0.0,
        y_max=1.0,
    )
    return f'<div class="charts">{loss}{accuracy}</div>'
