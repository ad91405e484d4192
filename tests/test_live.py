"""The real server, started as ``make run`` starts it (uvicorn) and under daphne: the landing
page, the wire contract over real sockets, and bounded memory with a slow reader."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from websockets.asyncio.client import connect

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
    assert "Relay is up" in html
    assert f"url: 'ws://127.0.0.1:{live_relay.port}'" in html
    assert "<b>2</b>peers online" in html
    assert "<b>1</b>lobbies active" in html


async def test_a_slow_reader_does_not_grow_the_servers_memory(live_relay):
    """The receiver stops reading; the sender must be held back by the server (backpressure)
    rather than the server buffering everything it is sent."""
    url = live_relay.ws_url
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


async def test_pipes_carry_frames_unchanged_including_empty_ones(live_relay):
    url = live_relay.ws_url
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
