"""Tests of relayclient: against a real relay (fixture ``relay_url``) and against tiny scripted
WebSocket servers made here, for what a well-behaved relay never does (garbage frames, drops).

``relay_url`` is the base URL (``ws://127.0.0.1:PORT``) of a relay speaking docs/protocol.md;
tests/conftest.py provides it. Ids are unique per test, so one relay can serve every test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import msgpack
import pytest
from websockets.asyncio.server import ServerConnection, serve

from relayclient import Client, LobbyRefused, PeerSocket, Refused
from relayclient.protocol import (
    MalformedMessage,
    connection_url,
    decode,
    encode,
    introduction_url,
    parse_introduction,
)
from tests.conftest import ROOT, LiveRelay, _ticket_on, free_port

TIMEOUT = 5.0  # generous for a loaded 2-core CI machine; only reached when something is wrong
QUIET = 0.3  # how long "nothing arrives" is watched for

T = TypeVar("T")


def unique(name: str) -> str:
    """An id no other test uses, so tests can share one relay."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def meet(a: Client, b: Client, document_id: str) -> tuple[PeerSocket, PeerSocket]:
    """Join both clients to ``document_id``; return (a's pipe to b, b's pipe to a)."""
    await a.join(document_id)
    await b.join(document_id)
    pipe_a = await within(a.next_peer())
    pipe_b = await within(b.next_peer())
    assert (pipe_a.peer_id, pipe_a.document_id) == (b.peer_id, document_id)
    assert (pipe_b.peer_id, pipe_b.document_id) == (a.peer_id, document_id)
    return pipe_a, pipe_b


async def within(awaitable: Awaitable[T]) -> T:
    """Await with the test timeout, so a missing message fails the test instead of hanging."""
    return await asyncio.wait_for(awaitable, TIMEOUT)


async def recv(pipe: PeerSocket) -> str | bytes:
    return await asyncio.wait_for(pipe.recv(), TIMEOUT)


async def introductions_within(client: Client, seconds: float) -> list[dict]:
    """Every Introduction the client receives in the next ``seconds``."""
    seen = []
    try:
        async with asyncio.timeout(seconds):
            async for message in client.introductions():
                seen.append(message)
    except TimeoutError:
        pass
    return seen


def introduced_peer(message: dict) -> str:
    return message.get("peerId", message.get("userName"))


# -- against the relay -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_two_clients_exchange_text_and_binary_both_ways(relay_url: str) -> None:
    document = unique("doc")
    async with Client(unique("alice"), relay_url) as a, Client(unique("bob"), relay_url) as b:
        pipe_a, pipe_b = await meet(a, b, document)

        await pipe_a.send("hello from a")
        await pipe_a.send(b"\x00\x01binary from a\xff")
        assert await recv(pipe_b) == "hello from a"
        assert await recv(pipe_b) == b"\x00\x01binary from a\xff"

        await pipe_b.send(b"\xfe binary from b")
        await pipe_b.send("héllo from b ✓")
        assert await recv(pipe_a) == b"\xfe binary from b"
        assert await recv(pipe_a) == "héllo from b ✓"


@pytest.mark.asyncio
async def test_json_dialect_client_meets_msgpack_dialect_client(relay_url: str) -> None:
    document = unique("doc")
    old = Client(unique("old3x"), relay_url, dialect="json")
    new = Client(unique("new4x"), relay_url, dialect="msgpack")
    async with old, new:
        pipe_old, pipe_new = await meet(old, new, document)

        # Each is introduced in its own dialect, with exactly the three keys its client expects.
        intro_to_old = await within(old.next_introduction())
        intro_to_new = await within(new.next_introduction())
        assert intro_to_old == {
            "type": "Introduction",
            "userName": new.peer_id,
            "documentIds": [document],
        }
        assert intro_to_new == {
            "type": "Introduction",
            "peerId": old.peer_id,
            "documentIds": [document],
        }

        await pipe_old.send("text from 3.x")
        assert await recv(pipe_new) == "text from 3.x"
        await pipe_new.send(b"binary from 4.x")
        assert await recv(pipe_old) == b"binary from 4.x"


