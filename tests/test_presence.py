"""The presence interface, one suite for every backend (memory, and Redis at 127.0.0.1:6379).

Each Redis test works under a prefix of its own and deletes only its own keys: the Redis is
shared with other tests and relays.
"""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest
import redis.asyncio

from lobbies.engine.presence import (
    PeerIdTaken,
    PipeFacts,
    PipeKey,
    PipeKeyTaken,
    Stats,
    get_presence,
)
from lobbies.engine.presence.memory import MemoryPresence
from lobbies.engine.presence.redis import RedisPresence

REDIS_URL = "redis://127.0.0.1:6379/0"
BACKENDS = [MemoryPresence, RedisPresence]


def _build(backend: type, prefix: str):
    if backend is RedisPresence:
        return RedisPresence(REDIS_URL, prefix)
    return backend()


@pytest.fixture(params=BACKENDS, ids=lambda cls: cls.__name__)
async def presence(request):
    store = _build(request.param, f"test:{uuid4().hex}:")
    await store.flush()
    yield store
    await store.flush()
    await store.aclose()


@pytest.fixture
async def workers():
    """Two Redis backends under one prefix, as two worker processes share a Redis."""
    prefix = f"test:{uuid4().hex}:"
    first, second = RedisPresence(REDIS_URL, prefix), RedisPresence(REDIS_URL, prefix)
    yield first, second
    await first.flush()
    await first.aclose()
    await second.aclose()


async def test_join_returns_the_other_members_of_each_id(presence):
    await presence.connect_peer("a", "c1", "")
    await presence.connect_peer("b", "c2", "")
    assert await presence.join("a", "c1", ("x", "y")) == {"x": [], "y": []}
    assert await presence.join("b", "c2", ("x",)) == {"x": ["a"]}
    assert await presence.connections(["a", "b", "gone"]) == {"a": "c1", "b": "c2"}
    assert await presence.stats() == Stats(peers_online=2, lobbies_active=2, pipes_open=0)


async def test_leave_and_disconnect_forget_ids(presence):
    await presence.connect_peer("a", "c1", "")
    await presence.join("a", "c1", ("x", "y"))
    await presence.leave("a", "c1", ("x",))
    await presence.connect_peer("b", "c2", "")
    assert await presence.join("b", "c2", ("x", "y")) == {"x": [], "y": ["a"]}
    await presence.disconnect_peer("a", "c1")
    assert await presence.connections(["a"]) == {}
    assert (await presence.stats()).lobbies_active == 2  # b is still in x and y


async def test_a_replaced_connection_cannot_touch_the_new_one(presence):
    await presence.connect_peer("a", "old", "")
    await presence.join("a", "old", ("x",))
    assert await presence.connect_peer("a", "new", "") == "old"
    assert await presence.join("a", "old", ("y",)) == {}  # late frame of the old socket
    await presence.disconnect_peer("a", "old")
    assert await presence.connections(["a"]) == {"a": "new"}
    await presence.connect_peer("b", "c2", "")
    assert await presence.join("b", "c2", ("x", "y")) == {"x": [], "y": []}


async def test_hold_or_pair_has_exactly_one_winner(presence):
    key = PipeKey("a", "b", "doc")
    assert await presence.hold_or_pair(key, "ca") is None
    assert await presence.hold_or_pair(key.reciprocal(), "cb") == "ca"
    assert (await presence.stats()).pipes_open == 1
    # Taken: a second reciprocal request is held, not paired with the same end again.
    assert await presence.hold_or_pair(key.reciprocal(), "cb2") is None
    await presence.pipe_closed(key)
    assert (await presence.stats()).pipes_open == 0


async def test_a_repeated_request_cannot_displace_the_held_one(presence):
    key = PipeKey("a", "b", "doc")
    await presence.hold_or_pair(key, "c1")
    with pytest.raises(PipeKeyTaken):
        await presence.hold_or_pair(key, "c2")
    assert await presence.hold_or_pair(key.reciprocal(), "cb") == "c1"


async def test_release_only_drops_the_holder_itself(presence):
    key = PipeKey("a", "b", "doc")
    await presence.hold_or_pair(key, "c1")
    await presence.release(key, "c2")  # not the account: nothing happens
    assert await presence.hold_or_pair(key.reciprocal(), "cb") == "c1"


