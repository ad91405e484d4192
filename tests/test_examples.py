"""The examples in examples/ run as the README says, against the relay as ``make run`` serves it.

The Node ones install their own locked dependencies (``npm ci``) and bundle themselves
(``npm start``), exactly as a reader would run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, LiveRelay, free_port, start_relay, stop_relay

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def relay(tmp_path_factory) -> Iterator[LiveRelay]:
    relay = start_relay("uvicorn", tmp_path_factory.mktemp("examples"))
    yield relay
    stop_relay(relay)


def run(command: list[str], cwd, url: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, "RELAY_URL": url},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_they_met(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "got from playerJoe-" in result.stdout and ": ready: move left" in result.stdout, output
    assert "got from host-" in result.stdout and ": welcome to the race" in result.stdout, output
    assert result.stdout.rstrip().endswith("done"), output


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("npm") is None, reason="Node.js and npm are needed")
@pytest.mark.parametrize("example", ["node-v3", "node-v4"])
def test_the_node_example_runs_as_written(example, relay):
    folder = EXAMPLES / example
    installed = run(["npm", "ci", "--no-audit", "--no-fund"], folder, relay.ws_url, 900)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert_they_met(run(["npm", "start"], folder, relay.ws_url, 120))


PYTHON_EXAMPLE = str(EXAMPLES / "python" / "host_and_player.py")


@pytest.mark.live
def test_the_python_example_runs_as_written(relay):
    assert_they_met(run([sys.executable, PYTHON_EXAMPLE, relay.ws_url], ROOT, relay.ws_url, 60))


@pytest.mark.live
def test_the_python_example_finds_the_relay_through_relay_url(relay):
    # No argument: RELAY_URL alone, as the README says (the default port has no relay here).
    assert_they_met(run([sys.executable, PYTHON_EXAMPLE], ROOT, relay.ws_url, 60))


def test_the_python_example_says_in_one_line_when_the_relay_cannot_be_reached():
    url = f"ws://127.0.0.1:{free_port()}/t/secret-ticket"  # nothing listens there
    result = run([sys.executable, PYTHON_EXAMPLE], ROOT, url, 60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("host_and_player: cannot reach the relay at ws://127.0.0.1:")
    assert "secret-ticket" not in result.stderr
