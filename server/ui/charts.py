"""Charts drawn on the server as SVG geometry: the template turns it into elements, no library or script."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from agent.events import SEVERITIES

# Bottom to top: the most severe events sit on the axis, where they are easiest to compare.
STACK_ORDER = (*reversed(SEVERITIES), "none")
WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    severity: str
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    plot_left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM
    description: str = ""


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def stacked_days(days: list[date], per_day: dict[date, dict[str, int]]) -> Chart:
    """Events per day as bars stacked by severity."""
    chart = Chart()
    plot_height = chart.baseline - TOP
    slot = (chart.plot_right - chart.plot_left) / max(1, len(days))
    peak = nice_ceiling(max((sum(counts.values()) for counts in per_day.values()), default=0))
    scale = plot_height / peak
    for index, day in enumerate(days):
        counts = per_day.get(day, {})
        x = chart.plot_left + index * slot + slot * 0.15
        top = float(chart.baseline)
        for severity in STACK_ORDER:
            n = counts.get(severity, 0)
            if not n:
                continue
            height = max(n * scale, 0.5)
            top -= height
            chart.bars.append(Bar(round(x, 1), round(top, 1), round(slot * 0.7, 1), round(height, 1), severity, f"{day.isoformat()}: {n:,} {severity}"))
        if index % 7 == (len(days) - 1) % 7:
            chart.x_ticks.append(Tick(round(x + slot * 0.35, 1), day.strftime("%b %d")))
    for fraction in (0, 0.5, 1):
        chart.y_ticks.append(Tick(round(chart.baseline - plot_height * fraction, 1), f"{int(peak * fraction):,}"))
    total = sum(sum(c.values()) for c in per_day.values())
    busiest = max(per_day.items(), key=lambda item: sum(item[1].values()), default=None)
    chart.description = f"{total:,} events over {len(days)} days" + (
        f"; busiest {busiest[0].isoformat()} with {sum(busiest[1].values()):,}" if busiest and total else ""
    )
    return chart