async def test_a_users_peer_id_is_theirs_while_online(presence):
    await presence.connect_peer("a", "c1", "user:1")
    for other in ("user:2", ""):
        with pytest.raises(PeerIdTaken):
            await presence.connect_peer("a", "c2", other)
    assert await presence.connect_peer("a", "c3", "user:1") == "c1"  # the same user replaces
    await presence.disconnect_peer("a", "c3")
    assert await presence.connect_peer("a", "c4", "user:2") is None  # offline: free again


async def test_an_anonymous_peer_id_is_taken_over_by_whoever_comes(presence):
    await presence.connect_peer("a", "c1", "")
    assert await presence.connect_peer("a", "c2", "user:1") == "c1"


async def test_pipe_facts_say_who_holds_the_seeker_and_whether_the_two_met(presence):
    key = PipeKey("a", "b", "doc")
    assert await presence.pipe_facts(key) == PipeFacts(None, False)
    await presence.connect_peer("a", "ca", "user:1")
    await presence.connect_peer("b", "cb", "")
    await presence.join("a", "ca", ("doc",))
    assert await presence.pipe_facts(key) == PipeFacts("user:1", False)  # b is not in doc
    await presence.join("b", "cb", ("doc",))
    assert await presence.pipe_facts(key) == PipeFacts("user:1", True)
    assert await presence.pipe_facts(key.reciprocal()) == PipeFacts("", True)
    await presence.leave("b", "cb", ("doc",))
    assert await presence.pipe_facts(key) == PipeFacts("user:1", False)


async def test_in_a_host_lobby_only_pipes_with_the_host_were_introduced(presence):
    for peer in ("m1", "h", "m2"):
        await presence.connect_peer(peer, f"c-{peer}", "")
        await presence.join(peer, f"c-{peer}", ("game",))
    assert await presence.claim_host("game", None) is None  # a member: marks it a host lobby
    assert await presence.hosts(["game", "other"]) == {"game": None}
    assert not (await presence.pipe_facts(PipeKey("m1", "m2", "game"))).introduced
    assert await presence.claim_host("game", "h") == "h"
    assert await presence.claim_host("game", "m2") == "h"  # one host at a time
    assert (await presence.pipe_facts(PipeKey("m1", "h", "game"))).introduced
    assert not (await presence.pipe_facts(PipeKey("m1", "m2", "game"))).introduced


async def test_the_host_role_passes_to_the_member_present_longest(presence):
    for peer in ("h", "m1", "m2"):
        await presence.connect_peer(peer, f"c-{peer}", "")
        await presence.join(peer, f"c-{peer}", ("game",))
    await presence.claim_host("game", "h")
    await presence.join("m2", "c-m2", ("game",))  # joining again keeps its place
    assert await presence.members("game") == ["h", "m1", "m2"]
    assert await presence.drop_host("game", "h", successor=True) == "m1"
    assert await presence.hosts(["game"]) == {"game": "m1"}
    assert await presence.drop_host("game", "m1", successor=False) is None
    assert await presence.hosts(["game"]) == {"game": None}


async def test_the_roster_says_who_is_in_a_lobby_since_when_and_who_hosts(presence):
    await presence.connect_peer("a", "ca", "user:7")
    await presence.join("a", "ca", ("lobby",), "Ann")
    await presence.connect_peer("b", "cb", "")
    await presence.join("b", "cb", ("lobby", "other"))
    await presence.claim_host("lobby", "a")
    roster = await presence.roster("lobby")
    assert [(m.peer_id, m.account, m.nickname, m.host) for m in roster] == [
        ("a", "user:7", "Ann", True),
        ("b", "", None, False),
    ]
    assert roster[0].since <= roster[1].since
    # Joining again keeps the first arrival's time (and its place).
    await presence.join("a", "ca", ("lobby",), "Annie")
    again = await presence.roster("lobby")
    assert [m.peer_id for m in again] == ["a", "b"]
    assert (again[0].since, again[0].nickname) == (roster[0].since, "Annie")
    assert await presence.counts(["lobby", "other", "empty"]) == {
        "lobby": 2,
        "other": 1,
        "empty": 0,
    }
    await presence.disconnect_peer("a", "ca")
    assert [m.peer_id for m in await presence.roster("lobby")] == ["b"]


