"""Lobbies seen from the control socket: the creation policy, private, locked and full lobbies,
the extended messages (only for clients that ask), Join extras, and the host topology."""

from __future__ import annotations

import json

import msgpack
import pytest
from channels.db import database_sync_to_async as db
from django.contrib.auth.models import Permission, User

from lobbies.auth import issue_ticket
from lobbies.models import Lobby, LobbyGrant
from tests.sockets import closed_with, join, opened, packed, received, stays_open

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


@pytest.fixture
def owner(transactional_db) -> User:
    return User.objects.create_user("owner", password="a long password 1")


@pytest.fixture
def player(transactional_db) -> User:
    return User.objects.create_user("player", password="a long password 2")


def as_user(user: User) -> str:
    return f"/t/{issue_ticket(user)}"


async def test_a_client_that_did_not_opt_in_never_gets_extended_messages(settings):
    settings.RELAY_CREATION_POLICY = "authenticated"
    peer = await opened("/introduction/lf-client")
    await peer.send_to(text_data=join("new-lobby"))  # refused: it may not create
    assert await stays_open(peer)  # no Error, no close: the LF clients throw on unknown types
    await peer.disconnect()


async def test_the_creation_policy_decides_who_creates_lobbies(settings, owner, player):
    settings.RELAY_CREATION_POLICY = "permission"
    anonymous = await opened("/introduction/anon")
    await anonymous.send_to(text_data=join("fresh", ext=1))
    assert (await received(anonymous))["code"] == "forbidden"
    without = await opened(f"{as_user(player)}/introduction/player")
    await without.send_to(text_data=join("fresh", ext=1))
    assert (await received(without))["code"] == "forbidden"
    await db(owner.user_permissions.add)(await db(Permission.objects.get)(codename="create_lobby"))
    account = await opened(f"{as_user(owner)}/introduction/owner")
    await account.send_to(text_data=join("fresh", ext=1))
    joined = await received(account)
    assert (joined["type"], joined["documentId"], joined["lobby"]) == ("Joined", "fresh", None)
    for socket in (anonymous, without, account):
        await socket.disconnect()


async def test_a_join_that_creates_a_lobby_records_its_owner_and_metadata(owner):
    spec = {"game": "spaceRacer", "title": "Friday race", "maxPeers": 4, "data": {"map": 3}}
    peer = await opened(f"{as_user(owner)}/introduction/host")
    await peer.send_to(
        bytes_data=packed({"type": "Join", "documentIds": ["race"], "ext": 1, "lobby": spec})
    )
    joined = msgpack.unpackb(await peer.receive_from())  # answered in the peer's dialect
    assert joined["type"] == "Joined" and joined["role"] == "member"
    assert joined["lobby"]["owner"] == "owner" and joined["lobby"]["data"] == {"map": 3}
    lobby = await db(Lobby.objects.get)(document_id="race")
    assert (lobby.owner_id, lobby.game, lobby.max_peers) == (owner.pk, "spaceRacer", 4)
    await peer.disconnect()


@pytest.mark.parametrize(
    ("spec", "field"),
    [({"maxPeers": 0}, "maxPeers"), ({"topology": "ring"}, "topology"), ({"colour": 1}, "colour")],
)
async def test_invalid_lobby_metadata_is_refused_with_the_field_named(spec, field):
    peer = await opened("/introduction/p")
    await peer.send_to(text_data=join("x", ext=1, lobby=spec))
    error = await received(peer)
    assert (error["type"], error["code"]) == ("Error", "invalid")
    assert field in error["message"]
    assert not await db(Lobby.objects.filter(document_id="x").exists)()
    await peer.disconnect()


async def test_private_locked_and_full_lobbies_refuse_with_their_reason(owner, player):
    await db(Lobby.objects.create)(document_id="secret", owner=owner, visibility="private")
    await db(Lobby.objects.create)(document_id="shut", owner=owner, state="locked")
    await db(Lobby.objects.create)(document_id="tiny", owner=owner, max_peers=1)
    first = await opened("/introduction/first")
    await first.send_to(text_data=join("tiny", ext=1))
    assert (await received(first))["type"] == "Joined"
    peer = await opened(f"{as_user(player)}/introduction/player")
    for lobby, code in [("secret", "not_found"), ("shut", "locked"), ("tiny", "lobby_full")]:
        await peer.send_to(text_data=join(lobby, ext=1))
        error = await received(peer)
        assert (error["type"], error["documentId"], error["code"]) == ("Error", lobby, code)
    # Refused ids are not joined: nobody there is introduced to the peer.
    assert await stays_open(first)
    for socket in (first, peer):
        await socket.disconnect()


async def test_a_grant_opens_a_private_lobby_and_the_owner_passes_a_lock(owner, player):
    secret = await db(Lobby.objects.create)(
        document_id="secret", owner=owner, visibility="private", state="locked"
    )
    mine = await opened(f"{as_user(owner)}/introduction/owner")
    await mine.send_to(text_data=join("secret", ext=1))
    assert (await received(mine))["type"] == "Joined"
    await db(secret.__class__.objects.filter(pk=secret.pk).update)(state="open")
    await db(LobbyGrant.objects.create)(lobby=secret, user=player, role="member")
    guest = await opened(f"{as_user(player)}/introduction/guest")
    await guest.send_to(text_data=join("secret", ext=1))
    assert (await received(guest))["type"] == "Joined"
    assert (await received(guest))["userName"] == "owner"
    for socket in (mine, guest):
        await socket.disconnect()


