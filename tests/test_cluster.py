"""``make run-cluster``: two Redis-backed workers behind nginx, started by the same script
(``deploy/cluster.py``), driven through nginx's one port as a client would: pages answer, control
sockets are spread over the workers, both sockets of a pipe reach the same worker, and peers on
different workers meet.

Which worker got a socket is read from the workers' own logs (one ``<client> <path> opened`` or
``refused`` line per socket)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ROOT, _ticket_on, collected_static, free_port, relay_environ

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REDIS_URL = "redis://127.0.0.1:6379/0"
CLIENT = "203.0.113.21"  # what the test's sockets say they forward for

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not os.access(NGINX, os.X_OK), reason="nginx is not installed (`make test` installs it)"
    ),
]


@dataclass
class LiveCluster:
    """The cluster script running in a subprocess, and where its workers log."""

    port: int
    worker_ports: list[int]
    directory: Path  # RELAY_DATA_DIR/cluster: nginx's and the workers' files

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def worker_log(self, port: int) -> str:
        return (self.directory / f"worker-{port}.log").read_text(errors="replace")

    def workers_with(self, text: str) -> list[int]:
        """The ports of the workers whose log has ``text``."""
        return [port for port in self.worker_ports if text in self.worker_log(port)]


def consecutive_free_ports(count: int) -> list[int]:
    """``count`` consecutive loopback ports nobody listens on (the script takes the ports after
    nginx's for its workers)."""
    for _ in range(100):
        base = free_port()
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return list(range(base, base + count))
    raise RuntimeError(f"no {count} consecutive free ports")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LiveCluster]:
    data_dir = tmp_path_factory.mktemp("cluster")
    port, *worker_ports = consecutive_free_ports(3)
    prefix = f"test:{uuid.uuid4().hex}:"  # this test's keys only, in the shared Redis
    env = relay_environ(
        data_dir,
        DJANGO_STATIC_ROOT=collected_static(),
        RELAY_REDIS_URL=REDIS_URL,
        RELAY_REDIS_PREFIX=prefix,
    )
    output = data_dir / "cluster.out"
    command = [sys.executable, "deploy/cluster.py", "--workers", "2", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--worker-port", str(worker_ports[0])]
    with output.open("wb") as out:
        # Its own process group: whatever happens, the test can end the script and its children.
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while f"http://127.0.0.1:{port}/" not in output.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the cluster did not start:\n{output.read_text()[-3000:]}")
            time.sleep(0.2)
        yield LiveCluster(port, worker_ports, data_dir / "cluster")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        store = redis.Redis.from_url(REDIS_URL)
        for key in store.scan_iter(match=f"{prefix}*"):
            store.delete(key)


def test_the_script_prints_one_url_and_pages_answer_through_nginx(cluster):
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/", timeout=10) as page:
        assert page.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/api/lobbies", timeout=10) as api:
        assert "items" in json.loads(api.read())
    printed = (cluster.directory.parent / "cluster.out").read_text()
    assert f"http://127.0.0.1:{cluster.port}/" in printed
    assert not any(str(port) in printed for port in cluster.worker_ports)  # the one URL only


def test_metrics_are_each_workers_scraped_on_its_port_never_through_nginx(cluster):
    # Through nginx /metrics would be one worker picked at random: refused.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/metrics", timeout=10)
    assert refused.value.code == 404
    # The probes pass.
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/readyz", timeout=10) as ready:
        assert json.loads(ready.read())["checks"]["redis"] == "ok"
    # Each worker's own, at the address the rendered Prometheus configuration lists.
    listed = (cluster.directory / "prometheus.yml").read_text()
    for port in cluster.worker_ports:
        assert f'"127.0.0.1:{port}"' in listed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as metrics:
            assert b"relay_sockets_open" in metrics.read()


async def online(cluster: LiveCluster, peer: str, document_id: str) -> ClientConnection:
    """A control socket of ``peer`` through nginx, joined to ``document_id`` (with ``ext``, so
    the relay answers ``Joined``)."""
    socket = await connect(
        f"{cluster.ws_url}/introduction/{peer}", additional_headers={"X-Forwarded-For": CLIENT}
    )
    await socket.send(json.dumps({"type": "Join", "documentIds": [document_id], "ext": 1}))
    answer = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert answer["type"] == "Joined", answer
    return socket


async def test_control_sockets_are_spread_over_the_workers(cluster):
    first = await online(cluster, "spread-1", "spread-a")
    second = await online(cluster, "spread-2", "spread-b")
    try:
        # Each on its own worker, which sees the client nginx forwarded for.
        one = cluster.workers_with(f" {CLIENT}:0 /introduction/spread-1 opened")
        two = cluster.workers_with(f" {CLIENT}:0 /introduction/spread-2 opened")
        assert len(one) == len(two) == 1 and one != two, (one, two)
    finally:
        await first.close()
        await second.close()


async def test_both_sockets_of_a_pipe_reach_the_same_worker(cluster):
    """Pipes of 16 documents, one end under a ticket: each pair's two paths in one worker's log,
    and both workers used (all 16 on one worker by chance: about 1 in 30,000). Their peers were
    never introduced, so each end is refused with 4403 as it opens, which logs where it landed
    as an opened pipe would; each pair says it comes from its own address (refusals are slowed
    down per address)."""
    ticket = _ticket_on(cluster.directory.parent, "pipe-player")
    workers_used = set()
    for n in range(16):
        document_id = f"pipe-doc-{n}"
        ends = (
            f"/connection/pipe-a/pipe-b/{document_id}",
            f"/t/{ticket}/connection/pipe-b/pipe-a/{document_id}",
        )
        for path in ends:
            address = {"X-Forwarded-For": f"198.51.100.{n + 1}"}
            async with connect(cluster.ws_url + path, additional_headers=address) as end:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(end.recv(), 10)
                assert end.close_code == 4403
        first = cluster.workers_with(f" /connection/pipe-a/pipe-b/{document_id} refused")
        second = cluster.workers_with(f" /connection/pipe-b/pipe-a/{document_id} refused")
        assert len(first) == 1 and first == second, (document_id, first, second)
        workers_used.update(first)
    assert workers_used == set(cluster.worker_ports)


async def test_peers_on_two_workers_are_introduced(cluster):
    first = await online(cluster, "meet-1", "meet-doc")
    second = await online(cluster, "meet-2", "meet-doc")
    try:
        one = cluster.workers_with(" /introduction/meet-1 opened")
        two = cluster.workers_with(" /introduction/meet-2 opened")
        assert len(one) == len(two) == 1 and one != two, (one, two)
        for socket, other in ((first, "meet-2"), (second, "meet-1")):
            message = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert message["type"] == "Introduction" and message["userName"] == other, message
    finally:
        await first.close()
        await second.close()
