"""Many workers of one relay (``RELAY_REDIS_URL``): real worker processes, started as
``manage.py serve`` starts them, sharing the local Redis (127.0.0.1:6379, under a key prefix of
the test's own) and one database, each driven by its own clients.

Whatever a peer on one worker does must reach a peer on the other: introductions, pipes split
across the two (frames in order, text stays text), orders, identity rules; a worker that dies
or drains is gone from presence; numbers span both.
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
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ROOT, LiveRelay, relay_environ, start_relay, stop_relay
from tests.interop.test_npm_clients import NODE, SCENARIOS_DIR, npm_clients_built  # noqa: F401
from tests.meeting import segment

pytestmark = pytest.mark.live

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
        # One server for both, or "uvicorn+daphne": one of each.
        servers = server.split("+") if "+" in server else [server, server]
        self.workers = [
            start_relay(name, data_dir, f"worker{n}.log", **self.env)
            for n, name in enumerate(servers, 1)
        ]

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


@pytest.fixture(params=["uvicorn", "daphne", "uvicorn+daphne"])
def cluster(request: pytest.FixtureRequest, make_cluster) -> Cluster:
    """Two workers of one relay under each server, and one of each (a uvicorn worker sends a
    pipe's frames spliced, as server frames; a daphne worker takes them message by message)."""
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


async def meet(first: LiveRelay, second: LiveRelay, a: str = "a", b: str = "b", doc: str = "doc"):
    """Control sockets of ``a`` on the first worker and ``b`` on the second, introduced on
    ``doc``."""
    socket_a, socket_b = await control(first, a), await control(second, b)
    await join(socket_a, doc)
    await join(socket_b, doc)
    assert await introduced_to(socket_a) == b
    assert await introduced_to(socket_b) == a
    return socket_a, socket_b


async def paired(first: LiveRelay, second: LiveRelay, a: str = "a", b: str = "b", doc: str = "doc"):
    """The pipe between peers ``a`` (its end on the first worker) and ``b`` (on the second),
    opened at once from both sides and known to be paired (a frame went through)."""
    end_a, end_b = await asyncio.gather(pipe(first, a, b, doc), pipe(second, b, a, doc))
    await end_a.send("paired?")
    assert await asyncio.wait_for(end_b.recv(), 5) == "paired?"
    return end_a, end_b


async def pipe(worker: LiveRelay, me: str, other: str, document_id: str):
    path = f"/connection/{segment(me)}/{segment(other)}/{segment(document_id)}"
    return await connect(f"{worker.ws_url}{path}", max_size=None)


async def test_peers_on_two_workers_are_introduced(cluster):
    first, second = cluster.workers
    a, b = await meet(first, second)
    # Numbers span the workers: each answers for the whole relay.
    for worker in cluster.workers:
        assert stats(worker) == {"peers_online": 2, "lobbies_active": 1, "pipes_open": 0}
    await a.close()
    await b.close()


async def test_a_pipe_split_across_workers_carries_everything_in_order(cluster):
    first, second = cluster.workers
    a, b = await meet(first, second)
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


async def test_reciprocal_requests_racing_pair_exactly_once_on_one_worker_or_two(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    a, b = await control(first, "a"), await control(second, "b")
    for n in range(40):
        await join(a, f"doc{n}")
        await join(b, f"doc{n}")
        await introduced_to(a)
        await introduced_to(b)
        # Both requests at once, from two workers (even rounds) or on one (odd rounds), where
        # presence may answer the held end after its match has already come for it.
        b_worker = second if n % 2 == 0 else first
        end_a, end_b = await asyncio.gather(
            pipe(first, "a", "b", f"doc{n}"), pipe(b_worker, "b", "a", f"doc{n}")
        )
        await end_a.send(f"ping {n}")
        assert await asyncio.wait_for(end_b.recv(), 5) == f"ping {n}"
        await end_b.send(f"pong {n}")
        assert await asyncio.wait_for(end_a.recv(), 5) == f"pong {n}"
        await end_a.close()
        assert await close_code(end_b) == 1000
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


def _owner_token(cluster: Cluster) -> str:
    """An API token of a user allowed to create lobbies, in the workers' database."""
    script = (
        "from django.contrib.auth.models import Permission, User; "
        "from lobbies.models import ApiToken; "
        "user, _ = User.objects.get_or_create(username='owner'); "
        "user.user_permissions.add(Permission.objects.get(codename='create_lobby')); "
        "print(ApiToken.issue(user, 'test')[1])"
    )
    return cluster.manage("shell", "-c", script).strip().splitlines()[-1]


def api(worker: LiveRelay, token: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{worker.http_url}/api{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read() or b"{}")


async def test_an_owners_kick_and_close_reach_peers_on_another_worker(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    token = _owner_token(uvicorn_cluster)
    lobby = api(second, token, "POST", "/lobbies", {"documentId": "arena", "game": "race"})
    p, q = await control(first, "p"), await control(second, "q")
    await join(p, "arena", ext=1)
    assert (await next_message(p))["type"] == "Joined"
    await join(q, "arena", ext=1)
    assert (await next_message(q))["type"] == "Joined"
    assert await introduced_to(p) == "q"
    assert await introduced_to(q) == "p"
    end_p, end_q = await asyncio.gather(
        pipe(first, "p", "q", "arena"), pipe(second, "q", "p", "arena")
    )
    await end_q.send("paired?")
    assert await asyncio.wait_for(end_p.recv(), 5) == "paired?"
    # Asked of the second worker, carried out by the first, where p's sockets are.
    api(second, token, "POST", f"/lobbies/{lobby['id']}/kick", {"peerId": "p"})
    left = await next_message(p)
    assert (left["type"], left["documentId"], left["reason"]) == ("Left", "arena", "kicked")
    assert await close_code(end_p) == 4410  # the kicked peer's own end gets the code
    assert await close_code(end_q) == 1000
    # p comes back; then the lobby closes for both, whichever worker each is on.
    await join(p, "arena", ext=1)
    assert (await next_message(p))["type"] == "Joined"
    await introduced_to(p)
    await introduced_to(q)
    api(first, token, "POST", f"/lobbies/{lobby['id']}/close")
    for socket in (p, q):
        left = await next_message(socket)
        assert (left["type"], left["reason"]) == ("Left", "closed")
    await join(q, "arena", ext=1)
    assert (await next_message(q))["type"] == "Error"  # closed on every worker, at once
    await p.close()
    await q.close()


def _ticket(cluster: Cluster, username: str) -> str:
    cluster.manage(
        "shell",
        "-c",
        f"from django.contrib.auth.models import User; "
        f"User.objects.get_or_create(username={username!r})",
    )
    return cluster.manage("issue_ticket", username).strip().splitlines()[-1]


async def test_a_users_peer_id_is_theirs_on_every_worker(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    ann, bob = _ticket(uvicorn_cluster, "ann"), _ticket(uvicorn_cluster, "bob")
    mine = await connect(f"{first.ws_url}/t/{ann}/introduction/me")
    await join(mine, "doc", ext=1)
    assert (await next_message(mine))["type"] == "Joined"  # (online: in presence now)
    thief = await connect(f"{second.ws_url}/t/{bob}/introduction/me")
    assert await close_code(thief) == 4403  # held by ann on the other worker
    again = await connect(f"{second.ws_url}/t/{ann}/introduction/me")
    assert await close_code(mine) == 4409  # ann's newer socket replaces hers, across workers
    await join(again, "doc")
    other = await control(first, "other")
    await join(other, "doc")
    assert await introduced_to(other) == "me"
    await again.close()
    await other.close()


def resident_bytes(worker: LiveRelay) -> int:
    """The worker process's resident memory."""
    for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_reader_that_stops_reading_stops_its_writer_across_workers(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    a, b = await meet(first, second)
    writer, reader = await paired(first, second)  # (a held end holds RELAY_MAX_HELD_BYTES)
    before = [resident_bytes(worker) for worker in uvicorn_cluster.workers]
    frame, sent = os.urandom(64 * 1024), 0

    async def write_forever() -> None:
        nonlocal sent
        while True:
            await writer.send(frame)
            sent += len(frame)

    writing = asyncio.ensure_future(write_forever())
    await asyncio.sleep(3)  # the reader reads nothing meanwhile
    stalled_at = sent
    grown = [resident_bytes(w) - b for w, b in zip(uvicorn_cluster.workers, before, strict=True)]
    # The window (1 MiB) and the sockets' buffers, not the 64 KiB frames the writer would send.
    assert stalled_at < 32 * 1024 * 1024
    assert max(grown) < 32 * 1024 * 1024, grown
    received = 0
    while received < stalled_at:
        got = await asyncio.wait_for(reader.recv(), 10)
        assert got == frame
        received += len(got)
    writing.cancel()
    for socket in (writer, reader, a, b):
        await socket.close()


async def test_a_reader_that_vanishes_while_frames_wait_for_it_leaves_its_worker_serving(
    uvicorn_cluster,
):
    first, second = uvicorn_cluster.workers
    a, b = await meet(first, second)
    writer, reader = await paired(first, second)
    frame = os.urandom(64 * 1024)

    async def write_forever() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await writer.send(frame)

    writing = asyncio.ensure_future(write_forever())
    await asyncio.sleep(2)  # the reader reads nothing: frames from the first worker wait for it
    reader.transport.abort()  # gone without a close handshake, its buffer still full
    # The second worker goes on serving everyone else (its event loop is not stuck on the
    # frames it can no longer write), and the writer's end is closed.
    assert (await asyncio.to_thread(stats, second))["peers_online"] == 2
    assert await close_code(writer) == 1000
    writing.cancel()
    for socket in (a, b):
        await socket.close()


async def test_workers_come_back_by_themselves_after_redis_restarts_empty(make_cluster, own_redis):
    first, second = make_cluster(RELAY_REDIS_URL=own_redis.url).workers
    a, b = await meet(first, second)
    end_a, end_b = await paired(first, second)
    own_redis.kill()
    # Meanwhile a new socket is told to come back later, not given a fault.
    newcomer = await control(first, "newcomer")
    assert await close_code(newcomer) == 1013
    own_redis.start()  # empty: presence lost every peer
    # What the link carried may be lost: the pipe split across workers closes; the peers that
    # presence forgot are closed so that their clients reconnect.
    assert await close_code(end_a, TTL * 3) == 1012
    assert await close_code(end_b, TTL * 3) == 1012
    assert await close_code(a, TTL * 3) == 1012
    assert await close_code(b, TTL * 3) == 1012
    # The same workers serve again, without a restart.
    a, b = await control(first, "a"), await control(second, "b")
    await join(a, "doc")
    await join(b, "doc")
    assert await introduced_to(a) == "b"
    assert await introduced_to(b) == "a"
    assert stats(first)["peers_online"] == 2
    await a.close()
    await b.close()


@pytest.mark.interop
@pytest.mark.usefixtures("npm_clients_built")
def test_the_published_clients_meet_and_pipe_across_workers(cluster):
    """The seed's example, unmodified clients: the 3.6.2 client on one worker, the 4.2.2 client
    on the other (tests/interop/scenarios/across_workers.mjs)."""
    first, second = cluster.workers
    script = SCENARIOS_DIR / "across_workers.mjs"
    done = subprocess.run(
        [NODE, str(script), first.ws_url, f"--second={second.ws_url}"],
        cwd=SCENARIOS_DIR.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["ok"] is True


def test_relayclient_meets_and_pipes_across_workers(uvicorn_cluster):
    """The bundled Python client, as the README's example uses it, one peer on each worker."""
    first, second = uvicorn_cluster.workers
    code = """
import asyncio, sys
from relayclient import Client

async def main(first, second):
    async with Client("host", first) as host, Client("player", second) as player:
        await host.join("race")
        await player.join("race")
        to_player, to_host = await host.next_peer(), await player.next_peer()
        await to_player.send("go")
        print(await anext(aiter(to_host)))
        await to_host.send(b"ok")
        print(await anext(aiter(to_player)))

asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 30))
"""
    done = subprocess.run(
        [sys.executable, "-c", code, first.ws_url, second.ws_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["go", "b'ok'"]


async def test_the_hourly_peak_counts_the_peers_of_every_worker(make_cluster):
    cluster = make_cluster(RELAY_ANALYTICS_FLUSH_SECONDS="0.2")
    first, second = cluster.workers
    sockets = [await control(first, "a"), await control(first, "b"), await control(second, "c")]
    for socket in sockets:
        await join(socket, "doc")
    peak, joins = 0, 0
    for _ in range(50):  # written by each worker within its flush interval
        await asyncio.sleep(0.2)
        found = cluster.manage(
            "shell",
            "-c",
            "from analytics.models import HourlyTotals as H; "
            "row = H.objects.order_by('-hour').first(); "
            "print(row.peak_peers if row else 0, row.joins if row else 0)",
        )
        peak, joins = map(int, found.split()[-2:])
        if joins == 3:
            break
    assert (peak, joins) == (3, 3)  # not the most one worker had (2)
    for socket in sockets:
        await socket.close()


class Operator:
    """A superuser signed in to one worker's admin, as a browser would be (session, CSRF)."""

    def __init__(self, cluster: Cluster, worker: LiveRelay) -> None:
        import http.cookiejar

        cluster.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.filter(username='root').exists() or "
            "User.objects.create_superuser('root', '', 'a long pass phrase')",
        )
        self.base = worker.http_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.post("/admin/login/", {"username": "root", "password": "a long pass phrase"})

    def post(self, path: str, form: dict[str, str]) -> int:
        from urllib.parse import urlencode

        self.opener.open(f"{self.base}{path}", timeout=10).read()  # the CSRF cookie
        csrf = next(c.value for c in self.jar if c.name == "csrftoken")
        request = urllib.request.Request(
            f"{self.base}{path}",
            data=urlencode({**form, "csrfmiddlewaretoken": csrf}).encode(),
            headers={"Referer": f"{self.base}{path}"},
        )
        with self.opener.open(request, timeout=10) as answer:
            return answer.status


async def test_a_relay_wide_ban_closes_the_peer_on_another_worker(make_cluster):
    # Cached answers kept far longer than the test: only the workers' messages can drop them.
    cluster = make_cluster(RELAY_FACTS_CACHE_SECONDS="300")
    first, second = cluster.workers
    operator = Operator(cluster, second)
    banned, other = await meet(first, second, "spammer", "other")
    end_banned, end_other = await paired(first, second, "spammer", "other")
    form = {"peer_id": "spammer", "reason": "", "expires_at_0": "", "expires_at_1": ""}
    assert operator.post("/admin/lobbies/ban/add/", form) == 200  # (after the redirect)
    assert await close_code(banned) == 4403
    assert await close_code(end_banned) == 4403  # its pipes too, across workers
    assert await close_code(end_other) == 1000
    again = await control(first, "spammer")
    assert await close_code(again) == 4403  # the worker that cached "no ban" knows at once
    await other.close()


async def hosted_lobby(cluster: Cluster, worker: LiveRelay, transferable: bool):
    """The owner's control socket on ``worker``, hosting the host lobby ``match`` it created
    (its host role passing on when it leaves if ``transferable``)."""
    token = _owner_token(cluster)
    spec = {"documentId": "match", "topology": "host", "hostTransferable": transferable}
    api(cluster.workers[1], token, "POST", "/lobbies", spec)
    host = await connect(f"{worker.ws_url}/t/{_ticket(cluster, 'owner')}/introduction/host")
    await join(host, "match", ext=1)
    assert (await next_message(host))["role"] == "host"
    return host


async def test_the_host_role_passes_to_a_member_on_another_worker(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    host = await hosted_lobby(uvicorn_cluster, first, transferable=True)
    heir, other = await control(second, "heir"), await control(first, "other")
    for member in (heir, other):
        await join(member, "match", ext=1)
        assert (await next_message(member))["role"] == "member"
        assert await introduced_to(member) == "host"  # members meet the host only
        assert await introduced_to(host) in ("heir", "other")
    await host.close()
    # The member present longest (on the second worker) hosts now, and meets the other.
    assert (await next_message(heir))["role"] == "host"
    assert await introduced_to(heir) == "other"
    joined = await next_message(other)
    assert (joined["type"], joined["role"], joined["lobby"]["host"]) == ("Joined", "member", "heir")
    assert await introduced_to(other) == "heir"
    await heir.close()
    await other.close()


async def test_revoking_a_token_closes_its_sockets_on_every_worker(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    token = _owner_token(uvicorn_cluster)
    ticket = api(second, token, "POST", "/tickets", {})["ticket"]
    socket = await connect(f"{first.ws_url}/t/{ticket}/introduction/owned")
    await join(socket, "doc", ext=1)
    assert (await next_message(socket))["type"] == "Joined"
    mine = api(second, token, "GET", "/tokens")
    api(second, token, "DELETE", f"/tokens/{mine[0]['id']}")
    assert await close_code(socket) == 4401


# -- found in review ----------------------------------------------------------------------------


async def test_a_worker_reaped_by_another_closes_its_pipes_on_every_survivor(uvicorn_cluster):
    # With three workers or more, whichever reaps a dead worker first is the only one that
    # hears of it from reap(): the test reaps the killed worker itself, as a third one would.
    first, second = uvicorn_cluster.workers
    _a, b = await meet(first, second)
    _end_a, end_b = await paired(first, second)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = f"{uvicorn_cluster.prefix}presence:"
    dead = client.hget(f"{keys}peers", "a").partition(".")[0]
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    from lobbies.engine.presence.redis_scripts import SCRIPTS  # (the reap of any worker)

    with client.pipeline() as reaping:  # expired and reaped in one step: before the second can
        reaping.zadd(f"{keys}workers", {dead: 0})
        reaping.eval(SCRIPTS["reap"], 0, keys)
        assert reaping.execute()[1] == [dead]
    client.close()
    # b's end only reads: it must still hear that the other end's worker is gone.
    assert await close_code(end_b) == 1011
    await b.close()


async def test_a_replaced_hosts_late_close_leaves_its_successor_hosting(uvicorn_cluster):
    first, second = uvicorn_cluster.workers
    old = await hosted_lobby(uvicorn_cluster, first, transferable=False)
    member = await control(second, "member")
    await join(member, "match", ext=1)
    assert (await next_message(member))["role"] == "member"
    assert await introduced_to(member) == "host"
    assert await introduced_to(old) == "member"
    ticket = _ticket(uvicorn_cluster, "owner")
    # The host reconnects through the second worker while the first is slow to hear of it
    # (stopped, for an order of events that is otherwise a race of a few milliseconds).
    first.process.send_signal(signal.SIGSTOP)
    try:
        new = await connect(f"{second.ws_url}/t/{ticket}/introduction/host")
        await join(new, "match", ext=1)
        assert (await next_message(new))["role"] == "host"
        assert await introduced_to(new) == "member"
        assert await introduced_to(member) == "host"
    finally:
        first.process.send_signal(signal.SIGCONT)
    assert await close_code(old) == 4409
    # The replaced socket's close is no host leaving: its members stay, the new socket hosts.
    assert await nothing_comes(member, 2)
    late = await control(second, "late")
    await join(late, "match", ext=1)
    joined = await next_message(late)
    assert (joined["role"], joined["lobby"]["host"]) == ("member", "host")
    for socket in (new, member, late):
        await socket.close()


async def test_a_message_the_workers_cannot_read_leaves_them_listening(uvicorn_cluster):
    # (From another relay version during a rolling upgrade, say, on the channel all hear.)
    client = redis.Redis.from_url(REDIS_URL)
    assert client.publish(f"{uvicorn_cluster.prefix}workers", b"not msgpack") == 2
    client.close()
    a, b = await meet(*uvicorn_cluster.workers)
    await a.close()
    await b.close()


async def test_a_pairing_answered_too_late_closes_the_end_that_accepted_it(make_cluster):
    # A TTL far longer than the test: the stopped worker stays alive in presence.
    cluster = make_cluster("uvicorn", RELAY_WORKER_TTL="120")
    first, second = cluster.workers
    a, b = await meet(first, second)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    held = f"{cluster.prefix}presence:held"

    def held_in_presence(*key: str) -> None:
        field, deadline = json.dumps(list(key), separators=(",", ":")), time.monotonic() + 30
        while not client.hexists(held, field):
            assert time.monotonic() < deadline, f"{key} never held"
            time.sleep(0.05)

    end_a = await pipe(first, "a", "b", "doc")
    await end_a.send("sent before b came")
    await asyncio.to_thread(held_in_presence, "a", "b", "doc")
    # The first worker answers b's pairing only after the second stopped waiting for it.
    first.process.send_signal(signal.SIGSTOP)
    try:
        end_b = await pipe(second, "b", "a", "doc")
        await asyncio.to_thread(held_in_presence, "b", "a", "doc")  # b gave up: held
    finally:
        first.process.send_signal(signal.SIGCONT)
    client.close()
    # a's end must not stay paired with an end that forgot it (its frames dropped unseen).
    assert await close_code(end_a) == 1000
    await end_b.close()
    await a.close()
    await b.close()


async def test_readers_that_stop_reading_hold_no_more_than_the_held_budget(make_cluster):
    # A process budget of 2 MiB, a window of 1 MiB: three stalled readers' backlogs cannot all
    # be kept on the readers' worker; a pipe that finds the budget full is closed (4413).
    limits = {
        "RELAY_MAX_FRAME_BYTES": "65536",
        "RELAY_MAX_HELD_BYTES": "1048576",
        "RELAY_MAX_HELD_BYTES_TOTAL": "2097152",
        "RELAY_MAX_HELD_BYTES_PER_ADDRESS": "2097152",
        # The 4413 waits behind the backlog the reader has not read: on a busy machine reading
        # it may take longer than the default close timeout, which would abort (1006) instead.
        "RELAY_CLOSE_TIMEOUT": "60",
    }
    first, second = make_cluster("uvicorn", **limits).workers
    frame, count = os.urandom(32 * 1024), 512  # 16 MiB a writer: past every socket buffer
    pipes, writers = [], []
    for n in range(3):
        sockets = await meet(first, second, f"w{n}", f"r{n}", f"doc{n}")
        writer, reader = await paired(first, second, f"w{n}", f"r{n}", f"doc{n}")
        pipes.append((*sockets, writer, reader))

        async def write_all(socket=writer) -> None:
            with contextlib.suppress(ConnectionClosed):
                for _ in range(count):
                    await socket.send(frame)

        writers.append(asyncio.ensure_future(write_all()))
    await asyncio.sleep(5)  # the readers read nothing meanwhile; the writers stall
    codes = []
    for *_, reader in pipes:
        received = 0
        try:
            while received < count:
                assert await asyncio.wait_for(reader.recv(), 10) == frame  # intact, in order
                received += 1
            codes.append(None)  # its backlog fitted: everything arrived
        except ConnectionClosed as closed:
            codes.append(closed.rcvd.code if closed.rcvd else 1006)
    assert 4413 in codes, codes
    for task in writers:
        task.cancel()
    for sockets in pipes:
        for socket in sockets:
            await socket.close()


# -- quick join across workers -------------------------------------------------------------------

RACE = {"game": "race", "filters": {"map": "desert"}, "maxPeers": 4}


def _ask_quick_join(worker: LiveRelay, peer: str) -> dict:
    request = urllib.request.Request(
        f"{worker.http_url}/api/lobbies/quick-join",
        data=json.dumps({**RACE, "peerId": peer}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _placed_four_to_a_lobby(document_ids: list[str]) -> None:
    counts: dict[str, int] = {}
    for document_id in document_ids:
        counts[document_id] = counts.get(document_id, 0) + 1
    assert sorted(counts.values()) == [4] * 5, counts


async def test_twenty_players_quick_joining_on_two_workers_fill_five_lobbies(uvicorn_cluster):
    """Twenty players at once, half on each worker, each asking with a Join's quickJoin extra:
    five lobbies of four, none past its capacity."""
    first, second = uvicorn_cluster.workers

    async def quick_join(n: int):
        socket = await control(first if n % 2 else second, f"p{n}")
        await join(socket, quickJoin=RACE)
        # Another player's Introduction may come first: its Join, on the other worker, can
        # find this one in the lobby before this one's Joined leaves.
        while (message := await next_message(socket))["type"] == "Introduction":
            pass
        return socket, message

    answers = await asyncio.gather(*(quick_join(n) for n in range(20)))
    assert {message["type"] for _, message in answers} == {"Joined"}, answers
    _placed_four_to_a_lobby([message["documentId"] for _, message in answers])
    for socket, _ in answers:
        await socket.close()


async def test_twenty_players_asking_the_api_of_two_workers_then_joining(uvicorn_cluster):
    """Twenty players at once ask the API (half of each worker) for a place, then Join the id
    they got on the other worker, as an LF client would: each gets in, four to a lobby, and a
    player who asked nothing finds the lobbies full (their places are kept)."""
    first, second = uvicorn_cluster.workers
    asked = await asyncio.gather(
        *(
            asyncio.to_thread(_ask_quick_join, first if n % 2 else second, f"p{n}")
            for n in range(20)
        )
    )
    places = [answer["documentId"] for answer in asked]
    _placed_four_to_a_lobby(places)
    count = "from lobbies.models import Lobby; print(Lobby.objects.filter(matchmade=True).count())"
    assert uvicorn_cluster.manage("shell", "-c", count).split()[-1] == "5"  # none made in vain
    stranger = await control(first, "stranger")
    await join(stranger, places[0], ext=1)
    refused = await next_message(stranger)
    assert (refused["type"], refused["code"]) == ("Error", "lobby_full")
    sockets = []
    for n, document_id in enumerate(places):
        socket = await control(second if n % 2 else first, f"p{n}")
        await join(socket, document_id, ext=1)
        joined = await next_message(socket)
        assert (joined["type"], joined["documentId"]) == ("Joined", document_id)
        sockets.append(socket)
    for socket in [*sockets, stranger]:
        await socket.close()
