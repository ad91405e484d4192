"""Starting the relay under an ASGI server: uvicorn (default) or daphne.

uvicorn runs with its sans-I/O ``websockets`` protocol, uvloop and httptools: the fastest
combination measured here (docs/design.md, and the README's benchmark). Its WebSocket
``send`` waits for the socket's write buffer to drain and it stops reading a socket until the
application has taken the previous frame, so a slow reader slows its sender instead of growing
memory. daphne does neither (daphne issue 170): :class:`FlowControlledDaphne` adds both.

Both servers get the same connection lifecycle (see ``lobbies.engine.splice`` for uvicorn's
WebSocket side): a connection must send its request headers within ``RELAY_HANDSHAKE_TIMEOUT``
(and an upgrade must be answered by then), a request head over 16 KiB is refused at once;
a close never waits for a client to read, and the connection is dropped if the close is not
completed in time; keepalive never condemns a socket that the relay itself has stopped reading.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import unquote

import uvicorn
from daphne.server import Server as DaphneServer
from daphne.ws_protocol import WebSocketProtocol as DaphneWebSocketProtocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lobbies import events
from lobbies.conf import RelaySettings, relay_settings
from lobbies.engine import connections, workers
from lobbies.engine.protocol import CloseCode
from lobbies.engine.splice import RelayWebSocketProtocol

logger = logging.getLogger(__name__)

# Reading a daphne WebSocket pauses when this much received data waits for the application,
# and resumes below half of it (uvicorn pauses after every single frame).
READ_HIGH_WATER_BYTES = 1024 * 1024
READ_HIGH_WATER_FRAMES = 64

APPLICATION = "relayproject.asgi:application"

# A close frame's reason may have 123 bytes (125 of payload, less the code's two).
MAX_CLOSE_REASON_BYTES = 123

# A request head (request line and headers) may have this many bytes, as under daphne (Twisted's
# limit) and Node; past it uvicorn answers 431 and closes. A WebSocket upgrade's request line
# and each of its header lines are further limited to 8 KiB by websockets' parser (414, 431).
MAX_REQUEST_HEAD_BYTES = 16 * 1024
_HEAD_TOO_LARGE_TEXT = b"Request head over %d bytes.\n" % MAX_REQUEST_HEAD_BYTES
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s"
    % (len(_HEAD_TOO_LARGE_TEXT), _HEAD_TOO_LARGE_TEXT)
)


# -- draining: a worker told to stop (SIGTERM, Ctrl-C) says so on /readyz (lobbies.operations)

_draining = False


def draining() -> bool:
    """Whether this worker has been told to stop: it serves its sockets a while longer
    (``RELAY_DRAIN_SECONDS``), then closes them and exits; a load balancer should send it
    nobody new."""
    return _draining


async def drain(settings: RelaySettings) -> None:
    """Mark this worker draining, then go on serving for ``RELAY_DRAIN_SECONDS`` (still in
    presence, still accepting) so that load balancers polling ``/readyz`` stop sending it
    clients before its sockets are closed."""
    global _draining
    _draining = True
    logger.info("draining: closing every socket in %g s", settings.drain_seconds)
    if settings.drain_seconds:
        await asyncio.sleep(settings.drain_seconds)


def uvicorn_config(
    host: str, port: int, settings: RelaySettings, app: Any = APPLICATION
) -> uvicorn.Config:
    """uvicorn's configuration for the relay (``app``: the ASGI app or its import string)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # Its outer layers are plain callables that return a coroutine (lobbies.engine.routing),
        # which uvicorn's guess would take for ASGI 2.
        interface="asgi3",
        ws=RelayWebSocketProtocol,  # uvicorn's websockets-sansio, plus lobbies.engine.splice
        loop="uvloop",
        http=HandshakeTimeoutHttpProtocol,
        ws_max_size=settings.transport_max_bytes,
        ws_ping_interval=settings.ping_interval or None,
        ws_ping_timeout=settings.ping_timeout,
        # The LF server (Node's ws) does not compress either; deflate costs CPU per frame.
        ws_per_message_deflate=False,
        lifespan="off",
        # uvicorn would believe X-Forwarded-For from FORWARDED_ALLOW_IPS itself: the relay has
        # one rule for it under both servers, RELAY_TRUSTED_PROXIES (lobbies.proxies).
        proxy_headers=False,
        log_level="warning",
        access_log=False,
        # Its lines go through the relay's own logging (RELAY_LOG_FORMAT: JSON too), not a
        # handler and format of uvicorn's.
        log_config=None,
    )


