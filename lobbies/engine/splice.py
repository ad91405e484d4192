"""uvicorn's WebSocket protocol for the relay: the fast path for paired pipes (frames go socket
to socket inside the server) and a connection lifecycle that frees every socket.

Once a pipe is paired (in ``lobbies.engine.pipes``, by the consumers, as ever), every frame would
otherwise cross uvicorn's per-connection queue, wake the consumer's task, and be re-sent through
ASGI ``send``, re-serialised by ``websockets``: most of the relay's per-frame cost. Under uvicorn
:class:`RelayWebSocketProtocol` offers the ASGI extension ``relay.splice``: the pipe asks its two
protocol objects to *splice*, after which each complete data message is written to the partner's
transport directly from ``data_received``, with its opcode (text stays text, binary stays
binary) and its bytes unchanged. The same extension lets a control socket write an
Introduction without a task or an ASGI round trip (:meth:`RelayWebSocketProtocol.send_nowait`).

What stays as it was:
- Control frames (ping, pong, close), handshake and keepalive: uvicorn's own code.
- Closing: a disconnect still reaches the consumer through ASGI, which closes the other side.
- Order: a message goes direct only while the consumer is idle in ``receive()`` with nothing
  queued, so nothing it still holds can be overtaken.
- Limits: a message over the relay's frame limit is queued to the consumer, which closes 4413.
- Backpressure: while the partner's write buffer is full, this socket is not read.

The application sees none of the protocol object: the extension hands it a
:class:`SpliceHandle` (``splice``, ``unsplice``, ``send_nowait`` and the relayed counters).

Lifecycle (what uvicorn's own protocol leaves open, each fixed here):
- An upgrade request that websockets' parser refuses (a request line or header line over
  8 KiB, too many headers) is answered (414, 431) and closed; uvicorn left it unanswered and
  open. The handshake deadline, taken over from the HTTP protocol, runs until the 101.
- A close never waits for the write buffer to drain (uvicorn's ``send`` does, so a client that
  stops reading could never be closed): the close frame is written at once, and the connection is
  *aborted* if it is not gone ``RELAY_CLOSE_TIMEOUT`` seconds later, whoever started the close
  (the application, a keepalive failure, a protocol error, the client). Closing a transport
  with unsent data would otherwise wait for a reader that never comes.
- Keepalive judges only a socket that is actually unresponsive: one that sent nothing, not even
  a pong, for a ping timeout while the relay was reading it. A socket the relay is not reading
  (backpressure from a slow partner leaves its pong unread) is pinged again instead, and a ping
  written to a client that has vanished is how its loss is noticed while its reads are paused.

daphne offers no such extension, so pipes there take the ASGI path in ``lobbies.engine.pipes``;
``lobbies.engine.servers`` gives daphne the same lifecycle rules.
"""

from __future__ import annotations

import asyncio
import math
from struct import pack
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets import protocol as websocket_protocol
from websockets.speedups import apply_mask

from lobbies.conf import relay_settings

EXTENSION = "relay.splice"

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82


