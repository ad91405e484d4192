"""Client: an asyncio client of the relay, shaped like the Local First Relay's JavaScript client.

How it works:

- The **control socket** ``<url>/introduction/<peerId>`` carries Join, Leave and Heartbeat up and
  Introductions down. One background task (the supervisor) reads it, sends heartbeats, and, if
  asked to, reconnects and joins every remembered document again.
- On an **Introduction** of peer B on documents [d, ...], the client opens one **pipe**
  ``<url>/connection/<me>/<B>/<d>`` per document (unless ``auto_connect=False``) and hands each
  one, as a PeerSocket, to the ``on_peer_connect`` callbacks and to the ``peers()`` stream.

Words: a *peer id* names a client (the 3.x clients call it ``userName``); a *document id* names
what peers meet about (elsewhere: channel, lobby, discovery key).

Memory stays bounded: websockets' ``max_size``/``max_queue`` bound each socket's buffers, and
the three streams (peers, introductions, messages) hold at most ``queue_size`` items each.

A ticket in the URL (``/t/<ticket>``) is a credential: no log line shows it, at any level, this
client's or websockets' (whose debug lines show each handshake's request path).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Generic, Self, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from .peer import PeerSocket
from .protocol import (
    DIALECTS,
    HEARTBEAT,
    Dialect,
    Joined,
    Left,
    MalformedMessage,
    Refusal,
    connection_url,
    decode,
    encode,
    introduction_url,
    join_message,
    leave_message,
    parse_extended,
    parse_introduction,
)

log = logging.getLogger("relayclient")
# websockets' own log lines for this client's sockets (its handshake lines show the path).
wire_log = logging.getLogger("relayclient.websockets")

_TICKET = re.compile(r"/t/[^/\s]+")


def without_ticket(text: str) -> str:
    """``text`` with the ticket of any ``/t/<ticket>`` URL prefix in it replaced by ``...``."""
    return _TICKET.sub("/t/...", text)


class _NoTickets(logging.Filter):
    """Takes tickets out of a log record's message before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/t/" in message:
            record.msg, record.args = without_ticket(message), ()
        return True


for _logger in (log, wire_log):
    _logger.addFilter(_NoTickets())

T = TypeVar("T")
PeerCallback = Callable[[PeerSocket], Awaitable[None] | None]

MiB = 1024 * 1024

# Close codes (docs/protocol.md) after which reconnecting cannot help, or would fight the server:
# invalid request, authentication, forbidden, replaced by a newer connection, removed, too large.
NO_RECONNECT_CODES = frozenset({4400, 4401, 4403, 4409, 4410, 4413})
# Close codes with which the relay refuses a control socket as it opens (docs/protocol.md): a bad
# URL or id, a bad credential, an id held by another user (or a ban), rate limited, and "try again
# later". The relay accepts the handshake first (a close code reaches only an accepted socket), so
# these arrive as a close, not as an HTTP status.
REFUSAL_CODES = frozenset({1013, 4400, 4401, 4403, 4429})


# join_lobby()'s waiters are keyed by document id; quick_join()'s, which names none, by this.
_QUICK_JOIN = ""


class Refused(Exception):
    """The relay refused us; ``code`` and ``reason`` are its own words.

    Raised as such when the relay closes the control socket with a refusal code (``code`` is the
    close code, an int: 4400 wrong URL or id, 4401 bad ticket or token, 4403 the id is held by
    another user or banned, 4429 rate limited, 1013 try again later; ``reason`` its close
    reason): by ``connect()`` when the close comes at once, else by ``join_lobby()`` (or
    ``join()``) once it came. ``LobbyRefused`` is the same for one refused Join.
    """

    def __init__(self, code: int | str, reason: str) -> None:
        # One line, whatever the relay put in its reason: the CLI prints it as is.
        reason = " ".join(reason.split())
        super().__init__(f"{code} {reason}".rstrip())
        self.code, self.reason = code, reason


