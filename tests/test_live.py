"""The real server, started as ``make run`` starts it (uvicorn) and under daphne: the landing
page, the wire contract over real sockets, and bounded memory with a slow reader."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator

import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import SERVERS, LiveRelay, start_relay, stop_relay

pytestmark = pytest.mark.live


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def test_landing_page_shows_how_to_connect_and_live_counts(live_relay):
    url = live_relay.ws_url
    join = json.dumps({"type": "Join", "documentIds": ["page-lobby"]})
    async with (
        connect(f"{url}/introduction/page-a") as a,
        connect(f"{url}/introduction/page-b") as b,
    ):
        await a.send(join)
        await b.send(join)
        await asyncio.wait_for(a.recv(), 5)  # introduced: both are online
        html = await asyncio.to_thread(
            lambda: urllib.request.urlopen(live_relay.http_url + "/", timeout=5).read().decode()
        )
        stats = await asyncio.to_thread(get_json, live_relay.http_url + "/api/stats")
    assert "Relay is up" in html
    assert f"url: 'ws://127.0.0.1:{live_relay.port}'" in html
    assert '<b data-stat="peers_online">2</b>peers online' in html
    assert '<b data-stat="lobbies_active">1</b>lobbies active' in html
    assert stats == {"peers_online": 2, "lobbies_active": 1, "pipes_open": 0}


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Cache-Control"] == "no-store"
        return json.load(response)


def test_static_files_and_the_favicon_are_served_with_debug_off(live_relay):
    """The admin's stylesheet and the favicon, from the relay itself (DJANGO_DEBUG is false by
    default, so Django would serve none of them)."""
    with urllib.request.urlopen(live_relay.http_url + "/static/admin/css/base.css") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/css")
        assert b"body" in response.read()
    with urllib.request.urlopen(live_relay.http_url + "/favicon.ico") as response:  # redirected
        assert response.url.endswith("/static/relay/favicon.svg")
        assert response.headers["Content-Type"] == "image/svg+xml"
        assert response.read().startswith(b"<svg")


async def test_a_slow_reader_does_not_grow_the_servers_memory(live_relay, introduce):
    """The receiver stops reading; the sender must be held back by the server (backpressure)
    rather than the server buffering everything it is sent."""
    url = live_relay.ws_url
    await introduce(url, "slow-a", "slow-b")
    frame = b"x" * (1024 * 1024)
    # max_queue=1: the client stops reading its socket once one frame waits unread.
    async with (
        connect(f"{url}/connection/slow-a/slow-b/doc", max_size=None) as sender,
        connect(f"{url}/connection/slow-b/slow-a/doc", max_size=None, max_queue=1) as reader,
    ):
        await sender.send(b"first")
        assert await asyncio.wait_for(reader.recv(), 5) == b"first"
        before = rss_bytes(live_relay.process.pid)
        sent = 0
        for _ in range(300):
            try:
                await asyncio.wait_for(sender.send(frame), 3)
            except TimeoutError:
                break  # held back: what we expect
            sent += 1
        grown = rss_bytes(live_relay.process.pid) - before
    # Kernel socket buffers on loopback hold some tens of MiB; without backpressure all 300 MiB
    # would go through and sit in the server's memory.
    assert sent < 150, f"sender was never held back ({sent} MiB accepted)"
    assert grown < 100 * 1024 * 1024, f"server grew by {grown / 2**20:.0f} MiB"


async def test_pipes_carry_frames_unchanged_including_empty_ones(live_relay, introduce):
    url = live_relay.ws_url
    await introduce(url, "fid-a", "fid-b")
    frames = ["text", b"\x00\xffbinary", "", b"", "ünïcödé ✓", b"x" * 70_000]
    async with (
        connect(f"{url}/connection/fid-a/fid-b/doc", max_size=None) as a,
        connect(f"{url}/connection/fid-b/fid-a/doc", max_size=None) as b,
    ):
        for frame in frames:
            await a.send(frame)
        received = [await asyncio.wait_for(b.recv(), 5) for _ in frames]
    assert received == frames
    assert [type(f) for f in received] == [type(f) for f in frames]


async def test_a_pipe_end_that_does_not_read_cannot_keep_its_partner_open(live_relay, introduce):
    """A stops reading; B fills the pipe until held back. A's oversized frame closes the pipe:
    B must be closed (1000) at once, though A's own close cannot reach A until A reads."""
    url = live_relay.ws_url
    await introduce(url, "deaf-a", "deaf-b")
    async with (
        connect(f"{url}/connection/deaf-a/deaf-b/doc", max_size=None, max_queue=1) as a,
        connect(f"{url}/connection/deaf-b/deaf-a/doc", max_size=None) as b,
    ):
        await a.send(b"probe")
        assert await asyncio.wait_for(b.recv(), 5) == b"probe"
        frame = b"x" * (1024 * 1024)
        for _ in range(300):
            try:
                await asyncio.wait_for(b.send(frame), 3)
            except TimeoutError:
                break
        await a.send(b"x" * (4 * 1024 * 1024 + 1))  # over RELAY_MAX_FRAME_BYTES
        await asyncio.wait_for(b.wait_closed(), 10)
        assert b.close_code == 1000


