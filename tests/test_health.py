"""``/healthz`` and ``/readyz`` on real workers: alive whatever happens around the process; ready
only while the database and Redis answer and the worker is not draining, and saying which is
not. The database goes away through a TCP port of the test's own in front of PostgreSQL, Redis
is a server of the test's own, and draining is a real SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import environ
import psycopg
import pytest

from tests.conftest import ROOT, SERVERS, LiveRelay, free_port, http_get, start_relay, stop_relay
from tests.test_workers import close_code, control, introduced_to, join

pytestmark = pytest.mark.live

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")


def probe(relay: LiveRelay, path: str, **headers: str) -> tuple[int, dict, dict]:
    """Status, headers (lower-case names) and JSON body of ``GET path``."""
    status, found, body = http_get(relay, path, **headers)
    return status, found, json.loads(body)


async def probed(relay: LiveRelay, path: str) -> tuple[int, dict]:
    status, _, body = await asyncio.to_thread(probe, relay, path)
    return status, body


async def readyz_until(relay: LiveRelay, status: int, seconds: float = 20) -> dict:
    """``/readyz``'s body once it answers ``status`` (asked again until then)."""
    deadline = time.monotonic() + seconds
    while True:
        found, body = await probed(relay, "/readyz")
        if found == status or time.monotonic() > deadline:
            assert found == status, body
            return body
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def relay(tmp_path_factory) -> Iterator[LiveRelay]:
    live = start_relay("uvicorn", tmp_path_factory.mktemp("health"))
    yield live
    stop_relay(live)


def test_probes_answer_by_address_never_cached(relay):
    # An orchestrator probes a worker by its address: a Host the relay's pages would refuse.
    status, headers, body = probe(relay, "/healthz", Host="10.0.0.7:8001")
    assert (status, body) == (200, {"status": "alive"})
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"] == "application/json"
    status, headers, body = probe(relay, "/readyz", Host="10.0.0.7:8001")
    assert status == 200
    assert body == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "not configured", "draining": False},
    }
    assert headers["cache-control"] == "no-store"
    # (The same Host on a page: Django's 400, which the probes are spared.)
    request = urllib.request.Request(f"{relay.http_url}/", headers={"Host": "10.0.0.7:8001"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400


class Gateway:
    """A TCP port of the test's own in front of PostgreSQL: closed, the database is unreachable
    for whoever connects through it (new connections refused, open ones cut); opened, it is back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def carry(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(carry(reader, up_writer), carry(up_reader, writer))
        self.writers -= {writer, up_writer}


@pytest.fixture
async def postgres_behind_a_gateway(tmp_path: Path) -> AsyncIterator[tuple[str, Gateway]]:
    """A PostgreSQL database of the test's own, migrated, and the URL that reaches it through
    a :class:`Gateway` (opened). Dropped afterwards."""
    config = environ.Env.db_url_config(POSTGRES_URL)
    host, port = config.get("HOST") or "127.0.0.1", int(config.get("PORT") or 5432)
    name = f"relay_readyz_{uuid.uuid4().hex[:10]}"
    admin = POSTGRES_URL.rsplit("/", 1)[0]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    gateway = Gateway((host, port))
    await gateway.open()
    url = f"{admin.replace(f'{host}:{port}', f'127.0.0.1:{gateway.port}')}/{name}"
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v0"]
    env = {**os.environ, "DATABASE_URL": url, "RELAY_DATA_DIR": str(tmp_path)}
    await asyncio.to_thread(subprocess.run, migrate, cwd=ROOT, env=env, check=True, timeout=300)
    try:
        yield url, gateway
    finally:
        await gateway.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_readyz_is_unready_while_the_database_is_unreachable(
    postgres_behind_a_gateway, tmp_path
):
    url, gateway = postgres_behind_a_gateway
    relay = await asyncio.to_thread(start_relay, "uvicorn", tmp_path, DATABASE_URL=url)
    try:
        await readyz_until(relay, 200)
        await gateway.close()  # PostgreSQL is gone, as far as this worker can tell
        body = await readyz_until(relay, 503)
        assert body["status"] == "unready"
        assert body["checks"]["database"].startswith("unavailable (")
        assert body["checks"]["draining"] is False
        # Alive all the same: nothing of /healthz asks the database.
        assert await probed(relay, "/healthz") == (200, {"status": "alive"})
        # A probe never shows the driver's message (a host, a port, a user name)...
        assert str(gateway.port) not in json.dumps(body)
        # ...which the log has, once.
        await gateway.open()
        body = await readyz_until(relay, 200)
        assert body["checks"]["database"] == "ok"
        assert relay.log().count("readyz: the database is not ready") == 1
    finally:
        await asyncio.to_thread(stop_relay, relay)


async def test_readyz_is_unready_while_redis_is_stopped(own_redis, tmp_path):
    relay = await asyncio.to_thread(
        start_relay,
        "uvicorn",
        tmp_path,
        RELAY_REDIS_URL=own_redis.url,
        RELAY_REDIS_PREFIX=f"test:{uuid.uuid4().hex[:12]}:",
    )
    try:
        body = await readyz_until(relay, 200)
        assert body["checks"]["redis"] == "ok"
        own_redis.kill()
        body = await readyz_until(relay, 503)
        redis_answer = body["checks"]["redis"]
        assert redis_answer == "timed out" or redis_answer.startswith("unavailable ("), body
        assert body["checks"]["database"] == "ok"
        assert await probed(relay, "/healthz") == (200, {"status": "alive"})
        own_redis.start()
        body = await readyz_until(relay, 200)
        assert body["checks"]["redis"] == "ok"
    finally:
        await asyncio.to_thread(stop_relay, relay)


DRAIN_SECONDS = 10  # long enough to probe it on a busy machine; the test waits it out once


@pytest.mark.parametrize("server", SERVERS)
async def test_readyz_is_unready_while_the_worker_drains_and_it_still_serves(server, tmp_path):
    relay = await asyncio.to_thread(
        start_relay, server, tmp_path, RELAY_DRAIN_SECONDS=str(DRAIN_SECONDS)
    )
    try:
        staying = await control(relay, "staying")
        await join(staying, "drain-doc")
        await readyz_until(relay, 200)
        relay.process.send_signal(signal.SIGTERM)
        body = await readyz_until(relay, 503)
        assert body["checks"] == {"database": "ok", "redis": "not configured", "draining": True}
        assert await probed(relay, "/healthz") == (200, {"status": "alive"})
        # While it drains it still serves: the socket open before is open, a newcomer is let in
        # and they meet.
        newcomer = await control(relay, "newcomer")
        await join(newcomer, "drain-doc")
        assert await introduced_to(newcomer) == "staying"
        assert await introduced_to(staying) == "newcomer"
        # Then its sockets are closed with the server's going-away code, and it exits.
        going = 1012 if server == "uvicorn" else 1001
        assert await close_code(staying, DRAIN_SECONDS * 3) == going
        assert await close_code(newcomer, 5) == going
        await asyncio.to_thread(relay.process.wait, 20)
    finally:
        await asyncio.to_thread(stop_relay, relay)
