"""Every handshake ends within RELAY_HANDSHAKE_TIMEOUT, as an attacker would try it: raw TCP
sockets sending oversized or trickled upgrade requests to the real relay (under uvicorn and
daphne, run as ``make run`` runs them), each of which must be answered with a 4xx or closed by
the server, without piling up sockets in the relay."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
import uvicorn

from lobbies.conf import relay_settings
from lobbies.engine.servers import uvicorn_config
from tests.conftest import SERVERS, LiveRelay, free_port, start_relay, stop_relay
from tests.test_lifecycle import open_sockets, wait_for_sockets

HANDSHAKE_TIMEOUT = 1.0
# Generous: the verdict must come long before this, but the machine is noisy.
READ_TIMEOUT = 10 * HANDSHAKE_TIMEOUT

UPGRADE_HEADERS = (
    "Host: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
LONG_PATH_UPGRADE = f"GET /introduction/{'a' * 16384} HTTP/1.1\r\n{UPGRADE_HEADERS}\r\n".encode()
LONG_HEADER_UPGRADE = (
    f"GET /introduction/peer HTTP/1.1\r\nX-Padding: {'a' * 16384}\r\n{UPGRADE_HEADERS}\r\n"
).encode()


@pytest.fixture(params=SERVERS)
def strict_relay(request, tmp_path) -> Iterator[LiveRelay]:
    relay = start_relay(request.param, tmp_path, RELAY_HANDSHAKE_TIMEOUT=str(HANDSHAKE_TIMEOUT))
    yield relay
    stop_relay(relay)


def connect(relay: LiveRelay) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", relay.port))
    sock.settimeout(READ_TIMEOUT)
    return sock


def verdict(sock: socket.socket) -> bytes:
    """What the server sent before closing the connection (b"" if it dropped it); fails if
    the connection is still open after READ_TIMEOUT."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # dropped, possibly before its answer could be read
    except TimeoutError:
        pytest.fail(f"the server neither answered nor closed: {received[:80]!r}")
    finally:
        sock.close()
    return received


def assert_refused(answer: bytes) -> None:
    """Closed with no answer, or answered with a 4xx (never a 101)."""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:80]


@pytest.mark.live
@pytest.mark.parametrize(
    ("request_head", "uvicorn_status"),
    [(LONG_PATH_UPGRADE, b"414"), (LONG_HEADER_UPGRADE, b"431")],
    ids=["16 KB path", "16 KB header"],
)
def test_an_oversized_upgrade_is_refused_at_once(strict_relay, request_head, uvicorn_status):
    """A request line or header over the server's limit is answered or dropped, not held
    (uvicorn held both until the client left: websockets' parser refused the request, and
    nobody sent its answer or closed the socket)."""
    sock = connect(strict_relay)
    sock.sendall(request_head)
    answer = verdict(sock)
    assert_refused(answer)
    if strict_relay.server == "uvicorn":  # websockets' own answer (Twisted: 400 or dropped)
        assert answer.startswith(b"HTTP/1.1 " + uvicorn_status), answer[:80]


@pytest.mark.live
def test_an_unfinished_head_over_the_limit_is_refused_at_once(strict_relay):
    """A header that never ends is cut off at the server's head limit (16 KiB under both
    servers) instead of being buffered until the deadline: uvicorn (httptools) has no limit of
    its own and kept every byte of it."""
    sock = connect(strict_relay)
    sock.sendall(b"GET /introduction/peer HTTP/1.1\r\nX-Endless: " + b"a" * 20480)
    answer = verdict(sock)
    assert_refused(answer)
    if strict_relay.server == "uvicorn":  # (Twisted: 400 or dropped)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:80]


@pytest.mark.live
def test_a_request_line_trickled_byte_by_byte_is_dropped(strict_relay):
    """Slowloris on the request line itself: one byte every 0.1 s never completes it, and the
    deadline (1 s here) drops the connection."""
    sock = connect(strict_relay)
    started = time.monotonic()
    with pytest.raises(OSError):
        for byte in b"GET /introduction/" + b"a" * 1000:
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
            if time.monotonic() - started > READ_TIMEOUT:
                pytest.fail("a trickled request line kept its connection")
    assert_refused(verdict(sock))


@pytest.mark.live
def test_oversized_upgrades_from_one_address_do_not_pile_up(strict_relay):
    """50 oversized upgrades from one address: every socket is closed by the server, and the
    relay process is back to the sockets it held before."""
    pid = strict_relay.process.pid
    before = open_sockets(pid)
    socks = [connect(strict_relay) for _ in range(50)]
    for sock in socks:
        sock.sendall(LONG_PATH_UPGRADE)
    for sock in socks:
        assert_refused(verdict(sock))
    assert asyncio.run(wait_for_sockets(pid, before)) <= before


async def test_an_upgrade_the_application_never_answers_is_dropped(settings):
    """The deadline runs until the upgrade is answered, not only until its headers arrived:
    an upgrade whose 101 never comes is dropped by it (uvicorn; daphne's is autobahn's
    opening handshake timeout)."""
    settings.RELAY_HANDSHAKE_TIMEOUT = 0.5
    disconnected = asyncio.Event()

    async def never_answers(scope, receive, send) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        assert (await receive())["type"] == "websocket.disconnect"
        disconnected.set()

    port = free_port()
    server = uvicorn.Server(uvicorn_config("127.0.0.1", port, relay_settings(), never_answers))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn signals nothing)
        await asyncio.sleep(0.01)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /introduction/peer HTTP/1.1\r\n{UPGRADE_HEADERS}\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
        assert answer == b""  # dropped, never upgraded
        await asyncio.wait_for(disconnected.wait(), READ_TIMEOUT)
        writer.close()
    finally:
        server.should_exit = True
        await serving
