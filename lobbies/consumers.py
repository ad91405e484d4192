"""The relay's two WebSocket consumers, kept thin: decode, decide (elsewhere), send.

``IntroductionConsumer`` serves ``/introduction/<peerId>`` (discovery) and ``ConnectionConsumer``
serves ``/connection/<A>/<B>/<documentId>`` (pipes). Both are Channels consumers behind Channels'
router and middleware, but neither pays ``AsyncConsumer``'s per-message machinery (a thread hop to
close old DB connections and a task per message, measured in shared/PITFALLS.md at six to ten
times the server's own cost): :class:`RelayConsumer` runs a plain ``receive()`` loop instead.
Neither touches the ORM.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from channels.consumer import AsyncConsumer

from lobbies import connections, discovery
from lobbies.conf import relay_settings
from lobbies.pipes import CLOSE_TOO_LARGE, PipeEnd, close_socket
from lobbies.presence import PipeKey, get_presence
from lobbies.protocol import (
    Dialect,
    Join,
    Leave,
    PathError,
    decode_control,
    encode_introduction,
    frame_size,
    parse_connection_path,
    parse_introduction_path,
)
from lobbies.splice import splice_protocol
from lobbies.tasks import spawn

logger = logging.getLogger(__name__)

CLOSE_INVALID = 4400
CLOSE_REPLACED = 4409


def _raw_path(scope: dict[str, Any]) -> bytes | str:
    # raw_path keeps percent-encoding, so an id may contain an encoded "/".
    return scope.get("raw_path") or scope["path"]


class RelayConsumer(AsyncConsumer):
    """A WebSocket consumer with a plain receive loop.

    Subclasses implement :meth:`connected`, :meth:`frame` and :meth:`disconnected`.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.base_send = send
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        self.settings = relay_settings()
        self.presence = get_presence()
        try:
            await self.connected()
            frame = self.frame
            while True:
                message = await receive()
                if message["type"] == "websocket.receive":
                    await frame(message)
                elif message["type"] == "websocket.disconnect":
                    return
        finally:
            await self.disconnected()

    async def accept(self) -> None:
        """Complete the WebSocket handshake."""
        await self.base_send({"type": "websocket.accept"})

    async def close(self, code: int) -> None:
        """Close the socket with ``code``; a socket already gone is not an error."""
        await close_socket(self.base_send, code)

    async def reject(self, code: int, reason: str) -> None:
        """Accept, then close with ``code``: a close code only reaches an accepted socket."""
        logger.info("closing %s with %s: %s", self.scope.get("path"), code, reason)
        await self.accept()
        await self.close(code)

    async def connected(self) -> None:
        raise NotImplementedError

    async def frame(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def disconnected(self) -> None:
        raise NotImplementedError


class IntroductionConsumer(RelayConsumer):
    """A peer's control socket: Join, Leave and Heartbeat in; Introductions out."""

    peer_id: str | None = None
    connection: str | None = None

    async def connected(self) -> None:
        try:
            peer_id = parse_introduction_path(_raw_path(self.scope), self.settings.max_id_length)
        except PathError as exc:
            await self.reject(CLOSE_INVALID, str(exc))
            return
        await self.accept()
        self.peer_id = peer_id
        self.dialect = Dialect.MSGPACK
        self.document_ids: set[str] = set()
        self.outbox: deque[str | bytes] | None = None  # made when first needed: most sit idle
        self.outbox_bytes = 0
        self.closing = False
        self.writer: asyncio.Future[None] | None = None
        # uvicorn's direct write (lobbies.splice); None under daphne.
        self.direct = splice_protocol(self.scope)
        self.closed = False
        self.connection = connections.register(self)
        replaced = await self.presence.connect_peer(peer_id, self.connection)
        old = connections.lookup(replaced) if replaced else None
        if old is not None:
            # The LF relay leaves the old socket open, and its later close deletes the new
            # registration; closing it here with 4409 avoids both. (The close itself is not
            # waited for: the old socket's buffer may never drain.)
            await old.shut(CLOSE_REPLACED)

    async def frame(self, message: dict[str, Any]) -> None:
        if self.connection is None or self.closed:
            return
        data = message.get("bytes")
        if data is None:
            data = message.get("text", "")
        if frame_size(data) > self.settings.max_control_frame_bytes:
            await self.shut(CLOSE_TOO_LARGE)
            return
        self.dialect, control = decode_control(
            data,
            max_id_length=self.settings.max_id_length,
            max_ids=self.settings.max_ids_per_peer,
        )
        if isinstance(control, Join):
            await self.join(control.document_ids)
        elif isinstance(control, Leave):
            self.document_ids.difference_update(control.document_ids)
            await self.presence.leave(self.peer_id, self.connection, control.document_ids)
        # Heartbeats and malformed frames need no answer; the socket stays open.

    async def join(self, document_ids: tuple[str, ...]) -> None:
        """Join the ids (within the per-peer limit) and introduce the peers who share them."""
        room = self.settings.max_ids_per_peer - len(self.document_ids)
        new = [d for d in document_ids if d not in self.document_ids]
        if len(new) > room:
            logger.info("peer %r is over %s ids", self.peer_id, self.settings.max_ids_per_peer)
            allowed = set(new[: max(room, 0)])
            document_ids = tuple(d for d in document_ids if d in self.document_ids or d in allowed)
        if not document_ids:
            return
        self.document_ids.update(document_ids)
        members = await self.presence.join(self.peer_id, self.connection, document_ids)
        meetings = discovery.introductions(self.peer_id, document_ids, members)
        if not meetings:
            return
        online = await self.presence.connections(list(meetings))
        # Everyone in a lobby gets the same Introduction of this peer: encode it once per
        # dialect and id list, not once per recipient.
        encoded: dict[tuple[Dialect, tuple[str, ...]], str | bytes] = {}
        for other, shared in meetings.items():
            self.deliver(encode_introduction(self.dialect, other, shared))
            socket = connections.lookup(online.get(other, ""))
            if socket is not None:
                key = (socket.dialect, tuple(shared))
                frame = encoded.get(key)
                if frame is None:
                    frame = encoded[key] = encode_introduction(socket.dialect, self.peer_id, shared)
                socket.deliver(frame)

    def deliver(self, frame: str | bytes) -> None:
        """Send an encoded Introduction to this socket, now if it can take it, else queued.

        Never waits: a peer that does not read its control socket must not stall the peers
        joining its lobby. Its queue is bounded in bytes; past the bound it is closed (4413).
        """
        if self.closed or self.closing:
            return
        if self.writer is None and self.direct is not None and self.direct.send_nowait(frame):
            return
        size = len(frame)
        if self.outbox_bytes + size > self.settings.control_queue_bytes:
            self.closing = True
            spawn(self.shut(CLOSE_TOO_LARGE))
            return
        if self.outbox is None:
            self.outbox = deque()
        self.outbox.append(frame)
        self.outbox_bytes += size
        if self.writer is None:
            self.writer = spawn(self._write())

    async def _write(self) -> None:
        try:
            while self.outbox and not self.closed:
                frame = self.outbox.popleft()
                self.outbox_bytes -= len(frame)
                key = "text" if isinstance(frame, str) else "bytes"
                await self.base_send({"type": "websocket.send", key: frame})
        except Exception:
            logger.debug("introduction to %r after its socket had gone", self.peer_id)
            self.closing = True  # its disconnect follows; nothing more to send
        finally:
            self.writer = None
            if not self.outbox:
                self.outbox = None
                self.outbox_bytes = 0

    async def shut(self, code: int) -> None:
        """Forget the peer's presence and close this control socket with ``code``.

        The close is sent in the background: it waits for the socket's buffer to drain, which
        a client that does not read never lets happen.
        """
        if self.closed:
            return
        await self.disconnected()
        spawn(self.close(code))

    async def disconnected(self) -> None:
        if self.connection is None or self.closed:
            return
        self.closed = True
        self.outbox = None
        connections.unregister(self.connection)
        await self.presence.disconnect_peer(self.peer_id, self.connection)


class ConnectionConsumer(RelayConsumer):
    """One side of a pipe; the pairing and frame moving live in :mod:`lobbies.pipes`."""

    pipe: PipeEnd | None = None

    async def connected(self) -> None:
        try:
            a, b, document_id = parse_connection_path(
                _raw_path(self.scope), self.settings.max_id_length
            )
        except PathError as exc:
            await self.reject(CLOSE_INVALID, str(exc))
            return
        await self.accept()
        self.pipe = PipeEnd(
            PipeKey(a, b, document_id),
            self.base_send,
            self.presence,
            self.settings,
            splicer=splice_protocol(self.scope),
        )
        self.frame = self.pipe.relay  # the hot path: no hop through this class per frame
        await self.pipe.open()

    async def frame(self, message: dict[str, Any]) -> None:
        pass  # before a valid path: nothing to relay

    async def disconnected(self) -> None:
        if self.pipe is not None:
            await self.pipe.end(None)


class InvalidPathConsumer(RelayConsumer):
    """Any other WebSocket path: accepted only to be closed with 4400."""

    async def connected(self) -> None:
        await self.reject(CLOSE_INVALID, "no such endpoint")

    async def frame(self, message: dict[str, Any]) -> None:
        pass

    async def disconnected(self) -> None:
        pass
