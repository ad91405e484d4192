"""Abuse limits where they bite: sockets per address, handshakes per address, Joins and
Introductions per socket, and the slowed answer to a client that loops on a refusal."""

from __future__ import annotations

import asyncio
import json
import time

import msgpack
import pytest
from channels.testing import WebsocketCommunicator

from lobbies.conf import relay_settings
from lobbies.engine import orders
from lobbies.engine.orders import Action, Order
from lobbies.engine.peers import ControlSocket
from lobbies.engine.pipes import held_budget, held_cost
from lobbies.engine.presence import get_presence
from lobbies.engine.protocol import CloseCode
from lobbies.engine.ratelimits import RateLimits, address_key, get_rate_limits
from lobbies.policy import ANONYMOUS
from relayproject.asgi import application
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
    assert await rates.refusal_delay("address", "a") == 0
    assert await rates.refusal_delay("address", "a") == relay_settings().refusal_delay


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


async def test_introductions_caused_by_one_socket_are_spread_over_time(settings):
    """A Join repeated over a popular lobby makes the relay write to everyone in it: an
    amplifier. Past its budget, a socket's Introductions wait for the budget to refill; an
    operator's order does not wait for them."""
    settings.RELAY_INTRODUCTION_RATE = "8/minute"
    crowd = await _crowd(3, "popular")
    flooder = await opened("/introduction/flooder")
    await flooder.send_to(text_data=join("popular", ext=1))  # 3 meetings: 6 introductions
    assert (await received(flooder))["type"] == "Joined"
    for _ in range(3):
        assert (await received(flooder))["type"] == "Introduction"
    for socket in crowd:
        assert json.loads(await socket.receive_from())["userName"] == "flooder"
    await flooder.send_to(text_data=join("popular"))  # 6 more; 2 left in the budget
    assert (await received(flooder))["type"] == "Joined"  # joined at once
    assert (await received(flooder))["type"] == "Introduction"  # one meeting now
    told = [socket for socket in crowd if not await socket.receive_nothing(0.1)]
    assert len(told) == 1  # the other two later
    assert json.loads(await told[0].receive_from())["userName"] == "flooder"
    connection = (await get_presence().connections(["flooder"]))["flooder"]
    order = Order(Action.DISCONNECT, "banned", code=CloseCode.FORBIDDEN)
    assert await orders.deliver(connection, order)  # the spreading Join holds no lock
    assert await closed_with(flooder) == 4403
    await flooder.disconnect(timeout=3)
    for socket in crowd:
        assert await socket.receive_nothing(0.1)
        await socket.disconnect()


async def test_a_join_whose_introductions_would_take_too_long_is_refused(settings):
    crowd = await _crowd(3, "popular")
    settings.RELAY_INTRODUCTION_RATE = "2/minute"  # 3 meetings, 6 introductions: 2 minutes
    flooder = await opened("/introduction/flooder")
    await flooder.send_to(text_data=join("popular", ext=1))
    error = await received(flooder)
    assert (error["type"], error["code"]) == ("Error", "rate_limited")
    assert set(await get_presence().members("popular")) == {f"c{i}" for i in range(3)}  # undone
    for socket in (*crowd, flooder):
        assert await socket.receive_nothing(0.1)
        await socket.disconnect()


async def test_a_join_meeting_more_peers_than_the_budget_meets_them_all(settings):
    """3,000 meetings are 6,000 Introductions: three seconds of this budget. All are sent."""
    settings.RELAY_INTRODUCTION_RATE = "2000/second"
    presence, limits = get_presence(), relay_settings()
    heard: dict[str, list[dict]] = {}
    crowd = []
    for i in range(3000):  # in the lobby already (added directly: they would all meet)
        sent = heard[f"c{i}"] = []

        async def send(message: dict, sent: list[dict] = sent) -> None:
            sent.append(message)

        socket = ControlSocket(f"c{i}", ANONYMOUS, send, presence, limits)
        await socket.open()
        await presence.join(socket.peer_id, socket.connection, ("crowd",))
        crowd.append(socket)
    joiner = await opened("/introduction/joiner")
    await joiner.send_to(text_data=join("crowd", ext=1))
    assert (answer := await received(joiner))["type"] == "Joined", answer
    met = [(await received(joiner)) for _ in range(3000)]
    assert {m["userName"] for m in met} == set(heard)
    assert await joiner.receive_nothing(0.1)
    for _ in range(300):  # their writers run after the joiner's
        if all(heard.values()):
            break
        await asyncio.sleep(0.01)
    for sent in heard.values():
        assert [msgpack.unpackb(m["bytes"])["peerId"] for m in sent] == ["joiner"]
    await joiner.disconnect()
    for socket in crowd:
        await socket.close(None)


