"""The questions operators ask of the statistics, answered from the hourly rows: top lobbies,
game types and nicknames, the relay's hours, and a summary. Used by the admin dashboard, its CSV
export and ``manage.py relay_stats``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max, Sum
from django.utils import timezone

from analytics.models import (
    DailyNickname,
    HourlyGame,
    HourlyLobby,
    HourlyPeer,
    HourlyTotals,
    SessionLength,
)


@dataclass(frozen=True)
class Period:
    """From ``start`` (included) to ``end`` (excluded)."""

    start: datetime
    end: datetime

    @classmethod
    def last_days(cls, days: int, now: datetime | None = None) -> Period:
        now = now or timezone.now()
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return cls(end - timedelta(days=days), end)


def top_lobbies(period: Period, limit: int = 10) -> list[dict]:
    rows = HourlyLobby.objects.filter(hour__gte=period.start, hour__lt=period.end)
    return list(
        rows.values("document_id")
        .annotate(joins=Sum("joins"), bytes=Sum("bytes"), game=Max("game"))
        .order_by("-joins", "document_id")[:limit]
    )


def top_games(period: Period, limit: int = 10) -> list[dict]:
    rows = HourlyGame.objects.filter(hour__gte=period.start, hour__lt=period.end)
    return list(rows.values("game").annotate(joins=Sum("joins")).order_by("-joins", "game")[:limit])


def top_nicknames(period: Period, limit: int = 10) -> list[dict]:
    last_day = (period.end - timedelta(microseconds=1)).date()
    rows = DailyNickname.objects.filter(day__gte=period.start.date(), day__lte=last_day)
    return list(
        rows.values("nickname").annotate(joins=Sum("joins")).order_by("-joins", "nickname")[:limit]
    )


def hours(period: Period) -> list[dict]:
    """Every hour of the period, with zeros where nothing happened (charts need them)."""
    found = {
        row.hour: row
        for row in HourlyTotals.objects.filter(hour__gte=period.start, hour__lt=period.end)
    }
    series = []
    hour = period.start
    while hour < period.end:
        row = found.get(hour)
        series.append(
            {
                "hour": hour,
                "joins": row.joins if row else 0,
                "peak_peers": row.peak_peers if row else 0,
                "bytes": row.bytes if row else 0,
                "pipes": row.pipes if row else 0,
            }
        )
        hour += timedelta(hours=1)
    return series


def median_session_seconds(period: Period) -> float | None:
    """The median session time, to within its histogram bucket (the bucket's middle)."""
    buckets = (
        SessionLength.objects.filter(hour__gte=period.start, hour__lt=period.end)
        .values("bucket")
        .annotate(sessions=Sum("sessions"))
        .order_by("bucket")
    )
    total = sum(b["sessions"] for b in buckets)
    if not total:
        return None
    seen = 0
    for bucket in buckets:
        seen += bucket["sessions"]
        if seen * 2 >= total:
            return bucket["bucket"] * 1.5 if bucket["bucket"] else 0.5
    return None


def summary(period: Period) -> dict:
    totals = HourlyTotals.objects.filter(hour__gte=period.start, hour__lt=period.end).aggregate(
        joins=Sum("joins"),
        sessions=Sum("sessions"),
        session_seconds=Sum("session_seconds"),
        peak_peers=Max("peak_peers"),
        pipes=Sum("pipes"),
        bytes=Sum("bytes"),
    )
    peers = HourlyPeer.objects.filter(hour__gte=period.start, hour__lt=period.end).aggregate(
        unique=Count("peer", distinct=True)
    )["unique"]
    return {
        **{name: value or 0 for name, value in totals.items()},
        "unique_peers": peers,
        "median_session_seconds": median_session_seconds(period),
    }


def bytes_relayed(period: Period) -> int:
    """Bytes relayed in the period (one aggregate; :func:`summary` has it among the rest)."""
    rows = HourlyTotals.objects.filter(hour__gte=period.start, hour__lt=period.end)
    return rows.aggregate(total=Sum("bytes"))["total"] or 0


@dataclass(frozen=True)
class TopList:
    """One of the top lists: its name (in the CSV), its title, its query and its rows' key."""

    name: str
    title: str
    rows: Callable[..., list[dict]]
    key: str


TOP_LISTS = (
    TopList("lobby", "Lobbies", top_lobbies, "document_id"),
    TopList("game", "Game types", top_games, "game"),
    TopList("nickname", "Nicknames", top_nicknames, "nickname"),
)
