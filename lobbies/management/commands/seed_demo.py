"""``manage.py seed_demo``: demo users and lobbies, and a burst of real relay traffic through
them, so that a fresh relay's admin has something to show: lobbies with owners, and a
popularity dashboard with joins, peers, pipes, game types and nicknames.

The traffic is real: ``relayclient`` peers join, are introduced, open pipes and exchange
frames through a relay, whose analytics receivers count them. Without ``--url`` the command
starts that relay itself (``manage.py serve`` on a free loopback port, on this database) and
stops it when the burst is over, which writes the statistics. With ``--url`` it plays against
a relay that is running already; its statistics are written within
``RELAY_ANALYTICS_FLUSH_SECONDS``.

``--history DAYS`` also adds made-up statistics for the demo lobbies over the days before now
(an evening peak, busier weekends), so that the dashboard's charts have a shape to show. They
are written by the analytics plugin's own writer, as the relay's events would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from lobbies.auth import issue_ticket
from lobbies.models import Lobby


@dataclass(frozen=True)
class DemoLobby:
    document_id: str
    game: str
    title: str
    weight: int  # how popular it is in the burst
    topology: str = "mesh"


LOBBIES = [
    DemoLobby("demo-lobby", "demo", "The /demo/ page: open it in two tabs", 1),
    DemoLobby("kart-grand-prix", "racing", "Kart Grand Prix (hosted)", 6, "host"),
    DemoLobby("chess-club", "chess", "Chess club", 4),
    DemoLobby("racing-practice", "racing", "Practice laps", 3),
    DemoLobby("trivia-night", "quiz", "Trivia night", 2),
    DemoLobby("pixel-canvas", "drawing", "Pixel canvas", 1),
]
NICKNAMES = ["Ace", "Blaze", "Comet", "Dash", "Echo", "Fox", "Ghost", "Hex", "Ivy", "Jinx"]
OWNER = "demo-owner"
HOST_PEER = "kart-host"


class Command(BaseCommand):
    help = "Create demo users and lobbies and play a burst of real traffic through the relay."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            help="Play against this running relay (ws://host:port) instead of starting one.",
        )
        parser.add_argument("--peers", type=int, default=40, help="Peers in the burst (40).")
        parser.add_argument(
            "--frames", type=int, default=30, help="Frames each peer sends on each pipe (30)."
        )
        parser.add_argument(
            "--seconds", type=float, default=4.0, help="Over how long peers arrive (4)."
        )
        parser.add_argument("--seed", type=int, default=7, help="Random seed (7).")
        parser.add_argument(
            "--history",
            type=int,
            default=0,
            metavar="DAYS",
            help="Also add made-up statistics for the DAYS days before now (0).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["peers"] < 1 or options["frames"] < 0 or options["seconds"] < 0:
            raise CommandError("--peers must be at least 1; --frames and --seconds not negative")
        if not 0 <= options["history"] <= 366:
            raise CommandError("--history is 0 to 366 days")
        if options["history"] and not apps.is_installed("analytics"):
            raise CommandError("--history writes statistics: it needs the analytics app")
        owner = self.seed_rows()
        ticket = issue_ticket(owner)
        # The relay (ours or the running one) writes to this database too: let it go first.
        connections.close_all()
        url = options["url"]
        with contextlib.ExitStack() as stack:
            if url is None:
                url = stack.enter_context(_relay(self.stdout))
            played = asyncio.run(
                burst(
                    url.rstrip("/"),
                    ticket,
                    peers=options["peers"],
                    frames=options["frames"],
                    seconds=options["seconds"],
                    rng=random.Random(options["seed"]),
                )
            )
        self.stdout.write(
            f"Played {played.joins} joins, {played.pipe_ends // 2} pipes and "
            f"{played.frames} frames through {url}."
        )
        if options["url"] is not None:
            self.stdout.write(
                "Its statistics are written within RELAY_ANALYTICS_FLUSH_SECONDS "
                f"({settings.RELAY_ANALYTICS_FLUSH_SECONDS:g} s here)."
            )
        if options["history"]:
            # After the burst: a burst that failed leaves no made-up statistics behind.
            joins = history(options["history"], random.Random(options["seed"]))
            self.stdout.write(f"Made-up statistics: {joins} joins over {options['history']} days.")
        self.stdout.write("See them with `.venv/bin/python manage.py relay_stats` or in the admin.")

    def seed_rows(self) -> Any:
        """The demo owner and lobbies (again: rows that exist are left as they are)."""
        users = get_user_model()._default_manager
        owner = users.filter(username=OWNER).first()
        if owner is None:
            owner = users.create_user(OWNER, email="", password=None)  # cannot sign in
        for index in range(1, 4):
            if not users.filter(username=f"demo-player-{index}").exists():
                users.create_user(f"demo-player-{index}", email="", password=None)
        for lobby in LOBBIES:
            Lobby.objects.get_or_create(
                document_id=lobby.document_id,
                defaults={
                    "owner": owner,
                    "game": lobby.game,
                    "title": lobby.title,
                    "topology": lobby.topology,
                    "host_transferable": lobby.topology == "host",
                },
            )
        self.stdout.write(f"Demo users ({OWNER}, demo-player-1..3) and {len(LOBBIES)} lobbies.")
        return owner


@dataclass
class Played:
    joins: int = 0
    pipe_ends: int = 0  # each pipe has two, one per peer
    frames: int = 0


async def burst(
    url: str, ticket: str, *, peers: int, frames: int, seconds: float, rng: random.Random
) -> Played:
    """``peers`` relayclient peers arrive over ``seconds``, each in a lobby picked by its
    popularity with a nickname; each sends ``frames`` frames on every pipe it gets, then
    leaves. The hosted lobby's host is the demo owner, signed in with ``ticket``."""
    from relayclient import Client

    played = Played()
    hosted = next(lobby for lobby in LOBBIES if lobby.topology == "host")
    host = Client(HOST_PEER, f"{url}/t/{ticket}", heartbeat_interval=None)
    host.on_peer_connect(lambda pipe: _echo(pipe, played))
    await host.connect()
    await host.join(hosted.document_id, nickname="KartMarshal")
    played.joins += 1
    weights = [lobby.weight for lobby in LOBBIES]

    async def one(index: int) -> None:
        await asyncio.sleep(rng.uniform(0, seconds))
        lobby = rng.choices(LOBBIES, weights)[0]
        nickname = rng.choices(NICKNAMES, range(len(NICKNAMES), 0, -1))[0]
        dialect = "json" if index % 3 == 0 else "msgpack"
        async with Client(f"demo-peer-{index}", url, dialect=dialect) as client:
            client.on_peer_connect(lambda pipe: _echo(pipe, played))
            await client.join(lobby.document_id, nickname=nickname)
            played.joins += 1
            await asyncio.sleep(0.5)  # the others arriving about now meet this one
            for sequence in range(frames):
                for pipe in list(client.pipes):
                    with contextlib.suppress(Exception):
                        await pipe.send(_state(sequence, rng))
                        played.frames += 1
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.2, 1.5))

    try:
        await asyncio.gather(*(one(index) for index in range(peers)))
    finally:
        await host.disconnect()
    return played


