"""Many workers: how one worker process reaches the sockets of another, through Redis.

With ``RELAY_REDIS_URL`` set, several worker processes serve one relay. Presence (in Redis) names
every socket by its connection id, which starts with its worker's token
(``lobbies.engine.connections``); whatever acts on a socket of another worker (an Introduction,
an operator's order, a replacement, a host's succession, a frame of a pipe whose ends are on two
workers) becomes a *message* to that worker, which hands it to its local socket.

Each worker subscribes to one Redis pub/sub channel of its own and to one that every worker
hears (``broadcast``: a lobby changed, close a lobby's pipes wherever they are). Pub/sub rather
than the channel layer or streams: measured in ``bench/`` (the README's scale-out table), and a
message is for a worker that is alive now or for nobody. Messages to one worker leave through one
:class:`Outlet`, in order, batched (all those queued while the previous PUBLISH was under way go
in the next one), so a busy pipe costs a fraction of a round trip per frame.

Nothing is lost silently. A PUBLISH that reached no subscriber (the worker died or lost Redis),
an error talking to Redis, and a subscription that broke (whatever it carried meanwhile is lost)
each close the pipes they concern with a documented code (1011 for a partner's worker gone,
1012 when this worker's own link to Redis broke), so both clients know and reconnect.

The worker announces itself to presence every quarter of ``RELAY_WORKER_TTL`` and reaps the
workers that stopped; when presence no longer knows it (Redis restarted with its data gone), it
closes its control sockets with 1012: their clients reconnect and are in presence again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from lobbies.conf import RelaySettings, relay_settings
from lobbies.engine import connections
from lobbies.engine.presence import get_presence
from lobbies.engine.protocol import CloseCode
from lobbies.engine.tasks import spawn

logger = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]
_handlers: dict[str, Handler] = {}
LostCallback = Callable[[set[str] | None, CloseCode, str], Awaitable[None]]
_lost_callbacks: list[LostCallback] = []

# One PUBLISH carries at most about this many bytes of messages (more wait for the next), so
# one busy pipe cannot make the messages behind it wait long.
BATCH_BYTES = 256 * 1024
# How long a request to another worker (an order, pairing a pipe) waits for its answer.
REQUEST_SECONDS = 5.0


def handler(kind: str, *, apart: bool = False) -> Callable[[Handler], Handler]:
    """Register the coroutine that carries out messages of ``kind`` on this worker's sockets.

    It is called with the message's fields; what it returns answers a request (:func:`ask`).
    The listener hands messages out one at a time, in order, so a handler must not wait on a
    client, nor for long; one that may (``apart``: an order waits for its socket's turn, which
    a Join asking the database holds) runs as a task of its own, out of that order."""

    def register(function: Handler) -> Handler:
        _handlers[kind] = function
        if apart:
            _apart.add(kind)
        return function

    return register


_apart: set[str] = set()


def on_lost(callback: LostCallback) -> LostCallback:
    """Register ``callback(workers, code, reason)``, called when messages to or from
    ``workers`` (None: any worker) may have been lost, to close what they carried with
    ``code``."""
    _lost_callbacks.append(callback)
    return callback


# Presence clean-ups that failed while Redis did not answer, tried again by the heartbeat (a
# peer that left meanwhile must not stay online in presence for as long as its worker lives).
_cleanups: deque[Callable[[], Awaitable[Any]]] = deque(maxlen=100_000)


async def settle(action: Callable[[], Awaitable[Any]]) -> None:
    """Run ``action()``, a presence clean-up of a socket that closed, now or, if Redis does
    not answer, once it does again (if Redis lost its data meanwhile, there is nothing left
    to clean)."""
    try:
        await action()
    except RedisError as exc:
        logger.warning("presence clean-up postponed: Redis does not answer (%r)", exc)
        _cleanups.append(action)


async def _settle_postponed() -> None:
    while _cleanups:
        try:
            await _cleanups[0]()
        except RedisError:
            raise  # left for the next heartbeat
        except Exception:
            logger.exception("a postponed presence clean-up failed; dropped")
        _cleanups.popleft()


class Unreachable(Exception):
    """A message could not be handed to the worker it was for (gone, or Redis is)."""


class Outlet:
    """The messages waiting to leave for one channel, and the one task publishing them."""

    def __init__(self, link: Link, channel: str) -> None:
        self.link = link
        self.channel = channel
        self.queue: deque[tuple[list[Any], Callable[[], Any] | None]] = deque()
        self.task: asyncio.Task[None] | None = None

    def put(self, message: list[Any], lost: Callable[[], Any] | None) -> None:
        """Queue ``message``; ``lost()`` is called if it cannot be delivered."""
        self.queue.append((message, lost))
        if self.task is None:
            self.task = spawn(self._publish())

    async def _publish(self) -> None:
        queue = self.queue
        try:
            while queue:
                batch, size = [], 0
                while queue and size < BATCH_BYTES:
                    item = queue.popleft()
                    batch.append(item)
                    size += _size(item[0])
                received = await self._send(batch)
                if not received and any(lost is None for _, lost in batch):
                    # The connection may have gone stale (Redis restarted): once more on a new
                    # one, for the messages a repeat cannot harm (never a pipe's frames, which
                    # close their pipe instead).
                    received = await self._send([item for item in batch if item[1] is None])
                if not received:
                    for _, lost in batch:
                        if lost is not None:
                            lost()
        finally:
            self.task = None

    async def _send(self, batch: list[tuple[list[Any], Callable[[], Any] | None]]) -> int:
        """PUBLISH ``batch`` in one message; how many workers received it (0: nobody, or
        Redis did not answer, after which the next PUBLISH starts on a new connection)."""
        payload = msgpack.packb([self.link.token, [message for message, _ in batch]])
        publisher = self.link.publisher
        try:
            return await publisher.publish(self.channel, payload)
        except (RedisError, OSError) as exc:
            logger.warning("publishing to %s failed: %r", self.channel, exc)
            with contextlib.suppress(RedisError, OSError):
                await publisher.connection_pool.disconnect()
            return 0


def _size(message: list[Any]) -> int:
    return sum(len(part) if isinstance(part, str | bytes) else 8 for part in message)


class Link:
    """This worker's link to the others: its subscription, its outlets, its heartbeat."""

    def __init__(self, url: str, prefix: str, ttl: float) -> None:
        self.token = connections.PROCESS_TOKEN
        self.prefix = prefix
        self.ttl = ttl
        self.url = url
        # Errors come straight to us (no silent retry): a broken link means lost messages,
        # which must close the pipes they carried.
        self.publisher = _client(url, timeout=REQUEST_SECONDS)
        self.outlets: dict[str, Outlet] = {}
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.requests = itertools.count(1)
        self.tasks: list[asyncio.Task[None]] = []
        self.subscribed = asyncio.Event()
        self.stopping = False

    def channel(self, worker: str) -> str:
        return f"{self.prefix}worker:{worker}"

    @property
    def everyone(self) -> str:
        return f"{self.prefix}workers"

    async def start(self) -> None:
        """Announce this worker and start listening; returns once subscribed (or after a few
        seconds if Redis does not answer: the heartbeat keeps trying)."""
        presence = get_presence()
        with contextlib.suppress(RedisError, OSError):
            await presence.announce(self.token, self.ttl)
        self.tasks = [spawn(self._listen()), spawn(self._heartbeat())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), 5)

    async def stop(self) -> None:
        """Leave presence at once (a draining worker) and stop listening."""
        self.stopping = True
        with contextlib.suppress(RedisError, OSError):
            await get_presence().withdraw(self.token)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.publisher.aclose()

    # -- sending ---------------------------------------------------------------------------

    def tell(self, worker: str, message: list[Any], lost: Callable[[], Any] | None = None) -> None:
        """Send ``message`` (``[kind, *fields]``) to ``worker``, in order after the ones sent
        to it before; ``lost()`` runs if it could not be handed over."""
        outlet = self.outlets.get(worker)
        if outlet is None:
            outlet = self.outlets[worker] = Outlet(self, self.channel(worker))
        outlet.put(message, lost)

    def broadcast(self, message: list[Any]) -> None:
        """Send ``message`` to every other worker."""
        outlet = self.outlets.get("")
        if outlet is None:
            outlet = self.outlets[""] = Outlet(self, self.everyone)
        outlet.put(message, None)

    async def ask(self, worker: str, message: list[Any]) -> Any:
        """Send a request to ``worker`` and wait for its answer. Raises :class:`Unreachable`
        when it cannot be delivered or no answer comes in time."""
        number = next(self.requests)
        future = asyncio.get_running_loop().create_future()
        self.pending[number] = future

        def lost() -> None:
            if not future.done():
                future.set_exception(Unreachable(worker))

        self.tell(worker, ["?", number, self.token, *message], lost)
        try:
            return await asyncio.wait_for(future, REQUEST_SECONDS)
        except TimeoutError:
            raise Unreachable(worker) from None
        finally:
            self.pending.pop(number, None)

    # -- receiving -------------------------------------------------------------------------

    async def _listen(self) -> None:
        first = True
        while not self.stopping:
            client = _client(self.url)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.channel(self.token), self.everyone)
                if not first:
                    # A publishing connection from before may be stale too.
                    with contextlib.suppress(RedisError, OSError):
                        await self.publisher.connection_pool.disconnect()
                    # What was published to us while we were away is lost.
                    await self._lost(
                        None, CloseCode.SERVICE_RESTART, "the relay's link to Redis broke"
                    )
                first = False
                self.subscribed.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                    if message is not None and message["type"] == "message":
                        await self._dispatch(message["data"])
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                if not self.stopping:
                    logger.warning("the subscription to Redis broke (%r); resubscribing", exc)
                    await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(BaseException):
                    await pubsub.aclose()
                    await client.aclose()

    async def _dispatch(self, data: bytes) -> None:
        # A message not of ours (another relay version?) is dropped: raised, it would end the
        # listener, and the worker would serve on deaf to every other.
        try:
            sender, messages = msgpack.unpackb(data)
            messages = list(messages)
        except Exception:
            logger.warning("an unreadable message on the workers' channels: dropped")
            return
        if sender == self.token:
            return  # our own broadcast: done here already
        for message in messages:
            try:
                await self._handle(sender, message)
            except Exception:
                logger.exception("a message from worker %s failed: %r", sender, message[:1])

    async def _handle(self, sender: str, message: list[Any]) -> None:
        kind = message[0]
        if kind == "?":  # a request: [?, number, asker, kind, *fields]
            answer = self._answer(message[1], message[2], message[3:])
            if message[3] in _apart:
                spawn(answer)
            else:
                await answer
        elif kind == "!":  # an answer: [!, number, value]
            future = self.pending.get(message[1])
            if future is not None and not future.done():
                future.set_result(message[2])
        else:
            await _handlers[kind](*message[1:])

    async def _answer(self, number: int, asker: str, request: list[Any]) -> None:
        try:
            answer = await _handlers[request[0]](*request[1:])
        except Exception:
            logger.exception("a request from worker %s failed: %r", asker, request[:1])
            return  # (the asker's wait ends in Unreachable)
        self.tell(asker, ["!", number, answer])

    async def _heartbeat(self) -> None:
        presence = get_presence()
        known = True
        while not self.stopping:
            # A quarter: at least three announcements within any TTL, whatever each takes.
            await asyncio.sleep(self.ttl / 4)
            try:
                started = time.monotonic()
                if not await presence.announce(self.token, self.ttl):
                    logger.warning("presence lost this worker (Redis restarted?): reconnecting")
                    await self._lost(
                        None, CloseCode.SERVICE_RESTART, "the relay lost its presence store"
                    )
                    await _close_control_sockets()
                await _settle_postponed()
                dead = await presence.reap()
                # Reaped by another worker (or withdrawn), a worker is in no reap() of ours:
                # the ones we talk to are asked about, or pipes to them would wait for ever.
                dead += await presence.gone([w for w in self.outlets if w and w not in dead])
                if dead:
                    logger.info("workers gone: %s", ", ".join(dead))
                    for worker in dead:
                        self.outlets.pop(worker, None)
                    await self._lost(
                        set(dead), CloseCode.INTERNAL_ERROR, "the other end's worker is gone"
                    )
                if not known:
                    logger.info("Redis answers again")
                known = True
                elapsed = time.monotonic() - started
                if elapsed > self.ttl / 3:
                    logger.warning("announcing this worker took %.1f s", elapsed)
            except (RedisError, OSError) as exc:
                if known:
                    logger.warning("Redis does not answer (%r); trying again", exc)
                known = False
            except Exception:
                # Never the end of the heartbeat: a worker that stops announcing itself is
                # forgotten by presence while it still serves its peers.
                logger.exception("the heartbeat failed; it goes on")

    async def _lost(self, workers: set[str] | None, code: CloseCode, reason: str) -> None:
        for callback in _lost_callbacks:
            try:
                await callback(workers, code, reason)
            except Exception:
                logger.exception("closing what a lost link carried failed")