async def test_leaves_per_socket_are_bounded_like_joins(settings):
    settings.RELAY_JOIN_RATE = "3/minute"
    peer = await opened("/introduction/p")
    await peer.send_to(text_data=join("a", ext=1))
    assert (await received(peer))["type"] == "Joined"
    leave = json.dumps({"type": "Leave", "documentIds": ["a"]})
    await peer.send_to(text_data=leave)
    await peer.send_to(text_data=join("a"))
    assert (await received(peer))["type"] == "Joined"
    await peer.send_to(text_data=leave)  # the fourth change in a minute
    error = await received(peer)
    assert (error["type"], error["code"], error["documentId"]) == ("Error", "rate_limited", "a")
    assert set(await get_presence().members("a")) == {"p"}  # still in
    await peer.disconnect()


async def test_a_join_of_more_ids_than_the_limit_joins_the_first_and_refuses_the_rest(settings):
    settings.RELAY_MAX_IDS_PER_PEER = 2
    peer = await opened("/introduction/p")
    await peer.send_to(text_data=join("a", "b", "c", "d", ext=1))
    answers = [await received(peer) for _ in range(4)]
    assert sorted((m["type"], m["documentId"]) for m in answers) == [
        ("Error", "c"),
        ("Error", "d"),
        ("Joined", "a"),
        ("Joined", "b"),
    ]
    assert {m["code"] for m in answers if m["type"] == "Error"} == {"invalid"}
    assert set(await get_presence().members("c")) == set()
    await peer.send_to(text_data=join("e"))  # past the limit across Joins too
    error = await received(peer)
    assert (error["type"], error["code"], error["documentId"]) == ("Error", "invalid", "e")
    await peer.disconnect()


async def test_one_frame_cannot_ask_for_unbounded_answers(settings):
    settings.RELAY_MAX_IDS_PER_PEER = 2
    peer = await opened("/introduction/p")
    await peer.send_to(text_data=join(*(str(i) for i in range(1000)), ext=1))
    answers = [await received(peer) for _ in range(4)]  # two joined, two refused
    assert [m["type"] for m in answers].count("Error") == 2
    assert await peer.receive_nothing(0.2)
    await peer.disconnect()


def test_ipv6_addresses_are_counted_by_their_64():
    same = address_key("2001:db8:1:2::1")
    assert address_key("2001:db8:1:2:ffff:ffff:ffff:fffe") == same == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != same
    assert address_key("::ffff:192.0.2.7") == address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.8") != address_key("192.0.2.7")
    assert address_key("-") == "-"


async def test_one_64_shares_a_handshake_limit(settings):
    settings.RELAY_HANDSHAKE_RATE = "3/minute"
    rates = RateLimits(relay_settings())
    in_one_64 = [f"2001:db8:0:1::{i:x}" for i in range(1, 5)]
    assert [await rates.handshake(a) for a in in_one_64] == [True, True, True, False]
    assert await rates.handshake("2001:db8:0:2::1")  # another /64
    # Through real handshakes: three addresses of one /64, a fourth refused, another /64 not.
    first = [await _opened(f"/introduction/p{i}", f"2001:db8:0:1::{i}") for i in (1, 2, 3)]
    assert await closed_with(await _opened("/introduction/q", "2001:db8:0:1:ab::4")) == 4429
    other = await _opened("/introduction/r", "2001:db8:0:2::1")
    assert await stays_open(other)
    for socket in (*first, other):
        await socket.disconnect()


