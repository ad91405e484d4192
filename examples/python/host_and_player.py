"""A game host and a player meet in a lobby through the relay, with the bundled Python client.

Run ``make run`` in the repository, then from the repository's root:

    .venv/bin/python examples/python/host_and_player.py [RELAY_URL]

(``RELAY_URL`` defaults to ``ws://localhost:8080``.) The host speaks the 4.x dialect
(MessagePack) and the player the 3.x dialect (JSON): the relay introduces them all the same.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository's relayclient

from relayclient import Client


async def play(client: Client, lobby: str, say: str) -> None:
    """Join ``lobby``, greet the first peer the relay pipes us to, print its first message."""
    await client.join(lobby)
    async for peer in client.peers():
        await peer.send(say)
        print(f"{client.peer_id} got from {peer.peer_id}: {await peer.recv()}")
        return


async def main(url: str) -> None:
    suffix = uuid.uuid4().hex[:6]  # peer ids must be unique on a relay
    lobby = "spaceRacer-lobby"
    async with (
        Client(f"host-{suffix}", url) as host,
        Client(f"playerJoe-{suffix}", url, dialect="json") as player,
    ):
        await asyncio.wait_for(
            asyncio.gather(
                play(host, lobby, "welcome to the race"),
                play(player, lobby, "ready: move left"),
            ),
            timeout=10,
        )
    print("done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://localhost:8080"))
