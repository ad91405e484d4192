"""Shared fixtures: the real relay server, started as ``make run`` starts it, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("uvicorn", "daphne")


@dataclass
class LiveRelay:
    """A relay server running in a subprocess."""

    server: str
    port: int
    process: subprocess.Popen
    log_path: Path  # the server's standard error: its log lines

    def log(self) -> str:
        """What the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@functools.cache
def collected_static() -> str:
    """Static files collected once per test session, as ``make run`` collects them."""
    root = tempfile.mkdtemp(prefix="relay-static-")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_STATIC_ROOT": root},
        check=True,
        timeout=300,
    )
    return root


@functools.cache
def migrated_database() -> Path:
    """An SQLite database with every migration applied, made once per session; each live relay
    starts from a copy, as ``make run`` starts from a migrated one."""
    data_dir = Path(tempfile.mkdtemp(prefix="relay-migrated-"))
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env={**environ, "RELAY_DATA_DIR": str(data_dir)},
        check=True,
        timeout=300,
    )
    return data_dir / "db.sqlite3"


def relay_environ(data_dir: Path, **env: str) -> dict[str, str]:
    """The environment of a relay subprocess keeping its files in ``data_dir``: its own SQLite
    database there, migrated as ``make run`` migrates it (also when the suite itself runs on
    PostgreSQL: these tests are about the server, and the database tests run in-process)."""
    if not (data_dir / "db.sqlite3").exists():
        shutil.copyfile(migrated_database(), data_dir / "db.sqlite3")
    environ = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**environ, "RELAY_DATA_DIR": str(data_dir), **env}


def start_relay(
    server: str,
    data_dir: Path,
    log_name: str = "relay.log",
    preexec_fn: Callable[[], None] | None = None,
    **env: str,
) -> LiveRelay:
    """Start ``manage.py serve`` as ``make run`` does (database migrated, static files
    collected) and wait until it answers HTTP (at most 30 s). Several relays started on one
    ``data_dir`` share its database (workers of one relay), each logging to its ``log_name``;
    ``preexec_fn`` runs in the child before the relay (a resource limit, say)."""
    env = {"DJANGO_STATIC_ROOT": collected_static(), **env}
    port = free_port()
    log_path = data_dir / log_name
    command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
    # A file, not a pipe: a pipe nobody reads would stall the server once full.
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*command, "--server", server],
            cwd=ROOT,
            env=relay_environ(data_dir, **env),
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=preexec_fn,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"relay exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return LiveRelay(server, port, process, log_path)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"relay ({server}) did not start on port {port}")


def http_get(relay: LiveRelay, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of ``GET path`` on ``relay``, an error
    status included."""
    request = urllib.request.Request(f"{relay.http_url}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, found, body = answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as refused:
        status, found, body = refused.code, refused.headers, refused.read()
    return status, {k.lower(): v for k, v in found.items()}, body


def stop_relay(relay: LiveRelay) -> None:
    relay.process.terminate()
    try:
        relay.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        relay.process.kill()
        relay.process.wait()


@pytest.fixture(scope="session", params=SERVERS)
def live_relay(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[LiveRelay]:
    """The relay under each supported ASGI server, shared by the tests of a session."""
    relay = start_relay(request.param, tmp_path_factory.mktemp(f"relay-{request.param}"))
    yield relay
    stop_relay(relay)


@pytest.fixture
def relay_url(live_relay: LiveRelay) -> str:
    """Base WebSocket URL of a live relay (clients append /introduction/... themselves)."""
    return live_relay.ws_url


@functools.cache
def _ticket_on(data_dir: Path, username: str) -> str:
    environ = relay_environ(data_dir)
    make_user = (
        "from django.contrib.auth.models import User; "
        f"User.objects.get_or_create(username={username!r})"
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "shell", "-c", make_user], cwd=ROOT, env=environ, check=True)
    issued = subprocess.run(
        [*manage, "issue_ticket", username], cwd=ROOT, env=environ, check=True, capture_output=True
    )
    return issued.stdout.decode().strip().splitlines()[-1]


@pytest.fixture
def signed_in_url(live_relay: LiveRelay) -> str:
    """A live relay's base URL with a ticket of a user of its own (``/t/<ticket>``): what a
    signed-in client (one that may own private, capped or hosted lobbies) is given."""
    return f"{live_relay.ws_url}/t/{_ticket_on(live_relay.log_path.parent, 'player-one')}"


@pytest.fixture(autouse=True)
def fresh_process_state(settings) -> Iterator[None]:
    """Each test starts with no rate counted against it (the tests share one address), no
    cached lobby facts and no statistics waiting; statistics are written only when a test says
    so (a flush from a timer thread would write outside the test's database access)."""
    from analytics.buffer import buffer
    from lobbies.admission import lobby_cache
    from lobbies.engine.ratelimits import get_rate_limits

    settings.RELAY_ANALYTICS_FLUSH_SECONDS = 3600
    get_rate_limits.cache_clear()
    lobby_cache.clear()  # the database is emptied between tests without signals
    buffer.discard()
    yield
    # Events of the test still on their way would reach the next test's (or the exit's) flush.
    from lobbies.events import bus

    bus.hand_over()
    deadline = time.monotonic() + 2
    while bus.delivered < bus.queued and time.monotonic() < deadline:
        time.sleep(0.01)
    buffer.discard()


@pytest.fixture
async def browser() -> AsyncIterator:
    """A headless Chromium for one test (``tests.browsers``)."""
    from tests.browsers import chromium

    async with chromium() as launched:
        yield launched


@pytest.fixture
async def fresh_presence() -> AsyncIterator[None]:
    """This process's presence, empty before the test and after it."""
    from lobbies.engine.presence import get_presence

    await get_presence().flush()
    yield
    await get_presence().flush()


@pytest.fixture
async def introduce() -> AsyncIterator:
    """``await introduce(url, a, b)``: peers ``a`` and ``b`` come online on the relay at ``url``
    and are introduced on ``doc`` (the relay opens no pipe between peers it has not introduced);
    they stay online until the test ends. Returns their two control sockets."""
    from tests.meeting import introduced

    async with contextlib.AsyncExitStack() as stack:

        async def introduce(url: str, a: str, b: str, document_id: str = "doc", prefix: str = ""):
            return await stack.enter_async_context(introduced(url, a, b, document_id, prefix))

        yield introduce


@pytest.fixture
async def uvicorn_server(settings, transactional_db) -> AsyncIterator[tuple[uvicorn.Server, str]]:
    """The relay served by uvicorn in the test's own event loop, configured as ``make run``
    configures it (from the relay settings as the test has set them), so the server's
    protocol objects can be inspected. Yields the server and its base WebSocket URL."""
    from lobbies.conf import relay_settings
    from lobbies.engine.servers import uvicorn_config
    from relayproject.asgi import application

    port = free_port()
    server = uvicorn.Server(uvicorn_config("127.0.0.1", port, relay_settings(), application))
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # up to 5 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield server, f"ws://127.0.0.1:{port}"
    server.should_exit = True
    # uvicorn waits for every connection to end; a test that failed may have left one stuck.
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:
        server.force_exit = True
        await task


class OwnRedis:
    """A Redis server of the test's own, which it may kill and start again (empty)."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()