class _ReportingServer(uvicorn.Server):
    """uvicorn's server, which calls ``on_ready`` once it is really listening."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await workers.start()  # linked to the other workers before the first socket
        await super().startup(sockets)
        if self.started:
            self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await drain(relay_settings())  # (/readyz says so; listening, in presence meanwhile)
        # Out of presence at once, so nobody is introduced to a peer of a worker that is going;
        # uvicorn then closes every WebSocket with 1012.
        await workers.stop()
        await super().shutdown(sockets)
        # Every socket is closed now: deliver their last events, and let plugins write what
        # they hold (uvicorn then re-raises the stop signal, so atexit handlers never run).
        await asyncio.to_thread(events.shutdown)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, and return it.

    Every socket is a file descriptor, and a shell or service manager often leaves a process a
    soft limit of 1,024 under a far higher hard one: the relay would refuse connections (the
    accept fails) long before memory or CPU run short. The hard limit is the operator's to set
    (``LimitNOFILE`` in the systemd unit, ``ulimit -Hn``); nothing is raised past it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = _NR_OPEN  # the kernel's own ceiling on one process's descriptors
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            logger.warning("the open files limit stays at %d: %s", soft, exc)
            return soft
        return hard
    return soft


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024 * 1024  # Linux's default


_NR_OPEN = _nr_open()


def run_uvicorn(
    host: str, port: int, settings: RelaySettings, on_ready: Callable[[], None] = lambda: None
) -> None:
    """Serve the relay with uvicorn until interrupted; ``on_ready`` once it listens."""
    _ReportingServer(uvicorn_config(host, port, settings), on_ready).run()


class HandshakeTimeoutHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size limit for each request's head.

    uvicorn has neither: a client that connects and sends nothing, or half a request, holds its
    socket forever, and httptools buffers a request line or header of any length. Every
    WebSocket starts as such a request (the upgrade), and for an upgrade the deadline runs on
    until the WebSocket protocol answers it (:class:`RelayWebSocketProtocol` cancels it once it
    has sent its 101): an upgrade that is never answered is dropped too.
    """

    headers_timer: asyncio.TimerHandle | None = None
    # Bytes received of a request head not yet complete; None between heads.
    head_bytes: int | None = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_headers()

    def data_received(self, data: bytes) -> None:
        if self.head_bytes is not None:
            self.head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing, so the body of a request whose head is complete never counts.
        if (
            self.head_bytes is not None
            and self.head_bytes > MAX_REQUEST_HEAD_BYTES
            and not self.transport.is_closing()  # not already answered (400, say)
        ):
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._expect_headers()
        if self.head_bytes is None:
            self.head_bytes = 0

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._headers_arrived()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The upgrade is answered by the WebSocket protocol, which takes over the deadline.
        timer, self.headers_timer = self.headers_timer, None
        protocol = self.transport.get_protocol()
        if isinstance(protocol, RelayWebSocketProtocol):
            protocol.take_handshake_deadline(timer)
        elif timer is not None:
            timer.cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def _expect_headers(self) -> None:
        if self.headers_timer is None:
            timeout = relay_settings().handshake_timeout
            self.headers_timer = self.loop.call_later(timeout, self._headers_timed_out)

    def _headers_arrived(self) -> None:
        if self.headers_timer is not None:
            self.headers_timer.cancel()
            self.headers_timer = None

    def _headers_timed_out(self) -> None:
        self.headers_timer = None
        self.transport.abort()

    def _refuse_head(self) -> None:
        """Answer 431 to a request head over the limit, and drop the connection."""
        self.head_bytes = None
        self._headers_arrived()
        self.transport.write(HEAD_TOO_LARGE)
        self.transport.close()
        # Closing waits for the answer to be read; a client that reads nothing is aborted.
        self.loop.call_later(relay_settings().close_timeout, self.transport.abort)


