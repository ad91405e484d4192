"""relayclient: an asyncio client for the relay, wire-compatible with the Local First Relay.

    async with Client("alice", "ws://127.0.0.1:8080") as client:
        await client.join("my-document")
        async for peer in client.peers():
            await peer.send("hello")

See README.md beside this file.
"""

from websockets.exceptions import ConnectionClosed

from .client import Client, LobbyRefused, Refused
from .peer import PeerSocket
from .protocol import Dialect, Joined, Left, Refusal

__all__ = [
    "Client",
    "ConnectionClosed",
    "Dialect",
    "Joined",
    "Left",
    "LobbyRefused",
    "PeerSocket",
    "Refusal",
    "Refused",
]
