"""Starting the relay under an ASGI server: uvicorn (default) or daphne.

uvicorn runs with its sans-I/O ``websockets`` protocol, uvloop and httptools: the fastest
combination measured here (shared/PITFALLS.md, and the README's benchmark). Its WebSocket
``send`` waits for the socket's write buffer to drain and it stops reading a socket until the
application has taken the previous frame, so a slow reader slows its sender instead of growing
memory. daphne does neither (daphne issue 170): :class:`FlowControlledDaphne` adds both.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any
from urllib.parse import unquote

import uvicorn
from daphne.server import Server as DaphneServer

from lobbies.splice import RelayWebSocketProtocol

# Reading a daphne WebSocket pauses when this much received data waits for the application,
# and resumes below half of it (uvicorn pauses after every single frame).
READ_HIGH_WATER_BYTES = 1024 * 1024
READ_HIGH_WATER_FRAMES = 64

APPLICATION = "relayproject.asgi:application"


def run_uvicorn(host: str, port: int, *, max_message_bytes: int) -> None:
    """Serve the relay with uvicorn until interrupted."""
    uvicorn.run(
        APPLICATION,
        host=host,
        port=port,
        ws=RelayWebSocketProtocol,  # uvicorn's websockets-sansio, plus lobbies.splice
        loop="uvloop",
        http="httptools",
        ws_max_size=max_message_bytes,
        # The LF server (Node's ws) does not compress either; deflate costs CPU per frame.
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
        access_log=False,
    )


def run_daphne(host: str, port: int, *, max_message_bytes: int) -> None:
    """Serve the relay with daphne (with flow control) until interrupted."""
    from daphne.endpoints import build_endpoint_description_strings
    from django.utils.module_loading import import_string

    FlowControlledDaphne(
        application=import_string(APPLICATION.replace(":", ".")),
        endpoints=build_endpoint_description_strings(host=host, port=port),
        websocket_max_message_size=max_message_bytes,
        websocket_max_frame_size=max_message_bytes,
        verbosity=0,
    ).run()


class _ReceiveQueue(asyncio.Queue):
    """daphne's per-connection input queue, which stops reading the socket while the
    application is behind instead of growing without bound."""

    def __init__(self, transport: Any) -> None:
        super().__init__()
        self.transport = transport
        self.queued_bytes = 0
        self.reading_paused = False

    @staticmethod
    def _size(message: dict[str, Any]) -> int:
        return len(message.get("bytes") or message.get("text") or "")

    def _put(self, message: dict[str, Any]) -> None:
        super()._put(message)
        self.queued_bytes += self._size(message)
        if not self.reading_paused and (
            self.queued_bytes > READ_HIGH_WATER_BYTES or self.qsize() > READ_HIGH_WATER_FRAMES
        ):
            self.reading_paused = True
            self.transport.pauseProducing()

    def _get(self) -> dict[str, Any]:
        message = super()._get()
        self.queued_bytes -= self._size(message)
        if (
            self.reading_paused
            and self.queued_bytes <= READ_HIGH_WATER_BYTES // 2
            and self.qsize() <= READ_HIGH_WATER_FRAMES // 2
        ):
            self.reading_paused = False
            self.transport.resumeProducing()
        return message


class _WriteFlow:
    """A Twisted push producer whose only job is to learn when the socket's write buffer is
    full (``pauseProducing``) and drained again (``resumeProducing``)."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pauseProducing(self) -> None:  # Twisted's interface
        self.writable.clear()

    def resumeProducing(self) -> None:
        self.writable.set()

    def stopProducing(self) -> None:  # the connection is gone: never block
        self.writable.set()


class FlowControlledDaphne(DaphneServer):
    """daphne with backpressure on WebSockets, both ways: reading a socket pauses while its
    application is behind, and an application's ``send`` waits while the socket's write buffer
    is full, as under uvicorn."""

    def create_application(self, protocol: Any, scope: dict[str, Any]) -> asyncio.Queue | None:
        if scope.get("type") != "websocket" or getattr(protocol, "transport", None) is None:
            return super().create_application(protocol, scope)
        transport = protocol.transport
        # autobahn parses the request target with urlparse, which cuts ";params" off the last
        # path segment (and the LF clients send ";" unescaped in ids): rebuild the path from
        # the raw request line instead.
        raw_target = getattr(protocol, "http_request_uri", "")
        if raw_target.startswith("/"):
            raw_path = raw_target.split("?", 1)[0]
            scope["raw_path"] = raw_path.encode("ascii", "replace")
            scope["path"] = unquote(raw_path)
        # After the HTTP upgrade the transport's producer is still twisted.web's HTTPChannel;
        # ours replaces it to receive the buffer-full and drained notifications.
        flow = _WriteFlow()
        if transport.producer is not None:
            transport.unregisterProducer()
        transport.registerProducer(flow, True)
        protocol.relay_write_flow = flow
        # What daphne's own create_application does, with a flow-controlled queue.
        assert "application_instance" not in self.connections[protocol]
        input_queue = _ReceiveQueue(transport)
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=input_queue.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return input_queue

    async def handle_reply(self, protocol: Any, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send" and not (
            message.get("bytes") or message.get("text")
        ):
            # daphne drops a frame whose payload is empty; a pipe must carry it all the same.
            if protocol in self.connections and not self.connections[protocol].get("disconnected"):
                binary = message.get("bytes") is not None
                protocol.serverSend(b"" if binary else "", binary)
            return
        await super().handle_reply(protocol, message)
        flow = getattr(protocol, "relay_write_flow", None)
        if flow is not None and not flow.writable.is_set():
            await flow.writable.wait()
