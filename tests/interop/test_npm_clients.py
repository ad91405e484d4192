"""Interop tests: the published, unmodified npm clients against our relay.

Each test runs one Node scenario script from ``scenarios/`` as a subprocess against the relay at
``relay_url`` (a base ``ws://`` URL, possibly with a path prefix such as ``/t/<ticket>``), a
fixture the project's conftest provides by starting the server. The clients are
``@localfirst/relay-client@3.6.2`` ("v3": JSON text control frames, ``userName``) and
``@localfirst/relay@4.2.2``'s ``./Client.js`` ("v4": MessagePack binary frames, ``peerId``). What
each scenario checks, and why, is in the comment at the top of its script; shared conventions
(exit codes, the JSON summary line, the hard timeout) are at the top of ``lib.mjs``.

Set-up, once per session: ``npm ci`` (only when node_modules is missing or package.json /
package-lock.json changed since the last install) and ``npm run build``; only the npm registry
is contacted. The tests are skipped only when ``node`` is not installed; anything else that goes
wrong (no npm, old Node, failed install) is a failure.

To run them against the reference LF servers, or against ``spec-server.mjs`` (a small model of
docs/protocol.md that every scenario must pass), see ``conftest_lf_dev.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCENARIOS_DIR = HERE / "scenarios"
NODE = shutil.which("node")
NPM = shutil.which("npm")
MIN_NODE_MAJOR = 18  # Blob, ws' "blob" binaryType, structured ESM; CI runs Node 20

# Each script stops itself after 30 s (60 s for ten_thousand_frames); this is the backstop.
SCRIPT_TIMEOUT_S = 120
NPM_CI_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        NODE is None,
        reason="Node.js (`node`) is not on PATH; the npm-client interop tests need it",
    ),
]

# (script, --dialect). None: the script picks its clients itself.
_EACH_DIALECT = [
    "many_peers",
    "leave",
    "held_frames",
    "ten_thousand_frames",
    "big_frame",
    "encoded_ids",
    "semicolon_ids",
    "vanishing_peer",
    "close_propagation",
    "malformed_control",
    "replaced_socket",
]
SCENARIOS = [
    ("hello_v3", None),
    ("hello_v4", None),
    ("mixed_v3_v4", None),
    ("many_peers", "mixed"),
    *[(script, dialect) for script in _EACH_DIALECT for dialect in ("v3", "v4")],
]


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _output(stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    return f"--- stdout ---\n{_text(stdout).rstrip()}\n--- stderr ---\n{_text(stderr).rstrip()}"


def _run_setup(cmd: list[str], timeout: int) -> None:
    try:
        proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"`{' '.join(cmd)}` in {HERE} did not finish within {timeout} s\n"
            + _output(exc.stdout, exc.stderr),
            pytrace=False,
        )
    if proc.returncode != 0:
        pytest.fail(
            f"`{' '.join(cmd)}` in {HERE} failed with exit code {proc.returncode}\n"
            + _output(proc.stdout, proc.stderr),
            pytrace=False,
        )


@contextlib.contextmanager
def _setup_lock():
    """Serialises npm ci/build across processes (e.g. pytest-xdist workers)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no parallel workers to guard against here
        yield
        return
    with open(HERE / ".setup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def npm_clients_built() -> Path:
    """Installs the pinned npm packages (if needed) and bundles the clients into build/."""
    if NPM is None:
        pytest.fail("`node` is installed but `npm` (needed to install the clients) is not on PATH")
    node = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=True)
    version = node.stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
        pytest.fail(f"Node.js {version} is too old for these scenarios; need {MIN_NODE_MAJOR}+")

    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((HERE / name).read_bytes())
    stamp = digest.hexdigest()
    # inside node_modules, so that `npm ci` (which deletes node_modules) also drops the stamp
    stamp_file = HERE / "node_modules" / ".interop-installed"
    with _setup_lock():
        if not stamp_file.is_file() or stamp_file.read_text().strip() != stamp:
            _run_setup([NPM, "ci", "--no-audit", "--no-fund"], NPM_CI_TIMEOUT_S)
            stamp_file.write_text(stamp + "\n")
        _run_setup([NPM, "run", "build"], BUILD_TIMEOUT_S)
    return HERE / "build"


def _summary(stdout: str) -> dict | None:
    """The scenario's one-line JSON summary (its last stdout line), if it printed one."""
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict) and "scenario" in parsed:
                return parsed
    return None