async def test_open_pipes_are_listed_by_lobby_until_they_close(presence):
    first, second = PipeKey("b", "a", "doc"), PipeKey("a", "c", "doc")
    for key in (first, second):
        await presence.hold_or_pair(key, "held")
        await presence.hold_or_pair(key.reciprocal(), "pairing")
    assert [p.peers for p in await presence.pipes("doc")] == [("a", "b"), ("a", "c")]
    await presence.pipe_closed(first.reciprocal())  # either end's key names the pipe
    assert [p.peers for p in await presence.pipes("doc")] == [("a", "c")]
    await presence.pipe_closed(second)
    assert await presence.pipes("doc") == []


async def test_held_by_finds_a_users_peers_and_never_the_anonymous(presence):
    await presence.connect_peer("a", "ca", "user:7")
    await presence.connect_peer("b", "cb", "user:7")
    await presence.connect_peer("c", "cc", "")
    assert await presence.peers_of("user:7") == {"a": "ca", "b": "cb"}
    assert await presence.peers_of("") == {}


async def test_reciprocal_requests_racing_pair_exactly_once(presence):
    # 400 calls at once: more than a Redis backend has connections, so some wait for one.
    keys = [PipeKey("a", "b", f"doc{n}") for n in range(200)]
    outcomes = await asyncio.gather(
        *(presence.hold_or_pair(key, f"ca{n}") for n, key in enumerate(keys)),
        *(presence.hold_or_pair(key.reciprocal(), f"cb{n}") for n, key in enumerate(keys)),
    )
    for n in range(200):
        # Either a's request is held and b's pairs with it, or the other way round.
        assert (outcomes[n], outcomes[200 + n]) in ((None, f"ca{n}"), (f"cb{n}", None))
    assert (await presence.stats()).pipes_open == 200


async def test_sockets_racing_for_a_users_peer_id_have_one_winner(presence):
    outcomes = await asyncio.gather(
        *(presence.connect_peer("a", f"c{n}", f"user:{n}") for n in range(20)),
        return_exceptions=True,
    )
    winners = [n for n, outcome in enumerate(outcomes) if not isinstance(outcome, Exception)]
    assert len(winners) == 1
    assert outcomes[winners[0]] is None  # nobody held it before
    assert all(isinstance(o, PeerIdTaken) for n, o in enumerate(outcomes) if n != winners[0])
    assert await presence.connections(["a"]) == {"a": f"c{winners[0]}"}


async def test_sockets_racing_for_an_anonymous_peer_id_replace_one_another_in_turn(presence):
    sockets = [f"c{n}" for n in range(20)]
    replaced = await asyncio.gather(*(presence.connect_peer("a", c, "") for c in sockets))
    # A chain: the first replaced nobody, each later one replaced exactly one other, and the one
    # that holds the id now was replaced by nobody.
    assert replaced.count(None) == 1
    assert len(set(replaced)) == len(sockets)
    (holder,) = set(sockets) - set(replaced)
    assert await presence.connections(["a"]) == {"a": holder}
    assert (await presence.stats()).peers_online == 1


# -- quick join: capacity, seats and leases ------------------------------------------------------


async def test_a_join_with_a_capacity_is_refused_when_the_lobby_has_no_room(presence):
    for n in range(3):
        await presence.connect_peer(f"p{n}", f"c{n}", "")
    assert await presence.join("p0", "c0", ("x", "y"), capacities={"x": 2}) == {"x": [], "y": []}
    assert await presence.join("p1", "c1", ("x",), capacities={"x": 2}) == {"x": ["p0"]}
    # Full: left out of the answer and not joined; the uncapped id beside it is joined.
    assert await presence.join("p2", "c2", ("x", "y"), capacities={"x": 2}) == {"y": ["p0"]}
    assert await presence.members("x") == ["p0", "p1"]
    # A member joining again is in already: it takes no second place.
    assert await presence.join("p1", "c1", ("x",), capacities={"x": 2}) == {"x": ["p0"]}


async def test_joins_racing_for_the_last_places_never_pass_the_capacity(presence):
    for n in range(20):
        await presence.connect_peer(f"p{n}", f"c{n}", "")
    answers = await asyncio.gather(
        *(presence.join(f"p{n}", f"c{n}", ("x",), capacities={"x": 4}) for n in range(20))
    )
    assert sum(1 for answer in answers if "x" in answer) == 4
    assert len(await presence.members("x")) == 4