async def test_counters_hold_what_is_live_not_every_socket_ever_seen(settings):
    """10,000 sockets, each from its own address, each Joined: once they are gone and a
    window has passed, the counters hold nothing of them."""
    settings.RELAY_HANDSHAKE_RATE = "5/second"
    settings.RELAY_REFUSAL_RATE = "5/second"
    rates = get_rate_limits()
    for batch in range(100):
        sockets = []
        for i in range(batch * 100, batch * 100 + 100):
            address = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
            sockets.append(await _opened(f"/introduction/p{i}", address))
        for socket in sockets:
            await socket.send_to(text_data=join("doc", ext=1))
            assert (await received(socket))["type"] == "Joined"
        for socket in sockets:
            await socket.disconnect()
    refused = await opened("/introduction/bad%0Aid")  # one refusal counted too
    assert await closed_with(refused) == 4400
    assert len(rates.open_per_address) == 0
    assert 0 < len(rates.handshakes) <= 10_001 and len(rates.refusals) == 1
    later = time.monotonic() + 1  # a window later
    rates.handshakes.prune(later)
    rates.refusals.prune(later)
    assert rates.entries() == 0


async def test_one_address_cannot_hold_every_waiting_pipe(settings):
    settings.RELAY_MAX_HELD_PIPES = 4
    settings.RELAY_MAX_HELD_PIPES_PER_ADDRESS = 2
    peers = await _crowd(6, "doc")
    greedy = [await _opened(f"/connection/c{p}/c{q}/doc", "192.0.2.1") for p, q in ("01", "23")]
    assert await closed_with(await _opened("/connection/c4/c5/doc", "192.0.2.1")) == 4429
    other = await _opened("/connection/c4/c5/doc", "198.51.100.1")  # room for another address
    assert await other.receive_nothing()
    assert held_budget.pipes == 3
    for socket in (*greedy, other, *peers):
        await socket.disconnect()
    assert held_budget.pipes == 0 and not held_budget.pipes_of


async def test_one_address_cannot_fill_the_held_bytes(settings):
    frame = b"x" * 1000
    settings.RELAY_MAX_HELD_BYTES = 3 * held_cost(frame)
    settings.RELAY_MAX_HELD_BYTES_TOTAL = 10 * held_cost(frame)
    settings.RELAY_MAX_HELD_BYTES_PER_ADDRESS = 4 * held_cost(frame)
    peers = await _crowd(6, "doc")
    first = await _opened("/connection/c0/c1/doc", "2001:db8::1")
    second = await _opened("/connection/c2/c3/doc", "2001:db8::2")  # the same /64
    for _ in range(3):
        await first.send_to(bytes_data=frame)
    await second.send_to(bytes_data=frame)
    assert await second.receive_nothing()
    await second.send_to(bytes_data=frame)  # the /64's fifth: over its share
    assert await closed_with(second) == 4413
    other = await _opened("/connection/c4/c5/doc", "2001:db8:1::1")
    for _ in range(3):
        await other.send_to(bytes_data=frame)
    assert await other.receive_nothing()
    assert held_budget.bytes == 6 * held_cost(frame)
    for socket in (first, second, other, *peers):
        await socket.disconnect()
    assert held_budget.bytes == 0 and not held_budget.bytes_of


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


async def _crowd(size: int, document_id: str) -> list[WebsocketCommunicator]:
    """``size`` peers in ``document_id``, introduced to each other, with nothing left to read."""
    crowd = [await opened(f"/introduction/c{i}") for i in range(size)]
    for socket in crowd:
        await socket.send_to(text_data=join(document_id))
    for socket in crowd:
        while not await socket.receive_nothing(0.1):
            await socket.receive_output()
    return crowd


async def _opened(path: str, address: str) -> WebsocketCommunicator:
    """A socket on ``path`` from ``address``, accepted by the relay."""
    socket = WebsocketCommunicator(application, path)
    socket.scope["raw_path"] = path.encode()
    socket.scope["client"] = (address, 4000)
    assert (await socket.connect())[0]
    return socket
