"""Taking lobby ids away from others, tried as an attacker would: an anonymous Join that makes an
id private, a thousand ids in one Join, a partial update that resets what it did not name, a Join
racing a close, a deleted lobby whose peers stay, and ownerless lobbies that never go away."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async as db
from django.contrib.auth.models import User
from django.utils import timezone

from lobbies import admission, owners
from lobbies.auth import issue_ticket
from lobbies.engine.presence import get_presence
from lobbies.models import Lobby
from lobbies.policy import LobbyState
from tests.sockets import join, opened, received, stays_open

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


@pytest.fixture
def owner(transactional_db) -> User:
    return User.objects.create_user("owner", password="a long password 1")


async def test_an_anonymous_join_cannot_make_an_id_private_or_lock_others_out():
    squatter = await opened("/introduction/squatter")
    await squatter.send_to(
        text_data=join("contested", ext=1, lobby={"visibility": "private", "title": "mine"})
    )
    error = await received(squatter)
    assert (error["type"], error["code"]) == ("Error", "forbidden")
    assert not await db(Lobby.objects.filter(document_id="contested").exists)()
    # It may make it public with metadata; then everyone else still gets in.
    await squatter.send_to(text_data=join("contested", ext=1, lobby={"title": "mine"}))
    assert (await received(squatter))["type"] == "Joined"
    newcomer = await opened("/introduction/newcomer")
    await newcomer.send_to(text_data=join("contested", ext=1))
    assert (await received(newcomer))["type"] == "Joined"
    for socket in (squatter, newcomer):
        await socket.disconnect()


async def test_an_ownerless_lobby_cannot_be_locked_closed_or_made_private():
    lobby = await db(Lobby.objects.create)(document_id="nobodys")
    for change in (
        lambda: owners.set_state(lobby, LobbyState.LOCKED),
        lambda: owners.set_state(lobby, LobbyState.CLOSED),
        lambda: owners.update(lobby, {"visibility": "private"}),
    ):
        with pytest.raises(owners.Rejected) as refused:
            await sync_to_async(change)()
        assert refused.value.status == 422
    assert (await db(Lobby.objects.get)(pk=lobby.pk)).state == "open"


async def test_a_private_lobby_whose_owner_was_deleted_refuses_nobody(owner):
    await db(Lobby.objects.create)(
        document_id="orphaned", owner=owner, visibility="private", state="locked"
    )
    await db(owner.delete)()  # the lobby's owner becomes empty (SET_NULL)
    peer = await opened("/introduction/anyone")
    await peer.send_to(text_data=join("orphaned", ext=1))
    assert (await received(peer))["type"] == "Joined"
    await peer.disconnect()


async def test_one_join_creates_at_most_a_few_lobby_rows(settings):
    settings.RELAY_MAX_NEW_LOBBIES_PER_JOIN = 3
    ids = [f"grab-{n}" for n in range(1000)]
    peer = await opened("/introduction/grabber")
    await peer.send_to(text_data=join(*ids, ext=1, lobby={"title": "all mine"}))
    answers = [await received(peer) for _ in range(1000)]
    joined = [a["documentId"] for a in answers if a["type"] == "Joined"]
    refused = {a["code"] for a in answers if a["type"] == "Error"}
    assert joined == ids[:3] and refused == {"rate_limited"}
    assert await db(Lobby.objects.count)() == 3
    await peer.disconnect()


async def test_a_partial_update_from_a_join_changes_only_what_it_names(owner):
    await db(Lobby.objects.create)(
        document_id="race",
        owner=owner,
        visibility="unlisted",
        max_peers=4,
        topology="host",
        data={"map": 3},
    )
    peer = await opened(f"/t/{issue_ticket(owner)}/introduction/host")
    await peer.send_to(text_data=join("race", ext=1, lobby={"title": "Friday race"}))
    assert (await received(peer))["lobby"]["title"] == "Friday race"
    lobby = await db(Lobby.objects.get)(document_id="race")
    assert (lobby.title, lobby.visibility, lobby.max_peers, lobby.topology, lobby.data) == (
        "Friday race",
        "unlisted",
        4,
        "host",
        {"map": 3},
    )
    await peer.disconnect()


@pytest.mark.parametrize("depth", [17, 400])
async def test_lobby_data_nested_too_deep_is_refused(depth):
    data: dict = {}
    for _ in range(depth - 1):
        data = {"a": data}  # ``depth`` dicts, one in another
    peer = await opened("/introduction/deep")
    await peer.send_to(text_data=join("deep", ext=1, lobby={"data": data}))
    error = await received(peer)
    assert (error["code"], "lobby.data" in error["message"]) == ("invalid", True)
    assert not await db(Lobby.objects.exists)()
    await peer.disconnect()


async def test_a_join_racing_a_close_does_not_stay_in_the_closed_lobby(owner):
    lobby = await db(Lobby.objects.create)(document_id="arena", owner=owner)
    # The newcomer's Join reads the open lobby, then the close commits and takes out whoever is
    # in the lobby at that moment, then the Join registers: it must find out and leave again.
    # (The real presence, with the close run at that moment: the interleaving is forced, not
    # left to chance.)
    newcomer = await opened("/introduction/late")
    real_join = get_presence().join

    async def join_after_the_close(*args, **kwargs):
        await sync_to_async(owners.set_state)(lobby, LobbyState.CLOSED)
        return await real_join(*args, **kwargs)

    get_presence().join = join_after_the_close
    try:
        await newcomer.send_to(text_data=join("arena", ext=1))
        answer = await received(newcomer)
    finally:
        del get_presence().join
    assert (answer["type"], answer["code"]) == ("Error", "locked")
    assert await get_presence().members("arena") == []
    await newcomer.disconnect()


async def test_deleting_a_lobby_in_the_admin_takes_its_peers_out(owner):
    from tests.accounts import staff_client

    lobby = await db(Lobby.objects.create)(document_id="arena", owner=owner)
    inside = await opened("/introduction/inside")
    await inside.send_to(text_data=join("arena", ext=1))
    assert (await received(inside))["type"] == "Joined"
    root = await db(staff_client)("root", superuser=True)
    response = await db(root.post)(
        f"/admin/lobbies/lobby/{lobby.pk}/delete/", {"post": "yes"}, follow=False
    )
    assert response.status_code == 302
    assert (await received(inside)) == {"type": "Left", "documentId": "arena", "reason": "closed"}
    assert await get_presence().members("arena") == []
    await inside.disconnect()


async def test_the_admins_bulk_delete_takes_peers_out_too(owner):
    from tests.accounts import staff_client

    for document_id in ("one", "two"):
        await db(Lobby.objects.create)(document_id=document_id, owner=owner)
    inside = await opened("/introduction/inside")
    await inside.send_to(text_data=join("one", "two", ext=1))
    assert {(await received(inside))["documentId"] for _ in range(2)} == {"one", "two"}
    root = await db(staff_client)("root", superuser=True)
    pks = await db(lambda: [str(pk) for pk in Lobby.objects.values_list("pk", flat=True)])()
    form = {"action": "delete_selected", "_selected_action": pks, "post": "yes"}
    assert (await db(root.post)("/admin/lobbies/lobby/", form)).status_code == 302
    left = {(await received(inside))["documentId"] for _ in range(2)}
    assert left == {"one", "two"} and not await db(Lobby.objects.exists)()
    await inside.disconnect()


async def test_making_a_lobby_private_or_smaller_takes_out_who_may_not_stay(owner):
    lobby = await db(Lobby.objects.create)(document_id="arena", owner=owner)
    peers = []
    for name in ("first", "second", "third"):
        peer = await opened(f"/introduction/{name}")
        await peer.send_to(text_data=join("arena", ext=1))
        assert (await received(peer))["type"] == "Joined"
        peers.append(peer)
    for peer in peers:
        await drained(peer)  # (the Introductions)
    await sync_to_async(owners.update)(lobby, {"max_peers": 2})
    assert (await received(peers[2]))["reason"] == "full"  # the newest goes
    assert await stays_open(peers[0])
    await sync_to_async(owners.update)(lobby, {"visibility": "private"})
    reasons = {(await received(peer))["reason"] for peer in peers[:2]}
    assert reasons == {"private"}  # anonymous peers hold no grant
    assert await get_presence().members("arena") == []
    for peer in peers:
        await peer.disconnect()


async def test_ownerless_lobbies_nobody_is_in_age_out(settings, owner):
    settings.RELAY_ORPHAN_LOBBY_TTL = 60.0
    await db(Lobby.objects.create)(document_id="abandoned")
    await db(Lobby.objects.create)(document_id="busy")
    await db(Lobby.objects.create)(document_id="owned", owner=owner)
    await db(Lobby.objects.update)(updated_at=timezone.now() - timedelta(hours=2))
    peer = await opened("/introduction/player")
    await peer.send_to(text_data=join("busy", ext=1))
    assert (await received(peer))["type"] == "Joined"
    sweeper = admission.OrphanSweeper()
    assert await sweeper.sweep(now=1000.0) == 0  # first seen empty now
    assert await sweeper.sweep(now=1059.0) == 0  # not yet for the whole TTL
    assert await sweeper.sweep(now=1061.0) == 1
    left = await db(lambda: sorted(Lobby.objects.values_list("document_id", flat=True)))()
    assert left == ["busy", "owned"]
    await peer.disconnect()


async def drained(socket) -> None:
    """Read what the relay sent until it stops sending."""
    while not await socket.receive_nothing(0.1):
        await socket.receive_output()


def test_data_depth_counts_nested_containers():
    from lobbies.schemas import depth

    assert [depth(v, 16) for v in (1, {}, {"a": [1, {"b": {}}]}, [[[]]])] == [0, 1, 4, 3]
    chain: list = []
    for _ in range(5000):
        chain = [chain]
    assert depth(chain, 16) == 17  # stops counting past the limit, without recursion


async def test_lobby_creation_is_rate_limited_per_address_and_per_user(settings, owner):
    from channels.testing import WebsocketCommunicator

    from relayproject.asgi import application

    settings.RELAY_LOBBY_CREATION_RATE = "2/hour"

    async def from_address(address: str, path: str) -> WebsocketCommunicator:
        socket = WebsocketCommunicator(application, path)
        socket.scope["client"] = (address, 50000)
        socket.scope["raw_path"] = path.encode()
        assert (await socket.connect())[0]
        return socket

    async def creates(socket: WebsocketCommunicator, document_id: str) -> str:
        await socket.send_to(text_data=join(document_id, ext=1, lobby={"title": "t"}))
        answer = await received(socket)
        return answer["type"] if answer["type"] == "Joined" else answer["code"]

    # Anonymous clients of one address, however many sockets they use, share its budget.
    first = await from_address("203.0.113.7", "/introduction/a1")
    second = await from_address("203.0.113.7", "/introduction/a2")
    assert [await creates(first, "a"), await creates(second, "b")] == ["Joined", "Joined"]
    assert await creates(second, "c") == "rate_limited"
    elsewhere = await from_address("198.51.100.1", "/introduction/a3")
    assert await creates(elsewhere, "c") == "Joined"
    # One user from many addresses shares its own budget.
    ticket = issue_ticket(owner)
    made = []
    for n, address in enumerate(("192.0.2.1", "192.0.2.2", "192.0.2.3")):
        socket = await from_address(address, f"/t/{ticket}/introduction/u{n}")
        made.append(await creates(socket, f"user-{n}"))
        await socket.disconnect()
    assert made == ["Joined", "Joined", "rate_limited"]
    assert await db(Lobby.objects.count)() == 5
    for socket in (first, second, elsewhere):
        await socket.disconnect()


async def test_an_anonymous_join_cannot_make_a_full_or_hosted_lobby():
    for spec in ({"maxPeers": 1}, {"topology": "host"}):
        squatter = await opened("/introduction/squatter")
        await squatter.send_to(text_data=join("contested", ext=1, lobby=spec))
        assert (await received(squatter))["code"] == "forbidden"
        await squatter.disconnect()
    assert not await db(Lobby.objects.exists)()


async def test_an_ownerless_lobby_left_full_by_a_deleted_owner_refuses_nobody(owner):
    await db(Lobby.objects.create)(document_id="tiny", owner=owner, max_peers=1)
    first = await opened("/introduction/first")
    await first.send_to(text_data=join("tiny", ext=1))
    assert (await received(first))["type"] == "Joined"
    await db(owner.delete)()
    second = await opened("/introduction/second")
    await second.send_to(text_data=join("tiny", ext=1))
    assert (await received(second))["type"] == "Joined"
    for socket in (first, second):
        await socket.disconnect()


async def test_an_owner_shrinking_its_lobby_by_a_join_does_not_freeze_the_relay(owner):
    # The change is made in the sockets' own database thread; taking peers out must not wait
    # there for a socket that is itself waiting on that thread.
    await db(Lobby.objects.create)(document_id="arena", owner=owner)
    early = await opened("/introduction/early")
    await early.send_to(text_data=join("arena", ext=1))
    assert (await received(early))["type"] == "Joined"
    host = await opened(f"/t/{issue_ticket(owner)}/introduction/host")
    await host.send_to(text_data=join("arena", ext=1))
    await drained(host)
    await drained(early)
    await host.send_to(text_data=join("arena", ext=1, lobby={"maxPeers": 1}))
    answers = [await received(host) for _ in range(3)]  # Joined, its Introduction, then Left
    assert answers[0]["type"] == "Joined"
    assert answers[-1] == {"type": "Left", "documentId": "arena", "reason": "full"}
    # The relay still answers: a newcomer's Join needs the database thread.
    other = await opened("/introduction/other")
    await other.send_to(text_data=join("elsewhere", ext=1))
    assert (await received(other))["type"] == "Joined"
    for socket in (early, host, other):
        await socket.disconnect()


async def test_every_ownerless_lobby_is_looked_at_in_turn(settings, monkeypatch):
    settings.RELAY_ORPHAN_LOBBY_TTL = 60.0
    monkeypatch.setattr(admission, "_SWEPT_PER_PASS", 2)
    for document_id in ("a", "b", "c", "d", "e"):
        await db(Lobby.objects.create)(document_id=document_id)
    await db(Lobby.objects.update)(updated_at=timezone.now() - timedelta(hours=2))
    occupants = []
    for document_id in ("a", "b"):  # the oldest two: busy for good
        peer = await opened(f"/introduction/in-{document_id}")
        await peer.send_to(text_data=join(document_id, ext=1))
        assert (await received(peer))["type"] == "Joined"
        occupants.append(peer)
    sweeper = admission.OrphanSweeper()
    for now in (0.0, 1.0, 2.0):  # every batch seen empty once
        await sweeper.sweep(now=now)
    pruned = sum([await sweeper.sweep(now=100.0 + n) for n in range(3)])
    assert pruned == 3
    left = await db(lambda: sorted(Lobby.objects.values_list("document_id", flat=True)))()
    assert left == ["a", "b"]
    for peer in occupants:
        await peer.disconnect()


async def test_a_join_between_two_passes_keeps_an_ownerless_lobby(settings):
    settings.RELAY_ORPHAN_LOBBY_TTL = 60.0
    await db(Lobby.objects.create)(document_id="visited")
    await db(Lobby.objects.update)(updated_at=timezone.now() - timedelta(hours=2))
    sweeper = admission.orphans
    sweeper.empty_since.clear()
    assert await sweeper.sweep(now=0.0) == 0
    visitor = await opened("/introduction/visitor")
    await visitor.send_to(text_data=join("visited", ext=1))
    assert (await received(visitor))["type"] == "Joined"
    await visitor.disconnect()
    assert await sweeper.sweep(now=61.0) == 0  # empty again, but not for the whole TTL
    assert await db(Lobby.objects.filter(document_id="visited").exists)()


def test_the_admin_refuses_an_ownerless_private_lobby_with_a_message(transactional_db):
    from tests.accounts import staff_client

    root = staff_client("root", superuser=True)
    form = {
        "document_id": "x",
        "title": "",
        "game": "",
        "visibility": "private",
        "state": "open",
        "topology": "mesh",
        "data": "{}",
        "grants-TOTAL_FORMS": "0",
        "grants-INITIAL_FORMS": "0",
    }
    response = root.post("/admin/lobbies/lobby/add/", form)
    assert response.status_code == 200  # the form again, with the reason
    assert "without an owner" in response.content.decode()
    assert not Lobby.objects.exists()
