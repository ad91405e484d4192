"""PeerSocket: one pipe to one peer about one document, relayed by the server.

The server pairs our ``/connection/<me>/<peer>/<document>`` socket with the peer's reciprocal one
and forwards frames unchanged, so a PeerSocket is a thin wrapper over a websockets connection
that remembers who and what it is for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State


class PeerSocket:
    """A pipe to ``peer_id`` about ``document_id``.

    ``send(str)`` sends a text frame and ``send(bytes)`` a binary frame; ``recv()`` returns
    ``str`` for text and ``bytes`` for binary, so the frame type survives the round trip.
    """

    def __init__(self, peer_id: str, document_id: str, connection: ClientConnection) -> None:
        self.peer_id = peer_id
        self.document_id = document_id
        self.connection = connection

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<PeerSocket peer={self.peer_id!r} document={self.document_id!r} {state}>"

    @property
    def closed(self) -> bool:
        """True once the closing handshake has started or the connection is lost."""
        # A PeerSocket is only made from an opened connection, so "not OPEN" means closing/closed.
        return self.connection.state is not State.OPEN

    @property
    def close_code(self) -> int | None:
        """The close code, once closed (1005 when the other end sent none, as LF does)."""
        return self.connection.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason, once closed."""
        return self.connection.close_reason

    async def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send one frame: text for ``str``, binary for bytes-like data.

        Raises websockets.exceptions.ConnectionClosed if the pipe is closed.
        """
        await self.connection.send(data)

    async def recv(self) -> str | bytes:
        """Receive the next frame: ``str`` for text, ``bytes`` for binary.

        Raises websockets.exceptions.ConnectionClosed when the pipe is closed.
        """
        return await self.connection.recv()

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Yield frames until the pipe closes, whatever the close code."""
        while True:
            try:
                yield await self.connection.recv()
            except ConnectionClosed:
                return

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the pipe and wait for the closing handshake; the server then closes the peer's."""
        await self.connection.close(code, reason)

    async def wait_closed(self) -> None:
        """Wait until the pipe is closed, by either side."""
        await self.connection.wait_closed()
