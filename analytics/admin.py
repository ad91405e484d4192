"""The popularity dashboard in the admin: top lobbies, game types and nicknames, the relay's
hours as charts (server-rendered SVG), a summary row, a period to choose and a CSV export."""

from __future__ import annotations

import csv
from datetime import timedelta

from asgiref.sync import async_to_sync
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from analytics.models import Dashboard
from analytics.stats import Period, hours, summary, top_games, top_lobbies, top_nicknames
from lobbies.presence import get_presence

PERIODS = {"1": "last 24 hours", "7": "last 7 days", "30": "last 30 days", "90": "last 90 days"}


def _bars(rows: list[dict], key: str) -> list[dict]:
    """Rows with the width of their bar, in percent of the largest."""
    top = max((row["joins"] for row in rows), default=0) or 1
    return [{**row, "label": row[key], "width": round(100 * row["joins"] / top, 1)} for row in rows]


def _line(series: list[dict], field: str, width: int = 600, height: int = 120) -> str:
    """An SVG polyline's points for ``field`` over the hours."""
    top = max((point[field] for point in series), default=0) or 1
    step = width / max(len(series) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - height * point[field] / top:.1f}"
        for i, point in enumerate(series)
    )


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    """Not a list of rows: the changelist is the dashboard."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        days = request.GET.get("days", "7")
        days = days if days in PERIODS else "7"
        period = Period.last_days(int(days))
        lobbies = top_lobbies(period)
        games = top_games(period)
        nicknames = top_nicknames(period)
        if request.GET.get("format") == "csv":
            return _csv(days, lobbies, games, nicknames)
        series = hours(period)
        live = async_to_sync(get_presence().stats)()
        today = summary(Period.last_days(1))
        context = {
            **self.admin_site.each_context(request),
            "title": "Popularity dashboard",
            "opts": self.model._meta,
            "days": days,
            "periods": PERIODS,
            "live": live,
            "mb_today": today["bytes"] / 1e6,
            "totals": summary(period),
            "lobbies": _bars(lobbies, "document_id"),
            "games": _bars(games, "game"),
            "nicknames": _bars(nicknames, "nickname"),
            "joins_line": _line(series, "joins"),
            "peers_line": _line(series, "peak_peers"),
            "first_hour": series[0]["hour"] if series else None,
            "last_hour": series[-1]["hour"] + timedelta(hours=1) if series else None,
            "peak_joins": max((p["joins"] for p in series), default=0),
            "peak_peers": max((p["peak_peers"] for p in series), default=0),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/analytics/dashboard.html", context)


def _csv(days: str, *tables: list[dict]) -> HttpResponse:
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="relay-top-{days}d.csv"'
    writer = csv.writer(response)
    writer.writerow(["list", "name", "joins"])
    for name, rows, key in zip(
        ("lobby", "game", "nickname"), tables, ("document_id", "game", "nickname"), strict=True
    ):
        for row in rows:
            writer.writerow([name, row[key], row["joins"]])
    return response
