"""The consumers through the full ASGI application (router, origin check), with
``channels.testing``: introductions, pipes, limits and close codes."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import msgpack
import pytest
from channels.testing import WebsocketCommunicator

from lobbies.engine import connections
from lobbies.engine.pipes import held_budget, held_cost
from lobbies.engine.presence import get_presence
from tests.sockets import closed_with, join, opened, packed, received

# Control sockets look up bans in the database; database_sync_to_async runs in another thread.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


@pytest.fixture
async def meet():
    """``await meet("a", "b", ...)``: those peers come online and join ``doc``, so the relay
    introduces them to each other (it opens no pipe between peers it has not introduced)."""
    online: dict[str, WebsocketCommunicator] = {}

    async def meet(*peers: str, doc: str = "doc") -> None:
        for peer in peers:
            if peer not in online:
                online[peer] = await opened(f"/introduction/{quote(peer, safe='')}")
            await online[peer].send_to(text_data=join(doc))
        for _ in range(200):
            if set(peers) <= set(await get_presence().members(doc)):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{peers} did not all join {doc}")

    yield meet
    for socket in online.values():
        await socket.disconnect()


async def test_two_peers_meet_each_in_its_own_dialect():
    alice = await opened("/introduction/alice")
    bob = await opened("/introduction/bob")
    await alice.send_to(text_data=join("lobby"))
    await bob.send_to(bytes_data=packed({"type": "Join", "documentIds": ["lobby"]}))
    assert json.loads(await alice.receive_from()) == {
        "type": "Introduction",
        "userName": "bob",
        "documentIds": ["lobby"],
    }
    assert msgpack.unpackb(await bob.receive_from()) == {
        "type": "Introduction",
        "peerId": "alice",
        "documentIds": ["lobby"],
    }
    assert await alice.receive_nothing() and await bob.receive_nothing()
    await alice.disconnect()
    await bob.disconnect()


async def test_answers_follow_the_dialect_of_the_latest_frame():
    alice = await opened("/introduction/alice")
    bob = await opened("/introduction/bob")
    await alice.send_to(text_data=join("a"))
    await alice.send_to(bytes_data=packed({"type": "Heartbeat"}))  # now speaks msgpack
    await bob.send_to(text_data=join("a"))
    assert msgpack.unpackb(await alice.receive_from())["peerId"] == "bob"
    await alice.disconnect()
    await bob.disconnect()


async def test_leave_stops_introductions_and_close_forgets_the_peer():
    alice = await opened("/introduction/alice")
    bob = await opened("/introduction/bob")
    await alice.send_to(text_data=join("a", "b"))
    await alice.send_to(text_data=json.dumps({"type": "Leave", "documentIds": ["a"]}))
    await bob.send_to(text_data=join("a"))
    assert await bob.receive_nothing()
    await bob.send_to(text_data=join("b"))
    assert json.loads(await bob.receive_from())["documentIds"] == ["b"]
    await alice.disconnect()
    carol = await opened("/introduction/carol")
    await carol.send_to(text_data=join("b"))
    assert json.loads(await carol.receive_from())["userName"] == "bob"
    assert await carol.receive_nothing()
    await bob.disconnect()
    await carol.disconnect()


async def test_malformed_frames_are_ignored_and_a_later_join_works():
    alice = await opened("/introduction/alice")
    bob = await opened("/introduction/bob")
    for junk in ["{", "[]", json.dumps({"type": "Join", "documentIds": "notalist"}), '{"a":1}']:
        await alice.send_to(text_data=junk)
    for junk in [b"\xc1\xc1", b"\xdd\xff\xff\xff\xff", packed({"type": 7})]:
        await alice.send_to(bytes_data=junk)
    assert await alice.receive_nothing()
    await alice.send_to(text_data=join("a"))
    await bob.send_to(text_data=join("a"))
    assert json.loads(await alice.receive_from())["userName"] == "bob"
    await alice.disconnect()
    await bob.disconnect()


async def test_a_second_control_socket_replaces_the_first():
    old = await opened("/introduction/alice")
    await old.send_to(text_data=join("a"))
    new = await opened("/introduction/alice")
    assert await closed_with(old) == 4409
    await new.send_to(text_data=join("a"))
    bob = await opened("/introduction/bob")
    await bob.send_to(text_data=join("a"))
    assert json.loads(await new.receive_from())["userName"] == "bob"
    # The old socket's disconnect must not remove the new registration.
    await old.disconnect()
    carol = await opened("/introduction/carol")
    await carol.send_to(text_data=join("a"))
    assert json.loads(await new.receive_from())["userName"] == "carol"
    for socket in (new, bob, carol):
        await socket.disconnect()


@pytest.mark.parametrize(
    "path",
    [
        "/introduction/bad%0Aid",
        "/connection/a/a/doc",
        "/connection/a/b",
        "/nowhere",
        "/introduction/",
    ],
)
async def test_bad_paths_close_with_4400(path):
    socket = await opened(path)
    assert await closed_with(socket) == 4400


async def test_frames_held_before_pairing_arrive_first_in_order_with_their_types(meet):
    await meet("alice", "bob")
    alice = await opened("/connection/alice/bob/doc")
    await alice.send_to(text_data="one")
    await alice.send_to(bytes_data=b"\x00two")
    await alice.send_to(text_data="three")
    bob = await opened("/connection/bob/alice/doc")
    await alice.send_to(bytes_data=b"four")
    assert await bob.receive_output() == {"type": "websocket.send", "text": "one"}
    assert await bob.receive_output() == {"type": "websocket.send", "bytes": b"\x00two"}
    assert await bob.receive_output() == {"type": "websocket.send", "text": "three"}
    assert await bob.receive_output() == {"type": "websocket.send", "bytes": b"four"}
    await bob.send_to(text_data="back")
    assert await alice.receive_from() == "back"
    assert (await get_presence().stats()).pipes_open == 1
    await alice.disconnect()
    assert await closed_with(bob) == 1000
    assert (await get_presence().stats()).pipes_open == 0


async def test_percent_encoded_ids_pair(meet):
    await meet("al/ice", "b ob", doc="döc")
    alice = await opened("/connection/al%2Fice/b%20ob/d%C3%B6c")
    bob = await opened("/connection/b%20ob/al%2Fice/d%C3%B6c")
    await alice.send_to(bytes_data=b"hi")
    assert await bob.receive_from() == b"hi"
    await alice.disconnect()
    await bob.disconnect()


async def test_an_oversized_frame_closes_the_pipe_with_4413(settings, meet):
    settings.RELAY_MAX_FRAME_BYTES = 1000
    await meet("alice", "bob")
    alice = await opened("/connection/alice/bob/doc")
    bob = await opened("/connection/bob/alice/doc")
    await alice.send_to(bytes_data=b"x" * 1000)
    assert await bob.receive_from() == b"x" * 1000
    await alice.send_to(bytes_data=b"x" * 1001)
    assert await closed_with(alice) == 4413
    assert await closed_with(bob) == 1000


async def test_a_held_backlog_over_the_bound_closes_with_4413(settings, meet):
    settings.RELAY_MAX_HELD_BYTES = 10_000
    await meet("alice", "bob")
    # Each held frame is charged its real memory: payload object, message dict, deque slot.
    frame = b"x" * 1000
    fitting = 10_000 // held_cost(frame)
    assert fitting == 8  # not 9: the bookkeeping of a 1000-byte frame is over 100 bytes
    alice = await opened("/connection/alice/bob/doc")
    for _ in range(fitting):
        await alice.send_to(bytes_data=frame)
    assert await alice.receive_nothing()
    await alice.send_to(bytes_data=frame)
    assert await closed_with(alice) == 4413


async def test_a_held_request_never_matched_closes_with_4408(settings, meet):
    settings.RELAY_PAIR_TIMEOUT = 0.2
    await meet("alice", "bob")
    alice = await opened("/connection/alice/bob/doc")
    assert await closed_with(alice) == 4408
    # Released: the reciprocal request is now held itself rather than paired with a dead end.
    bob = await opened("/connection/bob/alice/doc")
    assert await closed_with(bob) == 4408


async def test_ids_per_peer_are_bounded(settings):
    settings.RELAY_MAX_IDS_PER_PEER = 2
    alice = await opened("/introduction/alice")
    bob = await opened("/introduction/bob")
    await alice.send_to(text_data=join("a", "b"))
    await alice.send_to(text_data=join("c"))  # over the bound: not joined
    await bob.send_to(text_data=join("c"))
    assert await bob.receive_nothing()
    await bob.send_to(text_data=join("b"))
    assert json.loads(await bob.receive_from())["documentIds"] == ["b"]
    await alice.disconnect()
    await bob.disconnect()


async def test_an_oversized_control_frame_closes_with_4413(settings):
    settings.RELAY_MAX_CONTROL_FRAME_BYTES = 100
    alice = await opened("/introduction/alice")
    await alice.send_to(text_data=join("x" * 200))
    assert await closed_with(alice) == 4413


async def test_browsers_from_other_origins_are_refused_when_origins_are_restricted(settings):
    from lobbies.engine.security import origin_checked
    from relayproject.asgi import WebSocketRouter, websocket_urlpatterns

    settings.RELAY_ALLOWED_ORIGINS = ["https://game.example"]
    app = origin_checked(WebSocketRouter(websocket_urlpatterns))
    for origin, allowed in [(b"https://game.example", True), (b"https://evil.example", False)]:
        socket = WebsocketCommunicator(app, "/introduction/p", headers=[(b"origin", origin)])
        connected, _ = await socket.connect()
        assert connected is allowed
        await socket.disconnect()
    # Game clients and tools send no Origin: judged by their credentials, not refused here.
    socket = WebsocketCommunicator(app, "/introduction/p")
    assert (await socket.connect())[0]
    await socket.disconnect()


async def test_sockets_are_forgotten_when_they_close():
    before = connections.count()
    alice = await opened("/introduction/alice")
    bob = await opened("/introduction/bob")
    await alice.send_to(text_data=join("doc"))
    await bob.send_to(text_data=join("doc"))
    await alice.receive_from()
    pipe = await opened("/connection/alice/bob/doc")
    assert await pipe.receive_nothing()  # held, waiting for bob's request
    assert connections.count() == before + 3
    for socket in (alice, bob, pipe):
        await socket.disconnect()
    assert connections.count() == before
    assert await get_presence().stats() == type(await get_presence().stats())(0, 0, 0)


async def test_a_repeated_pipe_request_cannot_take_over_a_waiting_one(meet):
    await meet("alice", "bob")
    alice = await opened("/connection/alice/bob/doc")
    await alice.send_to(text_data="from the real alice")
    impostor = await opened("/connection/alice/bob/doc")
    assert await closed_with(impostor) == 4409
    bob = await opened("/connection/bob/alice/doc")
    assert await bob.receive_from() == "from the real alice"
    await bob.send_to(text_data="hello alice")
    assert await alice.receive_from() == "hello alice"
    await alice.disconnect()
    await bob.disconnect()


async def test_held_pipe_ends_are_bounded_for_the_whole_process(settings, meet):
    settings.RELAY_MAX_HELD_PIPES = 2
    await meet("a", "b", "c", "d", "e", "f")
    first = await opened("/connection/a/b/doc")
    second = await opened("/connection/c/d/doc")
    third = await opened("/connection/e/f/doc")
    assert await closed_with(third) == 4429
    assert held_budget.pipes == 2
    # A request that pairs is never held, so it is not refused.
    match = await opened("/connection/b/a/doc")
    await first.send_to(bytes_data=b"paired")
    assert await match.receive_from() == b"paired"
    assert held_budget.pipes == 1
    again = await opened("/connection/e/f/doc")  # room again
    assert await again.receive_nothing()
    for socket in (first, second, match, again):
        await socket.disconnect()
    assert held_budget.pipes == 0


async def test_held_bytes_are_bounded_for_the_whole_process(settings, meet):
    frame = b"x" * 1000
    settings.RELAY_MAX_HELD_BYTES = 3 * held_cost(frame)  # each end may hold three frames
    settings.RELAY_MAX_HELD_BYTES_TOTAL = 5 * held_cost(frame)  # all ends together, five
    await meet("a", "b", "c", "d")
    first = await opened("/connection/a/b/doc")
    second = await opened("/connection/c/d/doc")
    for _ in range(3):
        await first.send_to(bytes_data=frame)
    await second.send_to(bytes_data=frame)
    await second.send_to(bytes_data=frame)
    assert await first.receive_nothing() and await second.receive_nothing()
    assert held_budget.bytes == 5 * held_cost(frame)
    await second.send_to(bytes_data=frame)  # within its own bound, over the process's
    assert await closed_with(second) == 4413
    assert held_budget.bytes == 3 * held_cost(frame)
    match = await opened("/connection/b/a/doc")
    for _ in range(3):
        assert await match.receive_from() == frame
    assert held_budget.bytes == 0
    await first.disconnect()
    await match.disconnect()


async def test_a_peer_id_with_a_bidi_override_closes_with_4400():
    socket = await opened("/introduction/admin%E2%80%AEgnp.exe")  # shows as "adminexe.png"
    assert await closed_with(socket) == 4400
    # Plain non-ASCII ids stay welcome: 玩家 meets Zoë.
    zoe, player = (
        await opened("/introduction/Zo%C3%AB"),
        await opened("/introduction/%E7%8E%A9%E5%AE%B6"),
    )
    for socket in (zoe, player):
        await socket.send_to(text_data=join("race"))
    assert (await received(zoe))["userName"] == "玩家"
    assert (await received(player))["userName"] == "Zoë"
    for socket in (zoe, player):
        await socket.disconnect()


async def test_a_fault_while_opening_closes_with_1011_and_frees_the_socket():
    # The relay's own fault (here: its ban table gone, as when the database is unreachable).
    from channels.db import database_sync_to_async
    from django.db import connection

    from lobbies.admission import lobby_cache
    from lobbies.models import Ban

    def drop(create: bool) -> None:
        with connection.schema_editor() as editor:
            (editor.create_model if create else editor.delete_model)(Ban)

    live_before = connections.count()
    await database_sync_to_async(drop)(False)
    lobby_cache.clear()
    try:
        peer = await opened("/introduction/unlucky")
        assert await closed_with(peer) == 1011
    finally:
        await database_sync_to_async(drop)(True)
    assert connections.count() == live_before
    assert await get_presence().connections(["unlucky"]) == {}
