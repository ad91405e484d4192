"""The presence interface, one suite for every backend (only ``memory`` so far)."""

from __future__ import annotations

import pytest

from lobbies.presence import PipeKey, PipeKeyTaken, Stats
from lobbies.presence.memory import MemoryPresence

BACKENDS = [MemoryPresence]


@pytest.fixture(params=BACKENDS, ids=lambda cls: cls.__name__)
async def presence(request):
    store = request.param()
    await store.flush()
    yield store
    await store.flush()


async def test_join_returns_the_other_members_of_each_id(presence):
    await presence.connect_peer("a", "c1")
    await presence.connect_peer("b", "c2")
    assert await presence.join("a", "c1", ("x", "y")) == {"x": [], "y": []}
    assert await presence.join("b", "c2", ("x",)) == {"x": ["a"]}
    assert await presence.connections(["a", "b", "gone"]) == {"a": "c1", "b": "c2"}
    assert await presence.stats() == Stats(peers_online=2, lobbies_active=2, pipes_open=0)


async def test_leave_and_disconnect_forget_ids(presence):
    await presence.connect_peer("a", "c1")
    await presence.join("a", "c1", ("x", "y"))
    await presence.leave("a", "c1", ("x",))
    await presence.connect_peer("b", "c2")
    assert await presence.join("b", "c2", ("x", "y")) == {"x": [], "y": ["a"]}
    await presence.disconnect_peer("a", "c1")
    assert await presence.connections(["a"]) == {}
    assert (await presence.stats()).lobbies_active == 2  # b is still in x and y


async def test_a_replaced_connection_cannot_touch_the_new_one(presence):
    await presence.connect_peer("a", "old")
    await presence.join("a", "old", ("x",))
    assert await presence.connect_peer("a", "new") == "old"
    assert await presence.join("a", "old", ("y",)) == {}  # late frame of the old socket
    await presence.disconnect_peer("a", "old")
    assert await presence.connections(["a"]) == {"a": "new"}
    await presence.connect_peer("b", "c2")
    assert await presence.join("b", "c2", ("x", "y")) == {"x": [], "y": []}


async def test_hold_or_pair_has_exactly_one_winner(presence):
    key = PipeKey("a", "b", "doc")
    assert await presence.hold_or_pair(key, "ca") is None
    assert await presence.hold_or_pair(key.reciprocal(), "cb") == "ca"
    assert (await presence.stats()).pipes_open == 1
    # Taken: a second reciprocal request is held, not paired with the same end again.
    assert await presence.hold_or_pair(key.reciprocal(), "cb2") is None
    await presence.pipe_closed()
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
    await presence.release(key, "c2")  # not the holder: nothing happens
    assert await presence.hold_or_pair(key.reciprocal(), "cb") == "c1"
