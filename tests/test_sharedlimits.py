"""Rate limits shared by workers through Redis (``RELAY_REDIS_URL``): two ``RateLimits`` (one
per worker process, as each worker builds its own) spend one budget per address and per
account; the keys expire; a Redis that cannot be asked lets clients through, with one warning.

Against the real local Redis, each test under a key prefix of its own, deleted afterwards."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis
from channels.testing import WebsocketCommunicator

from lobbies.conf import relay_settings
from lobbies.engine.ratelimits import RateLimits, get_rate_limits
from relayproject.asgi import application
from tests.sockets import closed_with, stays_open

REDIS_URL = "redis://127.0.0.1:6379/0"
NOBODY_LISTENS = "redis://127.0.0.1:1/0"  # connection refused at once


@pytest.fixture
def shared(settings) -> Iterator[str]:
    """Rate limits counted in the local Redis under a prefix of this test's own (returned);
    its keys deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex}:"
    settings.RELAY_REDIS_URL = REDIS_URL
    settings.RELAY_REDIS_PREFIX = prefix
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def worker(shared) -> AsyncIterator[Callable[[], RateLimits]]:
    """Makes one worker's counters from the settings of the moment, as each worker process
    builds its own; their connections closed afterwards."""
    made: list[RateLimits] = []

    def make() -> RateLimits:
        made.append(RateLimits(relay_settings()))
        return made[-1]

    yield make
    for rates in made:
        await rates.close()


async def test_two_workers_share_one_address_handshake_budget(settings, worker):
    settings.RELAY_HANDSHAKE_RATE = "3/minute"
    settings.RELAY_REFUSAL_RATE = "1/minute"
    one, two = worker(), worker()
    address = "192.0.2.7"
    spent = [await one.handshake(address), await two.handshake(address)]
    spent += [await one.handshake(address), await two.handshake(address)]
    assert spent == [True, True, True, False]
    assert not await one.handshake(address)
    assert await two.handshake("192.0.2.8")  # another address has its own budget
    # An IPv6 /64 is one address, whichever worker its addresses reach.
    in_one_64 = [f"2001:db8:0:1::{i}" for i in range(1, 5)]
    workers = (one, two, one, two)
    spent = [await rates.handshake(a) for rates, a in zip(workers, in_one_64, strict=True)]
    assert spent == [True, True, True, False]
    # A client refused in a loop is slowed down on every worker alike ...
    assert await one.refusal_delay("address", address) == 0
    assert await two.refusal_delay("address", address) == relay_settings().refusal_delay
    # ... and so are two clients replacing each other's peer id across workers.
    assert await two.refusal_delay("peer", "shared-id") == 0
    assert await one.refusal_delay("peer", "shared-id") == relay_settings().refusal_delay
    assert one.entries() == two.entries() == 0  # nothing of it kept in the processes


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_presence")
async def test_a_handshake_is_refused_once_other_workers_spent_the_budget(settings, worker):
    settings.RELAY_HANDSHAKE_RATE = "3/minute"
    other_worker = worker()
    try:
        assert await other_worker.handshake("198.51.100.9")
        assert await other_worker.handshake("198.51.100.9")
        here = await _opened("/introduction/p1", "198.51.100.9")  # the third: allowed
        assert await stays_open(here)
        assert await closed_with(await _opened("/introduction/p2", "198.51.100.9")) == 4429
        elsewhere = await _opened("/introduction/p3", "198.51.100.10")
        assert await stays_open(elsewhere)
        for socket in (here, elsewhere):
            await socket.disconnect()
    finally:
        await get_rate_limits().close()  # this process's, which served the sockets


def test_lobby_creations_are_counted_across_workers(settings, worker):
    settings.RELAY_LOBBY_CREATION_RATE = "2/hour"
    one, two = worker(), worker()  # (asked from the database's threads: blocking calls)
    # Per address, anonymous:
    assert one.lobby_creation("", "203.0.113.1")
    assert two.lobby_creation("", "203.0.113.1")
    assert not one.lobby_creation("", "203.0.113.1")
    assert not two.lobby_creation("", "203.0.113.1")
    # Per account, from fresh addresses on either worker:
    assert one.lobby_creation("user 7", "203.0.113.2")
    assert two.lobby_creation("user 7", "203.0.113.3")
    assert not one.lobby_creation("user 7", "203.0.113.4")
    assert two.lobby_creation("user 8", "203.0.113.5")  # another user's own budget


async def test_the_counters_are_keys_under_the_prefix_that_expire(settings, shared, worker):
    settings.RELAY_HANDSHAKE_RATE = "3/minute"
    one, two = worker(), worker()
    await one.handshake("192.0.2.1")
    await two.handshake("192.0.2.2")
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{shared}*"))
    ttls = [client.pttl(key) for key in keys]
    client.close()
    assert len(keys) == 2 and all(key.startswith(f"{shared}limits:".encode()) for key in keys)
    assert all(0 < ttl <= 2 * 60_000 for ttl in ttls), ttls  # two windows at most


async def test_an_unreachable_redis_lets_clients_through_with_one_warning(settings, caplog):
    settings.RELAY_REDIS_URL = NOBODY_LISTENS
    settings.RELAY_HANDSHAKE_RATE = "1/minute"
    settings.RELAY_REFUSAL_RATE = "1/minute"
    settings.RELAY_LOBBY_CREATION_RATE = "1/hour"
    rates = RateLimits(relay_settings())
    caplog.set_level(logging.WARNING, logger="lobbies.engine.sharedlimits")
    try:
        assert all([await rates.handshake("192.0.2.1") for _ in range(5)])
        assert [await rates.refusal_delay("address", "192.0.2.1") for _ in range(3)] == [0] * 3
        assert all(rates.lobby_creation("user 1", "192.0.2.1") for _ in range(3))
        rates.shared.skip_until = 0  # asked again now, as it will be a moment later
        assert await rates.handshake("192.0.2.1")
        assert rates.lobby_creation("user 1", "192.0.2.1")
    finally:
        await rates.close()
    warnings = [r for r in caplog.records if r.name == "lobbies.engine.sharedlimits"]
    assert len(warnings) == 1 and "Redis cannot be asked" in warnings[0].getMessage()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fresh_presence")
async def test_a_handshake_survives_an_unreachable_redis(settings):
    settings.RELAY_REDIS_URL = NOBODY_LISTENS
    settings.RELAY_HANDSHAKE_RATE = "1/minute"
    try:
        sockets = [await _opened(f"/introduction/p{i}", "192.0.2.1") for i in range(3)]
        for socket in sockets:
            assert await stays_open(socket)
            await socket.disconnect()
    finally:
        await get_rate_limits().close()


async def _opened(path: str, address: str) -> WebsocketCommunicator:
    """A socket on ``path`` from ``address``, accepted by the relay (it may close it next)."""
    socket = WebsocketCommunicator(application, path)
    socket.scope["raw_path"] = path.encode()
    socket.scope["client"] = (address, 4000)
    assert (await socket.connect())[0]
    return socket
