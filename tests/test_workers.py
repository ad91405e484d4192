"""Many workers of one relay (``RELAY_REDIS_URL``): real worker processes, started as
``manage.py serve`` starts them, sharing the local Redis (127.0.0.1:6379, under a key prefix of
the test's own) and one database, each driven by its own clients.

Whatever a peer on one worker does must reach a peer on the other: introductions, pipes split
across the two (frames in order, text stays text), orders, identity rules; a worker that dies
or drains is gone from presence; numbers span both.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ROOT, LiveRelay, relay_environ, start_relay, stop_relay
from tests.meeting import segment

REDIS_URL = "redis://127.0.0.1:6379/0"
TTL = 3.0  # RELAY_WORKER_TTL of these workers: a killed one is gone within it


class Cluster:
    """Two workers of one relay: their processes, their shared data directory, their prefix."""

    def __init__(self, server: str, data_dir: Path, **env: str) -> None:
        self.prefix = f"test:{uuid.uuid4().hex[:12]}:"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.env = {
            "RELAY_REDIS_URL": REDIS_URL,
            "RELAY_REDIS_PREFIX": self.prefix,
            "RELAY_WORKER_TTL": str(TTL),
            **env,
        }
        self.workers = [start_relay(server, data_dir, f"worker{n}.log", **self.env) for n in (1, 2)]

    def stop(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                stop_relay(worker)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

    def manage(self, *args: str) -> str:
        """Run a ``manage.py`` command against the workers' database; its output."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=relay_environ(self.data_dir, **self.env),
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator:
    """``make_cluster(server, **env)``: two workers of one relay, stopped after the test."""
    made: list[Cluster] = []

    def make(server: str = "uvicorn", **env: str) -> Cluster:
        made.append(Cluster(server, tmp_path / f"cluster{len(made)}", **env))
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture(params=["uvicorn", "daphne"])
def cluster(request: pytest.FixtureRequest, make_cluster) -> Cluster:
    """Two workers of one relay under each server."""
    return make_cluster(request.param)


@pytest.fixture
def uvicorn_cluster(make_cluster) -> Cluster:
    """Two uvicorn workers of one relay (the default server), for the cases beyond the core."""
    return make_cluster("uvicorn")


def stats(worker: LiveRelay) -> dict[str, int]:
    with urllib.request.urlopen(f"{worker.http_url}/api/stats", timeout=5) as answer:
        return json.loads(answer.read())


async def control(worker: LiveRelay, peer: str):
    return await connect(f"{worker.ws_url}/introduction/{segment(peer)}")


async def join(socket, *document_ids: str, **extras) -> None:
    await socket.send(json.dumps({"type": "Join", "documentIds": list(document_ids), **extras}))


async def next_message(socket, seconds: float = 5) -> dict:
    return json.loads(await asyncio.wait_for(socket.recv(), seconds))


async def introduced_to(socket, seconds: float = 5) -> str:
    """The peer of the next Introduction on a 3.x-dialect control socket."""
    message = await next_message(socket, seconds)
    assert message["type"] == "Introduction", message
    return message["userName"]


