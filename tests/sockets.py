"""Talking to the relay's ASGI application in-process (``channels.testing``), as a client
would: open a socket, send Joins, read what comes back."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from channels.testing import WebsocketCommunicator

from relayproject.asgi import application


async def opened(
    path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> WebsocketCommunicator:
    """A WebSocket on ``path`` (percent-encoded), accepted by the relay."""
    socket = WebsocketCommunicator(application, path, headers=headers or [])
    socket.scope["raw_path"] = path.encode()  # as servers give it; the router reads raw ids
    connected, _ = await socket.connect()
    assert connected
    return socket


async def closed_with(socket: WebsocketCommunicator) -> int:
    """The code of the close the relay sends next (within 3 s)."""
    message = await socket.receive_output(timeout=3)
    assert message["type"] == "websocket.close", message
    return message["code"]


async def stays_open(socket: WebsocketCommunicator) -> bool:
    """Nothing arrives (no close, no message) for a moment."""
    return await socket.receive_nothing(0.2)


def join(*ids: str, **extras: Any) -> str:
    """A Join in the 3.x dialect (JSON text), with optional extras (``ext=1``, ``lobby=...``)."""
    return json.dumps({"type": "Join", "documentIds": list(ids), **extras})


def packed(message: dict) -> bytes:
    """A message in the 4.x dialect (MessagePack)."""
    return msgpack.packb(message)


async def received(socket: WebsocketCommunicator) -> dict:
    """The next control message, in whichever dialect it came."""
    message = await socket.receive_output(timeout=3)
    assert message["type"] == "websocket.send", message
    if message.get("text") is not None:
        return json.loads(message["text"])
    return msgpack.unpackb(message["bytes"])


async def met(
    document_id: str, first: str, second: str, *, prefix: str = "", nickname: str | None = None
) -> tuple[WebsocketCommunicator, WebsocketCommunicator]:
    """Peers ``first`` (opted in to the extended messages, with ``nickname``, through
    ``prefix``: a ticket's, say) and then ``second`` join ``document_id`` and are introduced to
    each other. Returns their control sockets, with nothing left to read."""
    a = await opened(f"{prefix}/introduction/{first}")
    extras: dict[str, Any] = {"ext": 1} | ({"nickname": nickname} if nickname else {})
    await a.send_to(text_data=join(document_id, **extras))
    assert (await received(a))["type"] == "Joined"
    b = await opened(f"/introduction/{second}")
    await b.send_to(text_data=join(document_id))
    assert (await received(a))["type"] == "Introduction"
    assert (await received(b))["type"] == "Introduction"
    return a, b


async def with_a_pipe(document_id: str, ticket: str) -> dict[str, WebsocketCommunicator]:
    """Peer ``a`` (signed in by ``ticket``, opted in, nickname "Ace") and an anonymous ``b``
    in ``document_id``, with a pipe open between them: their control sockets (``a``, ``b``) and
    pipe ends (``end_a``, ``end_b``)."""
    a, b = await met(document_id, "a", "b", prefix=f"/t/{ticket}", nickname="Ace")
    end_a = await opened(f"/t/{ticket}/connection/a/b/{document_id}")
    end_b = await opened(f"/connection/b/a/{document_id}")
    await end_b.send_to(text_data="hi")
    assert await end_a.receive_from() == "hi"
    return {"a": a, "b": b, "end_a": end_a, "end_b": end_b}
