"""The popularity dashboard in the admin: top lobbies, game types and nicknames, joins and
peers online over time as charts (server-rendered SVG, ``analytics.charts``), a summary row, a
period or a range of days to choose, and a CSV export."""

from __future__ import annotations

import csv

from asgiref.sync import async_to_sync
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from analytics.charts import HEIGHT, WIDTH, chart
from analytics.forms import PERIODS, PeriodForm
from analytics.models import Dashboard
from analytics.stats import TOP_LISTS, Period, bytes_relayed, hours, summary
from lobbies.engine.presence import get_presence


def _bars(rows: list[dict], key: str) -> list[dict]:
    """Rows with the width of their bar, in percent of the largest."""
    top = max((row["joins"] for row in rows), default=0) or 1
    return [{**row, "label": row[key], "width": round(100 * row["joins"] / top, 1)} for row in rows]


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
        form = PeriodForm(request.GET)
        period, label, query = form.period()
        tops = {top.name: top.rows(period) for top in TOP_LISTS}
        if request.GET.get("format") == "csv":
            return _csv(period, tops)
        series = hours(period)
        live = async_to_sync(get_presence().stats)()
        totals = summary(period)
        context = {
            **self.admin_site.each_context(request),
            "title": "Popularity dashboard",
            "opts": self.model._meta,
            "form": form,
            "label": label,
            "query": query,
            "periods": PERIODS,
            "live": live,
            "mb_today": bytes_relayed(Period.last_days(1)) / 1e6,
            "totals": totals,
            "mb_period": totals["bytes"] / 1e6,
            "lobbies": _bars(tops["lobby"], "document_id"),
            "games": _bars(tops["game"], "game"),
            "nicknames": _bars(tops["nickname"], "nickname"),
            "joins": chart(series, "joins", "joins"),
            "peers": chart(series, "peak_peers", "peers online at the peak"),
            "chart_width": WIDTH,
            "chart_height": HEIGHT,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/analytics/dashboard.html", context)


def _csv(period: Period, tops: dict[str, list[dict]]) -> HttpResponse:
    response = HttpResponse(content_type="text/csv")
    name = f"relay-top-{period.start:%Y%m%d%H}-{period.end:%Y%m%d%H}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow(["list", "name", "joins"])
    for top in TOP_LISTS:
        for row in tops[top.name]:
            writer.writerow([top.name, inert(row[top.key]), row["joins"]])
    return response


# What makes a spreadsheet read a cell as a formula (OWASP, CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(text: str) -> str:
    """A text cell a spreadsheet shows as text: lobby ids, game types and nicknames are chosen
    by clients, and one starting like a formula (``=HYPERLINK(...)``) gets a leading ``'``."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
