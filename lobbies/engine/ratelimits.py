"""Abuse limits: how fast one address may open sockets, how many it may hold, how fast one socket
may Join (and Leave) and cause Introductions, and how a client that loops on a refusal is slowed
down.

Every rate is a token bucket: ``N/period`` lets ``N`` through at once, then refills at ``N`` per
period. Each rate is a setting in the notation of the ``limits`` library (``"20/second"``,
``"600/minute"``), which reads it; an empty value turns that limit off.

What the counters cost follows what is live, never what was ever seen:

- A socket's own limits (Joins and Leaves, Introductions) are :class:`TokenBucket` objects kept
  on the socket, made at its first Join, gone with it.
- An address's limits (handshakes, refusals; replacements of a peer id; lobby creations, also
  per account) are kept in a :class:`BucketTable`, which forgets a key as soon as its bucket
  has filled up again (it then says exactly what a new one would), checked once per period, and
  never holds more than :data:`MAX_KEYS` keys.

With ``RELAY_REDIS_URL`` set, those shared limits are counted in Redis instead, by every worker
together (``lobbies.engine.sharedlimits``: keys that expire, and a check that fails open, with
a warning, when Redis cannot be asked), so a client spreading its handshakes over the workers
gets one budget, not one per worker. What stays in each process even then:

- A socket's own buckets: a socket lives on one worker, so there is nothing to share.
- The count of sockets open per address (``RELAY_MAX_CONNECTIONS_PER_ADDRESS``) is per worker:
  it is a count of what is live, not a rate, and a count in Redis would be left too high by
  every worker that dies without saying goodbye (SIGKILL, a crash) with nothing to expire it
  by; it is also asked on every connect and disconnect. Behind a load balancer one address can
  so hold up to that many sockets on each worker.

An IPv6 client usually holds a whole /64, so addresses are counted by :func:`address_key`: an
IPv6 address by its /64, an IPv4 address (also one written IPv4-mapped) by itself.

The published LF clients reconnect about 10 ms after any close, so a refused client comes
straight back, and two clients sharing one peer id replace each other in a loop. The relay does
not refuse such a loop faster than it can be repeated: past ``RELAY_REFUSAL_RATE`` refusals from
one address (or replacements of one peer id), each further answer waits
``RELAY_REFUSAL_DELAY`` seconds, so the loop costs the relay a small bounded rate.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import islice

from limits import parse

from lobbies import metrics
from lobbies.conf import RelaySettings, relay_settings
from lobbies.engine.sharedlimits import RedisCounters, SharedTable

# Keys one table may hold at once: past it, the oldest are forgotten (a key hit in every period
# by that many addresses at once is a botnet, which no per-address count would stop anyway).
MAX_KEYS = 100_000

# The longest a Join's Introductions may be spread over (RELAY_INTRODUCTION_RATE): a Join that
# would need longer is refused, so what one socket can leave waiting stays bounded.
MAX_SPREAD_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate setting: ``burst`` at once, refilled at ``per_second``."""

    burst: int
    per_second: float

    @property
    def period(self) -> float:
        """Seconds an empty bucket takes to fill up again."""
        return self.burst / self.per_second


def parse_rate(text: str) -> Rate | None:
    """A rate setting as the ``limits`` library reads it; None when it is empty (no limit).
    Raises ``ValueError`` for text it cannot read."""
    if not text.strip():
        return None
    item = parse(text)
    return Rate(item.amount, item.amount / item.get_expiry())


class TokenBucket:
    """What one key may still do now: ``tokens`` of its rate's burst, counted at ``stamp``.
    Small (two numbers), so that one per live socket costs next to nothing."""

    __slots__ = ("stamp", "tokens")

    def __init__(self, rate: Rate, now: float | None = None) -> None:
        self.tokens = float(rate.burst)
        self.stamp = time.monotonic() if now is None else now

    def _refill(self, rate: Rate, now: float) -> float:
        self.tokens = min(rate.burst, self.tokens + (now - self.stamp) * rate.per_second)
        self.stamp = now
        return self.tokens

    def take(self, rate: Rate, cost: int = 1, now: float | None = None) -> bool:
        """Spend ``cost`` tokens if there are that many now."""
        if self._refill(rate, time.monotonic() if now is None else now) < cost:
            return False
        self.tokens -= cost
        return True

    def available(self, rate: Rate) -> int:
        """Whole tokens there are now."""
        return int(self._refill(rate, time.monotonic()))

    def wait(self, rate: Rate, cost: int) -> float:
        """Seconds until ``cost`` tokens will have come, spent as they come (all at once only
        when ``cost`` is within the burst)."""
        missing = cost - self._refill(rate, time.monotonic())
        return max(missing, 0.0) / rate.per_second

    def full(self, rate: Rate, now: float) -> bool:
        """Whether it has filled up again, so forgetting it changes nothing."""
        return self.tokens + (now - self.stamp) * rate.per_second >= rate.burst


