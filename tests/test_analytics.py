"""The analytics plugin: statistics from real relay traffic, written in batches that add up
across workers, pruned after their retention, printed by ``relay_stats``; and the relay working
without the plugin installed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from channels.db import database_sync_to_async as db
from django.core.management import call_command
from django.db import connection, models
from django.test.utils import CaptureQueriesContext

import analytics.buffer
from analytics.buffer import Buffer, buffer
from analytics.models import DailyNickname, HourlyGame, HourlyLobby, HourlyPeer, HourlyTotals
from analytics.stats import Period, summary, top_games, top_lobbies, top_nicknames
from lobbies.engine.presence import get_presence
from lobbies.events import bus
from lobbies.models import Lobby
from relayclient import Client
from tests.conftest import ROOT, SERVERS, relay_environ, start_relay, stop_relay
from tests.sockets import join, opened, received

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


async def flushed() -> None:
    await bus.drain()
    await db(buffer.flush)()


async def play(lobby: str, *peers: str, frames: int = 2) -> None:
    """Every peer joins ``lobby`` (with a nickname); the first two exchange ``frames`` frames
    through a pipe; then all go."""
    sockets = []
    for peer in peers:
        socket = await opened(f"/introduction/{peer}")
        await socket.send_to(text_data=join(lobby, ext=1, nickname=f"nick-{peer}"))
        assert (await received(socket))["type"] == "Joined"
        sockets.append(socket)
    a, b = peers[0], peers[1]
    pipe_a = await opened(f"/connection/{a}/{b}/{lobby}")
    pipe_b = await opened(f"/connection/{b}/{a}/{lobby}")
    for _ in range(frames):
        await pipe_a.send_to(bytes_data=b"x" * 10)
        assert await pipe_b.receive_from() == b"x" * 10
    await pipe_a.disconnect()
    await pipe_b.receive_output()
    for socket in sockets:
        await socket.disconnect()


async def test_statistics_from_real_traffic():
    await db(Lobby.objects.create)(document_id="race", game="racer")
    await play("race", "p1", "p2", "p3", frames=4)
    await play("chat", "p1", "p4")
    await flushed()
    period = Period.last_days(1)
    totals = await db(summary)(period)
    assert (totals["joins"], totals["unique_peers"], totals["sessions"]) == (5, 4, 5)
    assert totals["pipes"] == 2 and totals["bytes"] == (4 + 2) * 12  # 10-byte frames + header
    assert totals["peak_peers"] >= 3 and totals["median_session_seconds"] is not None
    lobbies = await db(top_lobbies)(period)
    assert [(row["document_id"], row["joins"]) for row in lobbies] == [("race", 3), ("chat", 2)]
    assert lobbies[0]["game"] == "racer" and lobbies[0]["bytes"] == 4 * 12
    assert await db(top_games)(period) == [{"game": "racer", "joins": 3}]
    nicknames = await db(top_nicknames)(period)
    assert nicknames[0] == {"nickname": "nick-p1", "joins": 2}


async def test_a_burst_of_joins_costs_a_few_queries():
    peers = [await opened(f"/introduction/burst-{i}") for i in range(200)]
    for i, socket in enumerate(peers):
        await socket.send_to(text_data=join(f"lobby-{i % 3}", nickname="same"))
    for socket in peers:
        await socket.disconnect()
    await bus.drain()

    def flush_counting_queries() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            buffer.flush()
        return [query["sql"] for query in queries]

    queries = await db(flush_counting_queries)()
    joins = await db(lambda: HourlyTotals.objects.get().joins)()
    assert joins == 200
    # Per row touched (the hour, each lobby, each session-length bucket, the nickname) an
    # update, or an insert in a savepoint for a new row; one insert for all the peers seen: a
    # few dozen at most, not one (or four) per join.
    assert len(queries) < 40, queries


async def test_the_peak_is_the_relay_wide_count_of_peers_online():
    """With many workers, presence counts every worker's peers: the hourly peak is that count,
    not the sockets of the process that saw the arrival."""
    presence = get_presence()
    # Two peers online on another worker, as shared presence shows them to this one.
    for peer in ("elsewhere-1", "elsewhere-2"):
        await presence.connect_peer(peer, f"other-worker:{peer}", "")
    here = []
    for peer in ("here-1", "here-2"):  # the relay counts 3, then 4
        socket = await opened(f"/introduction/{peer}")
        await socket.send_to(text_data=join("race", ext=1))
        assert (await received(socket))["type"] == "Joined"
        here.append(socket)
    await presence.disconnect_peer("elsewhere-1", "other-worker:elsewhere-1")
    later = await opened("/introduction/here-3")  # 4 again: the peak stays
    await later.send_to(text_data=join("race", ext=1))
    assert (await received(later))["type"] == "Joined"
    for socket in (*here, later):
        await socket.disconnect()
    await flushed()
    assert (await db(summary)(Period.last_days(1)))["peak_peers"] == 4


def test_workers_writing_the_same_rows_add_up():
    hour = datetime(2026, 11, 1, 10, tzinfo=UTC)
    workers = [Buffer(), Buffer()]
    for worker in workers:
        worker.join(hour, "race", "racer", "p1", "Ace")
        worker.add(hour, pipes=1, bytes=100)
        worker.peak(hour, 5 if worker is workers[0] else 3)
    for worker in workers:
        worker.flush()
    totals = HourlyTotals.objects.get(hour=hour)
    assert (totals.joins, totals.pipes, totals.bytes, totals.peak_peers) == (2, 2, 200, 5)
    assert HourlyLobby.objects.get(hour=hour).joins == 2
    assert HourlyGame.objects.get(hour=hour).joins == 2
    assert HourlyPeer.objects.filter(hour=hour).count() == 1  # the same peer, seen twice
    assert DailyNickname.objects.get().joins == 2


def test_nicknames_are_not_kept_when_collection_is_off(settings):
    settings.RELAY_ANALYTICS_NICKNAMES = False
    hour = datetime(2026, 11, 1, 10, tzinfo=UTC)
    worker = Buffer()
    worker.join(hour, "race", None, "p1", "Ace")
    worker.flush()
    assert HourlyTotals.objects.get().joins == 1
    assert not DailyNickname.objects.exists()


def test_prune_deletes_what_is_past_the_retention(settings):
    settings.RELAY_ANALYTICS_RETENTION_DAYS = 30
    old = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=40)
    recent = old + timedelta(days=35)
    worker = Buffer()
    for hour in (old, recent):
        worker.join(hour, "race", "racer", "p1", "Ace")
    worker.flush()
    out = StringIO()
    call_command("prune_analytics", stdout=out)
    assert list(HourlyTotals.objects.values_list("hour", flat=True)) == [recent]
    assert "rows older than 30 day(s) deleted" in out.getvalue()


def test_relay_stats_prints_the_top_lists():
    worker = Buffer()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for peer in ("a", "b", "c"):
        worker.join(hour, "race", "racer", peer, "Ace")
    worker.join(hour, "chess", "chess", "d", None)
    worker.flush()
    out = StringIO()
    call_command("relay_stats", "--days", "1", stdout=out)
    text = out.getvalue()
    assert "4 joins, 4 unique peers" in text
    assert text.index("1. race  3") < text.index("2. chess  1")
    assert "1. Ace  3" in text


@pytest.mark.live
@pytest.mark.parametrize("server", SERVERS)
async def test_a_live_relay_writes_its_statistics_when_it_stops(tmp_path, server):
    """Traffic from relayclient through the real server; the flush period is an hour, so what
    is written is written by the flush at the clean stop."""
    relay = start_relay(server, tmp_path, RELAY_ANALYTICS_FLUSH_SECONDS="3600")
    try:
        async with Client("host", relay.ws_url) as host, Client("guest", relay.ws_url) as guest:
            await host.join_lobby("live-race", nickname="Host", lobby={"game": "racer"})
            await guest.join_lobby("live-race")
            pipe = await asyncio.wait_for(guest.next_peer(), 5)
            await pipe.send("hello")
    finally:
        stop_relay(relay)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "relay_stats", "--days", "1"],
        cwd=ROOT,
        env=relay_environ(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "2 joins, 2 unique peers" in result.stdout, result.stdout
    assert "1. live-race  2" in result.stdout and "1. racer  2" in result.stdout


@pytest.mark.live
async def test_the_relay_works_without_the_analytics_plugin(tmp_path):
    relay = start_relay(
        "uvicorn", tmp_path, DJANGO_SETTINGS_MODULE="tests.settings_without_analytics"
    )
    try:
        async with Client("a", relay.ws_url) as a, Client("b", relay.ws_url) as b:
            await a.join_lobby("plain")
            await b.join_lobby("plain")
            pipe = await asyncio.wait_for(b.next_peer(), 5)
            await pipe.send("still relayed")
            mine = await asyncio.wait_for(a.next_peer(), 5)
            assert await asyncio.wait_for(mine.recv(), 5) == "still relayed"
    finally:
        stop_relay(relay)
    assert "analytics" not in json.dumps(relay.log())  # no error from a missing plugin


@contextlib.contextmanager
def table_missing(model: type[models.Model]) -> Iterator[None]:
    """``model``'s table dropped for real (as if the database lost it), then made again."""
    with connection.schema_editor() as editor:
        editor.delete_model(model)
    try:
        yield
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(model)


