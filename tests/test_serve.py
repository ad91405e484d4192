"""``manage.py serve`` (what ``make run`` runs): it says it is listening only once it is, and a
busy port is one clear error."""

from __future__ import annotations

import select
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SERVERS, free_port, relay_environ

pytestmark = pytest.mark.live

SERVE = (sys.executable, "manage.py", "serve", "--host", "127.0.0.1")


def serve(port: int, server: str, data_dir) -> subprocess.Popen:
    return subprocess.Popen(
        [*SERVE, "--port", str(port), "--server", server],
        cwd=ROOT,
        env=relay_environ(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("server", SERVERS)
def test_it_says_it_is_listening_only_once_it_is(server, tmp_path):
    port = free_port()
    process = serve(port, server, tmp_path)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "nothing printed within 30 s"
        assert (
            process.stdout.readline() == f"Relay ({server}) listening on http://127.0.0.1:{port}/\n"
        )
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # accepting already
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize("server", SERVERS)
def test_a_busy_port_is_one_clear_error(server, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = serve(port, server, tmp_path)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert (
        stderr
        == f"CommandError: port {port} on 127.0.0.1 is already in use (set PORT to another port)\n"
    )
    assert "listening" not in stdout
