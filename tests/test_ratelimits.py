"""Abuse limits where they bite: sockets per address, handshakes per address, Joins and
Introductions per socket, and the slowed answer to a client that loops on a refusal."""

from __future__ import annotations

import json
import time

import pytest

from lobbies.conf import relay_settings
from lobbies.engine.ratelimits import RateLimits
from tests.sockets import closed_with, join, opened, received, stays_open

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


async def test_the_counters_themselves(settings):
    settings.RELAY_MAX_CONNECTIONS_PER_ADDRESS = 2
    settings.RELAY_HANDSHAKE_RATE = "3/minute"
    settings.RELAY_REFUSAL_RATE = "1/minute"
    rates = RateLimits(relay_settings())
    assert rates.connect("a") and rates.connect("a") and not rates.connect("a")
    assert rates.connect("b")  # counted per address
    rates.disconnect("a")
    assert rates.connect("a")
    assert [await rates.handshake("a") for _ in range(4)] == [True, True, True, False]
    assert await rates.refusal_delay("a") == 0
    assert await rates.refusal_delay("a") == relay_settings().refusal_delay


async def test_empty_rates_are_no_limit(settings):
    settings.RELAY_MAX_CONNECTIONS_PER_ADDRESS = 0
    settings.RELAY_HANDSHAKE_RATE = ""
    rates = RateLimits(relay_settings())
    assert all([rates.connect("a") for _ in range(5000)])
    assert all([await rates.handshake("a") for _ in range(5000)])


async def test_sockets_per_address_are_bounded(settings):
    settings.RELAY_MAX_CONNECTIONS_PER_ADDRESS = 2
    first, second = await opened("/introduction/a"), await opened("/introduction/b")
    third = await opened("/introduction/c")
    assert await closed_with(third) == 4429
    await first.disconnect()
    again = await opened("/introduction/c")
    assert await stays_open(again)
    for socket in (second, again):
        await socket.disconnect()


async def test_handshakes_per_address_are_bounded(settings):
    settings.RELAY_HANDSHAKE_RATE = "3/minute"
    sockets = [await opened(f"/introduction/p{i}") for i in range(3)]
    assert await closed_with(await opened("/introduction/p3")) == 4429
    for socket in sockets:
        assert await stays_open(socket)
        await socket.disconnect()


async def test_joins_per_socket_are_bounded(settings):
    settings.RELAY_JOIN_RATE = "2/minute"
    peer = await opened("/introduction/p")
    other = await opened("/introduction/other")
    await other.send_to(text_data=join("c"))
    await peer.send_to(text_data=join("a", ext=1))
    await peer.send_to(text_data=join("b"))
    assert [(await received(peer))["documentId"] for _ in range(2)] == ["a", "b"]
    await peer.send_to(text_data=join("c"))
    error = await received(peer)
    assert (error["type"], error["code"], error["documentId"]) == ("Error", "rate_limited", "c")
    assert await stays_open(other)  # the Join was not applied: nobody met
    for socket in (peer, other):
        await socket.disconnect()


async def test_introductions_caused_by_one_socket_are_bounded(settings):
    """A Join repeated over a popular lobby makes the relay write to everyone in it: an
    amplifier. Each socket's Joins may cause only so many Introductions."""
    settings.RELAY_INTRODUCTION_RATE = "8/minute"
    crowd = [await opened(f"/introduction/c{i}") for i in range(3)]
    for socket in crowd:
        await socket.send_to(text_data=join("popular"))
    for socket in crowd:  # what they were told of each other
        while not await socket.receive_nothing(0.1):
            await socket.receive_output()
    flooder = await opened("/introduction/flooder")
    await flooder.send_to(text_data=join("popular", ext=1))  # 3 meetings: 6 introductions
    assert (await received(flooder))["type"] == "Joined"
    for _ in range(3):
        assert (await received(flooder))["type"] == "Introduction"
    await flooder.send_to(text_data=join("popular"))  # 6 more: over 8
    error = await received(flooder)
    assert (error["type"], error["code"]) == ("Error", "rate_limited")
    for socket in crowd:
        assert json.loads(await socket.receive_from())["userName"] == "flooder"  # the first
        assert await socket.receive_nothing(0.1)  # not the second
    for socket in (*crowd, flooder):
        await socket.disconnect()


async def test_a_client_refused_in_a_loop_is_answered_slower(settings):
    """The LF clients reconnect about 10 ms after a close: past RELAY_REFUSAL_RATE, each refusal
    waits RELAY_REFUSAL_DELAY, so the loop costs the relay a bounded rate."""
    settings.RELAY_REFUSAL_RATE = "2/minute"
    settings.RELAY_REFUSAL_DELAY = 0.5
    waited = []
    for _ in range(4):
        started = time.monotonic()
        assert await closed_with(await opened("/introduction/bad%0Aid")) == 4400
        waited.append(time.monotonic() - started)
    assert all(w >= 0.5 for w in waited[2:]), waited


async def test_two_clients_sharing_a_peer_id_replace_each_other_slower(settings):
    settings.RELAY_REFUSAL_RATE = "2/minute"
    settings.RELAY_REFUSAL_DELAY = 0.5
    current = await opened("/introduction/shared")
    waited = []
    for _ in range(4):
        started = time.monotonic()
        newer = await opened("/introduction/shared")
        assert await closed_with(current) == 4409
        waited.append(time.monotonic() - started)
        current = newer
    assert all(w >= 0.5 for w in waited[2:]), waited
    await current.disconnect()