@pytest.fixture(params=SERVERS)
def unthrottled_relay(request, tmp_path) -> Iterator[LiveRelay]:
    """A relay whose Joins per socket are not limited (RELAY_JOIN_RATE empty)."""
    relay = start_relay(request.param, tmp_path, RELAY_JOIN_RATE="")
    yield relay
    stop_relay(relay)


async def test_a_control_socket_that_does_not_read_is_closed_once_its_queue_is_full(
    unthrottled_relay,
):
    """R joins a lobby and never reads; J joins and leaves over and over (faster than
    RELAY_JOIN_RATE would let it, so that limit is off here), so R is sent an Introduction
    (about 60 KB, listing every shared id) each time. Once the kernel buffers are full, R's queue
    grows to RELAY_CONTROL_QUEUE_BYTES (1 MiB) and R is dropped (4413), rather than the server
    buffering for it without bound."""
    live_relay = unthrottled_relay
    url = live_relay.ws_url
    ids = [f"{i:03d}" + "x" * 247 for i in range(240)]
    join = msgpack.packb({"type": "Join", "documentIds": ids})
    leave = msgpack.packb({"type": "Leave", "documentIds": ids})
    async with (
        connect(f"{url}/introduction/deaf-r", max_size=None, max_queue=1) as r,
        connect(f"{url}/introduction/busy-j", max_size=None) as j,
    ):
        await r.send(join)
        for cycle in range(2000):  # noqa: B007 (read after the loop)
            await j.send(join)
            try:
                introduction = msgpack.unpackb(await asyncio.wait_for(j.recv(), 3))
            except TimeoutError:
                break  # R is no longer introduced: the relay has forgotten it
            assert introduction["peerId"] == "deaf-r"
            await j.send(leave)
        else:
            pytest.fail("the non-reading socket was never dropped")
        assert cycle > 10  # it took a backlog to get there
        with pytest.raises(ConnectionClosed):
            while True:  # R reads again: what was sent, then the close
                await asyncio.wait_for(r.recv(), 10)
        # daphne (autobahn) gives up a close handshake the client does not answer within its
        # timeout and drops the connection: the client sees 1006 instead of the code.
        assert r.close_code == 4413 or (live_relay.server == "daphne" and r.close_code == 1006)


async def test_each_connection_is_one_log_line_opened_and_one_closed(live_relay, introduce):
    url = live_relay.ws_url
    await introduce(url, "log-a", "log-b")
    async with (
        connect(f"{url}/connection/log-a/log-b/doc") as a,
        connect(f"{url}/connection/log-b/log-a/doc") as b,
    ):
        for _ in range(50):
            await a.send(b"12345678")
        for _ in range(50):
            await asyncio.wait_for(b.recv(), 5)
        await a.close()
        await asyncio.wait_for(b.wait_closed(), 5)
    for _ in range(50):  # the server writes its lines as the sockets close
        lines = [line for line in live_relay.log().splitlines() if "/connection/log-" in line]
        if len(lines) == 4:
            break
        await asyncio.sleep(0.1)
    opened = [line for line in lines if line.endswith("opened")]
    closed = [line for line in lines if " closed: " in line]
    assert len(opened) == 2 and len(closed) == 2, lines  # and none per frame
    assert all(" INFO lobbies.engine.connections: 127.0.0.1:" in line for line in lines)
    (a_closed,) = [line for line in closed if "/connection/log-a/log-b/doc" in line]
    assert "50 frames, " in a_closed and " bytes in" in a_closed
    (b_closed,) = [line for line in closed if "/connection/log-b/log-a/doc" in line]
    assert " closed: 1000, " in b_closed  # closed by the relay when a left
