"""The connection lifecycle under uvicorn, served in the test's own loop so the process's sockets,
tasks and registries can be counted: every socket is freed whatever its client does, and
keepalive judges only the side that is actually unresponsive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from lobbies.engine import connections, tasks
from lobbies.engine.pipes import held_budget
from lobbies.engine.presence import Stats, get_presence
from tests.conftest import SERVERS, LiveRelay, start_relay, stop_relay
from tests.test_splice import masked, spliced


@pytest.fixture
def quick_lifecycle(settings):
    settings.RELAY_CLOSE_TIMEOUT = 0.5
    settings.RELAY_HANDSHAKE_TIMEOUT = 0.5
    settings.RELAY_PING_INTERVAL = 0.3
    # Margin for a loaded machine: the stalled receiver says it lives every 0.1 s.
    settings.RELAY_PING_TIMEOUT = 0.5
    settings.RELAY_CONTROL_QUEUE_BYTES = 64 * 1024


def process_state(server) -> dict[str, object]:
    """What the relay process holds for its clients."""
    return {
        "server connections": len(server.server_state.connections),
        "server tasks": len(server.server_state.tasks),
        "background tasks": len(tasks._running),
        "registered sockets": connections.count(),
        "held pipes": held_budget.pipes,
        "held bytes": held_budget.bytes,
    }


async def settles_to(server, expected: dict[str, object], seconds: float = 10) -> dict:
    deadline = time.monotonic() + seconds
    while (state := process_state(server)) != expected and time.monotonic() < deadline:  # noqa: ASYNC110 (polling the server's counts, which signal nothing)
        await asyncio.sleep(0.05)
    return state


async def deaf_socket(url: str, path: str, *, complete: bool = True) -> socket.socket:
    """A raw client that sends a WebSocket upgrade (or only half of one) and never reads
    after the response: its receive buffer is as small as the kernel allows, so it fills at
    once. (Blocking calls, in a thread: the server runs in this loop.)"""
    return await asyncio.to_thread(_deaf_socket, url, path, complete)


def _deaf_socket(url: str, path: str, complete: bool) -> socket.socket:
    host, port = url.removeprefix("ws://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    sock.connect((host, int(port)))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    sock.sendall(request.encode() + (b"\r\n" if complete else b""))
    if complete:  # read the 101 response (frames sent before it are lost), then never again
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(1)
        assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def send_until_held_back(sender, attempts: int = 400) -> bool:
    """Send 64 KiB frames until one is held back for half a second (the receiving side's
    buffers are full); False if that never happens."""
    for _ in range(attempts):
        try:
            await asyncio.wait_for(sender.send(b"x" * 65536), 0.5)
        except TimeoutError:
            return True
    return False


async def test_clients_that_never_read_are_freed(quick_lifecycle, uvicorn_server, introduce):
    """A pipe end, a control socket and a half-finished handshake, none of whose clients ever
    reads: each is closed (or timed out), its close cannot be delivered, and the relay aborts
    it, so the process returns to exactly what it held before."""
    server, url = uvicorn_server
    await introduce(url, "deaf", "talker")
    await asyncio.sleep(0.1)
    before = process_state(server)
    assert before["server connections"] == 2  # the two peers' control sockets

    # Half an upgrade request, then silence.
    half = await deaf_socket(url, "/introduction/slow", complete=False)

    # A pipe end that never reads: its partner fills its buffers, then leaves. The relay must
    # close it with 1000, which it never reads.
    deaf_end = await deaf_socket(url, "/connection/deaf/talker/doc")
    talker = await connect(f"{url}/connection/talker/deaf/doc", max_size=None)
    if not await send_until_held_back(talker):  # the deaf end's buffers are full
        pytest.fail("the talker was never held back")
    talker.transport.abort()

    # A control socket that never reads: introductions pile up past its queue's bound (4413).
    deaf_peer = await deaf_socket(url, "/introduction/deaf-peer")
    ids = [f"{i:03d}" + "x" * 200 for i in range(200)]
    deaf_peer.sendall(masked(0x81, json.dumps({"type": "Join", "documentIds": ids}).encode()))
    async with connect(f"{url}/introduction/joiner", max_size=None) as joiner:
        join = json.dumps({"type": "Join", "documentIds": ids})
        leave = json.dumps({"type": "Leave", "documentIds": ids})
        for _ in range(400):
            await joiner.send(join)
            try:
                await asyncio.wait_for(joiner.recv(), 1)
            except TimeoutError:
                break  # the deaf peer is gone: nobody left to be introduced to
            await joiner.send(leave)
        else:
            pytest.fail("the deaf control socket was never dropped")

    after = await settles_to(server, before)
    assert after == before
    assert await get_presence().stats() == Stats(2, 1, 0)  # deaf and talker, online in doc
    for sock in (half, deaf_end, deaf_peer):
        sock.close()


async def test_a_stalled_receiver_does_not_get_its_healthy_sender_killed(
    quick_lifecycle, uvicorn_server, introduce
):
    """The receiver stops reading (but keeps sending, so it is alive) for six ping timeouts;
    the sender, whose reads the relay pauses meanwhile, must survive and be released."""
    server, url = uvicorn_server
    await introduce(url, "sender", "receiver")
    sender = await connect(f"{url}/connection/sender/receiver/doc", max_size=None)
    receiver = await connect(f"{url}/connection/receiver/sender/doc", max_size=None, max_queue=1)
    await sender.send(b"probe")
    assert await receiver.recv() == b"probe"
    assert len(spliced(server)) == 2

    reader = asyncio.create_task(drain(sender))
    frame = b"x" * 65536
    sent = 0
    stall_until = time.monotonic() + 6 * 0.5  # six ping timeouts
    while time.monotonic() < stall_until:
        await receiver.send(b"alive")  # proof of life, though it reads nothing
        try:
            await asyncio.wait_for(sender.send(frame), 0.1)
            sent += 1
        except TimeoutError:
            pass  # held back by the relay: backpressure, as it should be
    assert sender.close_code is None, f"the sender was closed with {sender.close_code}"
    assert receiver.close_code is None

    # The receiver reads again: everything arrives, and the sender can go on.
    received = 0
    while received < sent:
        assert await asyncio.wait_for(receiver.recv(), 5) == frame
        received += 1
    await sender.send(b"after")
    while (message := await asyncio.wait_for(receiver.recv(), 5)) != b"after":
        assert message == frame  # the send that was held back when the stall ended
    assert sender.close_code is None
    await sender.close()
    await receiver.close()
    reader.cancel()


async def test_a_dropped_receiver_closes_its_sender_with_1000(
    quick_lifecycle, uvicorn_server, introduce
):
    """The receiver stops reading and sends nothing: keepalive judges it (1011), its close
    cannot be delivered, the relay aborts it, and the sender is closed normally."""
    _server, url = uvicorn_server
    await introduce(url, "sender", "receiver")
    sender = await connect(f"{url}/connection/sender/receiver/doc", max_size=None)
    receiver = await connect(f"{url}/connection/receiver/sender/doc", max_size=None, max_queue=1)
    await sender.send(b"probe")
    assert await receiver.recv() == b"probe"
    frame = b"x" * 65536
    with pytest.raises((TimeoutError, ConnectionClosed)):
        for _ in range(1000):
            await asyncio.wait_for(sender.send(frame), 5)
    await asyncio.wait_for(sender.wait_closed(), 10)
    assert sender.close_code == 1000
    receiver.transport.abort()


# -- the same under both servers, run as `make run` runs them, counting the process's sockets --


def open_sockets(pid: int) -> int:
    fds = f"/proc/{pid}/fd"
    count = 0
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):
            count += os.readlink(f"{fds}/{fd}").startswith("socket:")
    return count


@pytest.fixture(params=SERVERS)
def quick_relay(request, tmp_path) -> Iterator[LiveRelay]:
    relay = start_relay(
        request.param,
        tmp_path,
        RELAY_CLOSE_TIMEOUT="0.5",
        RELAY_HANDSHAKE_TIMEOUT="1",
        RELAY_PING_INTERVAL="1",
        RELAY_PING_TIMEOUT="1",
        RELAY_CONTROL_QUEUE_BYTES="65536",
    )
    yield relay
    stop_relay(relay)


@pytest.mark.live
async def test_never_reading_clients_leave_no_socket_behind(quick_relay, introduce):
    pid, url = quick_relay.process.pid, quick_relay.ws_url
    await introduce(url, "deaf", "talker")
    await asyncio.sleep(0.5)
    before = open_sockets(pid)
    half = await deaf_socket(url, "/introduction/slow", complete=False)
    deaf_end = await deaf_socket(url, "/connection/deaf/talker/doc")
    talker = await connect(f"{url}/connection/talker/deaf/doc", max_size=None)
    if not await send_until_held_back(talker):  # the deaf end's buffers are full
        pytest.fail("the talker was never held back")
    talker.transport.abort()
    assert open_sockets(pid) > before
    deadline = time.monotonic() + 15
    while open_sockets(pid) > before and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    assert open_sockets(pid) == before
    half.close()
    deaf_end.close()


@pytest.mark.live
async def test_a_stalled_receiver_keeps_its_sender_alive_on_both_servers(quick_relay, introduce):
    url = quick_relay.ws_url
    await introduce(url, "s", "r")
    sender = await connect(f"{url}/connection/s/r/doc", max_size=None)
    receiver = await connect(f"{url}/connection/r/s/doc", max_size=None, max_queue=1)
    await sender.send(b"probe")
    assert await receiver.recv() == b"probe"
    reader = asyncio.create_task(drain(sender))
    sent = 0
    stall_until = time.monotonic() + 5  # five ping timeouts
    while time.monotonic() < stall_until:
        await receiver.send(b"alive")
        try:
            await asyncio.wait_for(sender.send(b"x" * 65536), 0.2)
            sent += 1
        except TimeoutError:
            pass
    assert sender.close_code is None, f"the sender was closed with {sender.close_code}"
    for _ in range(sent):
        await asyncio.wait_for(receiver.recv(), 5)
    await sender.send(b"after")
    while await asyncio.wait_for(receiver.recv(), 5) != b"after":
        pass
    assert sender.close_code is None
    reader.cancel()
    await sender.close()
    await receiver.close()


async def drain(connection) -> None:
    """Read and drop whatever arrives, until the connection closes."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in connection:
            pass