class BucketTable:
    """Token buckets by key (an address, a peer id), each forgotten once it is full again: the
    table holds the keys hit within about the last period, never more than :data:`MAX_KEYS`."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.buckets: dict[str, TokenBucket] = {}
        self.next_prune = time.monotonic() + rate.period

    def __len__(self) -> int:
        return len(self.buckets)

    def take(self, key: str, cost: int = 1) -> bool:
        """Spend ``cost`` of ``key``'s tokens if it has that many now."""
        now = time.monotonic()
        if now >= self.next_prune:
            self.prune(now)
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_KEYS:
                self._make_room(now)
            bucket = self.buckets[key] = TokenBucket(self.rate, now)
        return bucket.take(self.rate, cost, now)

    def _make_room(self, now: float) -> None:
        self.prune(now)
        if len(self.buckets) >= MAX_KEYS:
            # The oldest tenth at once: one walk per many inserts, not one per insert.
            for key in list(islice(self.buckets, MAX_KEYS // 10)):
                del self.buckets[key]

    def prune(self, now: float) -> None:
        """Forget every key whose bucket is full at ``now``; the next prune is a period later
        (one walk per period, whatever the traffic)."""
        rate = self.rate
        for key in [k for k, bucket in self.buckets.items() if bucket.full(rate, now)]:
            del self.buckets[key]
        self.next_prune = now + rate.period


@lru_cache(maxsize=4096)  # parsing an address costs microseconds; a socket asks several times
def address_key(address: str) -> str:
    """What one client address is counted as: an IPv6 address by its /64 (one subscriber's
    usual share), an IPv4 address, also one written IPv4-mapped, by itself. Anything else (no
    address, a Unix socket) as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


Table = BucketTable | SharedTable


class RateLimits:
    """The per-address counters (this process's, or with ``RELAY_REDIS_URL`` every
    worker's) and the rates sockets count themselves with; one instance per process
    (:func:`get_rate_limits`)."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self.join_rate = parse_rate(settings.join_rate)
        self.introduction_rate = parse_rate(settings.introduction_rate)
        self.shared = (
            RedisCounters(settings.redis_url, settings.redis_prefix) if settings.redis_url else None
        )
        self.handshakes = self._table("handshake", settings.handshake_rate)
        self.refusals = self._table("refusal", settings.refusal_rate)
        self.creations = self._table("lobby_creation", settings.lobby_creation_rate)
        self.quick_joins = self._table("quick_join", settings.quick_join_rate)
        # Sockets open per address right now: a count, not a rate; a key goes at zero.
        self.open_per_address: Counter[str] = Counter()

    def _table(self, name: str, text: str) -> Table | None:
        rate = parse_rate(text)
        if rate is None:
            return None
        if self.shared is not None:
            return SharedTable(self.shared, name, text)
        return BucketTable(rate)

    async def close(self) -> None:
        """Close the connections to Redis, if any (tests)."""
        if self.shared is not None:
            await self.shared.close()

    def entries(self) -> int:
        """How many keys this process's counters hold: the addresses (and peer ids) seen
        lately (none of the ones counted in Redis)."""
        tables = (self.handshakes, self.refusals, self.creations, self.quick_joins)
        return len(self.open_per_address) + sum(len(t) for t in tables if t is not None)

    def connect(self, address: str) -> bool:
        """Count one more socket of ``address``, unless it holds its maximum already."""
        key = address_key(address)
        limit = self.settings.max_connections_per_address
        if limit and self.open_per_address[key] >= limit:
            return False
        self.open_per_address[key] += 1
        return True

    def disconnect(self, address: str) -> None:
        """A socket counted by :meth:`connect` has closed."""
        key = address_key(address)
        self.open_per_address[key] -= 1
        if self.open_per_address[key] <= 0:
            del self.open_per_address[key]

    async def handshake(self, address: str) -> bool:
        """Whether ``address`` may open another socket now (``RELAY_HANDSHAKE_RATE``)."""
        table = self.handshakes
        if table is None:
            return True
        if isinstance(table, BucketTable):
            return table.take(address_key(address))  # one process: no await, as cheap as ever
        return await table.take(address_key(address))

    def lobby_creation(self, account: str, address: str) -> bool:
        """Whether a Join may create one more lobby row now (``RELAY_LOBBY_CREATION_RATE``),
        counted for the client's address and, when signed in, for its user too (``account``),
        so that neither many addresses nor many accounts multiply it. Called in a thread
        (the database's), never in the event loop: with Redis, it waits for it."""
        if self._take_blocking(self.creations, account, address):
            return True
        metrics.limit_hit("lobby_creation_rate")
        return False

    def quick_join(self, account: str, address: str) -> bool:
        """Whether a client may ask quick join for a seat now (``RELAY_QUICK_JOIN_RATE``),
        counted as :meth:`lobby_creation` is (and, like it, in a thread)."""
        if self._take_blocking(self.quick_joins, account, address):
            return True
        metrics.limit_hit("quick_join_rate")
        return False

    @staticmethod
    def _take_blocking(table: Table | None, account: str, address: str) -> bool:
        if table is None:
            return True
        take = table.take if isinstance(table, BucketTable) else table.take_blocking
        if not take(f"address {address_key(address)}"):
            return False
        return not account or take(f"account {account}")

    async def refusal_delay(self, kind: str, key: str) -> float:
        """How long to wait before answering a refusal of an ``"address"`` (or a replacement
        of a ``"peer"`` id): nothing while it is under ``RELAY_REFUSAL_RATE``,
        ``RELAY_REFUSAL_DELAY`` past it."""
        table = self.refusals
        if table is None:
            return 0.0
        if kind == "address":
            key = address_key(key)
        if isinstance(table, BucketTable):
            allowed = table.take(f"{kind} {key}")
        else:
            allowed = await table.take(f"{kind} {key}")
        if allowed:
            return 0.0
        metrics.limit_hit("refusal_rate")
        return self.settings.refusal_delay


@cache
def get_rate_limits() -> RateLimits:
    """This process's counters, built once from the relay's settings (again after a test
    changes them)."""
    return RateLimits(relay_settings())
