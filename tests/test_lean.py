"""What an idle control socket costs the relay, and what the relay does for many of them: a real
``manage.py serve`` (uvicorn, as ``make run``), many real sockets, its memory read from /proc."""

from __future__ import annotations

import asyncio
import json
import resource
import time
import urllib.request

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import LiveRelay, start_relay, stop_relay

pytestmark = pytest.mark.live

# The README's figure (bench/run.py, 2,000 sockets) is at most 12 KiB; this test opens fewer, so
# the arenas the allocator grows in steps weigh more: it allows a little more. Before the lean
# sockets it was 21-24 KiB.
BUDGET_KIB = 14
SOCKETS = 1000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def steady_rss(pid: int) -> int:
    """The process's RSS once five readings in a row agree within 64 KiB."""
    readings: list[int] = []
    while len(readings) < 5 or max(readings[-5:]) - min(readings[-5:]) > 64:
        readings.append(rss_kib(pid))
        time.sleep(0.2)
    return readings[-1]


def lobbies_active(relay: LiveRelay) -> int:
    with urllib.request.urlopen(f"{relay.http_url}/api/stats", timeout=10) as answer:
        return json.load(answer)["lobbies_active"]


def until_lobbies_active(relay: LiveRelay, count: int) -> None:
    """Returns once the relay counts ``count`` lobbies with someone in them."""
    while lobbies_active(relay) != count:
        time.sleep(0.1)


async def open_joined(relay: LiveRelay, prefix: str, count: int) -> list[ClientConnection]:
    """``count`` control sockets, each Joined to a lobby of its own, once the relay has them all
    in their lobbies."""
    sockets: list[ClientConnection] = []
    for i in range(count):
        socket = await connect(f"{relay.ws_url}/introduction/{prefix}{i}", ping_interval=None)
        await socket.send(json.dumps({"type": "Join", "documentIds": [f"{prefix}-doc{i}"]}))
        sockets.append(socket)
    await asyncio.to_thread(until_lobbies_active, relay, count)
    return sockets


@pytest.fixture
def relay(tmp_path):
    relay = start_relay(
        "uvicorn", tmp_path, RELAY_MAX_CONNECTIONS_PER_ADDRESS="0", RELAY_HANDSHAKE_RATE=""
    )
    yield relay
    stop_relay(relay)


async def test_an_idle_control_socket_in_its_own_lobby_costs_little_memory(relay):
    # Warm-up: the first sockets load code and grow pools that later ones reuse.
    warm = await open_joined(relay, "warm", 100)
    for socket in warm:
        await socket.close()
    await asyncio.to_thread(until_lobbies_active, relay, 0)
    before = await asyncio.to_thread(steady_rss, relay.process.pid)
    sockets = await open_joined(relay, "idle", SOCKETS)
    after = await asyncio.to_thread(steady_rss, relay.process.pid)
    for socket in sockets:
        await socket.close()
    per_socket = (after - before) / SOCKETS
    assert per_socket <= BUDGET_KIB, f"{per_socket:.1f} KiB per idle control socket"


def test_serve_raises_its_open_files_limit_to_the_hard_limit(tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise to")

    def low_soft_limit() -> None:  # what a shell's default `ulimit -n` leaves a process
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    relay = start_relay("uvicorn", tmp_path, preexec_fn=low_soft_limit)
    try:
        with open(f"/proc/{relay.process.pid}/limits") as f:
            limits = f.read()
    finally:
        stop_relay(relay)
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)]
