"""Control sockets: a peer's ``/introduction/<peerId>`` socket, its lobbies and its Introductions.

A peer joins and leaves document ids; whoever shares one with it is introduced to it and it to
them (``lobbies.discovery`` decides who, ``lobbies.presence`` remembers who is where). An
Introduction is written straight to a socket that can take it; one that cannot gets an
:class:`Outbox`, bounded in bytes, so a peer that never reads cannot stall a lobby.

A control socket's life is one :class:`PeerState` and one way out, :meth:`ControlSocket.close`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from enum import Enum
from typing import Any

from lobbies import connections, discovery
from lobbies.conf import RelaySettings
from lobbies.connections import Send, send_close
from lobbies.presence import Presence
from lobbies.protocol import (
    CloseCode,
    Dialect,
    Join,
    Leave,
    decode_control,
    encode_introduction,
    frame_size,
)
from lobbies.splice import SpliceHandle
from lobbies.tasks import spawn

logger = logging.getLogger(__name__)


class PeerState(Enum):
    """Where a control socket is in its life. Every one ends CLOSED, through
    :meth:`ControlSocket.close`."""

    OPENING = "opening"  # registering with presence
    OPEN = "open"
    CLOSED = "closed"


class Outbox:
    """Introductions waiting for a socket whose write buffer is full, sent in order by one task
    that exists only while there is something to send. Bounded in bytes."""

    __slots__ = ("frames", "queued_bytes", "send", "writer")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.frames: deque[str | bytes] = deque()
        self.queued_bytes = 0
        self.writer: asyncio.Task[None] | None = None

    def __bool__(self) -> bool:
        return self.writer is not None or bool(self.frames)

    def put(self, frame: str | bytes, limit: int) -> bool:
        """Queue ``frame`` unless that would take the queue over ``limit`` bytes."""
        if self.queued_bytes + len(frame) > limit:
            return False
        self.frames.append(frame)
        self.queued_bytes += len(frame)
        if self.writer is None:
            self.writer = spawn(self._write())
        return True

    def clear(self) -> None:
        """Drop what is queued (the socket is closing); the writer stops after its send."""
        self.frames.clear()
        self.queued_bytes = 0

    async def _write(self) -> None:
        try:
            while self.frames:
                frame = self.frames.popleft()
                self.queued_bytes -= len(frame)
                key = "text" if isinstance(frame, str) else "bytes"
                await self.send({"type": "websocket.send", key: frame})
        except Exception:
            logger.debug("an introduction after its socket had gone")
            self.clear()
        finally:
            self.writer = None


class ControlSocket:
    """One peer's control socket: Join, Leave and Heartbeat in; Introductions out."""

    def __init__(
        self,
        peer_id: str,
        send: Send,
        presence: Presence,
        limits: RelaySettings,
        handle: SpliceHandle | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.send = send
        self.presence = presence
        self.limits = limits
        # The server's relay.splice handle (uvicorn): writes an Introduction without a task.
        self.handle = handle
        self.state = PeerState.OPENING
        self.dialect = Dialect.MSGPACK
        self.document_ids: set[str] = set()
        self.outbox: Outbox | None = None  # made when first needed: most sockets sit idle
        self.connection = connections.register(self)
        self.frames_in = 0
        self.close_code: int | None = None
        self.close_reason = ""

    async def open(self) -> None:
        """Become the peer's control socket, closing the one it replaces (4409)."""
        replaced = await self.presence.connect_peer(self.peer_id, self.connection)
        if self.state is PeerState.CLOSED:
            return  # the client left while we registered; close() has unregistered it
        self.state = PeerState.OPEN
        old = connections.lookup(replaced) if replaced else None
        if old is not None:
            # The LF relay leaves the old socket open, and its later close deletes the new
            # registration; closing it here avoids both.
            await old.close(CloseCode.CONFLICT, "replaced by a newer connection")

    async def handle_frame(self, message: dict[str, Any]) -> None:
        """One control frame from the client."""
        if self.state is not PeerState.OPEN:
            return
        self.frames_in += 1
        data = message.get("bytes")
        if data is None:
            data = message.get("text", "")
        if frame_size(data) > self.limits.max_control_frame_bytes:
            await self.close(CloseCode.TOO_LARGE, "control frame too large")
            return
        self.dialect, control = decode_control(
            data, max_id_length=self.limits.max_id_length, max_ids=self.limits.max_ids_per_peer
        )
        if isinstance(control, Join):
            await self.join(control.document_ids)
        elif isinstance(control, Leave):
            self.document_ids.difference_update(control.document_ids)
            await self.presence.leave(self.peer_id, self.connection, control.document_ids)
        # Heartbeats and malformed frames need no answer; the socket stays open.

    async def join(self, document_ids: tuple[str, ...]) -> None:
        """Join the ids (within the per-peer limit) and introduce the peers who share them."""
        room = self.limits.max_ids_per_peer - len(self.document_ids)
        new = [d for d in document_ids if d not in self.document_ids]
        if len(new) > room:
            logger.info("peer %r is over %s ids", self.peer_id, self.limits.max_ids_per_peer)
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
        joining its lobby. Past its queue's bound it is closed (4413).
        """
        if self.state is not PeerState.OPEN:
            return
        if not self.outbox and self.handle is not None and self.handle.send_nowait(frame):
            return
        if self.outbox is None:
            self.outbox = Outbox(self.send)
        if not self.outbox.put(frame, self.limits.control_queue_bytes):
            spawn(self.close(CloseCode.TOO_LARGE, "introductions not read"))

    async def close(self, code: CloseCode | None, reason: str = "") -> None:
        """The one way a control socket closes: send ``code`` (``None``: the client has gone
        already) and forget the peer's presence. Idempotent; never waits for a client."""
        if self.state is PeerState.CLOSED:
            return
        self.state = PeerState.CLOSED
        if self.outbox is not None:
            self.outbox.clear()
        connections.unregister(self.connection)
        if code is not None:
            self.close_code, self.close_reason = int(code), reason
            await send_close(self.send, code, reason)
        await self.presence.disconnect_peer(self.peer_id, self.connection)

    def traffic(self) -> str:
        """What the client sent, for the log line of its close."""
        return f"{self.frames_in} control frames in, {len(self.document_ids)} ids joined"
