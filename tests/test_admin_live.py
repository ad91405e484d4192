"""The admin as the operators' control room: a lobby's page shows who is in it now, and its
actions reach the live sockets (a kicked client really gets 4410); every action is in the admin
log; staff do only what their permissions allow."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async as db
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client

from lobbies.auth import issue_ticket
from lobbies.engine.presence import get_presence
from lobbies.models import Ban, Lobby
from tests.accounts import staff_client
from tests.sockets import closed_with, join, opened, received, stays_open, with_a_pipe

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


async def request(client: Client, method: str, url: str, data: dict | None = None):
    """The admin's answer, from a thread of its own, as the server runs a view: its calls to
    the live relay run on this test's event loop, where the sockets are."""
    call = getattr(client, method)
    return await sync_to_async(call, thread_sensitive=False)(url, data or {})


@pytest.fixture
async def lobby() -> Lobby:
    # Owned: an ownerless lobby can be neither locked nor closed (tests/test_squatting.py).
    maker = await db(User.objects.create_user)("maker", password="a long password 5")
    return await db(Lobby.objects.create)(
        document_id="arena", title="Arena", game="racer", owner=maker
    )


@pytest.fixture
async def arena(lobby):
    """Ann (signed in, opted in, nickname "Ace") and an anonymous bob in the lobby, with a pipe
    open between them."""
    ann = await db(User.objects.create_user)("ann", password="a long password 6")
    ticket = await db(issue_ticket)(ann)
    sockets = await with_a_pipe("arena", ticket)
    yield sockets
    for socket in sockets.values():
        await socket.disconnect()


async def test_the_lobby_page_shows_who_is_in_it_now(lobby, arena):
    client = await db(staff_client)("viewer", "view_lobby")
    page = (await request(client, "get", f"/admin/lobbies/lobby/{lobby.pk}/change/")).content
    page = page.decode()
    live = page[page.index('id="live-panel"') :]
    assert "2</span> peers in the lobby, 1 pipe open" in live
    rows = live[live.index('id="live-members"') : live.index('id="live-pipes"')]
    assert rows.index('data-peer="a"') < rows.index('data-peer="b"')  # longest present first
    assert "ann" in rows and "Ace" in rows and "anonymous" in rows
    assert "<code>a</code> ↔ <code>b</code>" in live
    assert "Kick" not in live  # a view-only operator gets no buttons
    # The panel alone, as the page refreshes it.
    fragment = (await request(client, "get", f"/admin/lobbies/lobby/{lobby.pk}/live/")).content
    assert b'data-peer="a"' in fragment and b"<html" not in fragment
    # And the list counts peers online per lobby.
    listing = (await request(client, "get", "/admin/lobbies/lobby/")).content.decode()
    assert '<td class="field-online">2</td>' in listing


async def test_an_operator_kicks_a_peer_from_the_lobby_page(lobby, arena):
    client = await db(staff_client)("root", superuser=True)
    url = f"/admin/lobbies/lobby/{lobby.pk}/live/"
    response = await request(client, "post", url, {"action": "kick", "peer_id": "a"})
    assert response.status_code == 302
    assert response["Location"] == f"/admin/lobbies/lobby/{lobby.pk}/change/"
    assert await closed_with(arena["end_a"]) == 4410
    assert await received(arena["a"]) == {
        "type": "Left",
        "documentId": "arena",
        "reason": "kicked",
    }
    assert await get_presence().members("arena") == ["b"]
    entry = await db(LogEntry.objects.select_related("user").get)()
    assert (entry.user.username, entry.object_id) == ("root", str(lobby.pk))
    assert entry.get_change_message() == "Kicked peer 'a'."
    page = (await request(client, "get", url)).content.decode()
    assert 'data-peer="a"' not in page and 'data-peer="b"' in page


async def test_a_view_only_operator_cannot_kick(lobby, arena):
    client = await db(staff_client)("viewer", "view_lobby")
    url = f"/admin/lobbies/lobby/{lobby.pk}/live/"
    response = await request(client, "post", url, {"action": "kick", "peer_id": "a"})
    assert response.status_code == 403
    assert await stays_open(arena["end_a"])
    assert await get_presence().members("arena") == ["a", "b"]
    assert not await db(LogEntry.objects.exists)()
    # Without even the view permission, the live view is not shown at all.
    outsider = await db(staff_client)("outsider")
    assert (await request(outsider, "get", url)).status_code == 403