async def test_nickname_and_ext_in_the_msgpack_dialect():
    peer = await opened("/introduction/p")
    await peer.send_to(
        bytes_data=packed({"type": "Join", "documentIds": ["a"], "ext": 1, "nickname": "Ace"})
    )
    joined = msgpack.unpackb(await peer.receive_from())
    assert joined == {"type": "Joined", "documentId": "a", "role": "member", "lobby": None}
    await peer.disconnect()


# -- the host topology ----------------------------------------------------------------------


async def host_lobby(owner: User, transferable: bool = False) -> Lobby:
    return await db(Lobby.objects.create)(
        document_id="game", owner=owner, topology="host", host_transferable=transferable
    )


async def test_in_a_host_lobby_members_meet_the_host_only(owner):
    await host_lobby(owner)
    m1 = await opened("/introduction/m1")
    await m1.send_to(text_data=join("game"))
    m2 = await opened("/introduction/m2")
    await m2.send_to(text_data=join("game"))
    assert await stays_open(m1) and await stays_open(m2)  # no host yet: nobody to meet
    host = await opened(f"{as_user(owner)}/introduction/host")
    await host.send_to(text_data=join("game", ext=1))
    assert (await received(host))["role"] == "host"
    met = {(await received(host))["userName"] for _ in range(2)}
    assert met == {"m1", "m2"}
    assert (await received(m1))["userName"] == "host"
    assert (await received(m2))["userName"] == "host"
    # Members never met, so no pipe between them; a pipe with the host opens.
    assert await closed_with(await opened("/connection/m1/m2/game")) == 4403
    pipe = await opened("/connection/m1/host/game")
    assert await stays_open(pipe)
    for socket in (m1, m2, host, pipe):
        await socket.disconnect()


async def test_when_the_host_leaves_its_members_are_let_go(owner):
    await host_lobby(owner)
    host = await opened(f"{as_user(owner)}/introduction/host")
    await host.send_to(text_data=join("game"))
    member = await opened("/introduction/member")
    await member.send_to(text_data=join("game", ext=1))
    assert (await received(member))["role"] == "member"
    assert (await received(member))["userName"] == "host"
    to_host = await opened("/connection/member/host/game")
    from_host = await opened(f"{as_user(owner)}/connection/host/member/game")
    await to_host.send_to(text_data="ready")
    assert await from_host.receive_from() == "ready"
    await host.disconnect()
    assert await closed_with(to_host) == 4410
    left = await received(member)
    assert left == {"type": "Left", "documentId": "game", "reason": "host_left"}
    assert await closed_with(from_host) == 1000
    await member.disconnect()


async def test_a_transferable_host_role_passes_to_the_member_present_longest(owner):
    await host_lobby(owner, transferable=True)
    host = await opened(f"{as_user(owner)}/introduction/host")
    await host.send_to(text_data=join("game"))
    elder, younger = await opened("/introduction/elder"), await opened("/introduction/younger")
    await elder.send_to(text_data=join("game", ext=1))
    assert (await received(elder))["type"] == "Joined"
    assert (await received(elder))["userName"] == "host"
    await younger.send_to(text_data=join("game", ext=1))
    assert (await received(younger))["type"] == "Joined"
    assert (await received(younger))["userName"] == "host"
    await host.send_to(text_data=json.dumps({"type": "Leave", "documentIds": ["game"]}))
    promoted = await received(elder)
    assert (promoted["type"], promoted["role"], promoted["lobby"]["host"]) == (
        "Joined",
        "host",
        "elder",
    )
    told = await received(younger)
    assert (told["role"], told["lobby"]["host"]) == ("member", "elder")
    assert (await received(elder))["userName"] == "younger"
    assert (await received(younger))["userName"] == "elder"
    assert await stays_open(await opened("/connection/younger/elder/game"))
    for socket in (host, elder, younger):
        await socket.disconnect()


async def test_a_change_saved_in_this_process_applies_to_the_next_join(owner):
    """What the database says is cached per process (a thousand Joins, one query); a change
    saved here drops the cached answer at once."""
    arena = await db(Lobby.objects.create)(document_id="arena", owner=owner)
    first = await opened("/introduction/first")
    await first.send_to(text_data=join("arena", ext=1))
    assert (await received(first))["type"] == "Joined"
    arena.state = "locked"
    await db(arena.save)()
    late = await opened("/introduction/late")
    await late.send_to(text_data=join("arena", ext=1))
    assert (await received(late))["code"] == "locked"
    for socket in (first, late):
        await socket.disconnect()


async def test_with_no_cache_a_change_from_elsewhere_applies_at_once(settings, owner):
    settings.RELAY_FACTS_CACHE_SECONDS = 0
    await db(Lobby.objects.create)(document_id="arena", owner=owner)
    first = await opened("/introduction/first")
    await first.send_to(text_data=join("arena", ext=1))
    assert (await received(first))["type"] == "Joined"
    # As another worker would: a write this process gets no signal of.
    await db(Lobby.objects.filter(document_id="arena").update)(max_peers=1)
    late = await opened("/introduction/late")
    await late.send_to(text_data=join("arena", ext=1))
    assert (await received(late))["code"] == "lobby_full"
    for socket in (first, late):
        await socket.disconnect()