@pytest.mark.asyncio
async def test_leave_stops_introductions_to_new_peers(relay_url: str) -> None:
    document, barrier = unique("doc"), unique("barrier")
    options = {"auto_connect": False}
    a = Client(unique("a"), relay_url, **options)
    b = Client(unique("b"), relay_url, **options)
    c = Client(unique("c"), relay_url, **options)
    helper = Client(unique("helper"), relay_url, **options)
    async with a, b, c, helper:
        await a.join(document)
        await b.join(document)
        assert introduced_peer(await within(a.next_introduction())) == b.peer_id
        assert introduced_peer(await within(b.next_introduction())) == a.peer_id

        await a.leave(document)
        # Part 1 has no acknowledgement, so prove the Leave was processed: the relay handles
        # a socket's frames in order, and this Join is answered only after the Leave.
        await helper.join(barrier)
        await a.join(barrier)
        barrier_intro = await within(a.next_introduction())
        assert barrier_intro["documentIds"] == [barrier]
        assert introduced_peer(barrier_intro) == helper.peer_id

        await c.join(document)
        to_b = await within(b.next_introduction())
        assert (introduced_peer(to_b), to_b["documentIds"]) == (c.peer_id, [document])
        assert introduced_peer(await within(c.next_introduction())) == b.peer_id
        assert await introductions_within(c, QUIET) == []  # nothing about a
        leftover_to_a = await introductions_within(a, QUIET)
        assert [m for m in leftover_to_a if introduced_peer(m) == c.peer_id] == []


@pytest.mark.asyncio
async def test_disconnect_closes_pipes_and_the_other_side_sees_it(relay_url: str) -> None:
    document = unique("doc")
    async with Client(unique("stayer"), relay_url) as stayer:
        leaver = Client(unique("leaver"), relay_url)
        await leaver.connect()
        try:
            pipe_leaver, pipe_stayer = await meet(leaver, stayer, document)
            received = []

            async def drain() -> None:
                async for frame in pipe_stayer:  # ends when the relay closes this side
                    received.append(frame)

            drainer = asyncio.create_task(drain())
            # Sent just before the close: the relay must deliver it, then close the other side.
            await pipe_leaver.send("last words")
        finally:
            await leaver.disconnect()

        assert pipe_leaver.closed
        assert leaver.pipes == frozenset()
        assert not leaver.connected
        await asyncio.wait_for(pipe_stayer.wait_closed(), TIMEOUT)
        await asyncio.wait_for(drainer, TIMEOUT)
        assert received == ["last words"]
        assert stayer.pipes == frozenset()