async def test_banning_takes_the_ban_permission_and_keeps_the_user_out(lobby, arena):
    moderator = await db(staff_client)("moderator", "view_lobby", "change_lobby")
    url = f"/admin/lobbies/lobby/{lobby.pk}/live/"
    ban = {"action": "ban", "peer_id": "a", "minutes": "60", "reason": "spam"}
    assert (await request(moderator, "post", url, ban)).status_code == 403
    assert await get_presence().members("arena") == ["a", "b"]
    root = await db(staff_client)("root", superuser=True)
    assert (await request(root, "post", url, ban)).status_code == 302
    assert await closed_with(arena["end_a"]) == 4410
    assert (await received(arena["a"]))["reason"] == "banned"
    given = await db(Ban.objects.select_related("user").get)()
    # Ann was signed in: her account is banned, not just this peer id.
    assert (given.user.username, given.peer_id, given.reason) == ("ann", "", "spam")
    assert 59 * 60 < (given.expires_at - given.created_at).total_seconds() <= 3600
    messages = await db(lambda: [e.get_change_message() for e in LogEntry.objects.all()])()
    assert any(m.startswith("Banned user 'ann' until") for m in messages), messages
    await arena["a"].send_to(text_data=join("arena", ext=1))
    assert (await received(arena["a"]))["code"] == "forbidden"


async def test_lock_close_and_transfer_from_the_lobby_page(lobby, arena):
    root = await db(staff_client)("root", superuser=True)
    await db(User.objects.create_user)("heir", password="a long password 7")
    url = f"/admin/lobbies/lobby/{lobby.pk}/live/"
    await request(root, "post", url, {"action": "lock"})
    newcomer = await opened("/introduction/c")
    await newcomer.send_to(text_data=join("arena", ext=1))
    assert (await received(newcomer))["code"] == "locked"
    await request(root, "post", url, {"action": "transfer", "owner": "heir"})
    assert (await db(Lobby.objects.select_related("owner").get)(pk=lobby.pk)).owner.username == (
        "heir"
    )
    unknown = await request(root, "post", url, {"action": "transfer", "owner": "nobody"})
    assert unknown.status_code == 302  # back to the page, with the error as a message
    await request(root, "post", url, {"action": "close"})
    assert {await closed_with(arena["end_a"]), await closed_with(arena["end_b"])} == {4410, 1000}
    assert (await received(arena["a"]))["reason"] == "closed"
    assert await get_presence().members("arena") == []
    messages = await db(lambda: [e.get_change_message() for e in LogEntry.objects.all()])()
    assert sorted(messages) == sorted(
        ["The lobby is locked now.", "Owner is now 'heir'.", "The lobby is closed now."]
    )
    await newcomer.disconnect()


async def test_an_action_without_its_peer_changes_nothing(lobby, arena):
    root = await db(staff_client)("root", superuser=True)
    url = f"/admin/lobbies/lobby/{lobby.pk}/live/"
    response = await request(root, "post", url, {"action": "kick"})
    assert response.status_code == 302
    assert await get_presence().members("arena") == ["a", "b"]
    assert (await request(root, "post", url, {"action": "explode"})).status_code == 302
    assert (await request(root, "get", "/admin/lobbies/lobby/999/live/")).status_code == 404
    assert (await request(root, "get", "/admin/lobbies/lobby/abc/live/")).status_code == 404


async def test_a_ban_saved_in_the_ban_admin_applies_to_live_sockets(lobby, arena):
    root = await db(staff_client)("root", superuser=True)
    form = {"lobby": lobby.pk, "peer_id": "b", "reason": "", "expires_at_0": "", "expires_at_1": ""}
    response = await request(root, "post", "/admin/lobbies/ban/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert await closed_with(arena["end_b"]) == 4410
    assert await get_presence().members("arena") == ["a"]
    await arena["b"].send_to(text_data=join("arena", ext=1))
    assert (await received(arena["b"]))["code"] == "forbidden"  # and it holds


async def test_lifting_a_ban_in_the_ban_admin_takes_nobody_out(lobby, arena):
    root = await db(staff_client)("root", superuser=True)
    ban = await db(Ban.objects.create)(lobby=lobby, peer_id="elsewhere")
    lifted = {"lobby": lobby.pk, "peer_id": "b", "reason": "", "expires_at_0": "2020-01-01"}
    lifted["expires_at_1"] = "00:00:00"
    response = await request(root, "post", f"/admin/lobbies/ban/{ban.pk}/change/", lifted)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert await stays_open(arena["end_b"])
    assert await get_presence().members("arena") == ["a", "b"]
