"""Introducing peers before they open pipes, as real clients are: the relay refuses a pipe
between peers it has not introduced on that document (4403)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect


def segment(peer_or_document: str) -> str:
    """An id as one percent-encoded path segment."""
    return quote(peer_or_document, safe="")


@asynccontextmanager
async def introduced(
    url: str, a: str, b: str, document_id: str = "doc", prefix: str = ""
) -> AsyncIterator[tuple[ClientConnection, ClientConnection]]:
    """Open the control sockets of peers ``a`` and ``b`` on the relay at ``url``, have both join
    ``document_id`` and wait until each has been introduced to the other; they stay open (the
    peers stay online) until the block ends."""
    sockets = [await connect(f"{url}{prefix}/introduction/{segment(p)}") for p in (a, b)]
    try:
        for socket in sockets:
            await socket.send(json.dumps({"type": "Join", "documentIds": [document_id]}))
        for socket in sockets:
            message = json.loads(await asyncio.wait_for(socket.recv(), 5))
            assert message["type"] == "Introduction", message
        yield sockets[0], sockets[1]
    finally:
        for socket in sockets:
            await socket.close()
