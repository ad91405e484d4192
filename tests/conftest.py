"""Shared fixtures: the real relay server, started as ``make run`` starts it, on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("uvicorn", "daphne")


@dataclass
class LiveRelay:
    """A relay server running in a subprocess."""

    server: str
    port: int
    process: subprocess.Popen

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


def start_relay(server: str, data_dir: Path, **env: str) -> LiveRelay:
    """Start ``manage.py serve`` and wait until it answers HTTP (at most 30 s)."""
    port = free_port()
    command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--server", server],
        cwd=ROOT,
        env={**os.environ, "RELAY_DATA_DIR": str(data_dir), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"relay exited: {process.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return LiveRelay(server, port, process)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"relay ({server}) did not start on port {port}")


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