@pytest.mark.parametrize(
    ("script", "dialect"),
    SCENARIOS,
    ids=[script if dialect is None else f"{script}-{dialect}" for script, dialect in SCENARIOS],
)
def test_npm_client_scenario(
    npm_clients_built: Path, relay_url: str, script: str, dialect: str | None
) -> None:
    cmd = [NODE, str(SCENARIOS_DIR / f"{script}.mjs"), relay_url]
    if dialect is not None:
        cmd.append(f"--dialect={dialect}")
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("NODE_OPTIONS", None)  # e.g. a debugger or loader meant for something else
    try:
        proc = subprocess.run(
            cmd, cwd=HERE, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, env=env
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"`{' '.join(cmd)}` was killed after {SCRIPT_TIMEOUT_S} s "
            "(its own hard timeout did not fire)\n" + _output(exc.stdout, exc.stderr),
            pytrace=False,
        )
    summary = _summary(proc.stdout)
    if proc.returncode != 0 or summary is None or summary.get("ok") is not True:
        name = script if dialect is None else f"{script} [{dialect}]"
        failures = "\n".join(f"  - {f}" for f in (summary or {}).get("failures", []))
        pytest.fail(
            f"scenario {name} failed (exit code {proc.returncode}) against {relay_url}\n"
            f"{failures}\n$ {' '.join(cmd)}\n" + _output(proc.stdout, proc.stderr),
            pytrace=False,
        )


# -- through a ticket, on a relay where only signed-in users create lobbies ---------------------

# What an unmodified client does with a ticket URL: both dialects, mixed, held frames, leaving.
TICKET_SCENARIOS = [
    ("hello_v3", None),
    ("hello_v4", None),
    ("mixed_v3_v4", None),
    ("held_frames", "v4"),
    ("leave", "v3"),
]


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def ticket_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    """A relay with RELAY_CREATION_POLICY=authenticated, and the base URL of a ticket of a user
    of it, ``ws://127.0.0.1:PORT/t/<ticket>``: what an owner gives an unmodified client."""
    from tests.conftest import ROOT, relay_environ, start_relay, stop_relay

    data_dir = tmp_path_factory.mktemp(f"ticket-{request.param}")
    env = relay_environ(data_dir, DJANGO_SUPERUSER_PASSWORD="a long password 1")
    manage = [sys.executable, "manage.py"]
    subprocess.run(
        [*manage, "createsuperuser", "--noinput", "--username", "studio", "--email", "s@x.io"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    issued = subprocess.run(
        [*manage, "issue_ticket", "studio", "--ttl", "3600"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    ticket = issued.stdout.strip().splitlines()[-1]
    relay = start_relay(request.param, data_dir, RELAY_CREATION_POLICY="authenticated")
    yield f"{relay.ws_url}/t/{ticket}"
    stop_relay(relay)


@pytest.mark.parametrize(
    ("script", "dialect"),
    TICKET_SCENARIOS,
    ids=[s if d is None else f"{s}-{d}" for s, d in TICKET_SCENARIOS],
)
def test_npm_client_scenario_through_a_ticket(
    npm_clients_built: Path, ticket_url: str, script: str, dialect: str | None
) -> None:
    test_npm_client_scenario(npm_clients_built, ticket_url, script, dialect)


async def test_without_a_ticket_nobody_creates_a_lobby_there(ticket_url: str) -> None:
    from websockets.asyncio.client import connect

    base = ticket_url.split("/t/")[0]
    join = json.dumps({"type": "Join", "documentIds": ["anonymous-lobby"], "ext": 1})
    async with connect(f"{base}/introduction/anonymous") as anonymous:
        await anonymous.send(join)
        refused = json.loads(await asyncio.wait_for(anonymous.recv(), 5))
    assert (refused["type"], refused["code"]) == ("Error", "forbidden")
    async with connect(f"{ticket_url}/introduction/signed-in") as signed_in:
        await signed_in.send(join)
        joined = json.loads(await asyncio.wait_for(signed_in.recv(), 5))
    assert joined["type"] == "Joined"


# -- quick join for clients that know nothing of it ---------------------------------------------


def test_unmodified_clients_quick_join_by_asking_the_api_first(
    npm_clients_built: Path, relay_url: str
) -> None:
    """Two unmodified clients (3.6.2 and 4.2.2) each ask ``POST /api/lobbies/quick-join`` for a
    place, join the document id they got, meet and greet; a third player gets a lobby of its
    own once that one (capacity 2) is full."""
    test_npm_client_scenario(npm_clients_built, relay_url, "quick_join", None)


# -- what the analytics plugin makes of their traffic -------------------------------------------


def test_the_statistics_count_what_the_npm_clients_did(npm_clients_built: Path, tmp_path) -> None:
    """Eight unmodified clients (both dialects) meet in one lobby and pipe to each other: the
    analytics plugin counts 8 joins and 28 pipes, written when the relay stops (its flush
    period is an hour here, so nothing is written before)."""
    from tests.conftest import ROOT, relay_environ, start_relay, stop_relay

    relay = start_relay("uvicorn", tmp_path, RELAY_ANALYTICS_FLUSH_SECONDS="3600")
    try:
        test_npm_client_scenario(npm_clients_built, relay.ws_url, "many_peers", "mixed")
    finally:
        stop_relay(relay)
    stats = subprocess.run(
        [sys.executable, "manage.py", "relay_stats", "--days", "1"],
        cwd=ROOT,
        env=relay_environ(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert stats.startswith("Last 1 day(s): 8 joins, 8 unique peers, peak 8 online, 28 pipes"), (
        stats
    )
