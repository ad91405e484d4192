"""Charts a person reads at a glance, drawn on the server as SVG shapes (no JavaScript, no
build step): bars for counts per hour or day, a line for peers online. Pure functions of the
series ``analytics.stats.hours`` returns; the dashboard's template draws what they compute."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH, HEIGHT = 600, 120  # the charts' drawing area (the SVG's viewBox)

# Up to this many hours a chart has one mark per hour; a longer period, one per day.
HOURLY_UP_TO = 72


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # its tooltip: when, and the value


@dataclass(frozen=True)
class Chart:
    """One series drawn: ``bars`` (counts) or ``points`` (a polyline), with its scale."""

    bars: list[Bar]
    points: str
    top: int  # the value at the top of the chart
    first: datetime | None
    last: datetime | None  # the end of the last bucket
    step: str  # "hour" or "day"


def buckets(series: list[dict]) -> tuple[list[dict], str]:
    """The hourly series as it is (short periods), or in days of 24 hours from its first hour
    (counts summed, the highest peak kept) for periods longer than ``HOURLY_UP_TO`` hours: the
    last 7 days are 7 whole days, whatever the hour."""
    if len(series) <= HOURLY_UP_TO:
        return series, "hour"
    days: list[dict] = []
    for index, point in enumerate(series):
        if index % 24 == 0:
            days.append(
                {"hour": point["hour"], "joins": 0, "peak_peers": 0, "bytes": 0, "pipes": 0}
            )
        day = days[-1]
        day["joins"] += point["joins"]
        day["bytes"] += point["bytes"]
        day["pipes"] += point["pipes"]
        day["peak_peers"] = max(day["peak_peers"], point["peak_peers"])
    return days, "day"


def _scale(values: list[int]) -> int:
    """A round number at least as large as the largest value (1 for an empty chart)."""
    top = max(values, default=0)
    if top <= 5:
        return max(top, 1)
    magnitude = 10 ** (len(str(top)) - 1)
    for factor in (1, 2, 2.5, 5, 10):
        if top <= factor * magnitude:
            return int(factor * magnitude)
    return top  # not reached


def chart(series: list[dict], field: str, unit: str) -> Chart:
    """``field`` of ``series`` as bars (one per hour or day) and as a polyline's points."""
    points, step = buckets(series)
    values = [point[field] for point in points]
    top = _scale(values)
    slot = WIDTH / max(len(points), 1)
    when = "%Y-%m-%d %H:00" if step == "hour" else "the 24 h from %Y-%m-%d %H:00"
    bars = []
    line = []
    for index, (point, value) in enumerate(zip(points, values, strict=True)):
        height = HEIGHT * value / top
        bars.append(
            Bar(
                x=round(index * slot + slot * 0.1, 1),
                y=round(HEIGHT - height, 1),
                width=round(slot * 0.8, 1),
                height=round(height, 1),
                title=f"{point['hour']:{when}}: {value} {unit}",
            )
        )
        line.append(f"{index * slot + slot / 2:.1f},{HEIGHT - height:.1f}")
    length = timedelta(hours=1) if step == "hour" else timedelta(days=1)
    return Chart(
        bars=bars,
        points=" ".join(line),
        top=top,
        first=points[0]["hour"] if points else None,
        last=points[-1]["hour"] + length if points else None,
        step=step,
    )
