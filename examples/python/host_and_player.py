"""A game host and a player meet in a lobby through the relay, with the bundled Python client.

Run ``make run`` in the repository, then from the repository's root:

    .venv/bin/python examples/python/host_and_player.py [URL]

The relay is ``URL`` if given, else the environment's ``RELAY_URL``, else ``ws://localhost:8080``.
The host speaks the 4.x dialect (MessagePack) and the player the 3.x dialect (JSON): the relay
introduces them all the same. A relay that cannot be reached, or that refuses them, is one line
on standard error (exit status 2 or 3), like ``python -m relayclient``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's relayclient

from websockets.exceptions import InvalidHandshake, InvalidURI

from relayclient import Client, Refused
from relayclient.client import without_ticket

DEFAULT_URL = "ws://localhost:8080"


async def play(client: Client, lobby: str, say: str) -> None:
    """Join ``lobby``, greet the first peer the relay pipes us to, print its first message."""
    await client.join(lobby)
    async for peer in client.peers():
        await peer.send(say)
        print(f"{client.peer_id} got from {peer.peer_id}: {await peer.recv()}")
        return


async def main(url: str) -> None:
    """Connect a host and a player to the relay at ``url`` and have them greet each other."""
    suffix = uuid.uuid4().hex[:6]  # peer ids must be unique on a relay
    lobby = "spaceRacer-lobby"
    async with (
        Client(f"host-{suffix}", url) as host,
        Client(f"playerJoe-{suffix}", url, dialect="json") as player,
    ):
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    play(host, lobby, "welcome to the race"),
                    play(player, lobby, "ready: move left"),
                ),
                timeout=10,
            )
        except TimeoutError:
            # Not a connection failure: both got in, but were not introduced and piped.
            why = "host_and_player: the host and the player did not meet within 10 s"
            raise SystemExit(why) from None
    print("done")


def run() -> int:
    """Run the example; the exit status."""
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RELAY_URL", DEFAULT_URL)
    where = without_ticket(url)  # a ticket in the URL is a credential: never printed
    try:
        asyncio.run(main(url))
    except Refused as refused:
        print(f"host_and_player: refused by the relay at {where}: {refused}", file=sys.stderr)
        return 3
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        # (A TimeoutError here is a handshake's: the meeting's is a SystemExit of its own.)
        print(f"host_and_player: cannot reach the relay at {where}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