async def test_a_seat_keeps_a_place_for_its_peer_until_it_joins(presence):
    for n in range(3):
        await presence.connect_peer(f"p{n}", f"c{n}", "")
    assert await presence.reserve("x", "p0", 2, 30)
    assert await presence.reserve("x", "p0", 2, 30)  # asking again keeps the one seat
    assert await presence.reserve("x", "p1", 2, 30)
    assert not await presence.reserve("x", "p2", 2, 30)  # two seats held: no room
    assert await presence.join("p2", "c2", ("x",), capacities={"x": 2}) == {}
    # The seat's own peer joins into it, and the seat is used up: one place left for p1.
    assert await presence.join("p0", "c0", ("x",), capacities={"x": 2}) == {"x": []}
    assert not await presence.reserve("x", "p2", 2, 30)
    assert await presence.join("p1", "c1", ("x",), capacities={"x": 2}) == {"x": ["p0"]}
    assert await presence.reserve("x", "p1", 2, 30)  # in already
    await presence.leave("p0", "c0", ("x",))
    assert await presence.reserve("x", "p2", 2, 30)  # p0's place is free again, not its seat


async def test_a_seat_expires_after_its_ttl(presence):
    await presence.connect_peer("p1", "c1", "")
    assert await presence.reserve("x", "p0", 1, 0.05)
    assert not await presence.reserve("x", "p1", 1, 30)
    await asyncio.sleep(0.1)
    assert await presence.reserve("x", "p1", 1, 30)


async def test_seats_racing_for_a_lobby_never_pass_its_capacity(presence):
    outcomes = await asyncio.gather(*(presence.reserve("x", f"p{n}", 4, 30) for n in range(20)))
    assert outcomes.count(True) == 4


async def test_a_lease_has_one_holder_until_given_back_or_expired(presence):
    tokens = await asyncio.gather(*(presence.lease("pool", 30) for _ in range(10)))
    held = [token for token in tokens if token is not None]
    assert len(held) == 1
    await presence.unlease("pool", "not-the-token")  # a stale holder gives back nothing
    assert await presence.lease("pool", 30) is None
    await presence.unlease("pool", held[0])
    short = await presence.lease("pool", 0.05)
    assert short is not None
    await asyncio.sleep(0.1)
    assert await presence.lease("pool", 30) is not None


# -- workers (Redis only: one process alone has no other worker to forget) ----------------------


async def test_a_worker_that_stops_announcing_is_absent_at_once_and_reaped_later(workers):
    one, two = workers
    assert await one.announce("w1", 0.3)
    assert await two.announce("w2", 30)
    await one.connect_peer("a", "w1.1", "user:1")
    await one.join("a", "w1.1", ("doc",), "Ann")
    assert await one.claim_host("doc", "a") == "a"
    for peer, connection in (("b", "w2.1"), ("c", "w2.2")):
        await two.connect_peer(peer, connection, "")
        await two.join(peer, connection, ("doc",))
    assert await one.hold_or_pair(PipeKey("a", "b", "doc"), "w1.2") is None
    assert await two.hold_or_pair(PipeKey("b", "a", "doc"), "w2.3") == "w1.2"
    assert await one.hold_or_pair(PipeKey("a", "c", "doc"), "w1.3") is None
    assert await two.members("doc") == ["a", "b", "c"]
    assert await two.stats() == Stats(peers_online=3, lobbies_active=1, pipes_open=1)

    await asyncio.sleep(0.5)  # w1's announcement expires; nobody has reaped it yet
    assert await two.gone(["w1", "w2"]) == ["w1"]

    await two.connect_peer("d", "w2.4", "")
    assert await two.join("d", "w2.4", ("doc",)) == {"doc": ["b", "c"]}
    assert await two.connections(["a", "b"]) == {"b": "w2.1"}
    assert await two.members("doc") == ["b", "c", "d"]
    assert await two.hosts(["doc"]) == {"doc": None}
    assert await two.pipe_facts(PipeKey("a", "b", "doc")) == PipeFacts(None, False)
    assert await two.peers_of("user:1") == {}
    assert await two.pipes("doc") == []
    # c's request is held, not paired with the ghost's.
    assert await two.hold_or_pair(PipeKey("c", "a", "doc"), "w2.5") is None

    assert await two.reap() == ["w1"]
    assert await two.reap() == []
    assert await two.stats() == Stats(peers_online=3, lobbies_active=1, pipes_open=0)
    assert [m.peer_id for m in await two.roster("doc")] == ["b", "c", "d"]
    assert await two.counts(["doc"]) == {"doc": 3}
    assert await two.connect_peer("a", "w2.6", "user:2") is None  # the id is free again


