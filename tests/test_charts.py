"""The dashboard's charts as computed (``analytics.charts``): scales, bars, daily buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics.charts import HEIGHT, buckets, chart


def hourly(values: list[int], start: datetime | None = None) -> list[dict]:
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    return [
        {"hour": start + timedelta(hours=i), "joins": v, "peak_peers": v, "bytes": 0, "pipes": 0}
        for i, v in enumerate(values)
    ]


def test_bars_are_scaled_to_a_round_top_and_say_their_value():
    drawn = chart(hourly([0, 7, 14]), "joins", "joins")
    assert drawn.top == 20 and drawn.step == "hour"
    assert [bar.height for bar in drawn.bars] == [0, HEIGHT * 7 / 20, HEIGHT * 14 / 20]
    assert drawn.bars[1].title == "2026-11-01 01:00: 7 joins"
    assert drawn.last == datetime(2026, 11, 1, 3, tzinfo=UTC)
    assert len(drawn.points.split()) == 3


def test_small_and_empty_charts_keep_a_scale():
    assert chart(hourly([0, 0]), "joins", "joins").top == 1
    assert chart(hourly([3]), "joins", "joins").top == 3
    empty = chart([], "joins", "joins")
    assert (empty.bars, empty.points, empty.first, empty.last) == ([], "", None, None)


def test_long_periods_are_drawn_by_day_with_the_days_peak():
    # A week that starts at 15:00 (as "the last 7 days" does) is 7 whole days, not 8 partial.
    week = hourly([1] * 24 * 7, start=datetime(2026, 11, 1, 15, tzinfo=UTC))
    week[30]["peak_peers"] = 9
    days, step = buckets(week)
    assert step == "day" and len(days) == 7
    assert days[0]["joins"] == 24 and days[1]["peak_peers"] == 9
    drawn = chart(week, "joins", "joins")
    assert drawn.bars[0].title == "the 24 h from 2026-11-01 15:00: 24 joins"
    assert drawn.last == datetime(2026, 11, 8, 15, tzinfo=UTC)