def history(days: int, rng: random.Random) -> int:
    """Statistics for the demo lobbies over the ``days`` days before this hour, written by the
    analytics plugin's writer; returns how many joins were made up."""
    from analytics.buffer import Buffer

    writer = Buffer()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    weights = [lobby.weight for lobby in LOBBIES]
    total = 0
    for back in range(days * 24, 0, -1):
        hour = now - timedelta(hours=back)
        # Busiest around 20:00 UTC, quietest before dawn; weekends a third busier.
        evening = (1 + math.cos(2 * math.pi * (hour.hour - 20) / 24)) / 2
        weekend = 1.3 if hour.weekday() >= 5 else 1.0
        joins = max(0, round(rng.gauss(4 + 40 * evening * weekend, 3)))
        for _ in range(joins):
            lobby = rng.choices(LOBBIES, weights)[0]
            nickname = rng.choices(NICKNAMES, range(len(NICKNAMES), 0, -1))[0]
            peer = f"demo-peer-{rng.randrange(joins * 2 + 1)}"
            writer.join(hour, lobby.document_id, lobby.game, peer, nickname)
            writer.add_session(hour, rng.lognormvariate(5.5, 0.8))
            size = rng.randrange(20_000, 400_000)
            writer.lobby_bytes(hour, lobby.document_id, size)
            writer.add(hour, pipes=rng.randint(0, 2), frames=size // 300, bytes=size)
        writer.peak(hour, round(joins * rng.uniform(0.5, 0.8)))
        total += joins
    writer.flush()
    return total


def _state(sequence: int, rng: random.Random) -> str:
    """A game-state update of a typical size (a few hundred bytes of JSON)."""
    trail = ",".join(str(rng.randint(0, 640)) for _ in range(rng.randint(10, 120)))
    return f'{{"seq":{sequence},"x":{rng.randint(0, 640)},"trail":[{trail}]}}'


def _echo(pipe: Any, played: Played) -> None:
    """Read a pipe until it closes (a peer that never read would stall its partner)."""
    played.pipe_ends += 1

    async def drain() -> None:
        async for _frame in pipe:
            pass

    asyncio.get_running_loop().create_task(drain())


@contextlib.contextmanager
def _relay(stdout: Any):
    """``manage.py serve`` on a free loopback port, for the burst; stopped (which writes its
    statistics) when the block ends. Yields its WebSocket URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manage = Path(settings.BASE_DIR) / "manage.py"
    command = [sys.executable, str(manage), "serve", "--host", "127.0.0.1", "--port", str(port)]
    # Demo traffic comes from one address: the per-address limits are not for it.
    env = {**os.environ, "RELAY_MAX_CONNECTIONS_PER_ADDRESS": "0", "RELAY_HANDSHAKE_RATE": ""}
    log = tempfile.NamedTemporaryFile(prefix="seed-demo-relay-", suffix=".log", delete=False)  # noqa: SIM115 (outlives the block: the operator reads it after a failure)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    clean = False
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise CommandError(f"the relay exited ({process.returncode}); see {log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answers (if not with 200: ALLOWED_HOSTS, say): it is up
            except OSError:
                if time.monotonic() > deadline:
                    raise CommandError("the relay did not start within 30 s") from None
                time.sleep(0.1)
        stdout.write(f"Started a relay on 127.0.0.1:{port} for the burst.")
        yield f"ws://127.0.0.1:{port}"
        clean = True
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if clean:
            os.unlink(log.name)
        else:
            stdout.write(f"The relay's log: {log.name}")
