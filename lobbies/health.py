"""Is this worker alive, and ready for clients? What ``/healthz`` and ``/readyz`` answer
(``lobbies.operations`` serves them).

Alive is the process answering at all: nothing is asked of anyone. Ready is three questions,
each bounded by ``RELAY_READY_TIMEOUT``: the database answers ``SELECT 1``, Redis (when
``RELAY_REDIS_URL`` is set) answers ``PING``, and the worker is not draining (told to stop,
``lobbies.engine.servers.draining``). A probe never waits on another: however many arrive at
once, at most one database question and one Redis question are under way per worker, and every
probe meanwhile shares their answer (so a flood of probes costs the database nothing more, and
a database that hangs holds one thread, not one per probe).

Answers name what failed and how (the exception's class, or "timed out"), never its message:
``/readyz`` is open to whoever reaches the worker, and a driver's message may carry a host,
a port or a user name. The message goes to the log, once each time a check starts failing.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connection

from lobbies.conf import relay_settings
from lobbies.engine import servers

logger = logging.getLogger(__name__)

OK = "ok"

# One thread for the database question: Django's connections belong to a thread, and a
# database that hangs then holds this one thread only.
_database_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-readyz")


def _ask_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # No connection kept between probes: each probe checks that a new one can be made.
        connection.close()


class Check:
    """One readiness question, asked at most once at a time: probes that arrive while it is
    under way wait for the same answer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending: asyncio.Future[None] | None = None
        self.failing = False  # for one log line per failure, not one per probe

    async def ask(self, timeout: float) -> str:  # noqa: ASYNC109 (one bound, many awaits)
        """``"ok"``, or what went wrong (``"timed out"``, ``"unavailable (ExceptionClass)"``)."""
        loop = asyncio.get_running_loop()
        if self.pending is None or self.pending.done() or self.pending.get_loop() is not loop:
            self.pending = asyncio.ensure_future(self.question())
        try:
            await asyncio.wait_for(asyncio.shield(self.pending), timeout)
        except TimeoutError:
            return self._failed("timed out", f"no answer within {timeout:g} s")
        except Exception as exc:
            return self._failed(f"unavailable ({type(exc).__name__})", repr(exc))
        if self.failing:
            self.failing = False
            logger.warning("readyz: %s answers again", self.name)
        return OK

    def _failed(self, answer: str, detail: str) -> str:
        if not self.failing:
            self.failing = True
            logger.warning("readyz: %s is not ready: %s", self.name, detail)
        return answer

    async def question(self) -> None:
        raise NotImplementedError


class DatabaseCheck(Check):
    """The database answers ``SELECT 1`` on a new connection."""

    async def question(self) -> None:
        await asyncio.get_running_loop().run_in_executor(_database_thread, _ask_database)


class RedisCheck(Check):
    """Redis answers ``PING`` (one client per event loop, with the probe's timeouts)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.clients: dict[asyncio.AbstractEventLoop, Any] = {}

    async def question(self) -> None:
        import redis.asyncio as aioredis

        settings = relay_settings()
        loop = asyncio.get_running_loop()
        client = self.clients.get(loop)
        if client is None:
            for other in list(self.clients):  # a loop that has closed never asks again
                if other.is_closed():
                    self.clients.pop(other, None)
            client = self.clients[loop] = aioredis.Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=settings.ready_timeout,
                socket_timeout=settings.ready_timeout,
                max_connections=2,
            )
        await client.ping()


database = DatabaseCheck("the database")
redis = RedisCheck("Redis")


def alive() -> dict[str, Any]:
    """``/healthz``'s answer: the process runs its event loop, which is all it says."""
    return {"status": "alive"}


async def readiness() -> tuple[bool, dict[str, Any]]:
    """Whether this worker is ready for new clients, and ``/readyz``'s answer saying what is
    not: ``{"status": "ready" | "unready", "checks": {"database": "ok", "redis": "ok" | "not
    configured" | what failed, "draining": false}}``."""
    settings = relay_settings()
    timeout = settings.ready_timeout
    questions = [database.ask(timeout)]
    if settings.redis_url:
        questions.append(redis.ask(timeout))
    answers = await asyncio.gather(*questions)
    checks: dict[str, Any] = {"database": answers[0]}
    checks["redis"] = answers[1] if settings.redis_url else "not configured"
    checks["draining"] = servers.draining()
    ready = (
        checks["database"] == OK
        and checks["redis"] in (OK, "not configured")
        and not checks["draining"]
    )
    return ready, {"status": "ready" if ready else "unready", "checks": checks}