@pytest.mark.asyncio
async def test_unicode_space_slash_ids_are_percent_encoded(relay_url: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    alice = f"alice smith/👩‍💻 {suffix}"
    bob = f"bøb%20?#{suffix}"
    document = f"game room/1?x=y#frag ü {suffix}"
    async with Client(alice, relay_url) as a, Client(bob, relay_url) as b:
        pipe_a, pipe_b = await meet(a, b, document)
        assert introduced_peer(await within(a.next_introduction())) == bob
        assert introduced_peer(await within(b.next_introduction())) == alice
        await pipe_a.send("ping")
        assert await recv(pipe_b) == "ping"


@pytest.mark.asyncio
async def test_introductions_for_new_ids_open_one_pipe_per_document(relay_url: str) -> None:
    first, second = unique("first"), unique("second")
    async with Client(unique("a"), relay_url) as a, Client(unique("b"), relay_url) as b:
        await meet(a, b, first)
        # The relay introduces again on every Join, listing every shared id: the pipe already
        # open on `first` must not be opened twice.
        await a.join(second)
        await b.join(second)
        pipe_a = await within(a.next_peer())
        pipe_b = await within(b.next_peer())
        assert pipe_a.document_id == pipe_b.document_id == second
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(a.next_peer(), QUIET)
        assert sorted(p.document_id for p in a.pipes) == sorted([first, second])


@pytest.mark.asyncio
async def test_on_peer_connect_callbacks_get_the_same_pipes_as_peers(relay_url: str) -> None:
    document = unique("doc")
    seen_sync: list[PeerSocket] = []
    seen_async: asyncio.Queue[PeerSocket] = asyncio.Queue()
    async with Client(unique("a"), relay_url) as a, Client(unique("b"), relay_url) as b:
        a.on_peer_connect(seen_sync.append)

        @a.on_peer_connect
        async def record(pipe: PeerSocket) -> None:
            await seen_async.put(pipe)

        pipe_a, pipe_b = await meet(a, b, document)
        assert seen_sync == [pipe_a]
        assert await asyncio.wait_for(seen_async.get(), TIMEOUT) is pipe_a
        # Only now, with both pipes open, is the pair surely made (LF re-encodes held frames).
        await pipe_a.send("welcome")
        assert await recv(pipe_b) == "welcome"


@pytest.mark.asyncio
async def test_open_pipe_after_an_introduction_without_auto_connect(relay_url: str) -> None:
    document = unique("doc")
    a = Client(unique("a"), relay_url, auto_connect=False)
    b = Client(unique("b"), relay_url, auto_connect=False)
    async with a, b:
        await a.join(document)
        await b.join(document)
        assert introduced_peer(await within(a.next_introduction())) == b.peer_id
        assert introduced_peer(await within(b.next_introduction())) == a.peer_id
        pipe_a = await within(a.open_pipe(b.peer_id, document))
        pipe_b = await within(b.open_pipe(a.peer_id, document))
        assert a.pipes == {pipe_a}
        await pipe_b.send(b"raw")
        assert await recv(pipe_a) == b"raw"
        with pytest.raises(TimeoutError):  # open_pipe never announces its pipe
            await asyncio.wait_for(a.next_peer(), QUIET)
    assert pipe_a.closed and pipe_b.closed


# -- against scripted servers ----------------------------------------------------------------

Script = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def scripted_relay(script: Script) -> AsyncIterator[str]:
    """A WebSocket server on a free loopback port that runs ``script`` for every connection."""
    async with serve(script, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


@pytest.mark.asyncio
async def test_garbage_and_unknown_control_messages_are_ignored() -> None:
    introduction = {"type": "Introduction", "peerId": "bob", "documentIds": ["d"]}

    async def script(ws: ServerConnection) -> None:
        for frame in [
            "not json {",
            b"\xc1\xc1",  # 0xc1 is never valid MessagePack
            msgpack.packb([1, 2, 3]),
            json.dumps({"no": "type"}),
            msgpack.packb({"type": "Joined", "documentId": "d", "role": "member"}),
            msgpack.packb({"type": "Introduction", "peerId": 7, "documentIds": ["d"]}),
            msgpack.packb(introduction),
        ]:
            await ws.send(frame)
        await ws.wait_closed()

    async with scripted_relay(script) as url, Client("me", url, auto_connect=False) as client:
        assert await within(client.next_introduction()) == introduction
        assert client.connected
        seen = [await within(client.next_message()) for _ in range(3)]
        assert [m["type"] for m in seen] == ["Joined", "Introduction", "Introduction"]


@pytest.mark.asyncio
async def test_dialects_and_heartbeat_on_the_wire() -> None:
    frames: dict[str, list[str | bytes]] = {}
    finished: dict[str, asyncio.Event] = {}

    async def script(ws: ServerConnection) -> None:
        received = frames.setdefault(ws.request.path, [])
        async for frame in ws:
            received.append(frame)
        finished[ws.request.path].set()  # every frame recorded, up to the close

    async with scripted_relay(script) as url:
        for dialect in ("json", "msgpack"):
            finished[f"/introduction/{dialect}"] = asyncio.Event()
            async with Client(dialect, url, dialect=dialect, heartbeat_interval=0.05) as client:
                await client.join("d 1")
                await asyncio.sleep(0.2)
                await client.leave("d 1")
        for event in finished.values():
            await asyncio.wait_for(event.wait(), TIMEOUT)

        # Heartbeats may come at any point, even after the Leave; the rest is in order.
        json_frames = frames["/introduction/json"]
        assert all(isinstance(f, str) for f in json_frames)
        msgpack_frames = frames["/introduction/msgpack"]
        assert all(isinstance(f, bytes) for f in msgpack_frames)
        for decoded in (
            [json.loads(f) for f in json_frames],
            [msgpack.unpackb(f) for f in msgpack_frames],
        ):
            assert {"type": "Heartbeat"} in decoded
            assert [m for m in decoded if m["type"] != "Heartbeat"] == [
                {"type": "Join", "documentIds": ["d 1"], "ext": 1},  # LF relays ignore ext
                {"type": "Leave", "documentIds": ["d 1"]},
            ]


@pytest.mark.asyncio
@pytest.mark.parametrize("drop", [1011, 1012, "abort"])
async def test_reconnect_joins_remembered_documents_again(drop: int | str) -> None:
    connections: list[list[dict]] = []
    rejoined = asyncio.Event()

    async def script(ws: ServerConnection) -> None:
        received: list[dict] = []
        connections.append(received)
        if len(connections) == 1:
            received.append(msgpack.unpackb(await ws.recv()))
            received.append(msgpack.unpackb(await ws.recv()))
            # Drop the first control socket: a fault, a restart, or no close at all (1006).
            if drop == "abort":
                ws.transport.abort()
            else:
                await ws.close(drop)
            return
        async for frame in ws:
            received.append(msgpack.unpackb(frame))
            if len(received) == 2:
                rejoined.set()

    async with scripted_relay(script) as url:
        client = Client("me", url, reconnect=True, min_retry_delay=0.01, heartbeat_interval=None)
        await client.join("a")  # before connect: sent by connect()
        async with client:
            await client.join("b")
            await within(rejoined.wait())
            assert client.connected
    joins = [[m["documentIds"][0] for m in c] for c in connections]
    assert joins == [["a", "b"], ["a", "b"]]


@pytest.mark.asyncio
@pytest.mark.parametrize("reconnect", [False, True])
async def test_streams_end_when_the_control_socket_is_closed_for_good(reconnect: bool) -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.close(4410, "removed")  # removed by an operator: reconnecting would not help

    async with scripted_relay(script) as url:
        client = Client("me", url, reconnect=reconnect, min_retry_delay=0.01)
        await client.connect()
        await asyncio.wait_for(client.wait_closed(), TIMEOUT)
        assert client.control is not None and client.control.close_code == 4410
        assert [p async for p in client.peers()] == []
        await client.disconnect()


@pytest.mark.asyncio
async def test_connect_raises_refused_when_the_socket_is_closed_at_once() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.close(4401, "invalid ticket")  # what the relay does with a bad ticket

    async with scripted_relay(script) as url:
        client = Client("me", url, reconnect=True)
        with pytest.raises(Refused) as refused:
            await within(client.connect())
        assert (refused.value.code, refused.value.reason) == (4401, "invalid ticket")
        assert str(refused.value) == "4401 invalid ticket"
        assert not client.connected and client.refusal is refused.value
        with pytest.raises(Refused):  # not remembered for a reconnect that would not help
            await client.join("doc")
        await client.disconnect()


@pytest.mark.asyncio
async def test_a_reconnect_refused_for_good_stops_the_client_with_the_reason() -> None:
    openings = 0

    async def script(ws: ServerConnection) -> None:
        nonlocal openings
        openings += 1
        if openings == 1:
            await ws.recv()  # the Join
            await ws.close(1012)  # restarting: come back
        else:
            await ws.close(4403, "this peer id is online as another user")

    async with scripted_relay(script) as url:
        client = Client("me", url, reconnect=True, min_retry_delay=0.01, heartbeat_interval=None)
        await client.connect()
        waiting = asyncio.create_task(client.join_lobby("doc"))
        with pytest.raises(Refused) as refused:
            await within(waiting)
        assert (refused.value.code, refused.value.reason) == (
            4403,
            "this peer id is online as another user",
        )
        await within(client.wait_closed())
        assert client.refusal is refused.value and openings == 2
        await client.disconnect()


# -- pure protocol helpers -------------------------------------------------------------------


def test_urls_percent_encode_each_id_as_one_segment() -> None:
    assert introduction_url("ws://h:1/t/TICKET/", "a b/é") == (
        "ws://h:1/t/TICKET/introduction/a%20b%2F%C3%A9"
    )
    assert connection_url("http://h:1", "me", "50%/x", "d?#") == (
        "ws://h:1/connection/me/50%25%2Fx/d%3F%23"
    )


def test_decode_by_frame_type_and_parse_either_peer_field() -> None:
    message = {"type": "Introduction", "userName": "b", "documentIds": ["d", 3]}
    for frame in (encode(message, "json"), encode(message, "msgpack")):
        decoded = decode(frame)
        assert decoded == message
        introduction = parse_introduction(decoded, "msgpack")
        assert introduction is not None
        assert (introduction.peer_id, introduction.document_ids) == ("b", ("d",))
    for bad in ("[]", "{", b"", b"\x93\x01\x02\x03", '"x"', '{"type": 1}'):
        with pytest.raises(MalformedMessage):
            decode(bad)


# -- the command line ------------------------------------------------------------------------


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relayclient", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.asyncio
async def test_the_cli_exits_at_the_end_of_its_input(relay_url: str) -> None:
    result = await asyncio.to_thread(
        run_cli, relay_url, unique("cli"), unique("doc"), stdin="hello\n"
    )
    assert result.returncode == 0, result.stderr
    assert "end of input; disconnected" in result.stderr


def assert_refused_in_one_line(result: subprocess.CompletedProcess, code: int) -> None:
    """The CLI said, in one line on standard error, that the relay refused it with ``code``."""
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"relayclient: refused: {code} "), result.stderr
    assert "joined" not in result.stderr and "Traceback" not in result.stderr


@asynccontextmanager
async def hold_peer_id(url: str) -> AsyncIterator[Client]:
    """A client holding a fresh peer id on the relay at ``url``, surely in presence (its Join
    was answered, which the relay does only once the socket is open)."""
    async with Client(unique("held"), url) as holder:
        await within(holder.join_lobby(unique("doc")))
        yield holder


def other_users_url(live_relay: LiveRelay) -> str:
    """``live_relay``'s URL with a ticket of another user than ``signed_in_url``'s."""
    return f"{live_relay.ws_url}/t/{_ticket_on(live_relay.log_path.parent, 'player-two')}"


@pytest.mark.asyncio
async def test_the_cli_refused_for_a_bad_peer_id_says_4400(relay_url: str) -> None:
    result = await asyncio.to_thread(run_cli, relay_url, "bad\x01id", unique("doc"))
    assert_refused_in_one_line(result, 4400)


@pytest.mark.asyncio
async def test_the_cli_refused_for_a_bad_ticket_says_4401(relay_url: str) -> None:
    result = await asyncio.to_thread(run_cli, f"{relay_url}/t/garbage", unique("p"), "doc")
    assert_refused_in_one_line(result, 4401)


@pytest.mark.asyncio
async def test_the_cli_refused_for_an_id_held_by_another_user_says_4403(
    live_relay: LiveRelay, signed_in_url: str
) -> None:
    thief_url = await asyncio.to_thread(other_users_url, live_relay)
    async with hold_peer_id(signed_in_url) as holder:
        result = await asyncio.to_thread(run_cli, thief_url, holder.peer_id, unique("doc"))
        assert_refused_in_one_line(result, 4403)
        assert "another user" in result.stderr
        assert holder.connected  # the holder keeps its id


@pytest.mark.asyncio
async def test_the_library_raises_refused_with_the_relays_code_and_reason(
    relay_url: str, live_relay: LiveRelay, signed_in_url: str
) -> None:
    thief_url = await asyncio.to_thread(other_users_url, live_relay)
    async with hold_peer_id(signed_in_url) as holder:
        for url, peer_id, code in [
            (f"{relay_url}/t/garbage", unique("p"), 4401),
            (thief_url, holder.peer_id, 4403),
        ]:
            client = Client(peer_id, url)
            # At once (connect) or a moment later (once the relay looked the id up): never
            # taken for a connected client.
            with pytest.raises(Refused) as refused:
                await within(client.connect())
                await within(client.join_lobby(unique("doc")))
            assert refused.value.code == code and refused.value.reason, refused.value
            assert not isinstance(refused.value, LobbyRefused)
            assert client.refusal is refused.value and not client.connected
            await client.disconnect()
        assert holder.connected


def test_the_cli_says_in_one_line_when_it_cannot_connect() -> None:
    url = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    result = run_cli(url, "peer", "doc")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"relayclient: cannot connect to {url}: ")
    assert "Traceback" not in result.stderr


