"""Delivering the relay's events (``lobbies.signals``) without ever holding up a socket.

:func:`emit` is called by the sockets in the event loop: it appends to a list and returns. The
list is handed to one thread every ``HAND_OVER_SECONDS``, which sends the events in order with
``send_robust`` (a receiver that raises is logged; the others still run). Waking that thread for
each event made the two threads take the GIL from each other at every event (setting up 1,000
pipes one after another cost the server about 5% more CPU that way). Past ``RELAY_EVENT_QUEUE``
waiting events, new ones are dropped and counted. Called outside an event loop (an HTTP view's
thread), :func:`emit` sends at once, in that thread.

Long pipes are reported every ``RELAY_PIPE_REPORT_SECONDS`` (``pipe_traffic``), so a pipe open
for hours still shows in the statistics as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from django.db.models.signals import post_save
from django.dispatch import Signal, receiver

from lobbies import signals
from lobbies.conf import relay_settings

logger = logging.getLogger(__name__)

# How long events emitted in the event loop wait before the delivery thread is woken for them.
HAND_OVER_SECONDS = 0.05

Event = tuple[Signal, dict[str, Any]]


class EventBus:
    """This process's queue of events and the thread that delivers them.

    A thread, not an asyncio task: delivery never shares the event loop, survives a loop being
    replaced (tests), and a receiver that blocks blocks only it.
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[list[Event] | None] = queue.SimpleQueue()
        # Emitted in the event loop, not yet handed over (a deque: hand_over may run elsewhere).
        self.pending: deque[Event] = deque()
        self.hand_over_timer: asyncio.TimerHandle | None = None
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()
        self.dropped = 0
        self.queued = self.delivered = 0  # counts: the difference is still to deliver
        # Called in the event loop every RELAY_PIPE_REPORT_SECONDS: reports long pipes.
        self.reporters: list[Callable[[], None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def emit(self, signal: Signal, **kwargs: Any) -> None:
        """Queue ``signal`` with ``kwargs`` (and ``at``, now) for delivery; never waits."""
        if not signal.has_listeners(EventBus):
            return
        kwargs.setdefault("at", time.time())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a view's thread, say: deliver here and now
            _send(signal, kwargs)
            return
        if self.queued - self.delivered >= relay_settings().event_queue:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 10_000 == 0:
                logger.warning("%s relay events dropped: receivers are too slow", self.dropped)
            return
        self.queued += 1
        self.pending.append((signal, kwargs))
        if self.loop is not loop or self.hand_over_timer is None:
            # (The first event, or a new loop: tests run one after another, and a timer of a
            # closed loop never fires.)
            self.loop = loop
            self.hand_over_timer = loop.call_later(HAND_OVER_SECONDS, self.hand_over)

    def hand_over(self) -> None:
        """Give the events emitted so far to the delivery thread, in one piece."""
        self.hand_over_timer = None
        batch = []
        with contextlib.suppress(IndexError):
            while True:
                batch.append(self.pending.popleft())
        if not batch:
            return
        self.queue.put(batch)
        if self.thread is None:
            self._start()

    def _start(self) -> None:
        with self.start_lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._deliver, name="relay-events")
                self.thread.daemon = True
                self.thread.start()

    def _deliver(self) -> None:
        last_report = time.monotonic()
        while True:
            interval = relay_settings().pipe_report_seconds
            try:
                item = self.queue.get(timeout=interval or None)
            except queue.Empty:
                item = None
            if interval and time.monotonic() - last_report >= interval:
                last_report = time.monotonic()
                self._report()
            for event in item or ():
                try:
                    _send(*event)
                finally:
                    self.delivered += 1

    def _report(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        for report in list(self.reporters):
            # The sockets live in the loop: their counters are read there.
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(report)

    async def drain(self) -> None:
        """Wait until every event emitted so far has been delivered (tests, shutdown)."""
        if self.hand_over_timer is not None:
            self.hand_over_timer.cancel()
        self.hand_over()
        while self.delivered < self.queued:  # noqa: ASYNC110 (tests and shutdown)
            await asyncio.sleep(0.01)


def _send(signal: Signal, kwargs: dict[str, Any]) -> None:
    for listener, result in signal.send_robust(sender=EventBus, **kwargs):
        if isinstance(result, Exception):
            logger.error("receiver %r of a relay event failed", listener, exc_info=result)


def shutdown() -> None:
    """The server has stopped: wait (a little) for the queued events to be delivered, then send
    ``relay_stopping`` so that plugins write what they hold. Blocking; called once per process
    by ``lobbies.engine.servers``."""
    bus.hand_over()
    deadline = time.monotonic() + 10
    while bus.delivered < bus.queued and time.monotonic() < deadline:
        time.sleep(0.01)
    _send(signals.relay_stopping, {"at": time.time()})


bus = EventBus()
emit = bus.emit


def wanted(signal: Signal) -> bool:
    """Whether :func:`emit` would send ``signal`` anywhere: a value that costs a question to
    compute for an event (one to presence, say) is computed only then."""
    return signal.has_listeners(EventBus)


@receiver(post_save, sender="lobbies.Lobby")
def _lobby_saved(sender: type, instance: Any, created: bool, **kwargs: Any) -> None:
    # However a lobby is made (a Join, the API, the pages, the admin), plugins hear of it.
    if created:
        emit(
            signals.lobby_created,
            document_id=instance.document_id,
            owner_id=instance.owner_id,
            game=instance.game or None,
        )
