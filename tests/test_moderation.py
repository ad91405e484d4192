"""Operators acting on live sockets (``lobbies.owners`` over ``lobbies.moderation`` and its
orders): kick, ban from a lobby or the relay, and what the live view of a lobby shows."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async as db
from django.contrib.auth.models import User

from lobbies import moderation, owners, signals
from lobbies.auth import issue_ticket
from lobbies.models import Lobby
from tests.sockets import closed_with, join, met, opened, received, stays_open

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


@pytest.fixture
def operator(transactional_db) -> User:
    return User.objects.create_superuser("operator", password="a long password 3")


@pytest.fixture
def actions() -> list[dict]:
    """The ``operator_action`` events sent during the test."""
    seen: list[dict] = []

    def record(signal, sender, **kwargs) -> None:
        seen.append(kwargs)

    signals.operator_action.connect(record, weak=False, dispatch_uid="test-actions")
    yield seen
    signals.operator_action.disconnect(dispatch_uid="test-actions")


async def piped(a: str, b: str, document_id: str = "game"):
    """Peers ``a`` (opted in to the extended messages, nickname "Ace") and ``b`` in
    ``document_id``, with a pipe open between them: their control sockets and the pipe ends."""
    first, second = await met(document_id, a, b, nickname="Ace")
    end_a = await opened(f"/connection/{a}/{b}/{document_id}")
    end_b = await opened(f"/connection/{b}/{a}/{document_id}")
    await end_a.send_to(text_data="hello")
    assert await end_b.receive_from() == "hello"
    return first, second, end_a, end_b


async def test_the_live_view_shows_peers_nicknames_since_when_and_open_pipes():
    first, second, end_a, end_b = await piped("a", "b")
    live = await moderation.live("game")
    assert [(m.peer_id, m.nickname, m.host) for m in live.members] == [
        ("a", "Ace", False),
        ("b", None, False),
    ]
    assert [p.peers for p in live.pipes] == [("a", "b")]
    assert await moderation.counts(["game", "elsewhere"]) == {"game": 2, "elsewhere": 0}
    await end_a.disconnect()
    assert await closed_with(end_b) == 1000
    assert (await moderation.live("game")).pipes == []
    for socket in (first, second):
        await socket.disconnect()


async def test_a_kicked_peer_leaves_the_lobby_its_pipes_close_with_4410(operator, actions):
    first, second, end_a, end_b = await piped("a", "b")
    assert await db(owners.kick)("game", "a", by=operator.pk)
    assert await closed_with(end_a) == 4410  # the kicked peer's end
    assert await closed_with(end_b) == 1000  # its partner's: the pipe is gone
    assert await received(first) == {"type": "Left", "documentId": "game", "reason": "kicked"}
    assert [m.peer_id for m in (await moderation.live("game")).members] == ["b"]
    assert await stays_open(first)  # out of the lobby, not off the relay
    assert actions[-1]["action"] == "kick"
    assert (actions[-1]["peer_id"], actions[-1]["user_id"]) == ("a", operator.pk)
    # Not in the lobby (any more): nothing to do, nothing reported.
    assert not await db(owners.kick)("game", "a", by=operator.pk)
    assert len([a for a in actions if a["action"] == "kick"]) == 1
    # A kick is not a ban: the peer may come back.
    await first.send_to(text_data=join("game", ext=1))
    assert (await received(first))["type"] == "Joined"
    for socket in (first, second):
        await socket.disconnect()


async def test_a_ban_from_a_lobby_takes_the_peer_out_and_keeps_it_out(operator, actions):
    lobby = await db(Lobby.objects.create)(document_id="game", owner=operator)
    first, second, end_a, end_b = await piped("a", "b")
    ban = await db(owners.ban)(lobby, peer_id="a", minutes=30, reason="griefing", by=operator)
    assert ban.expires_at is not None
    assert await closed_with(end_a) == 4410
    assert await closed_with(end_b) == 1000
    assert await received(first) == {"type": "Left", "documentId": "game", "reason": "banned"}
    await first.send_to(text_data=join("game", ext=1))
    assert (await received(first))["code"] == "forbidden"
    assert [m.peer_id for m in (await moderation.live("game")).members] == ["b"]
    assert actions[-1]["action"] == "ban" and actions[-1]["detail"]["banned"] == "a"
    for socket in (first, second):
        await socket.disconnect()


async def test_a_ban_from_the_relay_closes_every_socket_of_the_user_with_4403(operator):
    player = await db(User.objects.create_user)("player", password="a long password 4")
    ticket = await db(issue_ticket)(player)
    phone = await opened(f"/t/{ticket}/introduction/phone")
    laptop = await opened(f"/t/{ticket}/introduction/laptop")
    bystander = await opened("/introduction/bystander")
    await phone.send_to(text_data=join("game"))
    await bystander.send_to(text_data=join("game"))
    assert (await received(bystander))["type"] == "Introduction"
    assert (await received(phone))["type"] == "Introduction"
    to_bystander = await opened(f"/t/{ticket}/connection/phone/bystander/game")
    from_bystander = await opened("/connection/bystander/phone/game")
    await db(owners.ban)(None, user=player, by=operator)
    assert await closed_with(phone) == 4403
    assert await closed_with(laptop) == 4403
    # Its open pipe goes too: pipes are judged when they open, and would outlive the ban.
    assert await closed_with(to_bystander) == 4403
    assert await closed_with(from_bystander) == 1000
    assert [m.peer_id for m in (await moderation.live("game")).members] == ["bystander"]
    # And it holds: the user cannot come back.
    again = await opened(f"/t/{ticket}/introduction/phone")
    assert await closed_with(again) == 4403
    await bystander.disconnect()


async def test_kicking_the_host_passes_the_role_on_where_the_lobby_allows_it(operator):
    await db(Lobby.objects.create)(
        document_id="game", owner=None, topology="host", host_transferable=True
    )
    host, elder = await opened("/introduction/host"), await opened("/introduction/elder")
    await host.send_to(text_data=join("game", ext=1))
    assert (await received(host))["role"] == "host"
    await elder.send_to(text_data=join("game", ext=1))
    assert (await received(elder))["role"] == "member"
    assert (await received(elder))["userName"] == "host"
    assert await db(owners.kick)("game", "host", by=operator.pk)
    promoted = await received(elder)
    assert (promoted["type"], promoted["role"]) == ("Joined", "host")
    assert [(m.peer_id, m.host) for m in (await moderation.live("game")).members] == [
        ("elder", True)
    ]
    for socket in (host, elder):
        await socket.disconnect()


async def test_closing_a_lobby_reports_the_operator_action(operator, actions):
    from lobbies.policy import LobbyState

    lobby = await db(Lobby.objects.create)(document_id="game", owner=operator)
    first, second, end_a, end_b = await piped("a", "b")
    await db(owners.set_state)(lobby, LobbyState.CLOSED, by=operator.pk)
    assert {await closed_with(end_a), await closed_with(end_b)} == {4410, 1000}
    assert await received(first) == {"type": "Left", "documentId": "game", "reason": "closed"}
    assert (await moderation.live("game")).members == []
    assert [(a["action"], a["user_id"]) for a in actions] == [("close", operator.pk)]
    await second.send_to(text_data=json.dumps({"type": "Heartbeat"}))
    assert await stays_open(second)
    for socket in (first, second):
        await socket.disconnect()