async def test_a_match_that_never_reads_its_backlog_is_freed(
    quick_lifecycle, uvicorn_server, introduce
):
    """A holds a backlog; B arrives and never reads it. B is the unresponsive one, though the
    relay stops reading B while it waits to send B the backlog: keepalive must judge it, and the
    backlog's budget is given back as it leaves."""
    server, url = uvicorn_server
    await introduce(url, "A", "B")
    await asyncio.sleep(0.1)
    before = process_state(server)
    account = await connect(f"{url}/connection/A/B/doc", max_size=None)
    for _ in range(100):
        await account.send(b"x" * 65536)
    deaf = await deaf_socket(url, "/connection/B/A/doc")
    deaf.sendall(masked(0x82, b"one frame, then silence"))
    await asyncio.wait_for(account.wait_closed(), 10)  # B judged and dropped: A closed
    assert account.close_code == 1000
    assert await settles_to(server, before) == before
    deaf.close()


async def wait_for_sockets(pid: int, count: int, seconds: float = 15) -> int:
    deadline = time.monotonic() + seconds
    while (now := open_sockets(pid)) > count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    return now


@pytest.mark.live
async def test_a_client_that_closes_and_then_stops_reading_is_freed(quick_relay, introduce):
    """The client starts the close itself while the relay still has data for it, and never
    reads again: its connection must still go, and its partner be closed normally."""
    pid, url = quick_relay.process.pid, quick_relay.ws_url
    await introduce(url, "closer", "talker")
    await asyncio.sleep(0.5)
    before = open_sockets(pid)
    deaf_end = await deaf_socket(url, "/connection/closer/talker/doc")
    talker = await connect(f"{url}/connection/talker/closer/doc", max_size=None)
    await send_until_held_back(talker)
    deaf_end.sendall(masked(0x88, (1000).to_bytes(2, "big")))  # close, then silence
    await asyncio.wait_for(talker.wait_closed(), 15)
    assert talker.close_code == 1000
    assert await wait_for_sockets(pid, before) == before
    deaf_end.close()


@pytest.mark.live
async def test_headers_trickled_byte_by_byte_are_cut_off(quick_relay):
    """RELAY_HANDSHAKE_TIMEOUT (1 s here) bounds the whole request head, however slowly it
    comes: a byte every 0.2 s does not keep the connection."""
    host, port = quick_relay.ws_url.removeprefix("ws://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /introduction/slow HTTP/1.1\r\n")
    started = time.monotonic()
    with pytest.raises((ConnectionError, BrokenPipeError)):
        while time.monotonic() - started < 10:
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(0.2)
            if reader.at_eof():
                raise ConnectionResetError("closed by the relay")
    assert time.monotonic() - started < 5
    writer.close()