async def _close_control_sockets() -> None:
    """Close every control socket of this worker with 1012: presence forgot them, so their
    clients must come again (the LF clients reconnect by themselves)."""
    for socket in connections.sockets():
        if hasattr(socket, "carry_out"):
            await socket.close(CloseCode.SERVICE_RESTART, "the relay lost track of this connection")


def _client(url: str, timeout: float | None = None) -> Redis:
    # (No timeout for the subscription: it waits for messages; a PUBLISH must not wait long.)
    return Redis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        # RESP2: under RESP3 (redis-py 8's default) every pub/sub message goes through a push
        # handler that formats it whole for a debug line it then drops (redis-py issue 4230):
        # a quarter as many 1 KiB messages a second (bench/transport.py).
        protocol=2,
    )


link: Link | None = None
_started: asyncio.Future[None] | None = None


def active() -> Link | None:
    """This worker's link to the others, when there are others (``RELAY_REDIS_URL``) and it
    has started."""
    return link


async def start() -> None:
    """Start this worker's link if the relay has many workers. Idempotent and cheap after the
    first call: the servers call it as they start, the consumers before each socket (so that
    the relay served by any ASGI server links up)."""
    global _started
    if _started is None:
        settings = relay_settings()
        if not settings.redis_url:
            return
        _started = asyncio.ensure_future(_start(settings))
    if not _started.done():
        await asyncio.shield(_started)


async def _start(settings: RelaySettings) -> None:
    global link
    connections.loop = asyncio.get_running_loop()
    starting = Link(settings.redis_url, settings.redis_prefix, settings.worker_ttl)
    await starting.start()
    link = starting


async def stop() -> None:
    """Leave presence and stop the link (a worker shutting down)."""
    global link, _started
    if link is not None:
        current, link = link, None
        await current.stop()
    _started = None