class LobbyRefused(Refused):
    """The relay refused to let us into a lobby (``join_lobby``): ``code`` is the extended
    ``Error``'s code (a str: lobby_full, forbidden, not_found, locked, invalid, rate_limited),
    ``reason`` (also ``message``) its text, ``document_id`` the lobby."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.code, refusal.message)
        self.document_id, self.message = refusal.document_id, refusal.message


class _Inbox(Generic[T]):
    """A bounded FIFO that consumers await, and that can be closed to end their iteration.

    Not asyncio.Queue: we need "closed" to wake every waiter, and a choice per put between
    dropping the oldest item and refusing the new one.
    """

    def __init__(self, maxlen: int) -> None:
        self._items: deque[T] = deque()
        self._maxlen = maxlen
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, item: T, *, drop_oldest: bool) -> bool:
        """Append ``item``; when full, drop the oldest item or refuse (return False)."""
        if len(self._items) >= self._maxlen:
            if not drop_oldest:
                return False
            self._items.popleft()
        self._items.append(item)
        self._ready.set()
        return True

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    def reopen(self) -> None:
        self._closed = False

    def clear(self) -> None:
        self._items.clear()

    async def get(self) -> T:
        """Next item; EOFError once closed and empty. Safe to cancel: nothing is lost."""
        while not self._items:
            if self._closed:
                raise EOFError("stream closed")
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class Client:
    """A relay client for ``peer_id`` against the relay at ``url``.

    ``url`` is the relay's base WebSocket URL (``ws://host:port``), which may carry a path prefix
    (``ws://host:port/t/<ticket>``); ``http(s)://`` is accepted too.

    Use as ``async with Client(...) as client:`` or call ``connect()`` and ``disconnect()``.
    """

    def __init__(
        self,
        peer_id: str,
        url: str,
        *,
        dialect: Dialect = "msgpack",
        auto_connect: bool = True,
        heartbeat_interval: float | None = 55.0,
        max_size: int | None = 16 * MiB,
        max_queue: int = 16,
        queue_size: int = 1024,
        reconnect: bool = False,
        ext: bool = True,
        min_retry_delay: float = 0.1,
        max_retry_delay: float = 30.0,
        open_timeout: float | None = 10.0,
        headers: Mapping[str, str] | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Configure the client; nothing is opened until ``connect()``.

        - ``dialect``: ``"msgpack"`` (4.x: binary frames, ``peerId``) or ``"json"`` (3.x: text
          frames, ``userName``) for the control messages we send.
        - ``auto_connect``: open a pipe for every introduced (peer, document); if False, only the
          ``introductions()`` stream sees Introductions.
        - ``heartbeat_interval``: seconds between Heartbeats (the LF client uses 55); None or 0
          disables them.
        - ``max_size``: largest frame accepted on any socket (websockets' ``max_size``).
        - ``max_queue``: frames buffered per socket before reading pauses (websockets').
        - ``queue_size``: items held by each of ``peers()``, ``introductions()``, ``messages()``.
        - ``reconnect``: after the control socket drops, reopen it with jittered exponential
          backoff between ``min_retry_delay`` and ``max_retry_delay`` and Join again; not after
          a close code in NO_RECONNECT_CODES (e.g. 4409 replaced, 4410 removed). The first
          ``connect()`` is never retried: its failure is raised.
        - ``ext``: ask for the relay's extended messages (``"ext": 1`` in every Join): the
          ``lobbies`` state, ``join_lobby``, and pipes closed when we are taken out of a lobby.
          An LF relay ignores the field.
        - ``headers``: extra HTTP headers for every handshake (e.g. ``Authorization``).
        - ``connect_kwargs``: more keyword arguments for ``websockets.asyncio.client.connect``.
        """
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {DIALECTS}, not {dialect!r}")
        if not isinstance(peer_id, str) or not peer_id:
            raise ValueError("peer_id must be a non-empty string")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.peer_id = peer_id
        self.url = url
        self.dialect: Dialect = dialect
        self.auto_connect = auto_connect
        self.heartbeat_interval = heartbeat_interval
        self.reconnect = reconnect
        self.ext = ext
        self.min_retry_delay = min_retry_delay
        self.max_retry_delay = max_retry_delay
        self._ws_options: dict[str, Any] = {
            "max_size": max_size,
            "max_queue": max_queue,
            "open_timeout": open_timeout,
            "additional_headers": dict(headers) if headers else None,
            # Pipe payloads are often already compressed or encrypted, and frames on the wire
            # should be exactly what was sent: no permessage-deflate unless asked for.
            "compression": None,
            "logger": wire_log,
            **(connect_kwargs or {}),
        }
        # Joined document ids, each with the extra fields of its Join (sent again on reconnect).
        self._documents: dict[str, dict[str, Any]] = {}
        # Extended state: the lobbies we are in as the relay last told us, and join_lobby()'s
        # callers waiting for its answer.
        self._lobbies: dict[str, Joined] = {}
        self._waiters: dict[str, list[asyncio.Future[Joined]]] = {}
        self._control: ClientConnection | None = None
        # Why the relay refused our control socket, once it did (cleared by connect()).
        self._refusal: Refused | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped = asyncio.Event()
        self._stopped.set()
        # Every open pipe, whoever opened it, so that disconnect() can close them all.
        self._pipes: set[PeerSocket] = set()
        # Auto pipes by (peer, document): None while opening. Keeps repeated Introductions (the
        # server resends all shared ids on every Join) from opening a second pipe.
        self._auto_pipes: dict[tuple[str, str], PeerSocket | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._callbacks: list[PeerCallback] = []
        self._peer_inbox: _Inbox[PeerSocket] = _Inbox(queue_size)
        self._introduction_inbox: _Inbox[dict[str, Any]] = _Inbox(queue_size)
        self._message_inbox: _Inbox[dict[str, Any]] = _Inbox(queue_size)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<Client peer={self.peer_id!r} {self.dialect} {state}>"

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.disconnect()

    @property
    def connected(self) -> bool:
        """True while the control socket is open."""
        return self._control is not None and self._control.state is State.OPEN

    @property
    def documents(self) -> frozenset[str]:
        """The document ids currently joined."""
        return frozenset(self._documents)

    @property
    def lobbies(self) -> Mapping[str, Joined]:
        """The lobbies we are in, as the relay last said (``Joined``: role and metadata); only
        with ``ext``."""
        return dict(self._lobbies)

    @property
    def pipes(self) -> frozenset[PeerSocket]:
        """Every open pipe, auto-connected or opened with ``open_pipe``."""
        return frozenset(self._pipes)

    @property
    def refusal(self) -> Refused | None:
        """Why the relay refused our control socket (its close code and reason), if it did;
        the client has then stopped. Cleared by ``connect()``."""
        return self._refusal

    @property
    def control(self) -> ClientConnection | None:
        """The control socket's websockets connection (for close codes in tests), if any."""
        return self._control

    async def connect(self) -> None:
        """Open the control socket and Join every document joined so far.

        Raises ``Refused`` (close code and reason) when the relay refuses the socket at once
        (4400 wrong URL or id, 4401 bad ticket, ...); a refusal the relay decides a moment later
        (4403 after looking the id up) ends the client instead, and ``join_lobby()`` raises it.
        Raises what websockets raises when the handshake itself fails (e.g. InvalidStatus on a
        403), and TimeoutError after ``open_timeout``.
        """
        if self._supervisor is not None and not self._supervisor.done():
            raise RuntimeError("already connected")
        self._closing = False
        self._refusal = None
        try:
            control = await self._open_control()
        except Refused as refused:
            self._refusal = refused  # join() and join_lobby() raise it too
            raise
        # Only now: after a failed connect() the streams stay ended rather than wait forever.
        for inbox in (self._peer_inbox, self._introduction_inbox, self._message_inbox):
            inbox.reopen()
        self._stopped.clear()
        self._supervisor = asyncio.create_task(self._supervise(control), name=f"relay:{self}")

    async def disconnect(self) -> None:
        """Close the control socket and every pipe; end the ``peers()``-style streams."""
        self._closing = True
        current = asyncio.current_task()
        if self._supervisor is not None and self._supervisor is not current:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        self._supervisor = None
        # Stop pipe openers and callbacks before closing pipes, so no new pipe slips through.
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closers = [pipe.close() for pipe in list(self._pipes)]
        if self._control is not None:
            closers.append(self._control.close())
        await asyncio.gather(*closers, return_exceptions=True)
        self._pipes.clear()
        self._auto_pipes.clear()
        self._peer_inbox.clear()  # only closed pipes are left in it
        self._end_streams()

    async def wait_closed(self) -> None:
        """Wait until the client has stopped: ``disconnect()``, or a drop without reconnect."""
        await self._stopped.wait()

    # -- discovery ----------------------------------------------------------------------------

    async def join(
        self,
        document_id: str,
        *,
        nickname: str | None = None,
        lobby: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Join ``document_id``: peers that joined it too will be introduced.

        ``nickname`` is a display name; ``lobby`` is metadata for a lobby this Join creates (or
        that we own): ``game``, ``title``, ``maxPeers``, ``topology``, ``visibility``,
        ``hostTransferable``, ``data``. ``extra`` adds any other fields. Before ``connect()``
        the id is only remembered; ``connect()`` sends the Join. Not waiting for the relay's
        answer: see ``join_lobby``.
        """
        if not isinstance(document_id, str) or not document_id:
            raise ValueError("document_id must be a non-empty string")
        if self._refusal is not None:
            raise self._refusal  # not connected, and reconnecting would not help
        fields = dict(extra or {})
        if self.ext:
            fields["ext"] = 1
        if nickname is not None:
            fields["nickname"] = nickname
        if lobby is not None:
            fields["lobby"] = dict(lobby)
        self._documents[document_id] = fields
        await self._send_if_connected(join_message([document_id], fields))

    async def join_lobby(
        self,
        document_id: str,
        *,
        nickname: str | None = None,
        lobby: Mapping[str, Any] | None = None,
    ) -> Joined:
        """Join ``document_id`` and wait for the relay's answer (needs ``ext`` and a relay with
        the extended messages): the ``Joined`` (our role and the lobby's metadata), or
        ``LobbyRefused`` with the relay's reason (lobby_full, forbidden, not_found, locked,
        invalid, rate_limited). ``Refused`` (close code and reason) when the relay refused the
        control socket itself (before or while waiting); EOFError when the client stopped
        otherwise. An LF relay never answers: bound the wait with ``asyncio.timeout``."""
        if not self.ext:
            raise RuntimeError("join_lobby needs ext=True")
        waiter: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(document_id, []).append(waiter)
        try:
            await self.join(document_id, nickname=nickname, lobby=lobby)
            return await asyncio.shield(waiter)
        finally:
            waiting = self._waiters.get(document_id, [])
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting:
                self._waiters.pop(document_id, None)

    async def quick_join(
        self,
        game: str,
        *,
        filters: Mapping[str, str | int | bool] | None = None,
        max_peers: int | None = None,
        nickname: str | None = None,
        lobby: Mapping[str, Any] | None = None,
    ) -> Joined:
        """Ask the relay for a place in a lobby of ``game`` with room whose data holds
        ``filters`` (quick join; needs ``ext``), join it and return its ``Joined``: the
        ``document_id`` says which lobby (joined again after a reconnect, as ``join`` does).
        ``max_peers`` and ``lobby`` (``topology``, ``hostTransferable``, ``title``) describe
        the lobby made when none has room. ``LobbyRefused`` with the relay's reason when it
        cannot place us (forbidden, rate_limited, invalid, lobby_full), ``Refused`` or EOFError
        as for ``join_lobby``. One at a time: answers come in the order asked."""
        if not self.ext:
            raise RuntimeError("quick_join needs ext=True")
        request: dict[str, Any] = {**(lobby or {}), "game": game}
        if filters:
            request["filters"] = dict(filters)
        if max_peers is not None:
            request["maxPeers"] = max_peers
        fields: dict[str, Any] = {"ext": 1, "quickJoin": request}
        if nickname is not None:
            fields["nickname"] = nickname
        waiter: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        waiting = self._waiters.setdefault(_QUICK_JOIN, [])
        waiting.append(waiter)
        try:
            await self.send_control(join_message([], fields))
            return await asyncio.shield(waiter)
        finally:
            if waiter in waiting:
                waiting.remove(waiter)
            if not waiting:
                self._waiters.pop(_QUICK_JOIN, None)

    async def leave(self, document_id: str) -> None:
        """Leave ``document_id`` and close our pipes about it, as the LF client does."""
        self._documents.pop(document_id, None)
        self._lobbies.pop(document_id, None)
        await self._send_if_connected(leave_message([document_id]))
        closing = [pipe.close() for pipe in self._pipes if pipe.document_id == document_id]
        await asyncio.gather(*closing, return_exceptions=True)

    async def send_control(self, message: Mapping[str, Any]) -> None:
        """Send any control message in our dialect (for tests of extensions or bad input).

        Raises RuntimeError when not connected, ConnectionClosed if the socket just closed.
        """
        if self._control is None:
            raise RuntimeError("not connected")
        await self._control.send(encode(message, self.dialect))

    # -- peers --------------------------------------------------------------------------------

    def on_peer_connect(self, callback: PeerCallback) -> PeerCallback:
        """Call ``callback(peer_socket)`` for each auto-connected pipe; usable as a decorator.

        A coroutine callback runs as its own task, so a slow one does not hold up others;
        ``disconnect()`` cancels the ones still running.
        """
        self._callbacks.append(callback)
        return callback

    async def peers(self) -> AsyncIterator[PeerSocket]:
        """Yield auto-connected pipes as they open, until the client disconnects.

        Pipes opened before the first iteration are buffered (``queue_size`` at most; a pipe
        that neither a callback nor this buffer can take is closed).
        """
        while True:
            try:
                yield await self._peer_inbox.get()
            except EOFError:
                return

    async def next_peer(self) -> PeerSocket:
        """The next auto-connected pipe; EOFError after disconnect.

        Waits as long as needed: bound it with ``asyncio.timeout`` or ``asyncio.wait_for``.
        """
        return await self._peer_inbox.get()

    async def introductions(self) -> AsyncIterator[dict[str, Any]]:
        """Yield each Introduction as decoded (raw dict), until the client disconnects.

        Buffered, ``queue_size`` at most: when full, the oldest is dropped.
        """
        while True:
            try:
                yield await self._introduction_inbox.get()
            except EOFError:
                return

    async def next_introduction(self) -> dict[str, Any]:
        """The next raw Introduction; EOFError after disconnect.

        Waits as long as needed: bound it with ``asyncio.timeout`` or ``asyncio.wait_for``.
        """
        return await self._introduction_inbox.get()

    async def messages(self) -> AsyncIterator[dict[str, Any]]:
        """Yield every decoded control message (Introductions and any other type).

        Extended messages (Joined, Error, Left) included. Buffered like ``introductions()``.
        """
        while True:
            try:
                yield await self._message_inbox.get()
            except EOFError:
                return

    async def next_message(self) -> dict[str, Any]:
        """The next decoded control message; EOFError after disconnect.

        Waits as long as needed: bound it with ``asyncio.timeout`` or ``asyncio.wait_for``.
        """
        return await self._message_inbox.get()

    async def open_pipe(self, peer_id: str, document_id: str) -> PeerSocket:
        """Open ``<url>/connection/<me>/<peer_id>/<document_id>`` now, whatever was introduced.

        The pipe is not announced to ``peers()`` or callbacks, but ``disconnect()`` closes it.
        """
        return await self._open_pipe(peer_id, document_id, auto_key=None)

    # -- internals ----------------------------------------------------------------------------

    async def _open_control(self) -> ClientConnection:
        url = introduction_url(self.url, self.peer_id)
        log.debug("%s: opening control socket %s", self.peer_id, without_ticket(url))
        control = await connect(url, **self._ws_options)
        self._control = control
        # Join everything remembered: the ids joined before connect(), or before a drop.
        try:
            for document_id, extra in list(self._documents.items()):
                await control.send(encode(join_message([document_id], extra), self.dialect))
        except ConnectionClosed:
            pass  # the confirmation below, or the supervisor's reader, sees the close
        await self._confirm(control)
        return control

    async def _confirm(self, control: ClientConnection) -> None:
        """Raise Refused if the relay refused ``control`` as it opened.

        The relay accepts every handshake and then closes a refused socket. One ping round trip
        lets a close sent at once arrive first (it follows the accept on the wire), so a socket
        refused outright is reported here rather than taken for a connected one. A refusal the
        relay decides later (after a database look-up) is seen by the supervisor instead.
        """
        try:
            async with asyncio.timeout(self._ws_options.get("open_timeout")):
                await (await control.ping())
        except ConnectionClosed:
            pass
        except TimeoutError:
            await control.close()
            raise
        if control.close_code in REFUSAL_CODES:
            raise Refused(control.close_code, control.close_reason or "")

    async def _send_if_connected(self, message: dict[str, Any]) -> None:
        control = self._control
        if control is None:
            return
        try:
            await control.send(encode(message, self.dialect))
        except ConnectionClosed:
            # Not an error for join/leave: the remembered ids are joined again on reconnect.
            log.debug("%s: control socket closed; %s not sent", self.peer_id, message["type"])

    async def _supervise(self, control: ClientConnection) -> None:
        try:
            while True:
                heartbeat = None
                if self.heartbeat_interval:
                    heartbeat = asyncio.create_task(self._heartbeat(control))
                try:
                    await self._read(control)
                finally:
                    if heartbeat is not None:
                        heartbeat.cancel()
                log.debug("%s: control socket closed (%s)", self.peer_id, control.close_code)
                if self._closing or not self.reconnect or control.close_code in NO_RECONNECT_CODES:
                    break
                reopened = await self._reopen()
                if reopened is None:
                    break
                control = reopened
        finally:
            if not self._closing:
                # Dropped for good: nothing more will arrive, so end the streams' iterations.
                last = self._control
                if self._refusal is None and last is not None and last.close_code in REFUSAL_CODES:
                    self._refusal = Refused(last.close_code, last.close_reason or "")
                if self._refusal is not None:
                    log.info("%s: refused by the relay: %s", self.peer_id, self._refusal)
                self._end_streams()

    async def _reopen(self) -> ClientConnection | None:
        delay = self.min_retry_delay
        while not self._closing:
            # Jitter, so that many clients dropped at once do not come back in lockstep.
            await asyncio.sleep(delay * random.uniform(0.9, 1.1))
            try:
                return await self._open_control()
            except Refused as refused:
                if refused.code in NO_RECONNECT_CODES:
                    self._refusal = refused  # a bad URL, ticket or id: no retry can help
                    return None
                log.info("%s: reconnect refused (%s); retrying", self.peer_id, refused)
                delay = min(delay * 1.5, self.max_retry_delay)
            # Timed out, rejected handshake: all are worth another try later.
            except Exception as error:
                log.info("%s: reconnect failed (%s); retrying", self.peer_id, error)
                delay = min(delay * 1.5, self.max_retry_delay)
        return None

    async def _heartbeat(self, control: ClientConnection) -> None:
        frame = encode(HEARTBEAT, self.dialect)
        while True:
            await asyncio.sleep(self.heartbeat_interval or 0)
            try:
                await control.send(frame)
            except ConnectionClosed:
                return

    async def _read(self, control: ClientConnection) -> None:
        while True:
            try:
                frame = await control.recv()
            except ConnectionClosed:
                return
            try:
                self._handle(frame)
            except Exception:
                # A bug in handling one message must not kill the control socket.
                log.exception("%s: failed to handle a control frame", self.peer_id)

    def _handle(self, frame: str | bytes) -> None:
        try:
            message = decode(frame)
        except MalformedMessage as error:
            log.debug("%s: ignoring control frame: %s", self.peer_id, error)
            return
        self._message_inbox.put(message, drop_oldest=True)
        extended = parse_extended(message)
        if extended is not None:
            self._handle_extended(extended)
            return
        introduction = parse_introduction(message, self.dialect)
        if introduction is None:
            log.debug("%s: ignoring control message %r", self.peer_id, message.get("type"))
            return
        self._introduction_inbox.put(message, drop_oldest=True)
        if not self.auto_connect:
            return
        for document_id in introduction.document_ids:
            key = (introduction.peer_id, document_id)
            if introduction.peer_id == self.peer_id or key in self._auto_pipes:
                continue
            if document_id not in self._documents:
                # We left it while the Introduction was on its way.
                log.debug("%s: not piping %r: not joined", self.peer_id, document_id)
                continue
            self._auto_pipes[key] = None
            self._spawn(self._auto_open(*key))

    def _handle_extended(self, message: Joined | Refusal | Left) -> None:
        document_id = message.document_id or ""  # (no id: the answer to a quick join)
        key = document_id
        unnamed = document_id not in self._documents and document_id not in self._waiters
        if unnamed and not isinstance(message, Left) and self._waiters.get(_QUICK_JOIN):
            # A lobby we did not name: where quick join placed us (joined again on reconnect),
            # or why we could not join the one it found.
            key = _QUICK_JOIN
            if isinstance(message, Joined):
                self._documents[document_id] = {"ext": 1}
        if isinstance(message, Joined):
            self._lobbies[document_id] = message
        else:
            # Refused or taken out: not in it, so not joined again after a reconnect.
            self._lobbies.pop(document_id, None)
            self._documents.pop(document_id, None)
        if isinstance(message, Left):
            log.info("%s: out of %r (%s)", self.peer_id, document_id, message.reason)
            for pipe in [p for p in self._pipes if p.document_id == document_id]:
                self._spawn(pipe.close())
            return
        waiting = self._waiters.pop(key, [])
        if key == _QUICK_JOIN and len(waiting) > 1:
            # Each quick join gets one answer, in the order they were asked.
            self._waiters[key] = waiting[1:]
            waiting = waiting[:1]
        for waiter in waiting:
            if waiter.done():
                continue
            if isinstance(message, Joined):
                waiter.set_result(message)
            else:
                waiter.set_exception(LobbyRefused(message))

    async def _auto_open(self, peer_id: str, document_id: str) -> None:
        key = (peer_id, document_id)
        try:
            pipe = await self._open_pipe(peer_id, document_id, auto_key=key)
        except Exception as error:  # one failed pipe must not stop the others
            self._auto_pipes.pop(key, None)
            log.warning("%s: pipe to %r on %r failed: %s", self.peer_id, *key, error)
            return
        if self._closing or document_id not in self._documents:
            await pipe.close()
            return
        log.debug("%s: pipe open to %r on %r", self.peer_id, *key)
        for callback in list(self._callbacks):
            try:
                result = callback(pipe)
                if inspect.isawaitable(result):
                    self._spawn(self._await_callback(result))
            except Exception:
                log.exception("%s: on_peer_connect callback failed", self.peer_id)
        if not self._peer_inbox.put(pipe, drop_oldest=False) and not self._callbacks:
            log.warning("%s: peers() buffer full and no callback: closing %r", self.peer_id, pipe)
            await pipe.close()

    async def _await_callback(self, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            log.exception("%s: on_peer_connect callback failed", self.peer_id)

    async def _open_pipe(
        self, peer_id: str, document_id: str, *, auto_key: tuple[str, str] | None
    ) -> PeerSocket:
        url = connection_url(self.url, self.peer_id, peer_id, document_id)
        connection = await connect(url, **self._ws_options)
        pipe = PeerSocket(peer_id, document_id, connection)
        self._pipes.add(pipe)
        if auto_key is not None:
            self._auto_pipes[auto_key] = pipe
        self._spawn(self._forget_when_closed(pipe, auto_key))
        return pipe

    async def _forget_when_closed(self, pipe: PeerSocket, auto_key: tuple[str, str] | None) -> None:
        await pipe.wait_closed()
        self._pipes.discard(pipe)
        # Only forget the key if it is still ours: a newer pipe may have replaced this one, and
        # once the key is gone a later Introduction may open a fresh pipe.
        if auto_key is not None and self._auto_pipes.get(auto_key) is pipe:
            del self._auto_pipes[auto_key]

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _end_streams(self) -> None:
        self._stopped.set()
        for inbox in (self._peer_inbox, self._introduction_inbox, self._message_inbox):
            inbox.close()
        # No answer will come to a Join still waiting: tell join_lobby() why.
        for waiter in [w for waiting in self._waiters.values() for w in waiting]:
            if not waiter.done():
                waiter.set_exception(self._refusal or EOFError("control socket closed"))
