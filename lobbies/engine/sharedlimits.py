"""Rate limits counted in Redis, shared by every worker of the relay (with ``RELAY_REDIS_URL``).

With several workers behind a load balancer, a client's handshakes land on any of them, so a
per-address limit counted in each process would let through the limit times the number of
workers. Here the counters live in Redis, one per rate and key, through the ``limits``
library: its async API for the checks made in the event loop (handshakes, refusals), its sync
API for the one made in a database thread (lobby creations), both on the same keys.

Strategy: ``limits``' *sliding window counter*, chosen over its *moving window* because it
behaves like the token buckets of the in-process path (``lobbies.engine.ratelimits``) and costs
the same whatever the rate. ``N/period`` lets ``N`` through at once. Windows are a period
long, the first beginning at a key's first hit; the previous window's hits count in proportion
to how much of it is still within a period, so once the window of a burst has ended the budget
comes back gradually, about ``N`` per period, as a bucket refills (a bucket starts refilling at
once; here nothing comes back before the burst's window ends). A moving window instead keeps
one timestamp per hit (up to ``N`` per key: 200 per address at the default handshake rate) and
gives a whole burst back at once a period later.

Each check is one Lua script run (atomic: two workers cannot both take the last unit), and a
key is two small counters that Redis expires at most two periods after their window began:
nothing is kept for an address that went quiet.

Keys are ``<RELAY_REDIS_PREFIX>limits:{LIMITER/<rate>/<key>/<amount>/<multiples>/<unit>}`` (and
the same with ``/-1`` for the previous window).

Redis unreachable, slow or failing: a check never fails the handshake (or the lobby creation)
that asked. It lets the client through (fails open), logs a warning at most once per
:data:`WARNING_INTERVAL`, and for :data:`RETRY_AFTER` seconds does not ask Redis again, so that
a Redis that does not answer costs at most one :data:`REDIS_TIMEOUT` per that interval, not one
per handshake. Limits come back by themselves when Redis answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter as AsyncSlidingWindow
from limits.storage import RedisStorage
from limits.strategies import SlidingWindowCounterRateLimiter as SlidingWindow
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

logger = logging.getLogger(__name__)

# The longest a check waits for Redis before letting the client through: a handshake must
# not hang on a Redis that is slow or gone (redis-py's own default is 5 s).
REDIS_TIMEOUT = 0.5
# After a failure, checks let everything through without asking Redis for this long.
RETRY_AFTER = 1.0
# While Redis keeps failing, one warning per this many seconds.
WARNING_INTERVAL = 60.0


def storage_uri(url: str, *, asynchronous: bool) -> str:
    """``RELAY_REDIS_URL`` (``redis://``, ``rediss://``, ``unix://``) as the ``limits``
    storages name it: ``redis+unix://`` for a socket, and ``async+`` before the async one's."""
    if url.startswith("unix://"):
        url = "redis+" + url
    return f"async+{url}" if asynchronous else url


class RedisCounters:
    """This process's connections to the shared counters: an async client for the event
    loop, and a sync one (made when first needed) for threads. Every check fails open."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.key_prefix = f"{prefix}limits"
        # No retries: a check is cheap to let through, a retried one holds a handshake.
        options: dict[str, Any] = {
            "socket_timeout": REDIS_TIMEOUT,
            "socket_connect_timeout": REDIS_TIMEOUT,
        }
        self.storage = AsyncRedisStorage(
            storage_uri(url, asynchronous=True),
            implementation="redispy",  # redis-py is installed already; coredis is not
            key_prefix=self.key_prefix,
            retry=AsyncRetry(NoBackoff(), 0),
            **options,
        )
        self.limiter = AsyncSlidingWindow(self.storage)
        self._options = options
        self._sync_limiter: SlidingWindow | None = None
        self.lock = threading.Lock()  # the sync side is used from several threads
        self.skip_until = 0.0  # monotonic: Redis failed lately, let everything through
        self.warned_at: float | None = None

    async def hit(self, item: RateLimitItem, *key: str) -> bool:
        """Take one unit of ``item``'s rate for ``key``, for every worker at once; True also
        when Redis cannot be asked (fail open)."""
        if self.skip_until and time.monotonic() < self.skip_until:
            return True
        try:
            return await self.limiter.hit(item, *key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return True

    def hit_blocking(self, item: RateLimitItem, *key: str) -> bool:
        """:meth:`hit` for a thread outside the event loop (it waits for Redis)."""
        if self.skip_until and time.monotonic() < self.skip_until:
            return True
        try:
            return self._sync().hit(item, *key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return True

    def _sync(self) -> SlidingWindow:
        with self.lock:
            if self._sync_limiter is None:
                storage = RedisStorage(
                    storage_uri(self.url, asynchronous=False),
                    key_prefix=self.key_prefix,
                    retry=Retry(NoBackoff(), 0),
                    **self._options,
                )
                self._sync_limiter = SlidingWindow(storage)
            return self._sync_limiter

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self.skip_until = now + RETRY_AFTER
        with self.lock:  # two threads failing at once still log once
            if self.warned_at is not None and now - self.warned_at < WARNING_INTERVAL:
                return
            self.warned_at = now
        logger.warning(
            "rate limits: Redis cannot be asked (%s); clients are let through unlimited "
            "until it answers (this is logged at most once a minute)",
            exc,
        )

    async def close(self) -> None:
        """Close the connections (tests; a process's own ones go with it)."""
        await self.storage.bridge.storage.aclose()
        if self._sync_limiter is not None:
            self._sync_limiter.storage.storage.close()


class SharedTable:
    """One rate's counters by key in Redis (``name`` tells the rates apart): what
    :class:`lobbies.engine.ratelimits.BucketTable` is for one process, for every worker."""

    def __init__(self, counters: RedisCounters, name: str, rate: str) -> None:
        self.counters = counters
        self.name = name
        self.item = parse(rate)

    def __len__(self) -> int:
        return 0  # nothing is kept in this process

    async def take(self, key: str) -> bool:
        """Take one unit for ``key`` if it has one left now (or Redis cannot be asked)."""
        return await self.counters.hit(self.item, self.name, key)

    def take_blocking(self, key: str) -> bool:
        """:meth:`take` for a thread outside the event loop."""
        return self.counters.hit_blocking(self.item, self.name, key)
