"""The relay's two WebSocket consumers, kept thin: parse the path, then hand every frame to the
socket object that holds the rules (``lobbies.engine.peers``, ``lobbies.engine.pipes``).

``IntroductionConsumer`` serves ``/introduction/<peerId>`` (discovery) and ``ConnectionConsumer``
serves ``/connection/<A>/<B>/<documentId>`` (pipes). Who the client is was settled by
``lobbies.auth`` before the consumer runs: credentials that failed close the socket with 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

from channels.consumer import AsyncConsumer
from redis.exceptions import RedisError

from lobbies import logs, metrics
from lobbies.conf import RelaySettings, relay_settings
from lobbies.engine import workers
from lobbies.engine.connections import Refused, Send, send_close
from lobbies.engine.peers import ControlSocket
from lobbies.engine.pipes import PipeEnd
from lobbies.engine.presence import PipeKey, get_presence
from lobbies.engine.protocol import (
    CloseCode,
    PathError,
    parse_connection_path,
    parse_introduction_path,
)
from lobbies.engine.ratelimits import RateLimits, get_rate_limits
from lobbies.engine.splice import splice_handle
from lobbies.policy import ANONYMOUS, Identity

# One line per connection opened, refused and closed (lobbies.logs), never one per frame; and
# faults, with their tracebacks.
logger = logging.getLogger("lobbies.engine.connections")


class RelaySocket(Protocol):
    """What a consumer drives: a control socket or a pipe end."""

    close_code: int | None
    close_reason: str

    async def open(self) -> None:
        """Take its place (presence, a pipe's match); raises :class:`Refused` instead."""
        ...

    async def handle_frame(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: CloseCode | None, reason: str = "") -> None: ...

    def traffic(self) -> dict[str, int]:
        """What the client sent (counts by name), for the log line of its close."""
        ...


def _raw_path(scope: dict[str, Any]) -> bytes | str:
    # raw_path keeps percent-encoding, so an id may contain an encoded "/".
    return scope.get("raw_path") or scope["path"]


class RelayConsumer(AsyncConsumer):
    """Accept, make the socket object, feed it frames until the client goes, then close it.

    A Channels consumer for ``as_asgi()`` and Channels' routing and middleware only: ``__call__``
    is a plain receive loop, so it pays none of ``AsyncConsumer``'s per-message costs (a thread
    hop to close old DB connections and a task per message; docs/design.md).
    """

    kind = "invalid"  # what lobbies.metrics counts it as

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        self.scope = scope
        if (await receive())["type"] != "websocket.connect":
            return
        # Accepted first even when refused: a close code reaches only an accepted socket.
        await send({"type": "websocket.accept"})
        await workers.start()  # (at once after the first socket; servers start it earlier)
        address = self.address
        rates = get_rate_limits()
        if not rates.connect(address):
            metrics.limit_hit("max_connections_per_address")
            await self.refuse(send, Refused(CloseCode.RATE_LIMITED, "too many sockets open"))
            return
        try:
            socket = await self.open(send, address, rates)
            if socket is None:
                return
            # The frames are fed in this coroutine's own frame, not a callee's: an idle socket
            # waits here for its whole life, and every frame on its stack is memory it holds.
            started = time.monotonic()
            # Logged from a callback of its own: logging looks up its caller's frame, and a
            # frame looked up stays attached to this coroutine for the socket's life.
            asyncio.get_running_loop().call_soon(logs.log_opened, self.scope, socket)
            metrics.handshake(self.kind, "accepted")
            left: int | None = None  # the client's own close code, when it closed first
            try:
                handle_frame = socket.handle_frame
                while True:
                    message = await receive()
                    if message["type"] == "websocket.receive":
                        await handle_frame(message)
                        del message  # not held (with its frame) while waiting for the next
                    elif message["type"] == "websocket.disconnect":
                        left = message.get("code")
                        return
            except Exception:
                # A fault of the relay's (its database unreachable, say) costs this socket
                # only, with a close code the client can see rather than a dropped connection.
                logger.exception("%s %s failed", self.client, logs.shown_path(self.scope, socket))
                await socket.close(CloseCode.INTERNAL_ERROR, "internal error")
            finally:
                await socket.close(None)
                code = socket.close_code if socket.close_code is not None else left
                metrics.closed(self.kind, code, by_client=socket.close_code is None)
                logs.log_closed(self.scope, socket, code, socket.close_reason, started)
        finally:
            rates.disconnect(address)

    async def open(self, send: Send, address: str, rates: RateLimits) -> RelaySocket | None:
        """Open the socket object; or refuse it, or close it on a fault, and return None."""
        socket: RelaySocket | None = None
        try:
            # (Counted by lobbies.auth already when the handshake carried credentials.)
            allowed = self.scope.get("handshake_allowed")
            if allowed is None:
                allowed = await rates.handshake(address)
            if not allowed:
                metrics.limit_hit("handshake_rate")
                raise Refused(CloseCode.RATE_LIMITED, "too many new sockets")
            if "auth_error" in self.scope:
                raise Refused(CloseCode.UNAUTHORIZED, self.scope["auth_error"])
            try:
                socket = self.socket(send, relay_settings())
            except PathError as exc:
                raise Refused(CloseCode.INVALID, str(exc)) from exc
            await socket.open()
            return socket
        except Refused as refusal:
            if socket is not None:
                await socket.close(None)  # frees what it took while opening
            await self.refuse(send, refusal)
        except RedisError as exc:
            # Presence is in Redis and Redis does not answer (restarting, say): the client is
            # told to come back rather than left with a fault.
            logger.warning("%s %s: Redis does not answer (%r)", self.client, self.shown_path, exc)
            if socket is not None:
                with contextlib.suppress(RedisError):
                    await socket.close(None)
            await send_close(send, CloseCode.TRY_AGAIN_LATER, "the relay cannot serve now; retry")
            metrics.handshake(self.kind, "unavailable")
            metrics.closed(self.kind, CloseCode.TRY_AGAIN_LATER, by_client=False)
        except Exception:
            # A fault of the relay's while opening (its database unreachable, say): this socket
            # is closed with a code the client sees, and frees what it took.
            logger.exception("%s %s failed to open", self.client, self.shown_path)
            if socket is not None:
                await socket.close(CloseCode.INTERNAL_ERROR, "internal error")
            else:
                await send_close(send, CloseCode.INTERNAL_ERROR, "internal error")
            metrics.handshake(self.kind, "failed")
            metrics.closed(self.kind, CloseCode.INTERNAL_ERROR, by_client=False)
        return None

    async def refuse(self, send: Send, refusal: Refused) -> None:
        """Close a socket refused as it opened, with one log line. A client refused again and
        again (the LF clients reconnect at once) waits a little longer for each answer."""
        delay = await get_rate_limits().refusal_delay("address", self.address)
        logs.log_refused(self.scope, refusal.code, refusal.reason, delay)
        if delay:
            await asyncio.sleep(delay)
        await send_close(send, refusal.code, refusal.reason)
        metrics.handshake(self.kind, "refused")
        metrics.closed(self.kind, refusal.code, by_client=False)

    @property
    def address(self) -> str:
        """The client's address, for the limits counted by address."""
        return self.scope["client"][0] if self.scope.get("client") else "-"

    @property
    def client(self) -> str:
        """The client's address and port, for log lines."""
        return "{}:{}".format(*self.scope["client"]) if self.scope.get("client") else "-"

    @property
    def shown_path(self) -> str:
        """The path as log lines show it (its ids hashed with ``RELAY_LOG_IDS=hashed``)."""
        return logs.shown_path(self.scope)

    @property
    def identity(self) -> Identity:
        """Who the handshake proved to be (``lobbies.auth``)."""
        return self.scope.get("identity", ANONYMOUS)

    def socket(self, send: Send, settings: RelaySettings) -> RelaySocket:
        """The socket object for this path; raises :class:`PathError` for a bad one (4400)."""
        raise NotImplementedError

    def surroundings(self, send: Send, settings: RelaySettings) -> tuple[Any, ...]:
        """What every socket object is made with, after its path's ids: who the client is, how
        to write to it, presence, the settings, the server's splice handle, the address."""
        handle = splice_handle(self.scope)
        return self.identity, send, get_presence(), settings, handle, self.address


class IntroductionConsumer(RelayConsumer):
    """A peer's control socket (``lobbies.engine.peers``)."""

    kind = "control"

    def socket(self, send: Send, settings: RelaySettings) -> ControlSocket:
        peer_id = parse_introduction_path(_raw_path(self.scope), settings.max_id_length)
        return ControlSocket(peer_id, *self.surroundings(send, settings))


class ConnectionConsumer(RelayConsumer):
    """One end of a pipe (``lobbies.engine.pipes``)."""

    kind = "pipe"

    def socket(self, send: Send, settings: RelaySettings) -> PipeEnd:
        a, b, document_id = parse_connection_path(_raw_path(self.scope), settings.max_id_length)
        return PipeEnd(PipeKey(a, b, document_id), *self.surroundings(send, settings))


class InvalidPathConsumer(RelayConsumer):
    """Any other WebSocket path: accepted only to be closed with 4400."""

    def socket(self, send: Send, settings: RelaySettings) -> RelaySocket:
        raise PathError("no such endpoint")