class SpliceHandle:
    """What the application may do with a connection served by :class:`RelayWebSocketProtocol`
    (the ``relay.splice`` extension); nothing else of the server is reachable through it."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: RelayWebSocketProtocol) -> None:
        self._protocol = protocol

    def splice(self, partner: SpliceHandle, max_message_bytes: int) -> None:
        """From now on, hand each complete data message straight to ``partner`` (both ways);
        messages over ``max_message_bytes`` still go to the application."""
        self._protocol.splice(partner._protocol, max_message_bytes)

    def splice_to(self, sink: SpliceSink, max_message_bytes: int) -> None:
        """From now on, hand each complete data message this socket receives, as server frames
        ready to write, to ``sink`` (the other end of a pipe on another worker) instead of the
        application; while ``sink.writable`` is clear, this socket is not read."""
        self._protocol.splice(sink, max_message_bytes)  # type: ignore[arg-type]

    def unsplice(self) -> None:
        """Stop forwarding, both ways (the pipe is closing)."""
        self._protocol.unsplice()

    def write_frames(self, frames: bytes) -> bool:
        """Write complete server frames (a spliced socket's, from another worker) now if the
        socket can take them without waiting; False if not."""
        protocol = self._protocol
        if not protocol.can_send_now():
            return False
        protocol.transport.write(frames)
        return True

    async def drained(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark again. Raises
        ``ConnectionError`` once the socket takes no more data frames (closing or gone):
        uvicorn sets ``writable`` then too, and a caller waiting to write would spin."""
        protocol = self._protocol
        await protocol.writable.wait()
        if protocol.disconnected or protocol.close_sent or protocol.transport.is_closing():
            raise ConnectionError("the socket is closing")

    def send_nowait(self, message: str | bytes) -> bool:
        """Write one data frame now if the socket can take it without waiting; False if not
        (the caller then queues it and sends it through ASGI ``send``, which waits)."""
        return self._protocol.send_nowait(message)

    @property
    def relayed_frames(self) -> int:
        """Frames this socket received and the splice wrote to its partner."""
        return self._protocol.relayed_frames

    @property
    def relayed_bytes(self) -> int:
        """Bytes on the wire (headers included) the splice wrote to this socket's partner."""
        return self._protocol.relayed_bytes


class SpliceSink(Protocol):
    """What a socket can be spliced to besides another socket of this process: the part of
    :class:`RelayWebSocketProtocol` the splice uses of its partner (``lobbies.engine.pipes``'
    ``RemoteEnd`` sends what it is given to another worker)."""

    splice_partner: Any
    splice_max_bytes: int
    close_sent: bool
    disconnected: bool
    writable: asyncio.Event

    @property
    def transport(self) -> Any:
        """Takes ``write(data)`` and answers ``is_closing()``."""
        ...

    def _resume_splice_reading(self) -> None: ...


def server_frames(data: bytes) -> list[str | bytes]:
    """The messages in ``data``, complete unfragmented text and binary frames as a server writes
    them (unmasked; the splice's output), for a socket that cannot take the frames as they are
    (daphne). Raises ``ValueError`` for anything else."""
    messages: list[str | bytes] = []
    i, n = 0, len(data)
    while i < n:
        if n - i < 2:
            raise ValueError("a truncated frame header")
        first, code = data[i], data[i + 1]
        if first not in (_FIN_TEXT, _FIN_BINARY) or code & 0x80:
            raise ValueError("not a complete unmasked text or binary frame")
        i += 2
        if code == 126:
            length, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif code == 127:
            length, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        else:
            length = code
        if i + length > n:
            raise ValueError("a truncated frame")
        payload = data[i : i + length]
        messages.append(payload.decode() if first == _FIN_TEXT else payload)
        i += length
    return messages


def splice_handle(scope: dict[str, Any]) -> SpliceHandle | None:
    """The ``relay.splice`` handle of this connection, or None where the server offers none
    (daphne, or any other ASGI server)."""
    return scope.get("extensions", {}).get(EXTENSION)


def _frame_header(first_byte: int, length: int) -> bytes:
    # A server's frames are never masked (RFC 6455, 5.1).
    if length < 126:
        return bytes((first_byte, length))
    if length < 65536:
        return pack("!BBH", first_byte, 126, length)
    return pack("!BBQ", first_byte, 127, length)


class Inbox:
    """The ASGI events waiting for one connection's application: what uvicorn keeps in an
    ``asyncio.Queue``, whose four deques cost about 3 KiB per idle socket. One reader (the
    application's ``receive``), and a list that is empty nearly always: uvicorn stops reading a
    socket until the application has taken its previous frame."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        """Queue ``item`` and wake the reader."""
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        """Whether nothing waits."""
        return not self.items

    def qsize(self) -> int:
        """How many events wait."""
        return len(self.items)

    async def get(self) -> Any:
        """The oldest event, waiting for one if none is there."""
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.pop(0)


class Flag:
    """``asyncio.Event``'s set/clear/wait for uvicorn's ``writable``, without the deque of
    waiters it makes up front (760 bytes per socket): waiters exist only while one waits,
    which is while a client is not reading."""

    __slots__ = ("is_up", "waiters")

    def __init__(self) -> None:
        self.is_up = False
        self.waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """Whether the flag is up."""
        return self.is_up

    def set(self) -> None:
        """Raise the flag, waking every waiter."""
        self.is_up = True
        waiters, self.waiters = self.waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Lower the flag."""
        self.is_up = False

    async def wait(self) -> None:
        """Return once the flag is up."""
        while not self.is_up:
            waiter = asyncio.get_running_loop().create_future()
            if self.waiters is None:
                self.waiters = []
            self.waiters.append(waiter)
            try:
                await waiter
            finally:
                if self.waiters is not None and waiter in self.waiters:
                    self.waiters.remove(waiter)


class KeepaliveWheel:
    """Every socket's next keepalive ping, under one timer per process instead of one per
    socket (an asyncio timer costs about 550 bytes; a place in a set, about 40).

    Deadlines are rounded up to a grid of a tenth of the ping interval (at most a second), so
    a ping goes out up to that much later than uvicorn's own timer would send it; sockets
    whose deadlines fall in one slot are pinged together.
    """

    __slots__ = ("loop", "slots", "timer", "timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[float, set[RelayWebSocketProtocol]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def add(self, protocol: RelayWebSocketProtocol, delay: float, interval: float) -> float:
        """Ping ``protocol`` in ``delay`` seconds (give or take the grid); returns its slot."""
        grid = min(1.0, max(interval / 10, 0.01))
        due = math.ceil((self.loop.time() + delay) / grid) * grid
        slot = self.slots.get(due)
        if slot is None:
            slot = self.slots[due] = set()
        slot.add(protocol)
        if self.timer is None or due < self.timer_at:
            self._arm(due)
        return due

    def remove(self, protocol: RelayWebSocketProtocol, due: float) -> None:
        """Forget the ping of ``protocol`` due at ``due``."""
        slot = self.slots.get(due)
        if slot is not None:
            slot.discard(protocol)
            if not slot:
                del self.slots[due]

    def _arm(self, due: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = due
        self.timer = self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        now = self.loop.time()
        for due in sorted(d for d in self.slots if d <= now):
            for protocol in self.slots.pop(due):
                if protocol.ping_due == due:
                    protocol.send_keepalive_ping()
        if self.slots and self.timer is None:
            self._arm(min(self.slots))


_wheels: dict[asyncio.AbstractEventLoop, KeepaliveWheel] = {}


def keepalive_wheel() -> KeepaliveWheel:
    """The keepalive wheel of the running event loop."""
    loop = asyncio.get_running_loop()
    wheel = _wheels.get(loop)
    if wheel is None:
        for old in [old for old in _wheels if old.is_closed()]:
            del _wheels[old]  # (tests run one loop after another)
        wheel = _wheels[loop] = KeepaliveWheel(loop)
    return wheel


# What uvicorn's WebSocketsSansIOProtocol (0.54) sets on its instances.
_UVICORN_ATTRIBUTES = (
    "app",
    "app_state",
    "asgi_version",
    "client",
    "close_sent",
    "close_timeout",
    "close_timer",
    "config",
    "conn",
    "connections",
    "curr_msg_data_type",
    "default_headers",
    "disconnected",
    "frames",
    "handshake_complete",
    "handshake_initiated",
    "initial_response",
    "last_ping_rtt",
    "logger",
    "loop",
    "pending_ping_payload",
    "ping_interval",
    "ping_sent_at",
    "ping_timeout",
    "ping_timer",
    "pong_timer",
    "queue",
    "read_paused",
    "request",
    "response",
    "root_path",
    "scheme",
    "scope",
    "server",
    "tasks",
    "transport",
    "writable",
)
# What RelayWebSocketProtocol adds.
_RELAY_ATTRIBUTES = (
    "abort_timer",
    "app_idle",
    "handshake_timer",
    "heard",
    "parser_head",
    "parser_need",
    "paused_since_ping",
    "pending",
    "pending_need",
    "ping_due",
    "relayed_bytes",
    "relayed_frames",
    "splice_max_bytes",
    "splice_out",
    "splice_partner",
    "splice_read_paused",
)


class RelayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus the ``relay.splice`` extension."""

    # Every attribute in slots, uvicorn's included (its class sets them all on the instance and
    # has no class attributes of those names): uvicorn's own would fill an instance dict of
    # about 1.6 KiB per socket, and most sockets are idle control sockets. (A new attribute
    # in a later uvicorn lands in the instance dict, which still exists: only memory.)
    __slots__ = (*_UVICORN_ATTRIBUTES, *_RELAY_ATTRIBUTES)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Leaner stand-ins for uvicorn's asyncio.Queue and asyncio.Event (same methods used).
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()
        self.splice_partner: RelayWebSocketProtocol | None = None
        self.splice_max_bytes = 0
        self.app_idle = False  # the application is waiting in receive()
        self.splice_read_paused = False
        self.splice_out: list[bytes] = []
        # The start of a frame not yet complete, read by the fast parser, and its full size
        # once known (a lower bound until its header is complete).
        self.pending = bytearray()
        self.pending_need = 0
        # Where websockets' own parser stands: the part of a frame header it has read, and the
        # payload bytes still to come of its current frame.
        self.parser_head = bytearray()
        self.parser_need = 0
        # Counted per read, never per frame.
        self.relayed_frames = 0
        self.relayed_bytes = 0
        settings = relay_settings()
        self.close_timeout = settings.close_timeout
        self.abort_timer: asyncio.TimerHandle | None = None
        # Whether anything arrived since the last keepalive ping (proof of life, as a pong is),
        # and whether the relay paused reading this socket at any time since.
        self.heard = False
        self.paused_since_ping = False
        # The deadline of the upgrade, handed over by the HTTP protocol: cancelled once the 101
        # is sent, or when the connection is lost.
        self.handshake_timer: asyncio.TimerHandle | None = None
        # When its next keepalive ping is due, as a slot of the process's KeepaliveWheel.
        self.ping_due: float | None = None

    # -- the extension, as the application sees it ---------------------------------------

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = SpliceHandle(self)

    def splice(self, partner: RelayWebSocketProtocol, max_message_bytes: int) -> None:
        for one, other in ((self, partner), (partner, self)):
            one.splice_partner = other
            one.splice_max_bytes = max_message_bytes

    def can_send_now(self) -> bool:
        """Whether a data frame written now goes out without waiting."""
        return not (
            self.disconnected
            or self.close_sent
            or not self.handshake_complete
            or not self.writable.is_set()
            or self.transport.is_closing()
        )

    def send_nowait(self, message: str | bytes) -> bool:
        if not self.can_send_now():
            return False
        if isinstance(message, str):
            self.transport.write(
                _frame_header(_FIN_TEXT, len(payload := message.encode())) + payload
            )
        else:
            self.transport.write(_frame_header(_FIN_BINARY, len(message)) + message)
        return True

    def unsplice(self) -> None:
        partner, self.splice_partner = self.splice_partner, None
        if partner is not None:
            partner.splice_partner = None
            partner._resume_splice_reading()
        self._resume_splice_reading()

    # -- uvicorn hooks ---------------------------------------------------------------------

    async def send(self, message: Any) -> None:
        if (
            message["type"] == "websocket.close"
            and self.handshake_complete
            and self.initial_response is None
        ):
            self.close_nowait(message.get("code", 1000), message.get("reason") or "")
            return
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # The parsed handshake (headers, twice) is not needed once accepted; an idle
            # control socket is mostly this. websockets' parser keeps a reference to the
            # request for the connection's life, so its headers are emptied, not just dropped
            # (the scope has its own copy), and the parser itself is replaced by the frames'
            # alone where it stands between two frames (which it does unless the client sent
            # a frame before the 101 arrived).
            if self.request is not None:
                self.request.headers.clear()
            self.request = self.response = None
            conn = self.conn
            at_boundary = not (self.parser_need or self.parser_head or conn.reader.buffer)
            if at_boundary and conn.state is websocket_protocol.State.OPEN:
                conn.parser.close()
                conn.parser = websocket_protocol.Protocol.parse(conn)
                next(conn.parser)  # (started, as websockets starts its own)
            # The scope's copy too (every layer's scope shares this list): everything that
            # reads headers (the client's address behind a proxy, the ticket, the origin, the
            # credentials) has read them before the application accepts.
            self.scope["headers"].clear()
            self._handshake_answered()

    async def receive(self) -> Any:
        # uvicorn's receive (and Inbox.get) in this one coroutine frame: an idle socket waits
        # here for its whole life, and every frame on its stack is memory it holds.
        inbox: Inbox = self.queue  # type: ignore[assignment]
        self.app_idle = True
        try:
            while not inbox.items:
                inbox.waiter = self.loop.create_future()
                try:
                    await inbox.waiter
                finally:
                    inbox.waiter = None
            message = inbox.items.pop(0)
            if self.read_paused and not inbox.items:
                self.read_paused = False
                self.transport.resume_reading()
            return message
        finally:
            self.app_idle = False
            if self.splice_read_paused:
                # Reading resumes above when the inbox empties; the partner is still full.
                self.transport.pause_reading()

    def send_receive_event_to_app(self) -> None:
        partner = self.splice_partner
        if partner is None or not self.app_idle or not self.queue.empty() or self.close_sent:
            super().send_receive_event_to_app()  # reading pauses until the application takes it
            self.paused_since_ping = True
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        if len(data) > self.splice_max_bytes:
            super().send_receive_event_to_app()  # the consumer refuses it with 4413
            return
        self.frames = []
        text = self.curr_msg_data_type == "text"
        if text:
            try:
                data.decode()
            except UnicodeDecodeError:  # RFC 6455: invalid UTF-8 fails the connection
                self.frames = [data]
                super().send_receive_event_to_app()
                return
        # Written once per data_received (below): one system call for every frame that
        # arrived in the same read, instead of one per frame.
        self.splice_out.append(_frame_header(_FIN_TEXT if text else _FIN_BINARY, len(data)))
        self.splice_out.append(data)

    def data_received(self, data: bytes) -> None:
        self.heard = True
        if self.splice_partner is not None and self._plain_frames_only():
            data = self._relay_plain_frames(data)
        elif self.pending:
            data = bytes(self.pending + data)
            self.pending = bytearray()
        if data:
            if self.handshake_initiated:
                # (The first call carries exactly the HTTP request: uvicorn hands over the
                # upgrade request alone, so frames start at a boundary after it.)
                self._track_frame_boundaries(data)
                super().data_received(data)
            else:
                super().data_received(data)
                if not self.handshake_initiated:
                    self._refuse_unparsed_request()
        if self.splice_out:
            out, self.splice_out = self.splice_out, []
            partner = self.splice_partner
            if partner is None or partner.close_sent or partner.disconnected:
                return  # the pipe is ending; the consumers are closing both sides
            if partner.transport.is_closing():
                return
            data = b"".join(out)
            partner.transport.write(data)
            self.relayed_frames += len(out) >> 1  # a header and a payload per frame
            self.relayed_bytes += len(data)
            if not partner.writable.is_set():
                self.splice_read_paused = self.paused_since_ping = True
                self.transport.pause_reading()

    def _track_frame_boundaries(self, data: bytes) -> None:
        """Follow the frame headers of the bytes given to websockets' parser, so the fast
        path starts only where that parser stands between two frames.

        websockets takes a header off its buffer piece by piece (2 bytes, length, mask), so an
        empty buffer does not mean it is between frames; this walk knows.
        """
        i, n = 0, len(data)
        head = self.parser_head
        while True:
            if self.parser_need:
                step = min(self.parser_need, n - i)
                self.parser_need -= step
                i += step
            if self.parser_need:
                return  # the data ends inside a payload
            want = 2
            if len(head) >= 2:
                code = head[1] & 0x7F
                want += (2 if code == 126 else 8 if code == 127 else 0) + (
                    4 if head[1] & 0x80 else 0
                )
            if len(head) < want:
                if i == n:
                    return  # the data ends inside a header (or between frames: head empty)
                take = min(want - len(head), n - i)
                head += data[i : i + take]
                i += take
                continue
            code = head[1] & 0x7F
            if code < 126:
                self.parser_need = code
            else:
                self.parser_need = int.from_bytes(head[2 : 4 if code == 126 else 10], "big")
            head.clear()

    def _plain_frames_only(self) -> bool:
        """Whether the next bytes may be read by :meth:`_relay_plain_frames`: the consumer is
        idle with nothing queued, and websockets' parser stands between two frames."""
        return (
            not self.parser_need
            and not self.parser_head
            and self.app_idle
            and not self.close_sent
            and not self.frames
            and not self.conn.reader.buffer
            and self.queue.empty()
        )

    def _relay_plain_frames(self, data: bytes) -> bytes:
        """Relay the complete, unfragmented, masked text and binary frames at the start of
        ``data`` without websockets' parser; return the bytes it must parse after all.

        This is the common case of a spliced pipe, and websockets' general parser (a Python
        generator per frame) was most of the remaining cost. Any other frame (control,
        fragmented, reserved bits, over the size limit, text that is not UTF-8) and everything
        after it go to websockets, which handles it as before. A partial frame at the end is
        kept for the next read.
        """
        if self.pending:
            # A frame started in an earlier read: wait, without copying it again, until all
            # of it is here (re-joining it on every read would cost its size squared).
            self.pending += data
            if len(self.pending) < self.pending_need:
                return b""
            buf: bytes | bytearray = self.pending
            self.pending = bytearray()
        else:
            buf = data
        # Large payloads are unmasked from a memoryview (no copy of the input); for small ones
        # a plain slice is cheaper than making a view.
        view = memoryview(buf)
        end_of_data = len(buf)
        limit = self.splice_max_bytes
        out = self.splice_out
        pos = 0
        need = 0
        while True:
            if end_of_data - pos < 2:
                need = 2
                break
            first, second = buf[pos], buf[pos + 1]
            if (first != _FIN_TEXT and first != _FIN_BINARY) or second < 0x80:
                return self._hand_back(view, pos)  # not plain (or unmasked: an error)
            length = second & 0x7F
            start = pos + 6  # 2 header bytes and the 4-byte mask
            if length >= 126:  # an extended length follows: 16 bits (126) or 64 bits (127)
                extended = 2 if length == 126 else 8
                start += extended
                if end_of_data < start:
                    need = start - pos
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 2 + extended], "big")
            if length > limit:
                return self._hand_back(view, pos)  # refused there (4413 or 1009)
            stop = start + length
            if stop > end_of_data:
                need = stop - pos
                break
            source = view if length > 4096 else buf
            payload = apply_mask(source[start:stop], buf[start - 4 : start])
            if first == _FIN_TEXT:
                try:
                    payload.decode()
                except UnicodeDecodeError:
                    return self._hand_back(view, pos)  # websockets fails it (1007)
            out.append(_frame_header(first, length))
            out.append(payload)
            pos = stop
        if pos < end_of_data:
            self.pending = bytearray(view[pos:])
            self.pending_need = need
        view.release()
        return b""

    @staticmethod
    def _hand_back(view: memoryview, pos: int) -> bytes:
        rest = bytes(view[pos:])
        view.release()
        return rest

    def resume_writing(self) -> None:
        super().resume_writing()
        partner = self.splice_partner
        if partner is not None:
            partner._resume_splice_reading()

    def _resume_splice_reading(self) -> None:
        if self.splice_read_paused:
            self.splice_read_paused = False
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()

    # -- lifecycle: every close bounded in time, keepalive fair to a paused socket ------------

    def take_handshake_deadline(self, timer: asyncio.TimerHandle | None) -> None:
        """Keep the upgrade's deadline (it drops the connection) until the 101 is sent."""
        if self.disconnected or self.handshake_complete:
            if timer is not None:
                timer.cancel()
            return
        self.handshake_timer = timer

    def _handshake_answered(self) -> None:
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
            self.handshake_timer = None

    def _refuse_unparsed_request(self) -> None:
        """Answer and close an upgrade that websockets' parser refused.

        httptools accepts any length of request line and header, but websockets' parser
        refuses one over 8 KiB (or over 128 headers, or a header it finds malformed): it
        queues a 414 or 431 (or only an end of stream) and reports no request, and uvicorn,
        which writes only in answer to a request, would neither send that nor close.
        """
        if self.conn.handshake_exc is None:
            return  # not refused: the request is not complete yet (the deadline still runs)
        self.close_sent = True
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()
        self.abort_later()

    def close_nowait(self, code: int, reason: str = "") -> None:
        """Start the closing handshake without waiting for the write buffer to drain (uvicorn's
        ``send`` waits, forever if the client stops reading); abort after the close timeout."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:  # the client's close reply must be read
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.abort)

    def abort_later(self) -> None:
        """Abort the connection if it is still there after the close timeout: closing a
        transport waits for its unsent data to be read, which a stalled client never does."""
        if self.abort_timer is None and not self.disconnected:
            self.abort_timer = self.loop.call_later(self.close_timeout, self.abort)

    def abort(self) -> None:
        """Drop the connection now, unsent data and all."""
        self.close_timer = self.abort_timer = None
        if not self.disconnected:
            self.transport.abort()

    def handle_close(self, event: Any) -> None:
        super().handle_close(event)
        self.abort_later()

    def handle_parser_exception(self) -> None:
        super().handle_parser_exception()
        self.abort_later()

    def on_task_complete(self, task: asyncio.Task[None]) -> None:
        super().on_task_complete(task)
        if self.transport.is_closing():  # the application returned; run_asgi closed it
            self.abort_later()

    def shutdown(self) -> None:
        super().shutdown()
        self.abort_later()

    def schedule_ping(self) -> None:
        # In the process's one keepalive timer, not a timer per socket (uvicorn's).
        assert self.ping_interval is not None
        delay = max(0.0, self.ping_interval - self.last_ping_rtt)
        self.ping_due = keepalive_wheel().add(self, delay, self.ping_interval)

    def stop_keepalive(self) -> None:
        if self.ping_due is not None:
            keepalive_wheel().remove(self, self.ping_due)
            self.ping_due = None
        super().stop_keepalive()

    def send_keepalive_ping(self) -> None:
        self.ping_due = None
        self.heard = False
        self.paused_since_ping = self.read_paused or self.splice_read_paused
        super().send_keepalive_ping()

    def keepalive_timeout(self) -> None:
        # Spared: a socket that sent anything since the ping, or one the relay stopped reading
        # while it kept reading what the relay sends it (its write buffer drains): its pong may
        # be waiting unread behind its own frames because its partner, or the application, is
        # behind. Judged: one that sent nothing while being read, or that reads nothing itself
        # (its write buffer is full), whatever its reads.
        held_back = self.paused_since_ping and self.writable.is_set()
        if self.heard or held_back:
            # Ping again in an interval: writing the ping is also how a client that vanished
            # while its reads were paused is noticed.
            self.pong_timer = None
            self.schedule_ping()
            return
        super().keepalive_timeout()
        self.abort_later()

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshake_answered()
        self.unsplice()
        if self.abort_timer is not None:
            self.abort_timer.cancel()
            self.abort_timer = None
        super().connection_lost(exc)