async def nothing_comes(socket, seconds: float = 1.0) -> bool:
    try:
        message = await asyncio.wait_for(socket.recv(), seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected: {message!r}")


async def close_code(socket, seconds: float = 10) -> int:
    """The code of the close the relay sends next."""
    try:
        while True:
            await asyncio.wait_for(socket.recv(), seconds)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else 1006


async def pipe(worker: LiveRelay, me: str, other: str, document_id: str):
    path = f"/connection/{segment(me)}/{segment(other)}/{segment(document_id)}"
    return await connect(f"{worker.ws_url}{path}", max_size=None)


async def test_peers_on_two_workers_are_introduced(cluster):
    first, second = cluster.workers
    a, b = await control(first, "a"), await control(second, "b")
    await join(a, "doc")
    await asyncio.sleep(0.2)
    await join(b, "doc")
    assert await introduced_to(b) == "a"
    assert await introduced_to(a) == "b"
    # Numbers span the workers: each answers for the whole relay.
    for worker in cluster.workers:
        assert stats(worker) == {"peers_online": 2, "lobbies_active": 1, "pipes_open": 0}
    await a.close()
    await b.close()


async def test_a_pipe_split_across_workers_carries_everything_in_order(cluster):
    first, second = cluster.workers
    a, b = await control(first, "a"), await control(second, "b")
    await join(a, "doc")
    await join(b, "doc")
    await introduced_to(a)
    await introduced_to(b)
    end_a = await pipe(first, "a", "b", "doc")
    held = [f"held {n}" for n in range(50)] + [bytes([n]) * 10 for n in range(50)]
    for frame in held:
        await end_a.send(frame)  # held on the first worker until b's end arrives
    end_b = await pipe(second, "b", "a", "doc")
    count = 10_000
    frames = [f"text {n}" if n % 3 else n.to_bytes(4, "big") * 8 for n in range(count)]

    async def send_all(socket) -> None:
        for frame in frames:
            await socket.send(frame)

    async def receive(socket, how_many: int) -> list:
        return [await asyncio.wait_for(socket.recv(), 10) for _ in range(how_many)]

    got_b, got_a, _, _ = await asyncio.gather(
        receive(end_b, len(held) + count), receive(end_a, count), send_all(end_a), send_all(end_b)
    )
    assert got_b == held + frames  # in order, text as text and bytes as bytes
    assert got_a == frames
    big = os.urandom(1024 * 1024)
    await end_b.send(big)
    assert await asyncio.wait_for(end_a.recv(), 10) == big
    assert stats(first)["pipes_open"] == 1
    await end_a.close()
    assert await close_code(end_b) == 1000  # the other end closed
    for socket in (a, b):
        await socket.close()


async def test_reciprocal_requests_racing_on_two_workers_pair_exactly_once(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    a, b = await control(first, "a"), await control(second, "b")
    for n in range(20):
        await join(a, f"doc{n}")
        await join(b, f"doc{n}")
        await introduced_to(a)
        await introduced_to(b)
        end_a, end_b = await asyncio.gather(
            pipe(first, "a", "b", f"doc{n}"), pipe(second, "b", "a", f"doc{n}")
        )
        await end_a.send(f"ping {n}")
        assert await asyncio.wait_for(end_b.recv(), 5) == f"ping {n}"
        await end_b.send(f"pong {n}")
        assert await asyncio.wait_for(end_a.recv(), 5) == f"pong {n}"
        await end_a.close()
        await close_code(end_b)
    await a.close()
    await b.close()


async def test_a_pipe_needs_an_introduction_across_workers_too(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    a, b = await control(first, "a"), await control(second, "b")
    await join(a, "one")
    await join(b, "two")  # online, but never in one lobby
    end = await pipe(second, "b", "a", "one")
    assert await close_code(end) == 4403
    await a.close()
    await b.close()


async def test_a_killed_worker_is_forgotten_within_its_ttl(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    ghost = await control(first, "ghost")
    await join(ghost, "doc")
    a = await control(second, "a")
    await join(a, "doc")
    assert await introduced_to(a) == "ghost"
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    await asyncio.sleep(TTL + 0.5)
    b = await control(second, "b")
    await join(b, "doc")
    assert await introduced_to(b) == "a"  # and not the ghost
    assert await introduced_to(a) == "b"
    assert await nothing_comes(b)
    assert stats(second)["peers_online"] == 2
    await a.close()
    await b.close()


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
async def test_a_draining_worker_closes_its_sockets_and_leaves_presence_at_once(
    make_cluster, server
):
    # A TTL far longer than the test: only the drain itself can take the peer out of presence.
    first, second = make_cluster(server, RELAY_WORKER_TTL="300").workers
    leaving = await control(first, "leaving")
    await join(leaving, "doc")
    staying = await control(second, "staying")
    await join(staying, "doc")
    await introduced_to(staying)
    first.process.send_signal(signal.SIGTERM)
    code = await close_code(leaving)
    assert code in (1001, 1012)  # going away (daphne), service restart (uvicorn)
    first.process.wait(timeout=15)
    assert stats(second)["peers_online"] == 1
    newcomer = await control(second, "newcomer")
    await join(newcomer, "doc")
    assert await introduced_to(newcomer) == "staying"
    assert await nothing_comes(newcomer)
    await staying.close()
    await newcomer.close()
