"""Abuse limits: how fast one address may open sockets, how many it may hold, how fast one socket
may Join and cause Introductions, and how a client that loops on a refusal is slowed down.

Rates are counted by the ``limits`` library (moving windows, in this process's memory; its
storages also keep counters in Redis, for when several workers serve one relay). Each rate is a
setting in its notation (``"20/second"``, ``"600/minute"``); an empty value turns that limit off.

The memory storage is the library's synchronous one: it does no I/O, so a check never suspends
the socket being judged (its asyncio twin expires entries through thread hops under per-key
locks, which would). The methods are coroutines all the same, for a Redis storage later.

The published LF clients reconnect about 10 ms after any close, so a refused client comes
straight back, and two clients sharing one peer id replace each other in a loop. The relay does
not refuse such a loop faster than it can be repeated: past ``RELAY_REFUSAL_RATE`` refusals from
one address (or replacements of one peer id), each further answer waits
``RELAY_REFUSAL_DELAY`` seconds, so the loop costs the relay a small bounded rate.
"""

from __future__ import annotations

from collections import Counter
from functools import cache

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from lobbies.conf import RelaySettings, relay_settings


def parse_rate(text: str) -> RateLimitItem | None:
    """A rate setting as the ``limits`` library reads it; None when it is empty (no limit).
    Raises ``ValueError`` for text it cannot read."""
    return parse(text) if text.strip() else None


class RateLimits:
    """This process's counters, one instance per process (:func:`get_rate_limits`)."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.handshake_rate = parse_rate(settings.handshake_rate)
        self.join_rate = parse_rate(settings.join_rate)
        self.introduction_rate = parse_rate(settings.introduction_rate)
        self.refusal_rate = parse_rate(settings.refusal_rate)
        # Sockets open per address right now: a count, not a rate, so kept here.
        self.open_per_address: Counter[str] = Counter()

    async def _hit(self, rate: RateLimitItem | None, *key: str, cost: int = 1) -> bool:
        return rate is None or self.limiter.hit(rate, *key, cost=cost)

    def connect(self, address: str) -> bool:
        """Count one more socket of ``address``, unless it holds its maximum already."""
        limit = self.settings.max_connections_per_address
        if limit and self.open_per_address[address] >= limit:
            return False
        self.open_per_address[address] += 1
        return True

    def disconnect(self, address: str) -> None:
        """A socket counted by :meth:`connect` has closed."""
        self.open_per_address[address] -= 1
        if self.open_per_address[address] <= 0:
            del self.open_per_address[address]

    async def handshake(self, address: str) -> bool:
        """Whether ``address`` may open another socket now (``RELAY_HANDSHAKE_RATE``)."""
        return await self._hit(self.handshake_rate, "handshake", address)

    async def join(self, connection: str) -> bool:
        """Whether this control socket may Join again now (``RELAY_JOIN_RATE``)."""
        return await self._hit(self.join_rate, "join", connection)

    async def introductions(self, connection: str, count: int) -> bool:
        """Whether this control socket's Join may cause ``count`` more Introductions now
        (``RELAY_INTRODUCTION_RATE``: a Join repeated over popular ids is an amplifier)."""
        if count == 0:
            return True
        return await self._hit(self.introduction_rate, "introductions", connection, cost=count)

    async def refusal_delay(self, *key: str) -> float:
        """How long to wait before answering a refusal (or a replacement) of ``key``: nothing
        while it is under ``RELAY_REFUSAL_RATE``, ``RELAY_REFUSAL_DELAY`` past it."""
        if await self._hit(self.refusal_rate, "refusal", *key):
            return 0.0
        return self.settings.refusal_delay


@cache
def get_rate_limits() -> RateLimits:
    """This process's counters, built once from the relay's settings (again after a test
    changes them)."""
    return RateLimits(relay_settings())