def run_daphne(
    host: str, port: int, settings: RelaySettings, on_ready: Callable[[], None] = lambda: None
) -> None:
    """Serve the relay with daphne (with flow control) until interrupted; ``on_ready`` once it
    listens."""
    from daphne.endpoints import build_endpoint_description_strings
    from django.utils.module_loading import import_string

    FlowControlledDaphne(
        application=import_string(APPLICATION.replace(":", ".")),
        endpoints=build_endpoint_description_strings(host=host, port=port),
        websocket_max_message_size=settings.transport_max_bytes,
        websocket_max_frame_size=settings.transport_max_bytes,
        websocket_handshake_timeout=settings.handshake_timeout,
        # daphne pings a socket that sent nothing for this long; 0 (no pings) is a day here.
        ping_interval=settings.ping_interval or 86400,
        ping_timeout=settings.ping_timeout,
        ready_callable=on_ready,
        # No X-Forwarded-For of daphne's own (its default): RELAY_TRUSTED_PROXIES is the one
        # rule under both servers (lobbies.proxies).
        proxy_forwarded_address_header=None,
        verbosity=0,
    ).run()
    events.shutdown()  # the reactor has stopped: the sockets' last events, then plugins


class _ReceiveQueue(asyncio.Queue):
    """daphne's per-connection input queue, which stops reading the socket while the
    application is behind instead of growing without bound."""

    def __init__(self, transport: Any) -> None:
        super().__init__()
        self.transport = transport
        self.queued_bytes = 0
        self.reading_paused = False
        # Whether reading was paused at any time since the last keepalive ping.
        self.paused_since_ping = False

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
            self.paused_since_ping = True
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


class RelayDaphneWebSocketProtocol(DaphneWebSocketProtocol):
    """daphne's WebSocket protocol, whose keepalive does not condemn a socket the relay has
    stopped reading (its pong is then waiting unread behind its frames)."""

    relay_receive_queue: _ReceiveQueue | None = None

    def _sendAutoPing(self) -> None:  # autobahn's name
        if self.autoPingTimeoutCall is not None:
            return  # the last ping still awaits its answer: one deadline at a time
        if self.relay_receive_queue is not None:
            self.relay_receive_queue.paused_since_ping = self.relay_receive_queue.reading_paused
        super()._sendAutoPing()

    relay_abort_call: Any = None

    def _closeConnection(self, abort: bool = False) -> None:  # autobahn's name
        super()._closeConnection(abort)
        if not abort and self.relay_abort_call is None:
            # A graceful close (the client's close answered, say) waits for unsent data to be
            # read, which a client that stopped reading never does: abort after the timeout.
            from twisted.internet import reactor

            timeout = relay_settings().close_timeout
            self.relay_abort_call = reactor.callLater(timeout, self.transport.abortConnection)

    def connectionLost(self, reason: Any) -> None:  # Twisted's name
        if self.relay_abort_call is not None and self.relay_abort_call.active():
            self.relay_abort_call.cancel()
        flow = getattr(self, "relay_write_flow", None)
        if flow is not None:
            # Nothing will drain now, and autobahn unregisters the producer before Twisted
            # could say so: wake whatever waits to send, so it finds the socket gone.
            flow.writable.set()
        super().connectionLost(reason)

    def onAutoPingTimeout(self) -> None:  # autobahn's name
        queue = self.relay_receive_queue
        if queue is not None and queue.paused_since_ping:
            # Not read since the ping, so its pong may be waiting unread: ping again instead
            # of judging it (writing the ping is also how a vanished client is noticed).
            self.autoPingTimeoutCall = None
            self._sendAutoPing()
            return
        super().onAutoPingTimeout()


def _drop_if_no_request(protocol: Any) -> None:
    """Abort an HTTP connection that, by the handshake deadline, is neither upgraded to a
    WebSocket nor handling a request whose head has fully arrived (Twisted's
    ``_GenericHTTPChannelProtocol`` around an ``HTTPChannel``)."""
    channel = getattr(protocol, "_channel", None)
    transport = getattr(channel, "transport", None)
    if transport is None or getattr(transport, "disconnected", True):
        return
    if getattr(transport, "protocol", protocol) is not protocol:
        return  # upgraded: the WebSocket has its own timeouts
    if getattr(channel, "_handlingRequest", False):
        return  # its head arrived in time; the request is being answered
    transport.abortConnection()


