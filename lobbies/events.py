"""Delivering the relay's events (``lobbies.signals``) without ever holding up a socket.

:func:`emit` is called by the sockets in the event loop: it appends to a bounded queue and
returns. One task drains the queue and hands each batch to a worker thread, which sends the
signals with ``send_robust`` (a receiver that raises is logged; the others still run). Past
``RELAY_EVENT_QUEUE`` waiting events, new ones are dropped and counted. Called from any other
thread (an HTTP view), :func:`emit` sends at once, in that thread.

Long pipes are reported every ``RELAY_PIPE_REPORT_SECONDS`` (``pipe_traffic``) by the same task,
so a pipe open for hours still shows in the statistics as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from django.db.models.signals import post_save
from django.dispatch import Signal, receiver

from lobbies import signals
from lobbies.conf import relay_settings

logger = logging.getLogger(__name__)


class EventBus:
    """This process's queue of events and the task that delivers them."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Signal, dict[str, Any]]] = deque()
        self.wake: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.sending = 0  # events handed to the worker thread and not yet delivered
        # Called before each delivery round, in the loop: reports long pipes (lobbies.pipes).
        self.reporters: list[Callable[[], None]] = []
        self.last_report = time.monotonic()

    def emit(self, signal: Signal, **kwargs: Any) -> None:
        """Queue ``signal`` with ``kwargs`` (and ``at``, now) for delivery; never waits."""
        kwargs.setdefault("at", time.time())
        if not signal.has_listeners(EventBus):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:  # a view's thread, say: deliver here and now
            _send(signal, kwargs)
            return
        if len(self.queue) >= relay_settings().event_queue:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 10_000 == 0:
                logger.warning("%s relay events dropped: receivers are too slow", self.dropped)
            return
        self.queue.append((signal, kwargs))
        self._ensure_task(loop)
        assert self.wake is not None
        self.wake.set()

    def _ensure_task(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.task is None or self.task.done() or self.loop is not loop:
            self.loop = loop
            self.wake = asyncio.Event()
            self.task = loop.create_task(self._deliver(), name="relay-events")

    async def _deliver(self) -> None:
        assert self.wake is not None
        while True:
            interval = relay_settings().pipe_report_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), interval or None)
            self.wake.clear()
            if interval and time.monotonic() - self.last_report >= interval:
                self.last_report = time.monotonic()
                for report in list(self.reporters):
                    report()
            while self.queue:
                batch = list(self.queue)
                self.queue.clear()
                self.sending = len(batch)
                try:
                    await asyncio.to_thread(_send_all, batch)
                finally:
                    self.sending = 0

    async def drain(self) -> None:
        """Wait until every event emitted so far has been delivered (tests, shutdown)."""
        while self.queue or self.sending:  # noqa: ASYNC110 (a rare wait, for tests and shutdown)
            await asyncio.sleep(0.01)


def _send(signal: Signal, kwargs: dict[str, Any]) -> None:
    for listener, result in signal.send_robust(sender=EventBus, **kwargs):
        if isinstance(result, Exception):
            logger.error("receiver %r of a relay event failed", listener, exc_info=result)


def _send_all(batch: list[tuple[Signal, dict[str, Any]]]) -> None:
    for signal, kwargs in batch:
        _send(signal, kwargs)


bus = EventBus()
emit = bus.emit


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
