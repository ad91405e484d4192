"""``make soak`` and ``make chaos``: a relay put through hours of churn and faults keeps nothing.

Starts a relay of its own (one worker, or ``--workers 2`` over Redis, each a ``manage.py serve``
process as ``make run`` and ``make run-cluster`` start them, in a temporary data directory) and
drives it for ``--duration`` seconds with a bounded mixed workload from this process:

- **churn**: control sockets that come, Join one to three of twenty lobbies (some asking for the
  extended messages, some by quick join), Leave, and go, some without a close handshake;
- **pipes**: two peers (on different workers when there are two) meet in a lobby of their own,
  open their pipe, send numbered frames each way (text and binary; one reader in three stalls a
  second first, so the writer is held back), check every frame arrived in order, and close;
- **hostile** clients: an oversized control frame (4413), malformed control frames (ignored), a
  bad path (4400), a pipe between peers never introduced (4403);
- **API and operator actions**: the public list, trending and statistics; quick join for peer
  ids that never come; an owner's token creating a lobby, kicking, locking and opening it.

With ``--chaos`` it also, in turn: kills a worker (SIGKILL) and starts it again, restarts Redis
(a ``redis-server`` of its own, which comes back empty) and cuts PostgreSQL off (the workers
reach a database of its own through a proxy in this process, which drops every connection and
refuses new ones for a few seconds, as a restart does).

Every second it samples each worker's resident memory and open file descriptors (``/proc``),
its asyncio tasks (the worker's ``/metrics``, when it has the gauge), the presence keys in Redis
(with two workers) and the live counts (``/api/stats``), and the database's rows. Once the load
stops it waits ``--settle`` seconds and watches the relay at rest for ``--quiet`` more, then
fails if a frame was lost, if the relay still counts a peer, lobby or pipe, if a worker holds
more descriptors or tasks than when it started (with a small margin for pooled connections), or
if memory, presence keys or rows still grow at rest. The series go to ``bench/results/`` as
JSON and as an SVG plot.

    .venv/bin/python bench/soak.py --duration 60                # one worker
    .venv/bin/python bench/soak.py --duration 60 --workers 2    # two workers over Redis
    .venv/bin/python bench/soak.py --duration 120 --workers 2 --chaos
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432"
LOBBIES = [f"soak-{n}" for n in range(20)]
FRAMES_PER_PIPE = 50
# At rest a worker may hold this many more descriptors and tasks than when it started: pooled
# connections to the database and Redis, the workers' link, the analytics writer.
FD_MARGIN = 16
TASK_MARGIN = 8
# Idle connections a worker's pools may keep to Redis and the database: presence's pool of 50
# (lobbies/engine/presence/redis.py), the workers' link, the rate limits, a database connection
# per thread of the database's.
POOLED_MAX = 70
# Growth at rest that counts as a trend (per series, over the quiet window).
RSS_MARGIN_KIB = 2048

# The relay's own limits made to fit one generator on one address (as ``make bench`` does),
# and its timers short, so that what a vanished client or a killed worker leaves goes in seconds.
RELAY_ENV = {
    "RELAY_MAX_CONNECTIONS_PER_ADDRESS": "0",
    "RELAY_HANDSHAKE_RATE": "",
    "RELAY_QUICK_JOIN_RATE": "",
    "RELAY_LOBBY_CREATION_RATE": "",
    "RELAY_REFUSAL_RATE": "",
    "RELAY_PAIR_TIMEOUT": "3",
    "RELAY_WORKER_TTL": "3",
    "RELAY_SEAT_TTL": "5",
    "RELAY_ORPHAN_LOBBY_TTL": "5",
    "RELAY_PING_INTERVAL": "2",
    "RELAY_PING_TIMEOUT": "4",
    "RELAY_ANALYTICS_FLUSH_SECONDS": "1",
    "DJANGO_LOG_LEVEL": "WARNING",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: dict | None = None, token: str | None = None, method: str = "GET"):
    """The JSON answer to a request (None for a body that is not JSON); HTTP errors included."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
    except urllib.error.HTTPError as error:
        text = error.read()
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return None


# -- the relay under test ------------------------------------------------------------------------