class FlowControlledDaphne(DaphneServer):
    """daphne with backpressure on WebSockets, both ways: reading a socket pauses while its
    application is behind, and an application's ``send`` waits while the socket's write buffer
    is full, as under uvicorn. Its closes never wait (autobahn drops a connection whose close
    handshake is not answered within a second), and its keepalive is fair to paused sockets."""

    @property
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        # daphne makes its factories in run(); this is the one place to choose our protocol.
        factory.protocol = RelayDaphneWebSocketProtocol
        # autobahn drops (aborts) a connection whose close is not answered in this time.
        factory.setProtocolOptions(closeHandshakeTimeout=relay_settings().close_timeout)
        self._ws_factory = factory

    @property
    def http_factory(self) -> Any:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: Any) -> None:
        # Twisted closes an HTTP connection idle this long (60 s by default)...
        timeout = relay_settings().handshake_timeout
        factory.timeOut = timeout
        build_protocol = factory.buildProtocol

        def build_with_deadline(addr: Any) -> Any:
            protocol = build_protocol(addr)
            if protocol is not None:
                from twisted.internet import reactor

                reactor.callLater(timeout, _drop_if_no_request, protocol)
            return protocol

        # ...but that idle time restarts with every byte, so a client that trickles its
        # request headers would never be dropped: this deadline does not restart.
        factory.buildProtocol = build_with_deadline
        self._http_factory = factory

    def kill_all_applications(self) -> Any:
        """Drain before the reactor stops (SIGTERM, SIGINT): out of presence at once, every
        socket closed with 1001, then daphne cancels what is left."""
        from twisted.internet import defer

        return defer.Deferred.fromFuture(asyncio.ensure_future(self._drain()))

    async def _drain(self) -> None:
        try:
            await drain(relay_settings())  # (/readyz says so; listening, in presence meanwhile)
            await workers.stop()
            for live in connections.sockets():
                await live.close(CloseCode.GOING_AWAY, "the server is shutting down")
        except Exception:
            logger.exception("draining this worker failed; stopping all the same")
        # The clients answer the closes (their applications end then), within the close
        # timeout; the rest are cancelled, as daphne's own kill_all_applications does (which
        # fails on a connection whose application has not started yet).
        running = [
            instance
            for details in self.connections.values()
            if (instance := details.get("application_instance")) is not None and not instance.done()
        ]
        if running:
            await asyncio.wait(running, timeout=relay_settings().close_timeout)
        for instance in running:
            instance.cancel()
        await asyncio.gather(*running, return_exceptions=True)

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
        protocol.relay_receive_queue = input_queue
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
        if (
            message["type"] == "websocket.close"
            and getattr(protocol, "state", None) == getattr(protocol, "STATE_OPEN", object())
            and protocol in self.connections
        ):
            # daphne's close drops the reason, and autobahn refuses to send the codes a server
            # sends of its own (1001, 1011, 1012, 1013: it takes only 1000 and 3000-4999, and
            # the close silently never leaves): the frame is written directly.
            code = int(message.get("code") or 1000)
            reason = str(message.get("reason") or "").encode()[:MAX_CLOSE_REASON_BYTES]
            protocol.sendCloseFrame(code=code, reasonUtf8=reason, isReply=False)
            return
        if message["type"] == "websocket.send" and not (
            message.get("bytes") or message.get("text")
        ):
            # daphne drops a frame whose payload is empty; a pipe must carry it all the same.
            if protocol in self.connections and not self.connections[protocol].get("disconnected"):
                binary = message.get("bytes") is not None
                protocol.serverSend(b"" if binary else "", binary)
            return
        await super().handle_reply(protocol, message)
        if message["type"] != "websocket.send":
            return  # a close, in particular, never waits for a client to read
        flow = getattr(protocol, "relay_write_flow", None)
        if flow is not None and not flow.writable.is_set():
            await flow.writable.wait()


def port_problem(host: str, port: int) -> str | None:
    """Why the relay could not listen on ``host:port`` (in use, not allowed), or None.

    Checked by binding as the servers do, so that a busy port is one clear message before
    anything claims to be listening.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (set PORT to another port)"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None
