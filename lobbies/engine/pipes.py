"""Pipes: pairing two ``/connection`` requests and moving frames between the paired sockets.

Peer A asks for ``/connection/A/B/doc`` and peer B for ``/connection/B/A/doc``. Whichever arrives
first is *held* (its frames are kept, in order, up to a byte bound) until the other arrives or the
pair timeout expires (4408). When the match arrives the two ends are *paired*: the held frames go
out first, then every frame from one end is handed straight to the other end's ASGI ``send``,
untouched (text stays text, bytes stay bytes). No database, no presence call, no channel layer
and no signal per frame.

Under uvicorn, a paired pipe is then *spliced* (``lobbies.engine.splice``): frames go from one
socket to the other inside the server, without waking either consumer.

A pipe opens only between peers the relay introduced on its document, and only from the identity
that holds the seeker's peer id (4403 otherwise): checked once, when it opens, never per frame.

A pipe end's life is one :class:`PipeState` and one way out, :meth:`PipeEnd.close`.

Bounds: a held end may hold ``RELAY_MAX_HELD_BYTES`` (4413); all held ends of the process
together ``RELAY_MAX_HELD_BYTES_TOTAL`` (4413) and ``RELAY_MAX_HELD_PIPES`` ends (4429), and the
held ends of one client address (an IPv6 /64) ``RELAY_MAX_HELD_BYTES_PER_ADDRESS`` and
``RELAY_MAX_HELD_PIPES_PER_ADDRESS`` of that, so one address cannot fill it for all. A
second request for a pipe that is already waiting is refused (4409). Each held frame is charged
the memory it really takes, not just its payload.

Backpressure: ``send`` waits while the receiver's socket buffer is full (uvicorn does this
itself; ``lobbies.engine.servers`` adds it to daphne), so a slow reader stalls its sender's read
loop instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter, deque
from enum import Enum
from typing import Any

from lobbies import metrics, signals
from lobbies.conf import RelaySettings
from lobbies.engine import connections, workers
from lobbies.engine.connections import Refused, Send, send_close
from lobbies.engine.presence import PipeKey, PipeKeyTaken, Presence
from lobbies.engine.protocol import CloseCode, frame_size
from lobbies.engine.ratelimits import address_key
from lobbies.engine.splice import SpliceHandle, server_frames
from lobbies.engine.tasks import spawn
from lobbies.events import bus, emit
from lobbies.policy import Identity, may_pipe

logger = logging.getLogger(__name__)

# What a held frame costs besides its payload object: the ASGI message dict that carries it and
# its slot in the deque (about 190 bytes on CPython 3.11).
HELD_FRAME_OVERHEAD = sys.getsizeof({"type": "websocket.send", "bytes": b""}) + 8


def held_cost(payload: str | bytes) -> int:
    """The memory a held frame takes: its message, its payload object and its deque slot."""
    return HELD_FRAME_OVERHEAD + sys.getsizeof(payload)


class PipeState(Enum):
    """Where a pipe end is in its life. Every end ends CLOSED, through :meth:`PipeEnd.close`."""

    OPENING = "opening"  # looking for its match
    HELD = "held"  # waiting for its match; its frames are kept
    PAIRING = "pairing"  # its match arrived; its held frames are being sent
    PAIRED = "paired"  # frames go straight to the partner
    CLOSED = "closed"


class HeldBudget:
    """What all held pipe ends of this process hold together, ends and bytes, and what each
    client address holds of it (an address is forgotten when it holds nothing)."""

    def __init__(self) -> None:
        self.pipes = 0
        self.bytes = 0
        self.pipes_of: Counter[str] = Counter()
        self.bytes_of: Counter[str] = Counter()

    def admit_pipe(self, address: str, settings: RelaySettings) -> bool:
        """Count one more held end of ``address``, unless the process holds
        ``RELAY_MAX_HELD_PIPES`` ends already, or the address its share."""
        if (
            self.pipes >= settings.max_held_pipes
            or self.pipes_of[address] >= settings.max_held_pipes_per_address
        ):
            return False
        self.pipes += 1
        self.pipes_of[address] += 1
        return True

    def release_pipe(self, address: str) -> None:
        self.pipes -= 1
        _take(self.pipes_of, address, 1)

    def charge(self, address: str, size: int, settings: RelaySettings) -> bool:
        """Count ``size`` more held bytes of ``address``, unless that would take the process
        over ``RELAY_MAX_HELD_BYTES_TOTAL`` or the address over its share."""
        if (
            self.bytes + size > settings.max_held_bytes_total
            or self.bytes_of[address] + size > settings.max_held_bytes_per_address
        ):
            return False
        self.bytes += size
        self.bytes_of[address] += size
        return True

    def refund(self, address: str, size: int) -> None:
        self.bytes -= size
        _take(self.bytes_of, address, size)


def _take(counter: Counter[str], key: str, amount: int) -> None:
    left = counter[key] - amount
    if left > 0:
        counter[key] = left
    else:
        counter.pop(key, None)


held_budget = HeldBudget()

# The states in which an end that presence holds can be paired: held, or about to be (presence
# answered its own request, and its match may have been told first).
_PAIRABLE = frozenset({PipeState.HELD, PipeState.OPENING})


class PipeEnd:
    """One socket of a pipe: held, then paired with the reciprocal request's socket."""

    __slots__ = (
        "address",
        "bytes_in",
        "close_code",
        "close_reason",
        "connection",
        "frames_in",
        "handle",
        "held",
        "held_bytes",
        "identity",
        "key",
        "opened_at",
        "partner",
        "presence",
        "reported",
        "send",
        "settings",
        "state",
        "timer",
    )

    def __init__(
        self,
        key: PipeKey,
        identity: Identity,
        send: Send,
        presence: Presence,
        settings: RelaySettings,
        handle: SpliceHandle | None = None,
        address: str = "-",
    ):
        self.key = key
        # The client's address as its share of the held budget is counted (an IPv6 /64).
        self.address = address_key(address)
        self.identity = identity
        self.send = send
        self.presence = presence
        self.settings = settings
        # The server's relay.splice handle for this socket, when it offers one (uvicorn).
        self.handle = handle
        self.state = PipeState.OPENING
        self.connection = connections.register(self)
        self.partner: PipeEnd | None = None
        self.held: deque[dict[str, Any]] = deque()
        self.held_bytes = 0
        self.timer: asyncio.TimerHandle | None = None
        # What the client sent through the consumer (the splice counts the rest), and how it
        # was closed: for the connection's log line.
        self.frames_in = self.bytes_in = 0
        self.reported = (0, 0)  # frames and bytes in already reported (pipe_traffic)
        self.opened_at = 0.0  # when it was paired
        self.close_code: int | None = None
        self.close_reason = ""

    async def open(self) -> None:
        """Pair with the reciprocal request if it is held, else hold this one. Raises
        :class:`Refused`: 4403 unless the relay introduced the two peers on this document and
        this socket's identity holds the seeker's peer id; 4409 when the same request is
        waiting already; 4429 when the process holds too many."""
        found = await self.presence.pipe_facts(self.key)
        decision = may_pipe(
            holds_seeker=found.seeker_account == self.identity.account, introduced=found.introduced
        )
        if not decision:
            if found.seeker_account is None:
                reason = "the seeker's peer id is not online"
            elif not found.introduced:
                reason = "the relay did not introduce these peers on this document"
            else:
                reason = "the seeker's peer id is online as another user"
            raise Refused(CloseCode.FORBIDDEN, reason)
        for _attempt in range(3):
            try:
                found = await self.presence.hold_or_pair(self.key, self.connection)
            except PipeKeyTaken:
                raise Refused(CloseCode.CONFLICT, "the same pipe request is waiting") from None
            if found is None:
                if self.state is PipeState.OPENING:
                    await self._hold()
                elif self.state is PipeState.CLOSED:  # an order closed it meanwhile
                    await self.presence.release(self.key, self.connection)
                # (Else its match paired with it already: presence held it, and the match's
                # socket may have heard so before this one heard back from Redis.)
                return
            if not connections.is_local(found):
                if await self._pair_afar(found):
                    return
            else:
                partner = connections.lookup(found)
                if partner is not None and partner.state in _PAIRABLE:
                    await self._pair(partner)
                    return
            # The held socket went away between the presence lookup and now: the pipe counted
            # by hold_or_pair never carried a frame.
            await self.presence.pipe_closed(self.key)
        await self.close(CloseCode.NORMAL)

    async def _pair_afar(self, found: str) -> bool:
        """Pair with the held request ``found`` of another worker: it sends its held frames
        and then its client's through the link, and so do we. False if it is not held there
        any more (or its worker cannot be reached)."""
        link = workers.active()
        if link is None:
            return False
        remote = RemoteEnd(self, found, link)
        # Ready for its frames before asking: the held ones may arrive before the answer.
        self.partner, self.state = remote, PipeState.PAIRING
        try:
            accepted = await link.ask(remote.worker, ["pair", found, self.connection])
        except workers.Unreachable:
            accepted = False
        if self.state is PipeState.CLOSED:
            return True  # closed meanwhile (an order); close() told the other worker
        if not accepted:
            self.partner, self.state = None, PipeState.OPENING
            # Told to close, in case its worker accepted after we stopped waiting (then it
            # would send to an end that forgot it, and wait for ever); else nothing there hears.
            await remote.close(None)
            return False
        self.state = PipeState.PAIRED
        self._splice_to(remote)
        self.opened_at = time.monotonic()
        seeker, target, document_id = min(self.key, remote.key)  # as in _report
        emit(
            signals.pipe_opened,
            document_id=document_id,
            seeker=seeker,
            target=target,
            how="cross_worker",
        )
        return True

    async def _hold(self) -> None:
        if not held_budget.admit_pipe(self.address, self.settings):
            metrics.limit_hit("max_held_pipes")
            await self.presence.release(self.key, self.connection)
            raise Refused(CloseCode.RATE_LIMITED, "too many pipe requests waiting")
        self.state = PipeState.HELD
        self.timer = asyncio.get_running_loop().call_later(
            self.settings.pair_timeout, self._pair_timeout
        )

    async def _pair(self, partner: PipeEnd) -> None:
        partner._leave_held()
        partner.state = PipeState.PAIRING
        # Frames the partner sends while we flush are appended to the same deque (it is not
        # linked yet), so everything it sent before pairing arrives first and in order.
        try:
            await partner._send_held(self.send)
        except BaseException as exc:  # our socket broke, or the server is cancelling us
            logger.debug("pipe %s: flushing held frames failed: %r", self.key, exc)
            partner.partner, self.partner = self, partner
            await self.close(None)
            if not isinstance(exc, Exception):
                raise
            return
        partner._refund_held()
        if partner.state is PipeState.CLOSED:
            await self.presence.pipe_closed(self.key)
            await self.close(CloseCode.NORMAL)
            return
        partner.partner, self.partner = self, partner
        partner.state = self.state = PipeState.PAIRED
        how = "in_process"
        if self.handle is not None and partner.handle is not None:
            self.handle.splice(partner.handle, self.settings.max_frame_bytes)
            how = "spliced"
        self.opened_at = partner.opened_at = time.monotonic()
        seeker, target, document_id = min(self.key, partner.key)  # as in _report
        emit(signals.pipe_opened, document_id=document_id, seeker=seeker, target=target, how=how)

    def _splice_to(self, remote: RemoteEnd) -> None:
        # Under uvicorn, the frames this socket receives go to the other worker as they come,
        # without waking the consumer (as a pipe on one worker is spliced).
        if self.handle is not None:
            self.handle.splice_to(remote, self.settings.max_frame_bytes)

    async def _send_held(self, send: Send) -> None:
        """Send this end's held frames with ``send`` while it is being paired. Frames its client
        sends meanwhile join them (it has no partner yet), so everything leaves in the order it
        came."""
        held = self.held
        while held and self.state is PipeState.PAIRING:
            message = held.popleft()
            # Refunded as it leaves, not after the whole backlog: a client that reads its
            # backlog slowly must not keep the process's budget charged meanwhile.
            payload = message.get("bytes")
            cost = held_cost(message["text"] if payload is None else payload)
            self.held_bytes -= cost
            held_budget.refund(self.address, cost)
            await send(message)

    def paired_from_afar(self, connection: str, link: workers.Link) -> bool:
        """The reciprocal request ``connection`` of another worker pairs with this held end:
        its held frames leave first, then its client's. False if it is no longer held."""
        if self.state not in _PAIRABLE:
            return False
        self._leave_held()
        self.state = PipeState.PAIRING
        spawn(self._flush_afar(RemoteEnd(self, connection, link)))
        return True

    async def _flush_afar(self, remote: RemoteEnd) -> None:
        try:
            await self._send_held(remote.send)
        finally:
            self._refund_held()
        if self.state is not PipeState.PAIRING:  # closed while flushing
            await self.presence.pipe_closed(self.key)
            await remote.close(CloseCode.NORMAL)
            return
        self.partner, self.state = remote, PipeState.PAIRED
        self._splice_to(remote)
        self.opened_at = time.monotonic()

    async def handle_frame(self, message: dict[str, Any]) -> None:
        """Carry one frame received on this end to the other end (or hold it). The hot path."""
        payload = message.get("bytes")
        if payload is None:
            payload = message["text"]
            size = frame_size(payload)
        else:
            size = len(payload)
        self.frames_in += 1
        # Counted as the splice counts (lobbies.engine.splice): bytes on the wire, frame header
        # included, as the relay writes them to the other end.
        self.bytes_in += size + (2 if size < 126 else 4 if size < 65536 else 10)
        # The received message becomes the sent one: same payload key, so text stays text and
        # bytes stay bytes, and no new dict per frame.
        message["type"] = "websocket.send"
        if size > self.settings.max_frame_bytes:
            metrics.limit_hit("max_frame_bytes")
            await self.close(CloseCode.TOO_LARGE, "frame too large")
            return
        partner = self.partner
        if partner is not None:
            try:
                await partner.send(message)
            except Exception:  # the partner's socket broke; its own disconnect follows
                await self.close(CloseCode.NORMAL)
            return
        if self.state is PipeState.PAIRED or self.state is PipeState.CLOSED:
            return  # the other end has gone and this one is being closed: nowhere to go
        cost = held_cost(payload)
        if self.held_bytes + cost > self.settings.max_held_bytes:
            metrics.limit_hit("max_held_bytes")
            await self.close(CloseCode.TOO_LARGE, "too much sent before the match arrived")
            return
        if not held_budget.charge(self.address, cost, self.settings):
            metrics.limit_hit("max_held_bytes_total")
            await self.close(CloseCode.TOO_LARGE, "the relay holds too much for waiting pipes")
            return
        self.held.append(message)
        self.held_bytes += cost

    def _pair_timeout(self) -> None:
        spawn(self._expire())

    async def _expire(self) -> None:
        # Checked when the task runs, not when the timer fired: the match may have arrived in
        # between.
        if self.state is PipeState.HELD:
            await self.close(CloseCode.PAIR_TIMEOUT, "the match did not arrive in time")

    def _leave_held(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.state is PipeState.HELD:
            held_budget.release_pipe(self.address)

    def _refund_held(self) -> None:
        self.held.clear()
        held_budget.refund(self.address, self.held_bytes)
        self.held_bytes = 0

    async def close(self, code: CloseCode | None, reason: str = "") -> None:
        """The one way a pipe end closes: send ``code`` (``None``: the client has gone already)
        and close the other end with 1000. Idempotent; never waits for a client to read."""
        if self.state is PipeState.CLOSED:
            return
        was_held = self.state is PipeState.HELD
        self._leave_held()
        self.state = PipeState.CLOSED
        self._refund_held()
        connections.unregister(self.connection)
        if self.handle is not None:
            self.handle.unsplice()
        partner, self.partner = self.partner, None
        presence, key = self.presence, self.key
        if was_held:
            await workers.settle(lambda: presence.release(key, self.connection))
        if partner is not None:
            partner.partner = None
            await workers.settle(lambda: presence.pipe_closed(key))
            self._report(partner, closing=True)
        if code is not None:
            self.close_code, self.close_reason = int(code), reason
            await send_close(self.send, code, reason)
        if partner is not None:
            await partner.close(CloseCode.NORMAL)

    def totals(self) -> tuple[int, int]:
        """Frames and bytes (on the wire, headers included) the client sent so far, through
        the consumer and the splice."""
        frames, size = self.frames_in, self.bytes_in
        if self.handle is not None:
            frames += self.handle.relayed_frames
            size += self.handle.relayed_bytes
        return frames, size

    def traffic(self) -> dict[str, int]:
        """What the client sent, for the log line of its close (``lobbies.logs``)."""
        frames, size = self.totals()
        return {"frames_in": frames, "bytes_in": size}

    def _report(self, partner: PipeEnd, *, closing: bool = False) -> None:
        """Emit what moved both ways since the last report (``pipe_traffic``) and, when the
        pipe closes, ``pipe_closed``. Called on one end of each pipe, never per frame."""
        ends = sorted((self, partner), key=lambda end: end.key)  # one order, whichever reports
        moved = []
        for end in ends:
            frames, size = end.totals()
            moved.append((frames - end.reported[0], size - end.reported[1]))
            end.reported = (frames, size)
        seeker, target, document_id = ends[0].key
        if any(frames or size for frames, size in moved):
            emit(
                signals.pipe_traffic,
                document_id=document_id,
                seeker=seeker,
                target=target,
                frames=(moved[0][0], moved[1][0]),
                bytes=(moved[0][1], moved[1][1]),
            )
        if closing:
            seconds = time.monotonic() - self.opened_at
            emit(
                signals.pipe_closed,
                document_id=document_id,
                seeker=seeker,
                target=target,
                seconds=seconds,
            )


class RemoteEnd:
    """The other end of a local pipe end, on another worker (``lobbies.engine.workers``).

    What the local end sends it leaves through the link in order: frames its consumer handles
    (:meth:`send`), and under uvicorn, once paired, the frames its socket receives, spliced to
    this object as ready-made server frames (it is a :class:`~lobbies.engine.splice.SpliceSink`,
    so they never wake the consumer). At most ``RELAY_PIPE_WINDOW_BYTES`` may be on their way
    (sent, not yet written to the other client): past that, :meth:`send` waits and the spliced
    socket is not read until the other worker returns credit, so a reader that stops reading
    stops its writer, and neither worker holds more than a window per direction. What the other
    end sends arrives by :meth:`receive` and is written to the local client at once when its
    socket can take it, else by one task that waits for it to drain.
    """

    __slots__ = (
        "closed",
        "connection",
        "in_flight",
        "inbound",
        "key",
        "link",
        "local",
        "overflowed",
        "partner",
        "queued",
        "reported",
        "splice_max_bytes",
        "splice_partner",
        "window",
        "worker",
        "writable",
        "writer",
        "written",
    )

    def __init__(self, local: PipeEnd, connection: str, link: workers.Link) -> None:
        self.local = local
        self.connection = connection
        self.worker = connections.worker_of(connection)
        self.link = link
        self.key = local.key.reciprocal()
        self.window = local.settings.pipe_window_bytes
        self.in_flight = 0  # bytes sent, not yet credited back
        self.writable = asyncio.Event()  # set while less than a window is on its way
        self.writable.set()
        # From the other end: (True, server frames) spliced, (False, a message's payload), or
        # None: it closed.
        self.inbound: deque[tuple[bool, str | bytes] | None] = deque()
        self.writer: asyncio.Task[None] | None = None
        self.written = 0  # bytes written to the local client, not yet credited
        self.queued = 0  # bytes of ``inbound``, charged to the held budget
        self.overflowed = False  # the budget was full: the pipe is closing
        self.partner: PipeEnd | None = local  # (as a local partner's; close() clears it)
        self.splice_partner: Any = None  # the local socket, while spliced to this
        self.splice_max_bytes = 0
        self.reported = (0, 0)
        self.closed = False
        _remote_ends[local.connection] = self

    def totals(self) -> tuple[int, int]:
        """What the other client sent is counted by its own worker."""
        return 0, 0

    # -- to the other end ------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        """Send a frame of the local client's to the other end, waiting while a window's worth
        is on its way. Raises ``ConnectionError`` once the other end is gone."""
        if self.closed:
            raise ConnectionError("the other end of the pipe has gone")
        payload = message.get("bytes")
        if payload is None:
            payload = message["text"]
        self._sent(["f", self.connection, payload], frame_size(payload))
        while not self.writable.is_set():
            await self.writable.wait()

    def write(self, frames: bytes) -> None:
        """Spliced frames of the local socket (the splice's ``transport.write``)."""
        self._sent(["r", self.connection, frames], len(frames))

    def _sent(self, message: list[Any], size: int) -> None:
        self.link.tell(self.worker, message, self._lost)
        self.in_flight += size
        if self.in_flight > self.window:
            self.writable.clear()

    @property
    def transport(self) -> RemoteEnd:
        return self  # (for the splice: write and is_closing)

    def is_closing(self) -> bool:
        return self.closed

    @property
    def close_sent(self) -> bool:
        return self.closed

    @property
    def disconnected(self) -> bool:
        return self.closed

    def _resume_splice_reading(self) -> None:
        """(The other end's socket is read by its own worker.)"""

    def _lost(self) -> None:
        if not self.closed:
            self._stop()
            spawn(self.local.close(CloseCode.INTERNAL_ERROR, "the other end's worker is gone"))

    def credited(self, size: int) -> None:
        """The other worker wrote ``size`` more bytes to its client."""
        self.in_flight -= size
        if self.in_flight <= self.window and not self.writable.is_set():
            self.writable.set()
            if self.splice_partner is not None:
                self.splice_partner._resume_splice_reading()

    # -- from the other end ----------------------------------------------------------------

    def receive(self, spliced: bool, payload: str | bytes | None) -> None:
        """Frames from the other end (``spliced``: server frames as they are; else one
        message's payload; None: it closed), to write to the local client after the ones
        before: at once when its socket can take them (uvicorn), else by a task that waits for
        the socket's buffer to drain."""
        if self.writer is None and payload is not None:
            handle = self.local.handle
            if handle is not None:
                write = handle.write_frames if spliced else handle.send_nowait
                if write(payload):  # type: ignore[arg-type]
                    self._wrote(frame_size(payload))
                    return
        if payload is not None:
            # Waiting for its reader, it counts in the process's held budget, as frames held
            # before pairing do: many readers that stop reading cannot hold more together.
            size = frame_size(payload)
            if not held_budget.charge(self.local.address, size, self.local.settings):
                if not self.overflowed:  # closed once (the other end is told, as by a close)
                    self.overflowed = True
                    metrics.limit_hit("max_held_bytes_total")
                    reason = "the relay holds too much for readers that do not read"
                    spawn(self.local.close(CloseCode.TOO_LARGE, reason))
                return
            self.queued += size
        self.inbound.append(None if payload is None else (spliced, payload))
        if self.writer is None:
            self.writer = spawn(self._write())

    def _wrote(self, size: int) -> None:
        # Credit by quarters of the window: a writer that waits for credit has more than a
        # window on its way, so at least a quarter of one is always written and credited.
        self.written += size
        if self.written >= self.window // 4:
            self.link.tell(self.worker, ["c", self.connection, self.written])
            self.written = 0

    async def _write(self) -> None:
        local, inbound = self.local, self.inbound
        try:
            while inbound:
                item = inbound.popleft()
                if item is None:
                    await self._closed_afar()
                    return
                spliced, payload = item
                size = frame_size(payload)
                self.queued -= size
                held_budget.refund(local.address, size)
                if spliced and local.handle is not None:
                    while not local.handle.write_frames(payload):  # type: ignore[arg-type]
                        await local.handle.drained()
                else:
                    messages = server_frames(payload) if spliced else [payload]  # type: ignore[arg-type]
                    for message in messages:
                        key = "text" if isinstance(message, str) else "bytes"
                        await local.send({"type": "websocket.send", key: message})
                self._wrote(size)
        except Exception:  # the local socket broke; its own disconnect closes the pipe
            logger.debug("pipe %s: writing a frame from another worker failed", local.key)
        finally:
            self.writer = None

    async def _closed_afar(self) -> None:
        self.detach()
        local = self.local
        if local.partner is self:
            local._report(self)  # what this end sent; the other worker reports the close
            local.partner = None
        await local.close(CloseCode.NORMAL)

    async def close(self, code: CloseCode | None, reason: str = "") -> None:
        """The local end closed: the other end closes after the frames sent before this."""
        if not self.closed:
            self.link.tell(self.worker, ["x", self.connection])
        self.detach()

    def _stop(self) -> None:
        self.closed = True
        self.writable.set()  # (a send waiting for credit wakes up, and finds it closed)

    def detach(self) -> None:
        """Forget this link between the two ends."""
        self._stop()
        if _remote_ends.get(self.local.connection) is self:
            del _remote_ends[self.local.connection]
        if self.queued:  # what waited for the reader is dropped with the pipe
            held_budget.refund(self.local.address, self.queued)
            self.queued = 0
            self.inbound.clear()


# The remote partner of each local pipe end that has one, by the local end's connection id.
_remote_ends: dict[str, RemoteEnd] = {}


@workers.handler("pair")
async def _pair_from_afar(connection: str, partner: str) -> bool:
    end = connections.lookup(connection)
    link = workers.active()
    return isinstance(end, PipeEnd) and link is not None and end.paired_from_afar(partner, link)


@workers.handler("f")
async def _frame_from_afar(connection: str, payload: str | bytes) -> None:
    remote = _remote_ends.get(connection)
    if remote is not None:
        remote.receive(False, payload)


@workers.handler("r")
async def _frames_from_afar(connection: str, frames: bytes) -> None:
    remote = _remote_ends.get(connection)
    if remote is not None:
        remote.receive(True, frames)


@workers.handler("c")
async def _credit_from_afar(connection: str, size: int) -> None:
    remote = _remote_ends.get(connection)
    if remote is not None:
        remote.credited(size)


@workers.handler("x")
async def _closed_from_afar(connection: str) -> None:
    remote = _remote_ends.get(connection)
    if remote is not None:
        remote.receive(False, None)


async def _links_lost(dead: set[str] | None, code: CloseCode, reason: str) -> None:
    """Close the pipes that crossed to ``dead`` workers (None: to any worker), whose frames
    may have been lost: ``code`` 1011 (their worker is gone) or 1012 (this worker's link to
    Redis broke)."""
    for remote in list(_remote_ends.values()):
        if dead is None or remote.worker in dead:
            remote._stop()
            await remote.local.close(code, reason)


workers.on_lost(_links_lost)


def report_open_pipes() -> None:
    """``pipe_traffic`` for every paired pipe of this process (``RELAY_PIPE_REPORT_SECONDS``);
    a pipe whose ends are on two workers is reported by each for its own end."""
    for socket in connections.sockets():
        if isinstance(socket, PipeEnd) and socket.state is PipeState.PAIRED:
            partner = socket.partner
            if partner is not None and (isinstance(partner, RemoteEnd) or socket.key < partner.key):
                socket._report(partner)


bus.reporters.append(report_open_pipes)


async def close_between(
    peer_id: str | None,
    document_id: str | None,
    code: CloseCode,
    reason: str,
    *,
    peer_gets_code: bool = False,
    everywhere: bool = True,
) -> None:
    """Close every pipe about ``document_id`` (None: any) that joins ``peer_id`` (None: any
    peer) to another peer, on every worker (``everywhere``) or this one's. One end of each pipe
    gets ``code`` and its partner 1000: the other peers' ends, or with ``peer_gets_code`` (it
    was kicked or banned) ``peer_id``'s own; with no ``peer_id``, both ends of a pipe split
    across workers get ``code``."""
    link = workers.active()
    if everywhere and link is not None:
        link.broadcast(["close_between", peer_id, document_id, int(code), reason, peer_gets_code])
    ends = []
    for socket in connections.sockets():
        if not isinstance(socket, PipeEnd):
            continue
        key = socket.key
        if document_id is not None and key.document_id != document_id:
            continue
        if peer_id is not None and peer_id not in (key.seeker, key.target):
            continue
        gets_code = (key.seeker == peer_id) == peer_gets_code
        if not gets_code and isinstance(socket.partner, RemoteEnd):
            continue  # its partner's worker closes that end with the code, and this one after
        ends.append((not gets_code, socket))
    ends.sort(key=lambda item: item[0])
    for _, end in ends:
        await end.close(code, reason)


@workers.handler("close_between")
async def _close_between_here(
    peer_id: str | None, document_id: str | None, code: int, reason: str, peer_gets_code: bool
) -> None:
    await close_between(
        peer_id,
        document_id,
        CloseCode(code),
        reason,
        peer_gets_code=peer_gets_code,
        everywhere=False,
    )
