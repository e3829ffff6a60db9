"""The report's charts as inline SVG: per-epoch curves and the training class sizes.

SVG rather than a plotting library's pictures: a report is a static page read offline, and lines,
dots and text are all these charts hold. Drawing them as markup costs microseconds, where
importing matplotlib and rasterising its figures took over a second at the end of every run; the
browser scales them sharply and the text stays searchable. Each chart's title says what it shows.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

from data.names import shortened

WIDTH, HEIGHT = 520, 320
LEFT, RIGHT, TOP, BOTTOM = 58, 12, 30, 44  # the plot area's margins
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
FONT = 'font-family="system-ui,sans-serif"'


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values covering [low, high] (steps of 1, 2 or 5 times a power of ten)."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(math.ceil((high - first) / step) + 1)]


def label(value: float) -> str:
    return f"{value:.3g}"


def frame(title: str, ylabel: str, y_ticks: Sequence[float], y_of: object, body: list[str]) -> str:
    """The chart around ``body``: title, the y axis with its grid and label."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{esc(title)}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="12" {FONT}>{esc(title)}</text>',
        f'<text x="14" y="{(TOP + HEIGHT - BOTTOM) / 2}" font-size="11" {FONT} text-anchor="middle" '
        f'transform="rotate(-90 14 {(TOP + HEIGHT - BOTTOM) / 2})">{esc(ylabel)}</text>',
    ]
    for tick in y_ticks:
        y = y_of(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        at = f'x="{LEFT - 4}" y="{y + 4:.1f}"'
        parts.append(f'<text {at} text-anchor="end" font-size="10" {FONT}>{label(tick)}</text>')
    return "".join([*parts, *body, "</svg>"])


def curves(
    epochs: Sequence[int], lines: Mapping[str, Sequence[float | None]], title: str, ylabel: str
) -> str:
    """One chart of per-epoch lines, each with its dots (a missing value leaves a gap)."""
    values = [v for series in lines.values() for v in series if v is not None and math.isfinite(v)]
    ticks = nice_ticks(min(values, default=0.0), max(values, default=1.0))
    low, high = ticks[0], ticks[-1]
    first, last = min(epochs, default=1), max(epochs, default=1)

    def x_of(epoch: float) -> float:
        span = (last - first) or 1
        return LEFT + (epoch - first) / span * (WIDTH - LEFT - RIGHT)

    def y_of(value: float) -> float:
        return TOP + (high - value) / ((high - low) or 1) * (HEIGHT - TOP - BOTTOM)

    body = [f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle" '
            f'font-size="11" {FONT}>epoch</text>']  # fmt: skip
    step = max(1, math.ceil(len(epochs) / 10))
    for epoch in list(epochs)[::step]:
        body.append(f'<text x="{x_of(epoch):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" '
                    f'font-size="10" {FONT}>{epoch}</text>')  # fmt: skip
    legend_x = WIDTH - RIGHT - 156  # drawn over the lines, which show through it faintly
    legend = [f'<rect x="{legend_x}" y="{TOP}" width="156" height="{13 * len(lines) + 6}" fill="white" '
              f'fill-opacity="0.8"/>']  # fmt: skip
    for i, (name, series) in enumerate(lines.items()):
        colour = COLOURS[i % len(COLOURS)]
        segment: list[str] = []
        points = []
        for epoch, value in zip(epochs, series, strict=True):
            if value is None or not math.isfinite(value):
                points.append(segment)
                segment = []
                continue
            segment.append(f"{x_of(epoch):.1f},{y_of(value):.1f}")
            body.append(f'<circle cx="{x_of(epoch):.1f}" cy="{y_of(value):.1f}" r="2.5" fill="{colour}"/>')
        points.append(segment)
        for run in (p for p in points if len(p) > 1):
            body.append(
                f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        y = TOP + 4 + 13 * i
        legend.append(f'<rect x="{legend_x + 6}" y="{y}" width="10" height="3" fill="{colour}"/>')
        named = esc(shortened(name, 26))
        legend.append(f'<text x="{legend_x + 20}" y="{y + 5}" font-size="10" {FONT}>{named}</text>')
    return frame(title, ylabel, ticks, y_of, body + legend)


def class_histogram(names: Sequence[str], counts: Sequence[int], title: str) -> str:
    """Training images per class, largest first: the imbalance at a glance."""
    order = sorted(range(len(names)), key=lambda i: -counts[i])
    ticks = nice_ticks(0.0, float(max(counts, default=1)))
    high, bottom = ticks[-1], BOTTOM + 36  # room for the class names, slanted

    def y_of(value: float) -> float:
        return TOP + (high - value) / (high or 1) * (HEIGHT - TOP - bottom)

    width = (WIDTH - LEFT - RIGHT) / max(1, len(order))
    body = []
    for slot, i in enumerate(order):
        x = LEFT + slot * width
        isolated = f"\u2068{esc(names[i])}\u2069"  # a right-to-left name keeps its count after it
        body.append(f'<rect x="{x + width * 0.1:.1f}" y="{y_of(counts[i]):.1f}" width="{width * 0.8:.1f}" '
                    f'height="{y_of(0) - y_of(counts[i]):.1f}" fill="#4a78b0"><title>{isolated}: '
                    f'{counts[i]}</title></rect>')  # fmt: skip
        if len(order) <= 40:
            cx, cy = x + width / 2, HEIGHT - bottom + 10
            named = esc(shortened(names[i], 16))
            body.append(f'<text x="{cx:.1f}" y="{cy}" font-size="9" {FONT} text-anchor="end" '
                        f'transform="rotate(-45 {cx:.1f} {cy})">{named}</text>')  # fmt: skip
    if len(order) > 40:
        body.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 6}" text-anchor="middle" '
                    f'font-size="11" {FONT}>{len(names)} classes, largest first</text>')  # fmt: skip
    return frame(title, "training images", ticks, y_of, body)
