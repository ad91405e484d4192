"""Pipes: pairing two ``/connection`` requests and moving frames between the paired sockets.

Peer A asks for ``/connection/A/B/doc`` and peer B for ``/connection/B/A/doc``. Whichever arrives
first is *held* (its frames are kept, in order, up to a byte bound) until the other arrives or the
pair timeout expires (4408). When the match arrives the two ends are *paired*: the held frames go
out first, then every frame from one end is handed straight to the other end's ASGI ``send``,
untouched (text stays text, bytes stay bytes). No database, no presence call, no channel layer
and no signal per frame.

Under uvicorn, a paired pipe is then *spliced* (``lobbies.splice``): frames go from one socket
to the other inside the server, without waking either consumer.

Backpressure: ``send`` waits while the receiver's socket buffer is full (uvicorn does this
itself; ``lobbies.servers`` adds it to daphne), so a slow reader stalls its sender's read loop
instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from lobbies import connections
from lobbies.conf import RelaySettings
from lobbies.presence import PipeKey, Presence
from lobbies.protocol import frame_size
from lobbies.tasks import spawn

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

# Each held frame is charged this much on top of its payload, so that a flood of empty frames
# is bounded too.
HELD_FRAME_OVERHEAD = 64

CLOSE_NORMAL = 1000
CLOSE_TOO_LARGE = 4413
CLOSE_PAIR_TIMEOUT = 4408


class PipeEnd:
    """One socket of a pipe: held, then paired with the reciprocal request's socket."""

    __slots__ = (
        "closed",
        "connection",
        "held",
        "held_bytes",
        "holding",
        "key",
        "limits",
        "paired",
        "partner",
        "presence",
        "send",
        "splicer",
        "timer",
    )

    def __init__(
        self,
        key: PipeKey,
        send: Send,
        presence: Presence,
        limits: RelaySettings,
        splicer: Any = None,
    ):
        self.key = key
        self.send = send
        self.presence = presence
        self.limits = limits
        self.connection = connections.register(self)
        self.partner: PipeEnd | None = None
        self.held: deque[dict[str, Any]] = deque()
        self.held_bytes = 0
        self.holding = False
        self.paired = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        # The server's "relay.splice" extension (lobbies.splice), when it offers one.
        self.splicer = splicer

    async def open(self) -> None:
        """Pair with the reciprocal request if it is held here, else hold this one."""
        for _attempt in range(3):
            found = await self.presence.hold_or_pair(self.key, self.connection)
            if found is None:
                self.holding = True
                self.timer = asyncio.get_running_loop().call_later(
                    self.limits.pair_timeout, self._pair_timeout
                )
                return
            partner = connections.lookup(found)
            if partner is not None and not partner.closed:
                await self._pair(partner)
                return
            # The held socket went away between the presence lookup and now: the pipe counted
            # by hold_or_pair never carried a frame.
            await self.presence.pipe_closed()
        await self.end(CLOSE_NORMAL)

    async def _pair(self, partner: PipeEnd) -> None:
        partner.holding = False
        if partner.timer is not None:
            partner.timer.cancel()
        # Frames the partner sends while we flush are appended to the same deque (it is not
        # linked yet), so everything it sent before pairing arrives first and in order.
        held = partner.held
        try:
            while held:
                await self.send(held.popleft())
        except BaseException as exc:  # our socket broke, or the server is cancelling us
            logger.debug("pipe %s: flushing held frames failed: %r", self.key, exc)
            partner.partner, self.partner = self, partner
            await self.end(None)
            if not isinstance(exc, Exception):
                raise
            return
        partner.held_bytes = 0
        if partner.closed:
            await self.presence.pipe_closed()
            await self.end(CLOSE_NORMAL)
            return
        partner.partner, self.partner = self, partner
        partner.paired = self.paired = True
        if self.splicer is not None and partner.splicer is not None:
            self.splicer.splice(partner.splicer, self.limits.max_frame_bytes)

    async def relay(self, message: dict[str, Any]) -> None:
        """Carry one frame received on this end to the other end (or hold it). The hot path."""
        data = message.get("bytes")
        if data is None:
            data = message["text"]
            size = frame_size(data)
        else:
            size = len(data)
        # The received message becomes the sent one: same payload key, so text stays text and
        # bytes stay bytes, and no new dict per frame.
        message["type"] = "websocket.send"
        out = message
        if size > self.limits.max_frame_bytes:
            await self.end(CLOSE_TOO_LARGE)
            return
        partner = self.partner
        if partner is not None:
            try:
                await partner.send(out)
            except Exception:  # the partner's socket broke; its own disconnect follows
                await self.end(CLOSE_NORMAL)
            return
        if self.closed or self.paired:
            return  # the other end has gone and this one is being closed: nowhere to go
        self.held.append(out)
        self.held_bytes += size + HELD_FRAME_OVERHEAD
        if self.held_bytes > self.limits.max_held_bytes:
            await self.end(CLOSE_TOO_LARGE)

    def _pair_timeout(self) -> None:
        spawn(self._expire())

    async def _expire(self) -> None:
        # Checked when the task runs, not when the timer fired: the match may have arrived in
        # between.
        if self.holding and not self.closed:
            await self.end(CLOSE_PAIR_TIMEOUT)

    async def end(self, code: int | None) -> None:
        """Close this end with ``code`` (``None``: the client has already gone) and the other
        end with 1000. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self.held.clear()
        connections.unregister(self.connection)
        if self.splicer is not None:
            self.splicer.unsplice()
        partner, self.partner = self.partner, None
        if self.holding:
            self.holding = False
            await self.presence.release(self.key, self.connection)
        if partner is not None:
            partner.partner = None
            await self.presence.pipe_closed()
        if code is not None:
            # In the background: a close waits for the socket's buffer to drain, and a client
            # that does not read must not keep its partner open.
            spawn(close_socket(self.send, code))
        if partner is not None:
            await partner.end(CLOSE_NORMAL)


async def close_socket(send: Send, code: int) -> None:
    """Send a WebSocket close with ``code``; a socket already gone is not an error."""
    try:
        await send({"type": "websocket.close", "code": code})
    except Exception:
        logger.debug("close(%s) after the socket had gone", code)