async def test_a_withdrawn_worker_is_forgotten_at_once(workers):
    one, two = workers
    await one.announce("w1", 30)
    await one.connect_peer("a", "w1.1", "")
    await one.join("a", "w1.1", ("doc",))
    await one.hold_or_pair(PipeKey("a", "b", "doc"), "w1.2")
    await one.hold_or_pair(PipeKey("a", "c", "doc"), "w1.3")
    await two.connect_peer("c", "w2.1", "")
    assert await two.hold_or_pair(PipeKey("c", "a", "doc"), "w2.2") == "w1.3"
    assert await two.gone(["w1"]) == []
    await one.withdraw("w1")
    # Withdrawn (or reaped) by one worker, it is gone for every other that asks.
    assert await two.gone(["w1"]) == ["w1"]
    assert await two.connections(["a"]) == {}
    assert await two.stats() == Stats(peers_online=1, lobbies_active=0, pipes_open=0)
    assert await two.hold_or_pair(PipeKey("b", "a", "doc"), "w2.3") is None  # nothing held
    assert await two.reap() == []
    await two.release(PipeKey("b", "a", "doc"), "w2.3")
    await two.disconnect_peer("c", "w2.1")
    assert await _keys(two) == []  # nothing of w1's is left behind


async def _keys(store: RedisPresence) -> list[str]:
    client = redis.asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    found = [key async for key in client.scan_iter(match=f"{store.keys}*")]
    await client.aclose()
    return found


async def test_announce_says_when_the_store_has_forgotten_the_worker(workers):
    one, two = workers
    assert await one.announce("w1", 30)  # the first time: nothing to have forgotten
    assert await one.announce("w1", 30)
    await two.flush()  # the store loses its data, as a Redis restart does
    assert not await one.announce("w1", 30)
    assert await one.announce("w1", 30)  # known again from now on


async def test_the_redis_backend_takes_its_url_and_prefix_from_the_settings(settings):
    prefix = f"test:{uuid4().hex}:"
    settings.RELAY_REDIS_URL = REDIS_URL
    settings.RELAY_REDIS_PREFIX = prefix
    settings.RELAY_PRESENCE_BACKEND = "lobbies.engine.presence.redis.RedisPresence"
    store = get_presence()
    assert isinstance(store, RedisPresence)
    await store.connect_peer("a", "c1", "")
    another_worker = RedisPresence(REDIS_URL, prefix)
    assert await another_worker.connections(["a"]) == {"a": "c1"}
    await another_worker.aclose()
    await store.flush()
    await store.aclose()


async def test_nothing_stays_in_redis_once_everyone_has_gone(workers):
    one, _ = workers
    await one.announce("w1", 30)
    for n in range(6):
        await one.connect_peer(f"p{n}", f"w1.{n}", "user:1" if n % 2 else "")
        await one.join(f"p{n}", f"w1.{n}", ("x", "y"), f"nick{n}")
    await one.claim_host("x", "p0")
    await one.drop_host("x", "p0", successor=True)
    await one.connect_peer("p3", "w1.30", "user:1")  # replaces p3's socket
    await one.leave("p4", "w1.4", ("y",))
    await one.hold_or_pair(PipeKey("p1", "p2", "x"), "w1.10")
    await one.hold_or_pair(PipeKey("p2", "p1", "x"), "w1.11")
    await one.hold_or_pair(PipeKey("p1", "p5", "x"), "w1.12")
    await one.release(PipeKey("p1", "p5", "x"), "w1.12")
    await one.pipe_closed(PipeKey("p1", "p2", "x"))
    for n in range(6):
        await one.disconnect_peer(f"p{n}", "w1.30" if n == 3 else f"w1.{n}")
    assert await one.stats() == Stats(peers_online=0, lobbies_active=0, pipes_open=0)
    assert await _keys(one) == [f"{one.keys}workers"]  # only the worker's announcement