@dataclass
class Worker:
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1"]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.http}/api/stats", timeout=2).close()
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.port} did not start; see {self.log}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def pid(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None
        return self.process.pid


class RedisServer:
    """A ``redis-server`` of the run's own (``--chaos`` restarts it), without persistence."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        options = ["--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [binary, *options, "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(self.url, socket_timeout=1).ping()
                return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class PostgresCut:
    """A TCP proxy in front of PostgreSQL: :meth:`cut` drops every connection through it and
    refuses new ones for a while, as a database restart does to its clients."""

    def __init__(self, target_port: int = 5432) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.links |= {writer, up_writer}

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        except asyncio.CancelledError:  # the run is over
            pass
        finally:
            self.links -= {writer, up_writer}

    async def cut(self, seconds: float) -> None:
        assert self.server is not None
        self.server.close()
        for link in list(self.links):
            link.transport.abort()
        await asyncio.sleep(seconds)
        await self.start()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in list(self.links):
            link.transport.abort()


@dataclass
class Relay:
    """The workers, their database and (with two workers) Redis, for one run."""

    workers: list[Worker]
    directory: Path
    database_url: str
    database_name: str | None  # a PostgreSQL database of the run's own, dropped at the end
    redis_url: str | None
    prefix: str | None
    redis: RedisServer | None = None
    postgres: PostgresCut | None = None
    token: str = ""

    def service_ports(self) -> set[str]:
        """The ports of the database and Redis: the workers' pooled connections go there."""
        urls = [self.database_url, self.redis_url or ""]
        return {url.rsplit(":", 1)[-1].split("/")[0] for url in urls if url.count(":") >= 2}

    def manage(self, *args: str) -> str:
        env = {**self.workers[0].env}
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout


def _environ(directory: Path, database_url: str, redis_url: str | None, prefix: str | None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(RELAY_ENV)
    env.update(RELAY_DATA_DIR=str(directory), DATABASE_URL=database_url)
    if redis_url:
        env.update(RELAY_REDIS_URL=redis_url, RELAY_REDIS_PREFIX=prefix or "soak:")
    return env


async def start_relay(workers: int, chaos: bool, directory: Path) -> Relay:
    """The relay of the run: SQLite for a plain soak, PostgreSQL (behind the cut) for chaos;
    Redis when there are several workers (the local one, or one of its own for chaos)."""
    redis_server = postgres = None
    database_name = None
    database_url = f"sqlite:///{directory / 'db.sqlite3'}"
    if chaos:
        import psycopg

        database_name = f"relay_soak_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database_name}"')
        postgres = PostgresCut()
        await postgres.start()
        database_url = f"postgres://postgres@127.0.0.1:{postgres.port}/{database_name}"
    redis_url = prefix = None
    if workers > 1:
        prefix = f"soak:{uuid.uuid4().hex[:8]}:"
        if chaos:
            redis_server = RedisServer(directory)
            redis_server.start()
            redis_url = redis_server.url
        else:
            redis_url = REDIS_URL
    env = _environ(directory, database_url, redis_url, prefix)
    relay = Relay(
        [Worker(free_port(), env, directory / f"worker{n}.log") for n in range(workers)],
        directory,
        database_url,
        database_name,
        redis_url,
        prefix,
        redis_server,
        postgres,
    )
    await asyncio.to_thread(relay.manage, "migrate", "--noinput", "-v0")
    make_owner = (
        "from django.contrib.auth.models import User; from lobbies.models import ApiToken; "
        "u = User.objects.create_user('soak-owner', password='a long soak password 1'); "
        "print(ApiToken.issue(u, 'soak')[1])"
    )
    relay.token = (await asyncio.to_thread(relay.manage, "shell", "-c", make_owner)).split()[-1]
    for worker in relay.workers:
        await asyncio.to_thread(worker.start)
    return relay


async def stop_relay(relay: Relay) -> None:
    for worker in relay.workers:
        await asyncio.to_thread(worker.stop)
    if relay.redis is not None:
        relay.redis.stop()
    elif relay.redis_url and relay.prefix:
        import redis

        client = redis.Redis.from_url(relay.redis_url)
        keys = list(client.scan_iter(match=f"{relay.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    if relay.postgres is not None:
        await relay.postgres.stop()
    if relay.database_name:
        import psycopg

        with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{relay.database_name}" WITH (FORCE)')


# -- what is sampled -----------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def open_fds(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return None


def asyncio_tasks(worker: Worker) -> int | None:
    """The worker's asyncio tasks, from its ``/metrics`` (None when it has no such gauge)."""
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"{worker.http}/metrics", timeout=2) as answer,
    ):
        for line in answer.read().decode().splitlines():
            if line.startswith("relay_asyncio_tasks"):
                return int(float(line.split()[-1]))
    return None


def presence_keys(relay: Relay) -> int | None:
    if not relay.redis_url:
        return None
    import redis

    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(relay.redis_url, socket_timeout=2)
        try:
            return sum(1 for _ in client.scan_iter(match=f"{relay.prefix}presence:*", count=1000))
        finally:
            client.close()
    return None


TABLES = (
    "lobbies_lobby",
    "lobbies_ban",
    "lobbies_lobbygrant",
    "analytics_hourlylobby",
    "analytics_hourlypeer",
)


def database_rows(relay: Relay) -> int | None:
    """Rows of the tables the workload can grow (lobbies, bans, grants, hourly statistics)."""
    query = " + ".join(f"(SELECT COUNT(*) FROM {table})" for table in TABLES)
    try:
        if relay.database_name:
            import psycopg

            with psycopg.connect(f"{POSTGRES_URL}/{relay.database_name}", connect_timeout=2) as db:
                return db.execute(f"SELECT {query}").fetchone()[0]
        import sqlite3

        with contextlib.closing(sqlite3.connect(relay.directory / "db.sqlite3", timeout=2)) as db:
            return db.execute(f"SELECT {query}").fetchone()[0]
    except Exception:  # the database cut off (chaos): no sample this second
        return None


@dataclass
class Sample:
    at: float
    phase: str
    workers: list[dict[str, int | None]]
    presence_keys: int | None
    rows: int | None
    live: dict[str, int] | None


def sample(relay: Relay, started: float, phase: str) -> Sample:
    workers = []
    services = relay.service_ports()
    for worker in relay.workers:
        pid = worker.pid
        pooled = sum(n for port, n in _connections(pid).items() if port in services) if pid else 0
        workers.append(
            {
                "rss_kib": rss_kib(pid) if pid else None,
                "fds": open_fds(pid) if pid else None,
                "pooled": pooled,
                "tasks": asyncio_tasks(worker) if pid else None,
            }
        )
    live = None
    for worker in relay.workers:
        if worker.pid:
            try:
                answer = http(f"{worker.http}/api/stats")
            except OSError:  # (a worker starting again: not listening yet)
                continue
            if isinstance(answer, dict) and "peers_online" in answer:
                live = answer
                break
    return Sample(
        round(time.monotonic() - started, 2),
        phase,
        workers,
        presence_keys(relay),
        database_rows(relay),
        live,
    )


# -- the workload --------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the workload did and saw."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


def peer() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


async def control(worker: Worker, peer_id: str) -> ClientConnection:
    return await connect(f"{worker.ws}/introduction/{peer_id}", open_timeout=10, close_timeout=2)


async def churn(relay: Relay, stop: asyncio.Event, tally: Tally) -> None:
    while not stop.is_set():
        worker = random.choice(relay.workers)
        try:
            socket = await control(worker, peer())
        except (OSError, InvalidHandshake, TimeoutError):
            tally.add("churn_connect_failed")
            await asyncio.sleep(0.2)
            continue
        try:
            ids = random.sample(LOBBIES, random.randint(1, 3))
            extras: dict[str, Any] = {"ext": 1} if random.random() < 0.5 else {}
            if random.random() < 0.1:
                extras = {"quickJoin": {"game": "soak", "maxPeers": 4}}
            await socket.send(json.dumps({"type": "Join", "documentIds": ids, **extras}))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(random.uniform(0.2, 1.5)):
                    async for _ in socket:
                        tally.add("churn_messages")
            if random.random() < 0.3:
                await socket.send(json.dumps({"type": "Leave", "documentIds": ids[:1]}))
            tally.add("churn_sockets")
        except ConnectionClosed:
            tally.add("churn_closed_by_relay")
        finally:
            if random.random() < 0.2:
                socket.transport.abort()  # vanished: no close handshake
                tally.add("churn_vanished")
            else:
                await socket.close()


def _frame(number: int) -> str | bytes:
    text = f"{number:06d}:" + "x" * random.randint(0, 200)
    return text if number % 2 else text.encode()


async def pipes(relay: Relay, stop: asyncio.Event, tally: Tally, chaos: bool) -> None:
    while not stop.is_set():
        first, second = relay.workers[0], relay.workers[-1]
        a, b, lobby = peer(), peer(), f"pipe-{uuid.uuid4().hex[:8]}"
        sockets: list[ClientConnection] = []
        try:
            # Each kept as soon as it opens: the generator must not hold sockets open itself.
            ca = await control(first, a)
            sockets.append(ca)
            cb = await control(second, b)
            sockets.append(cb)
            await ca.send(json.dumps({"type": "Join", "documentIds": [lobby]}))
            await cb.send(json.dumps({"type": "Join", "documentIds": [lobby]}))
            for socket in (ca, cb):
                message = json.loads(await asyncio.wait_for(socket.recv(), 10))
                assert message["type"] == "Introduction", message
            ea = await connect(f"{first.ws}/connection/{a}/{b}/{lobby}", open_timeout=10)
            sockets.append(ea)
            eb = await connect(f"{second.ws}/connection/{b}/{a}/{lobby}", open_timeout=10)
            sockets.append(eb)
            await _exchange(ea, eb, tally)
            tally.add("pipes_done")
        except (ConnectionClosed, OSError, TimeoutError, InvalidHandshake, AssertionError) as exc:
            # A pipe broken by a fault is not a lost frame: its ends were told (a close).
            tally.add("pipes_broken")
            if not chaos:
                tally.problem(f"a pipe broke without a fault: {exc!r}")
            await asyncio.sleep(0.2)  # (a worker down: not a loop of refusals)
        finally:
            for socket in sockets:
                with contextlib.suppress(Exception):
                    await socket.close()


async def _exchange(ea: ClientConnection, eb: ClientConnection, tally: Tally) -> None:
    """Numbered frames each way; every one must arrive, in order, with its type."""
    sent = [_frame(n) for n in range(FRAMES_PER_PIPE)]
    stall = random.random() < 0.33

    async def write(end: ClientConnection) -> None:
        for frame in sent:
            await end.send(frame)
        tally.add("frames_sent", len(sent))

    async def read(end: ClientConnection) -> None:
        if stall:
            await asyncio.sleep(1.0)  # a slow reader: the relay holds its writer back
        for expected in sent:
            got = await asyncio.wait_for(end.recv(), 10)
            if got != expected:
                tally.add("frames_lost")
                tally.problem(f"expected {expected[:8]!r}, got {got[:8]!r}")
                return
            tally.add("frames_received")

    await asyncio.gather(write(ea), read(eb), write(eb), read(ea))


async def hostile(relay: Relay, stop: asyncio.Event, tally: Tally) -> None:
    while not stop.is_set():
        worker = random.choice(relay.workers)
        kind = random.choice(["oversized", "malformed", "bad_path", "unintroduced"])
        try:
            if kind == "oversized":
                async with await control(worker, peer()) as socket:
                    await socket.send("x" * (64 * 1024 + 1))
                    with contextlib.suppress(ConnectionClosed):
                        await asyncio.wait_for(socket.recv(), 5)
                    expected = socket.close_code == 4413
            elif kind == "malformed":
                async with await control(worker, peer()) as socket:
                    for frame in ("{", "[]", json.dumps({"type": 7}), b"\xc1\xc1"):
                        await socket.send(frame)
                    await socket.send(json.dumps({"type": "Join", "documentIds": ["soak-0"]}))
                    await asyncio.sleep(0.1)
                    expected = socket.close_code is None  # still open
            elif kind == "bad_path":
                async with connect(f"{worker.ws}/introduction/%00", close_timeout=2) as socket:
                    with contextlib.suppress(ConnectionClosed):
                        await asyncio.wait_for(socket.recv(), 5)
                    expected = socket.close_code == 4400
            else:
                url = f"{worker.ws}/connection/{peer()}/{peer()}/nowhere"
                async with connect(url, close_timeout=2) as socket:
                    with contextlib.suppress(ConnectionClosed):
                        await asyncio.wait_for(socket.recv(), 5)
                    expected = socket.close_code == 4403
            tally.add(f"hostile_{kind}")
            if not expected:
                tally.add("hostile_unexpected")
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed):
            tally.add("hostile_failed")
        await asyncio.sleep(0.2)


async def api(relay: Relay, stop: asyncio.Event, tally: Tally) -> None:
    owned = f"owned-{uuid.uuid4().hex[:6]}"
    lobby_id = None
    while not stop.is_set():
        worker = random.choice(relay.workers)
        base = f"{worker.http}/api"
        try:
            action = random.choice(["list", "trending", "stats", "quick", "owner"])
            if action == "list":
                await asyncio.to_thread(http, f"{base}/lobbies?has_room=true")
            elif action == "trending":
                await asyncio.to_thread(http, f"{base}/trending")
            elif action == "stats":
                await asyncio.to_thread(http, f"{base}/stats")
            elif action == "quick":
                body = {"game": "soak-api", "maxPeers": 4, "peerId": peer()}
                await asyncio.to_thread(http, f"{base}/lobbies/quick-join", body, None, "POST")
            elif lobby_id is None:
                body = {"documentId": owned, "game": "soak", "maxPeers": 50}
                made = await asyncio.to_thread(http, f"{base}/lobbies", body, relay.token, "POST")
                lobby_id = made.get("id") if isinstance(made, dict) else None
            else:
                step = random.choice(["lock", "open", "kick"])
                path = f"{base}/lobbies/{lobby_id}/{step}"
                body = {"peerId": peer()} if step == "kick" else None
                await asyncio.to_thread(http, path, body, relay.token, "POST")
            tally.add(f"api_{action}")
        except OSError:
            tally.add("api_failed")
        await asyncio.sleep(0.1)


async def faults(relay: Relay, stop: asyncio.Event, tally: Tally, duration: float) -> None:
    """``--chaos``: a worker killed and started again, Redis restarted, PostgreSQL cut off, in
    turn, spread over the run."""
    period = max(duration / 6, 5.0)
    turn = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
            return
        fault = ["kill_worker", "restart_redis", "cut_postgres"][turn % 3]
        turn += 1
        if fault == "kill_worker":
            worker = random.choice(relay.workers)
            await asyncio.to_thread(worker.kill)
            await asyncio.sleep(1)
            await asyncio.to_thread(worker.start)
        elif fault == "restart_redis" and relay.redis is not None:
            relay.redis.stop()
            await asyncio.sleep(1)
            await asyncio.to_thread(relay.redis.start)
        elif fault == "cut_postgres" and relay.postgres is not None:
            await relay.postgres.cut(2)
        tally.add(f"fault_{fault}")


def _connections(pid: int) -> dict[str, int]:
    """The worker's TCP connections, by the port at their other end (what a descriptor more
    than at the start is: a pool's connection to PostgreSQL or Redis, or a socket kept). Read
    from ``/proc``: the socket inodes of its descriptors, looked up in ``/proc/net/tcp*``."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                    port = str(int(fields[2].rsplit(":", 1)[1], 16))
                    found[port] = found.get(port, 0) + 1
    return found


# -- the verdict ---------------------------------------------------------------------------------


def _own(worker: dict[str, int | None], name: str) -> int | None:
    """A worker's descriptors less its pooled connections to the database and Redis (bounded
    by the pools, checked apart), or its tasks."""
    value = worker[name]
    if name == "fds" and value is not None:
        return value - (worker["pooled"] or 0)
    return value


def _values(samples: list[Sample], read: Any) -> list[float]:
    return [value for s in samples if (value := read(s)) is not None]


def verdict(samples: list[Sample], tally: Tally, workers: int) -> list[str]:
    """What went wrong: empty when the relay kept nothing and lost nothing."""
    failures = list(tally.problems)
    if tally.counts.get("frames_lost"):
        failures.append(f"{tally.counts['frames_lost']} frames lost")
    if not tally.counts.get("pipes_done"):
        failures.append("no pipe completed: the workload did not run")
    baseline = [s for s in samples if s.phase == "baseline"]
    quiet = [s for s in samples if s.phase == "quiet"]
    if not baseline or len(quiet) < 2:
        return [*failures, "too few samples"]
    last = quiet[-1]
    if last.live and any(last.live.get(k) for k in ("peers_online", "pipes_open")):
        failures.append(f"at rest the relay still counts {last.live}")
    for n in range(workers):
        for name, margin in (("fds", FD_MARGIN), ("tasks", TASK_MARGIN)):
            start = _values(baseline, lambda s, n=n, name=name: _own(s.workers[n], name))
            end = _values(quiet, lambda s, n=n, name=name: _own(s.workers[n], name))
            if start and end and min(end) > max(start) + margin:
                failures.append(
                    f"worker {n + 1} holds {min(end)} {name} at rest, {max(start)} before"
                )
        pooled = _values(quiet, lambda s, n=n: s.workers[n]["pooled"])
        if pooled and max(pooled) > POOLED_MAX:
            failures.append(f"worker {n + 1} keeps {max(pooled)} connections to its services")
        rss = _values(quiet, lambda s, n=n: s.workers[n]["rss_kib"])
        if len(rss) >= 2 and rss[-1] > rss[0] + RSS_MARGIN_KIB:
            failures.append(f"worker {n + 1}'s memory grows at rest: {rss[0]} -> {rss[-1]} KiB")
    for name, read in (("presence keys", lambda s: s.presence_keys), ("rows", lambda s: s.rows)):
        values = _values(quiet, read)
        if len(values) >= 2 and values[-1] > values[0]:
            failures.append(f"{name} grow at rest: {values[0]} -> {values[-1]}")
    keys_before = _values(baseline, lambda s: s.presence_keys)
    keys_after = _values(quiet, lambda s: s.presence_keys)
    if keys_before and keys_after and keys_after[-1] > max(keys_before):
        failures.append(f"presence keys at rest: {keys_after[-1]}, {max(keys_before)} before")
    return failures


# -- the plot ------------------------------------------------------------------------------------


def svg_plot(samples: list[Sample], title: str) -> str:
    """One small panel per series over time, each on its own scale (its lowest and highest
    value written beside it), the load shaded: what grows, and whether it comes back down."""
    series: dict[str, list[tuple[float, float]]] = {}
    for s in samples:
        for n, w in enumerate(s.workers):
            for name, label in (
                ("rss_kib", "RSS (KiB)"),
                ("fds", "descriptors"),
                ("tasks", "tasks"),
            ):
                if w[name] is not None:
                    series.setdefault(f"worker {n + 1} {label}", []).append((s.at, w[name]))
        if s.live:
            series.setdefault("peers online", []).append((s.at, s.live.get("peers_online", 0)))
        if s.presence_keys is not None:
            series.setdefault("presence keys", []).append((s.at, s.presence_keys))
        if s.rows is not None:
            series.setdefault("database rows", []).append((s.at, s.rows))
    width, left, right, panel, gap = 900, 200, 110, 44, 14
    end = max((s.at for s in samples), default=1.0) or 1.0
    plot = width - left - right
    load = [s.at for s in samples if s.phase == "load"]
    height = 40 + len(series) * (panel + gap) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="10" y="22" font-size="14">{title}</text>',
    ]
    for index, (name, points) in enumerate(series.items()):
        top = 40 + index * (panel + gap)
        low, high = min(v for _, v in points), max(v for _, v in points)
        span = (high - low) or 1
        if load:
            x0, x1 = left + plot * min(load) / end, left + plot * max(load) / end
            parts.append(
                f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{panel}" '
                'fill="#eef5f9"/>'
            )
        parts.append(
            f'<rect x="{left}" y="{top}" width="{plot}" height="{panel}" fill="none" '
            'stroke="#ddd"/>'
            f'<text x="10" y="{top + panel / 2 + 4:.0f}">{name}</text>'
            f'<text x="{left + plot + 6}" y="{top + 10}" fill="#666">{high:,.0f}</text>'
            f'<text x="{left + plot + 6}" y="{top + panel}" fill="#666">{low:,.0f}</text>'
        )
        path = " ".join(
            f"{left + plot * t / end:.1f},{top + panel - panel * (v - low) / span:.1f}"
            for t, v in points
        )
        parts.append(f'<polyline fill="none" stroke="#417690" stroke-width="1.2" points="{path}"/>')
    bottom = 40 + len(series) * (panel + gap)
    parts.append(
        f'<text x="{left}" y="{bottom + 4}" fill="#666">0 s</text>'
        f'<text x="{left + plot - 40}" y="{bottom + 4}" fill="#666">{end:.0f} s</text>'
        f'<text x="{left + 60}" y="{bottom + 4}" fill="#666">shaded: under load; then at '
        "rest</text></svg>"
    )
    return "\n".join(parts)


# -- the run -------------------------------------------------------------------------------------


async def run(options: argparse.Namespace) -> int:
    directory = (
        Path(os.environ.get("RELAY_SOAK_DIR") or ROOT / "var" / "soak") / uuid.uuid4().hex[:8]
    )
    directory.mkdir(parents=True)
    name = f"soak-{options.workers}w{'-chaos' if options.chaos else ''}"
    relay = await start_relay(options.workers, options.chaos, directory)
    samples: list[Sample] = []
    tally = Tally()
    started = time.monotonic()
    phase = "baseline"
    done = asyncio.Event()

    async def sampler() -> None:
        while not done.is_set():
            samples.append(await asyncio.to_thread(sample, relay, started, phase))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), options.interval)

    for _ in range(3):  # before any load, and finished before it starts
        samples.append(await asyncio.to_thread(sample, relay, started, phase))
        await asyncio.sleep(options.interval)
    phase = "load"
    sampling = asyncio.ensure_future(sampler())
    try:
        stop = asyncio.Event()
        load = [
            *(churn(relay, stop, tally) for _ in range(options.churners)),
            *(pipes(relay, stop, tally, options.chaos) for _ in range(options.pipes)),
            hostile(relay, stop, tally),
            api(relay, stop, tally),
        ]
        if options.chaos:
            load.append(faults(relay, stop, tally, options.duration))
        tasks = [asyncio.ensure_future(job) for job in load]
        await asyncio.sleep(options.duration)
        stop.set()
        await asyncio.wait(tasks, timeout=30)
        for task in tasks:
            if not task.done():
                task.cancel()
            elif task.exception() is not None:
                tally.problem(f"workload task failed: {task.exception()!r}")
        phase = "settle"
        await asyncio.sleep(options.settle)
        phase = "quiet"
        await asyncio.sleep(options.quiet)
    finally:
        done.set()
        await sampling
        connections = {w.port: _connections(w.pid) for w in relay.workers if w.pid}
        await stop_relay(relay)
        if not options.keep:  # (its logs help when a run fails: --keep)
            shutil.rmtree(directory, ignore_errors=True)
    failures = verdict(samples, tally, options.workers)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = options.out or RESULTS / f"{stamp}-{name}.json"
    out.write_text(
        json.dumps(
            {
                "run": name,
                "duration": options.duration,
                "workers": options.workers,
                "chaos": options.chaos,
                "counts": tally.counts,
                "failures": failures,
                "connections_at_rest": connections,
                "samples": [s.__dict__ for s in samples],
            },
            indent=1,
        )
    )
    title = f"{name}: {options.duration:.0f} s of load, then at rest"
    out.with_suffix(".svg").write_text(svg_plot(samples, title))
    _report(name, samples, tally, failures, out, options.workers)
    return 1 if failures else 0


def _report(name, samples, tally, failures, out, workers) -> None:
    print(f"{name}: {json.dumps(tally.counts, sort_keys=True)}")
    for phase in ("baseline", "load", "quiet"):
        chosen = [s for s in samples if s.phase == phase]
        if not chosen:
            continue
        s = chosen[-1]
        each = "; ".join(
            f"w{n + 1} {(w['rss_kib'] or 0) // 1024} MiB {w['fds']} fds {w['tasks']} tasks"
            for n, w in enumerate(s.workers)
        )
        print(
            f"  end of {phase:8} {each}; presence keys {s.presence_keys}; rows {s.rows}; "
            f"live {s.live}"
        )
    print(f"  results: {out} (and .svg)")
    print("  verdict: " + ("OK" if not failures else "FAILED\n    - " + "\n    - ".join(failures)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument(
        "--chaos", action="store_true", help="kill workers, restart Redis, cut PostgreSQL"
    )
    parser.add_argument("--settle", type=float, default=12.0, help="seconds after the load (12)")
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds watched at rest (10)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--churners", type=int, default=20, help="control sockets at a time")
    parser.add_argument("--pipes", type=int, default=4, help="pipes at a time")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/<stamp>-soak…)")
    parser.add_argument("--keep", action="store_true", help="keep the relay's data directory")
    options = parser.parse_args(argv)
    if options.chaos and options.workers < 2:
        parser.error("--chaos needs --workers 2 (a worker is killed while the other serves)")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    return asyncio.run(run(options))


if __name__ == "__main__":
    sys.exit(main())