# -- the extended messages ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_join_lobby_creates_a_lobby_and_reports_each_peers_role(
    relay_url: str, signed_in_url: str
) -> None:
    document = unique("race")
    spec = {"title": "Race", "topology": "host", "maxPeers": 2}  # (needs an owner: signed in)
    host_client = Client(unique("host"), signed_in_url)
    async with host_client as host, Client(unique("p"), relay_url) as player:
        joined = await within(host.join_lobby(document, nickname="Host", lobby=spec))
        assert (joined.role, joined.lobby["title"], joined.lobby["maxPeers"]) == ("host", "Race", 2)
        assert host.lobbies[document] == joined
        theirs = await within(player.join_lobby(document))
        assert (theirs.role, theirs.lobby["host"]) == ("member", host.peer_id)
        pipe = await within(player.next_peer())
        assert pipe.peer_id == host.peer_id
        async with Client(unique("late"), relay_url) as late:
            with pytest.raises(LobbyRefused) as refused:
                await within(late.join_lobby(document))
            assert refused.value.code == "lobby_full"
            assert document not in late.documents  # not joined again after a reconnect


@pytest.mark.asyncio
async def test_when_the_host_leaves_a_member_is_told_and_its_pipe_closes(
    relay_url: str, signed_in_url: str
) -> None:
    document = unique("game")
    host_client = Client(unique("host"), signed_in_url)
    async with host_client as host, Client(unique("m"), relay_url) as member:
        await within(host.join_lobby(document, lobby={"topology": "host"}))
        await within(member.join_lobby(document))
        pipe = await within(member.next_peer())
        await host.leave(document)
        await within(pipe.wait_closed())
        assert pipe.close_code in (1000, 4410)  # the host's own close may come first
        for _ in range(50):
            if document not in member.lobbies:
                break
            await asyncio.sleep(0.1)
        assert document not in member.lobbies and document not in member.documents


