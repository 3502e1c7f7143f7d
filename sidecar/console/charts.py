"""Geometry for the console's SVG charts, as plain values the templates draw (no JavaScript charting library).

All coordinates are in a `width` x `height` viewBox with the origin top-left; a chart scales with its container.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

WIDTH = 600
HEIGHT = 200
MARGIN = 36
LABEL_WIDTH = 150  # room for a bar's label at the chart's 11-unit font


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float
    text: str


@dataclass(frozen=True)
class Line:
    label: str
    points: str  # "x,y x,y ..." for <polyline points=...>
    last: str  # the last value, formatted


@dataclass(frozen=True)
class Tick:
    position: float
    text: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...] = ()
    lines: tuple[Line, ...] = ()
    markers: tuple[float, ...] = ()  # x positions of vertical marks (e.g. accesses)
    rules: tuple[Tick, ...] = ()  # horizontal reference lines (y positions)
    x_ticks: tuple[Tick, ...] = ()
    y_ticks: tuple[Tick, ...] = ()
    empty: bool = False


def human_bytes(value: float | None) -> str:
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def clock_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%H:%M:%S")


def date_time(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def bar_chart(items: Sequence[tuple[str, float]], fmt=lambda v: f"{v:g}", width: int = WIDTH,
              row_height: int = 28) -> Chart:
    """Horizontal bars, one row per (label, value), scaled to the largest value."""
    top = max((value for _, value in items), default=0) or 1
    span = width - LABEL_WIDTH - 80
    bars = tuple(Bar(label, value, LABEL_WIDTH, i * row_height + 4, max(1.0, span * value / top) if value else 0,
                     row_height - 8, fmt(value)) for i, (label, value) in enumerate(items))
    return Chart(width, max(row_height, row_height * len(items)), bars=bars, empty=not items)


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float | None]]]], *, y_max: float | None = None,
               fmt=lambda v: f"{v:g}", markers: Sequence[float] = (), rules: Sequence[tuple[float, str]] = (),
               width: int = WIDTH, height: int = HEIGHT) -> Chart:
    """Lines over a shared time axis; None values are gaps (skipped). `markers` are times, `rules` y values."""
    xs = [x for _, points in series for x, y in points if y is not None] + list(markers)
    ys = [y for _, points in series for _, y in points if y is not None] + [value for value, _ in rules]
    if not xs or not ys:
        return Chart(width, height, empty=True)
    x0, x1 = min(xs), max(xs)
    top = y_max if y_max is not None else (max(ys) or 1.0)
    scale_x = _scale(x0, x1 if x1 > x0 else x0 + 1, MARGIN, width - MARGIN)
    scale_y = _scale(0.0, top, height - MARGIN, MARGIN / 2)
    lines = tuple(Line(label, " ".join(f"{scale_x(x):.1f},{scale_y(min(y, top)):.1f}" for x, y in points
                                       if y is not None),
                       fmt(next((y for _, y in reversed(points) if y is not None), 0.0)))
                  for label, points in series)
    return Chart(width, height, lines=lines, markers=tuple(scale_x(m) for m in markers),
                 rules=tuple(Tick(scale_y(value), text) for value, text in rules),
                 x_ticks=(Tick(scale_x(x0), _tick_time(x0, x1)), Tick(scale_x(x1), _tick_time(x1, x0))),
                 y_ticks=(Tick(scale_y(0.0), fmt(0.0)), Tick(scale_y(top), fmt(top))))


def _tick_time(epoch: float, other_end: float) -> str:
    """Clock time on an axis spanning less than a day, the date on longer ones."""
    if abs(other_end - epoch) < 86_400:
        return clock_time(epoch)
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d")


def _scale(low: float, high: float, out_low: float, out_high: float):
    span = high - low
    if not span or not math.isfinite(span):
        return lambda value: out_low
    return lambda value: out_low + (value - low) / span * (out_high - out_low)
