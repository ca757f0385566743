"""Training curves as inline SVG, drawn on the server: no chart library, no script needed to see them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from camfleet_contract.rest import EpochMetrics

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


@dataclass(frozen=True, slots=True)
class _Scale:
    """Data → pixel mapping of one chart: x over [x0, x1], y clamped to [lo, hi]."""

    x0: float
    x1: float
    lo: float
    hi: float

    @property
    def bottom(self) -> float:
        return HEIGHT - PAD_BOTTOM

    @property
    def right(self) -> float:
        return WIDTH - PAD_RIGHT

    def sx(self, x: float) -> float:
        return PAD_LEFT + (x - self.x0) / (self.x1 - self.x0) * (self.right - PAD_LEFT)

    def sy(self, y: float) -> float:
        return PAD_TOP + (1 - (min(max(y, self.lo), self.hi) - self.lo) / (self.hi - self.lo)) * (self.bottom - PAD_TOP)


def _scale(points: list[tuple[float, float]], y_min: float | None, y_max: float | None) -> _Scale:
    """The axes' ranges: the points' extent (widened when flat), ``y_min`` / ``y_max`` where given."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    lo = min(ys) if y_min is None else y_min
    hi = max(ys) if y_max is None else y_max
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return _Scale(x0, x1, lo, hi)


def _axes(sc: _Scale) -> list[str]:
    """The axis lines, five y gridlines with labels, about six x (epoch) ticks and the x axis name."""
    parts = [f'<path d="M{PAD_LEFT},{PAD_TOP} V{sc.bottom} H{sc.right}" stroke="#9ca3af" fill="none"/>']
    for i in range(5):
        y = sc.lo + (sc.hi - sc.lo) * i / 4
        parts.append(
            f'<line x1="{PAD_LEFT}" x2="{sc.right}" y1="{sc.sy(y):.1f}" y2="{sc.sy(y):.1f}" stroke="#f0f0f0"/>'
            f'<text x="{PAD_LEFT - 4}" y="{sc.sy(y) + 4:.1f}" font-size="10" fill="#6b7280" '
            f'text-anchor="end">{_fmt(y)}</text>'
        )
    step = max(1, round((sc.x1 - sc.x0) / 6))
    x = sc.x0
    while x <= sc.x1:
        parts.append(
            f'<text x="{sc.sx(x):.1f}" y="{sc.bottom + 14}" font-size="10" fill="#6b7280" text-anchor="middle">'
            f"{_fmt(x)}</text>"
        )
        x += step
    parts.append(f'<text x="{sc.right}" y="{HEIGHT - 3}" font-size="10" fill="#6b7280" text-anchor="end">epoch</text>')
    return parts


def _lines(sc: _Scale, series: list[Series]) -> list[str]:
    """Each series as a polyline with dots, and its legend entry (the n-th series' at a fixed offset)."""
    parts = []
    for n, s in enumerate(series):
        if not s.points:
            continue
        coords = " ".join(f"{sc.sx(px):.1f},{sc.sy(py):.1f}" for px, py in sorted(s.points))
        colour = escape(s.colour)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(
            f'<circle cx="{sc.sx(px):.1f}" cy="{sc.sy(py):.1f}" r="2.5" fill="{colour}"/>' for px, py in s.points
        )
        lx = PAD_LEFT + 150 + n * 80
        parts.append(
            f'<rect x="{lx}" y="8" width="10" height="3" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="13" font-size="10" fill="#1d2327">{escape(s.name)}</text>'
        )
    return parts


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
    sc = _scale(points, y_min, y_max)
    return "".join([*parts, *_axes(sc), *_lines(sc, series), "</svg>"])


def _series(epochs: list[EpochMetrics], figure: Callable[[EpochMetrics], float | None]) -> list[tuple[float, float]]:
    return [(float(e.epoch), value) for e in epochs if (value := figure(e)) is not None]


def training_charts(epochs: list[EpochMetrics]) -> str:
    """Loss and accuracy per epoch, side by side, as one HTML fragment of two SVGs."""
    loss = line_chart(
        "loss",
        [
            Series("train", "#2563eb", _series(epochs, lambda e: e.loss)),
            Series("val", "#b45309", _series(epochs, lambda e: e.val_loss)),
        ],
        y_min=0.0,
    )
    accuracy = line_chart(
        "accuracy",
        [
            Series("train", "#2563eb", _series(epochs, lambda e: e.train_acc)),
            Series("val", "#15803d", _series(epochs, lambda e: e.val_acc)),
        ],
        y_min=0.0,
        y_max=1.0,
    )
    return f'<div class="charts">{loss}{accuracy}</div>'