@pytest.mark.asyncio
async def test_invalid_lobby_metadata_is_refused_with_its_reason(relay_url: str) -> None:
    async with Client(unique("p"), relay_url) as client:
        with pytest.raises(LobbyRefused) as refused:
            await within(client.join_lobby(unique("x"), lobby={"maxPeers": 0}))
        assert refused.value.code == "invalid" and "maxPeers" in refused.value.message


@pytest.mark.asyncio
async def test_the_cli_reports_its_role_and_a_refusal(relay_url: str, signed_in_url: str) -> None:
    document = unique("cli-lobby")
    lobby = json.dumps({"topology": "host", "maxPeers": 1})
    first = await asyncio.to_thread(
        run_cli, signed_in_url, unique("cli"), document, "--lobby", lobby, stdin="hi\n"
    )
    assert first.returncode == 0, first.stderr
    assert f"joined {document!r}" in first.stderr and "(host)" in first.stderr
    refused = await asyncio.to_thread(
        run_cli, relay_url, unique("cli"), unique("x"), "--lobby", '{"maxPeers": 0}'
    )
    assert refused.returncode == 3
    assert "refused: invalid" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.asyncio
async def test_quick_join_places_two_players_together_and_they_meet(relay_url: str) -> None:
    game = unique("race")  # a game of this test's own: the relay is shared
    async with Client(unique("a"), relay_url) as first, Client(unique("b"), relay_url) as second:
        joined = await within(first.quick_join(game, filters={"map": "ice"}, max_peers=2))
        assert (joined.lobby["game"], joined.lobby["maxPeers"]) == (game, 2)
        assert joined.lobby["data"] == {"map": "ice"}
        assert joined.document_id in first.documents  # joined again after a reconnect
        theirs = await within(second.quick_join(game, filters={"map": "ice"}, max_peers=2))
        assert theirs.document_id == joined.document_id
        pipe = await within(second.next_peer())
        assert pipe.peer_id == first.peer_id
        async with Client(unique("c"), relay_url) as third:
            # Full: the third player gets a lobby of its own.
            own = await within(third.quick_join(game, filters={"map": "ice"}, max_peers=2))
            assert own.document_id != joined.document_id
            # Asking again from the same client: never the lobby it is in already (here the
            # third player's, which has room).
            another = await within(first.quick_join(game, filters={"map": "ice"}, max_peers=2))
            assert another.document_id == own.document_id
            assert {joined.document_id, own.document_id} <= first.documents


@pytest.mark.asyncio
async def test_quick_join_says_why_it_could_not_place_us(relay_url: str) -> None:
    async with Client(unique("a"), relay_url) as client:
        with pytest.raises(LobbyRefused) as refused:
            await within(client.quick_join("race", filters={"a__contains": "x"}))
        assert refused.value.code == "invalid"
        assert "quickJoin.filters" in str(refused.value)