def test_a_failed_flush_writes_nothing_and_the_next_writes_it_once(settings):
    settings.RELAY_ANALYTICS_FLUSH_SECONDS = 3600  # no timer's flush in the middle of the test
    hour = datetime(2026, 11, 1, 10, tzinfo=UTC)
    worker = Buffer()
    worker.join(hour, "race", "racer", "p1", "Ace")
    worker.add(hour, pipes=1, bytes=100)
    worker.peak(hour, 4)
    # The nicknames are written last: everything before them fails with them, in one transaction.
    with table_missing(DailyNickname):
        worker.flush()
        assert worker.timer is not None  # the next flush is already due
    assert not HourlyTotals.objects.exists() and not HourlyLobby.objects.exists()
    worker.join(hour, "race", None, "p2", "Bo")  # more since the failure
    worker.peak(hour, 2)
    worker.flush()
    totals = HourlyTotals.objects.get(hour=hour)
    assert (totals.joins, totals.pipes, totals.bytes, totals.peak_peers) == (2, 1, 100, 4)
    assert HourlyLobby.objects.get(hour=hour).joins == 2
    assert HourlyLobby.objects.get(hour=hour).game == "racer"
    assert HourlyPeer.objects.filter(hour=hour).count() == 2
    assert dict(DailyNickname.objects.values_list("nickname", "joins")) == {"Ace": 1, "Bo": 1}
    worker.flush()  # nothing left waiting: nothing written twice
    assert HourlyTotals.objects.get(hour=hour).joins == 2 and worker.dropped == 0


def test_counts_of_failed_flushes_are_dropped_past_the_bound(settings, monkeypatch):
    settings.RELAY_ANALYTICS_FLUSH_SECONDS = 3600
    monkeypatch.setattr(analytics.buffer, "MAX_PENDING_ROWS", 4)
    hour = datetime(2026, 11, 1, 10, tzinfo=UTC)
    worker = Buffer()
    worker.join(hour, "race", "racer", "p1", "Ace")  # totals, lobby, game, peer, nickname: 6
    with table_missing(HourlyTotals):
        worker.flush()
    assert worker.dropped == 6
    worker.flush()
    assert not HourlyTotals.objects.exists()  # dropped, not written later
