"""The live sockets of this process, by connection id, and the one way to send a close.

Presence stores connection ids, not objects, so that the same ids can later name sockets on other
workers. A connection id starts with this process's token; a socket found here is handed frames
and introductions directly (a method call), never through the channel layer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

PROCESS_TOKEN = secrets.token_hex(6)
_counter = itertools.count(1)
_live: dict[str, Any] = {}
# The event loop this process's sockets live in (the server's), for code in other threads.
loop: asyncio.AbstractEventLoop | None = None


def register(socket: Any) -> str:
    """Give ``socket`` a new connection id and make it findable by :func:`lookup`."""
    global loop
    loop = asyncio.get_running_loop()
    connection = f"{PROCESS_TOKEN}.{next(_counter)}"
    _live[connection] = socket
    return connection


def worker_of(connection: str) -> str:
    """The worker (its process token) holding the socket named ``connection``."""
    return connection.partition(".")[0]


def is_local(connection: str) -> bool:
    """Whether ``connection`` names a socket of this process."""
    return worker_of(connection) == PROCESS_TOKEN


def unregister(connection: str) -> None:
    """Forget a socket that has closed."""
    _live.pop(connection, None)


def lookup(connection: str) -> Any | None:
    """The live socket with this id in this process, or ``None``."""
    return _live.get(connection)


def sockets() -> list[Any]:
    """Every live socket of this process (a copy: closing one while iterating is safe)."""
    return list(_live.values())


def count() -> int:
    """How many sockets this process holds (for tests and the landing page)."""
    return len(_live)


class Refused(Exception):
    """A socket refused as it opens. The consumer closes it with ``code`` (after the delay a
    client refused in a loop has earned, ``lobbies.engine.ratelimits``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{int(code)} {reason}")
        self.code, self.reason = code, reason


async def send_close(send: Send, code: int, reason: str = "") -> None:
    """Send a WebSocket close with ``code``; a socket already gone is not an error.

    This never waits for the client to read: both servers write the close frame at once and
    abort the connection if it is not completed within ``RELAY_CLOSE_TIMEOUT``
    (``lobbies.engine.splice``, ``lobbies.engine.servers``).
    """
    try:
        await send({"type": "websocket.close", "code": int(code), "reason": reason})
    except Exception as exc:
        logger.debug("close(%s) after the socket had gone: %r", code, exc)
