"""The owners' pages through Django's test client: sign in, "My lobbies", one lobby's page
(settings, state, members, roles), and tickets and tokens."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async as db
from django.contrib.auth.models import User
from django.template.loader import render_to_string
from django.test import Client

from lobbies.auth import issue_ticket, resolve
from lobbies.engine.presence import get_presence
from lobbies.models import ApiToken, Ban, Lobby, LobbyGrant
from tests import accounts
from tests.sockets import closed_with, join, opened, received, stays_open, with_a_pipe

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


@pytest.fixture
def owner() -> User:
    return User.objects.create_user("owner", password="a long password 1")


@pytest.fixture
def signed_in(owner) -> Client:
    return accounts.signed_in(owner)


def test_the_pages_ask_to_sign_in_and_signing_in_leads_to_my_lobbies(owner):
    client = Client()
    for path in ("/my/", "/my/access/", "/my/lobbies/1/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert b"Sign in" in client.get("/accounts/login/").content
    response = client.post(
        "/accounts/login/", {"username": "owner", "password": "a long password 1"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/my/"
    assert b"You own no lobby yet" in response.content
    out = client.post("/accounts/logout/", follow=True)
    assert out.redirect_chain[-1][0] == "/" and client.get("/my/").status_code == 302


def test_creating_a_lobby_from_the_page(signed_in, owner):
    form = {"document_id": "race", "title": "Friday race", "game": "racer", "max_peers": "4"}
    form |= {"topology": "host", "visibility": "public", "data": "{}"}
    response = signed_in.post("/my/", form, follow=True)
    lobby = Lobby.objects.get(document_id="race")
    assert (lobby.owner, lobby.topology, lobby.max_peers) == (owner, "host", 4)
    assert response.redirect_chain[-1][0] == f"/my/lobbies/{lobby.public_id}/"
    listing = signed_in.get("/my/").content.decode()
    assert "race" in listing and "0 / 4" in listing


@pytest.mark.parametrize(
    ("change", "field_error"),
    [({"max_peers": "0"}, "max_peers"), ({"document_id": "bad\nid"}, "document_id")],
)
def test_invalid_lobby_forms_show_the_error_on_the_field(signed_in, change, field_error):
    form = {"document_id": "x", "topology": "mesh", "visibility": "public", "data": "{}"}
    response = signed_in.post("/my/", form | change)
    assert response.status_code == 400  # bad form input: a 400 with the error shown
    assert response.context["form"].errors.get(field_error)
    assert not Lobby.objects.exists()


def test_without_the_permission_the_page_says_so(signed_in, settings):
    settings.RELAY_CREATION_POLICY = "permission"
    page = signed_in.get("/my/").content.decode()
    assert "ask its operators for the permission" in page
    form = {"document_id": "x", "topology": "mesh", "visibility": "public", "data": "{}"}
    signed_in.post("/my/", form)
    assert not Lobby.objects.exists()


def test_a_lobby_page_shows_its_peers_and_manages_roles_and_state(signed_in, owner):
    User.objects.create_user("friend", password="a long password 3")
    lobby = Lobby.objects.create(document_id="arena", owner=owner, visibility="private")
    presence = get_presence()
    async_to_sync(presence.connect_peer)("p1", "c1", "")
    async_to_sync(presence.join)("p1", "c1", ("arena",))
    page = f"/my/lobbies/{lobby.public_id}/"
    assert "<code>p1</code>" in signed_in.get(page).content.decode()
    signed_in.post(page, {"action": "grant", "username": "friend", "role": "member"})
    grant = LobbyGrant.objects.get(lobby=lobby)
    assert grant.user.username == "friend"
    unknown = signed_in.post(page, {"action": "grant", "username": "nobody", "role": "member"})
    assert "no user named" in unknown.content.decode()
    signed_in.post(page, {"action": "revoke", "grant": grant.pk})
    assert not LobbyGrant.objects.exists()
    signed_in.post(page, {"action": "state", "state": "locked"})
    lobby.refresh_from_db()
    assert lobby.state == "locked"
    save = {"action": "save", "title": "Arena", "topology": "mesh", "visibility": "public"}
    signed_in.post(page, save | {"data": '{"map": 2}'})
    lobby.refresh_from_db()
    assert (lobby.title, lobby.data) == ("Arena", {"map": 2})
    signed_in.post(page, {"action": "delete"})
    assert not Lobby.objects.exists()


def test_another_users_lobby_page_is_not_found(signed_in):
    stranger = User.objects.create_user("stranger", password="a long password 4")
    lobby = Lobby.objects.create(document_id="theirs", owner=stranger)
    page = f"/my/lobbies/{lobby.public_id}/"
    assert signed_in.get(page).status_code == 404
    assert signed_in.post(page, {"action": "delete"}).status_code == 404
    assert Lobby.objects.filter(pk=lobby.pk).exists()


def test_tickets_and_tokens_from_the_access_page(signed_in, owner):
    page = signed_in.post("/my/access/", {"action": "ticket", "ttl": "60"}).content.decode()
    url = re.search(r'id="ticket-url">([^<]+)<', page).group(1)
    assert url.startswith("ws://testserver/t/")
    assert resolve(url.rsplit("/", 1)[1], None, None)[0] == owner
    page = signed_in.post("/my/access/", {"action": "token", "name": "server"}).content.decode()
    secret = re.search(r'id="token-secret">([^<]+)<', page).group(1)
    assert ApiToken.objects.authenticate(secret).user == owner
    assert secret not in signed_in.get("/my/access/").content.decode()  # shown once
    token = ApiToken.objects.get(user=owner)
    signed_in.post("/my/access/", {"action": "revoke", "token": token.pk})
    assert ApiToken.objects.authenticate(secret) is None


async def post(client: Client, url: str, data: dict, **kwargs: object):
    """The page's answer, from a thread of its own, as the server runs a view: its calls to
    the live relay run on this test's event loop, where the sockets are."""
    return await sync_to_async(client.post, thread_sensitive=False)(url, data, **kwargs)


async def get(client: Client, url: str):
    return await sync_to_async(client.get, thread_sensitive=False)(url)


@pytest.fixture
async def arena(owner):
    """The owner's lobby with Ann (signed in by a ticket, opted in, nickname "Ace") and an
    anonymous bob in it, and a pipe open between them."""
    lobby = await db(Lobby.objects.create)(document_id="arena", owner=owner, title="Arena")
    ann = await db(User.objects.create_user)("ann", password="a long password 6")
    ticket = await db(issue_ticket)(ann)
    sockets = await with_a_pipe("arena", ticket)
    yield {"lobby": lobby, "ann": ann, **sockets}
    for socket in sockets.values():
        await socket.disconnect()


async def test_a_lobby_page_shows_the_admins_live_view_and_its_fragment(signed_in, arena):
    lobby = arena["lobby"]
    page = (await get(signed_in, f"/my/lobbies/{lobby.public_id}/")).content.decode()
    live = page[page.index('id="live-panel"') :]
    assert f'data-live-url="/my/lobbies/{lobby.public_id}/live/"' in page
    assert "2</span> peers in the lobby, 1 pipe open" in live
    rows = live[live.index('id="live-members"') : live.index('id="live-pipes"')]
    assert rows.index('data-peer="a"') < rows.index('data-peer="b"')  # longest present first
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[: rows.index('data-peer="b"')])
    assert cells[:4] == ["<code>a</code>", "ann", "Ace", "member"]
    assert re.match(r"\d\d:\d\d:\d\d <small>\(0.minutes\)</small>", cells[4]), cells[4]
    assert "anonymous" in rows and rows.count('value="kick"') == 2
    assert "<code>a</code> ↔ <code>b</code>" in live
    # The panel alone, as the page refreshes it: the admin's words, no page around it.
    fragment = await get(signed_in, f"/my/lobbies/{lobby.public_id}/live/")
    assert fragment["Cache-Control"] == "no-store"
    text = fragment.content.decode()
    assert 'data-peer="a"' in text and "<html" not in text and "Nickname" in text


async def test_the_live_fragment_is_only_for_those_who_manage_the_lobby(arena):
    url = f"/my/lobbies/{arena['lobby'].public_id}/live/"
    assert (await get(Client(), url)).status_code == 302  # to sign in
    stranger = await db(User.objects.create_user)("stranger", password="a long password 4")
    assert (await get(await db(accounts.signed_in)(stranger), url)).status_code == 404
    ann = await db(accounts.signed_in)(arena["ann"])  # in the lobby, but does not manage it
    assert (await get(ann, url)).status_code == 404
    owner = await db(accounts.signed_in)(arena["lobby"].owner)
    assert (await post(owner, url, {"action": "kick", "peer_id": "a"})).status_code == 405
    assert await get_presence().members("arena") == ["a", "b"]


async def test_an_owner_kicks_a_peer_from_the_lobby_page(signed_in, arena):
    page = f"/my/lobbies/{arena['lobby'].public_id}/"
    answer = await post(signed_in, page, {"action": "kick", "peer_id": "a"}, follow=True)
    assert "Kicked peer &#x27;a&#x27;." in answer.content.decode()  # the admin's words
    assert await closed_with(arena["end_a"]) == 4410
    assert await received(arena["a"]) == {"type": "Left", "documentId": "arena", "reason": "kicked"}
    assert await get_presence().members("arena") == ["b"]
    # Gone already (a stale page, or a made-up id): a 404 that says so, nobody touched.
    again = await post(signed_in, page, {"action": "kick", "peer_id": "a"})
    assert again.status_code == 404
    assert "is not in the lobby (any more)" in again.content.decode()
    assert await get_presence().members("arena") == ["b"]


async def test_an_owner_bans_a_signed_in_peer_from_this_lobby_only(signed_in, arena):
    other = await db(Lobby.objects.create)(document_id="other", owner=arena["lobby"].owner)
    page = f"/my/lobbies/{arena['lobby'].public_id}/"
    # A lobby field is not the page's to take: the ban is from the page's lobby, whatever else.
    form = {"action": "ban", "peer_id": "a", "minutes": "60", "reason": "spam", "lobby": other.pk}
    answer = await post(signed_in, page, form, follow=True)
    assert "Banned user &#x27;ann&#x27; until" in answer.content.decode()
    assert await closed_with(arena["end_a"]) == 4410
    assert (await received(arena["a"]))["reason"] == "banned"
    given = await db(Ban.objects.select_related("user", "lobby", "created_by").get)()
    # Ann was signed in: her account is banned, not just this peer id, and from here alone.
    assert (given.user.username, given.peer_id, given.reason) == ("ann", "", "spam")
    assert (given.lobby.document_id, given.created_by.username) == ("arena", "owner")
    assert 59 * 60 < (given.expires_at - given.created_at).total_seconds() <= 3600
    await arena["a"].send_to(text_data=join("arena", ext=1))
    assert (await received(arena["a"]))["code"] == "forbidden"
    await arena["a"].send_to(text_data=join("other", ext=1))
    assert (await received(arena["a"]))["type"] == "Joined"


async def test_an_owner_bans_an_anonymous_peer_by_its_id(signed_in, arena):
    page = f"/my/lobbies/{arena['lobby'].public_id}/"
    answer = await post(signed_in, page, {"action": "ban", "peer_id": "b", "minutes": ""})
    assert answer.status_code == 302
    given = await db(Ban.objects.get)()
    assert (given.user_id, given.peer_id, given.expires_at) == (None, "b", None)  # until lifted
    assert await get_presence().members("arena") == ["a"]


async def test_a_ban_of_a_peer_not_in_the_lobby_or_of_made_up_length_is_refused(signed_in, arena):
    page = f"/my/lobbies/{arena['lobby'].public_id}/"
    forged = await post(signed_in, page, {"action": "ban", "peer_id": "nobody", "minutes": "15"})
    assert forged.status_code == 404
    for minutes in ("99999999999", "-5", "1e9", "forever"):
        answer = await post(signed_in, page, {"action": "ban", "peer_id": "a", "minutes": minutes})
        assert answer.status_code == 400
        assert "minutes: Select a valid choice." in answer.content.decode()
    assert not await db(Ban.objects.exists)()
    assert await get_presence().members("arena") == ["a", "b"]


async def test_who_does_not_manage_the_lobby_can_neither_kick_nor_ban(arena):
    page = f"/my/lobbies/{arena['lobby'].public_id}/"
    stranger = await db(User.objects.create_user)("stranger", password="a long password 4")
    member = await db(User.objects.create_user)("member", password="a long password 5")
    await db(LobbyGrant.objects.create)(lobby=arena["lobby"], user=member, role="member")
    for user in (stranger, member, arena["ann"]):
        client = await db(accounts.signed_in)(user)
        for action in ("kick", "ban"):
            answer = await post(client, page, {"action": action, "peer_id": "b", "minutes": "15"})
            assert answer.status_code == 404
    assert await stays_open(arena["end_b"])
    assert await get_presence().members("arena") == ["a", "b"]
    assert not await db(Ban.objects.exists)()


async def test_a_moderator_kicks_and_bans_but_never_the_owner(signed_in, arena):
    """Moderators manage the lobby (lobbies.policy.may_manage): they kick and ban from it, but
    not one who manages it too, or they could keep its owner out of its own lobby."""
    lobby = arena["lobby"]
    page = f"/my/lobbies/{lobby.public_id}/"
    await db(LobbyGrant.objects.create)(lobby=lobby, user=arena["ann"], role="moderator")
    moderator = await db(accounts.signed_in)(arena["ann"])
    owner_ticket = await db(issue_ticket)(lobby.owner)
    owners_peer = await opened(f"/t/{owner_ticket}/introduction/o")
    await owners_peer.send_to(text_data=join("arena", ext=1))
    assert (await received(owners_peer))["type"] == "Joined"
    shown = (await get(moderator, page)).content.decode()
    owners_row = shown[shown.index('data-peer="o"') :].split("</tr>")[0]
    assert 'value="kick"' in owners_row and 'value="ban"' not in owners_row
    refused = await post(moderator, page, {"action": "ban", "peer_id": "o", "minutes": "15"})
    assert refused.status_code == 403
    assert "only an operator may ban it" in refused.content.decode()
    assert not await db(Ban.objects.exists)()
    # Nor itself, nor may the owner ban its moderator from here.
    assert (await post(moderator, page, {"action": "ban", "peer_id": "a"})).status_code == 403
    assert (await post(signed_in, page, {"action": "ban", "peer_id": "a"})).status_code == 403
    assert not await db(Ban.objects.exists)()
    assert (await post(moderator, page, {"action": "ban", "peer_id": "b"})).status_code == 302
    assert (await db(Ban.objects.get)()).peer_id == "b"
    assert (await post(moderator, page, {"action": "kick", "peer_id": "o"})).status_code == 302
    told = [await received(owners_peer)]
    while told[-1]["type"] == "Introduction":  # to a and b, as it joined
        told.append(await received(owners_peer))
    assert told[-1] == {"type": "Left", "documentId": "arena", "reason": "kicked"}
    await owners_peer.disconnect()


# Every form of the owners' pages, with what an attacker (or a stale tab) would post.
_BAD_LOBBY_POSTS = [
    {"action": "revoke", "grant": "not-a-number"},
    {"action": "revoke", "grant": "999999"},
    {"action": "revoke"},
    {"action": "state", "state": "exploded"},
    {"action": "state"},
    {"action": "grant", "username": "", "role": "emperor"},
    {"action": "save", "max_peers": "-5", "topology": "ring", "visibility": "x", "data": "{"},
    {"action": "save", "data": "[" * 5000 + "]" * 5000},
    {"action": "no-such-action"},
    {},
    {"action": "kick"},
    {"action": "kick", "peer_id": ""},
    {"action": "kick", "peer_id": "x" * 300},
    {"action": "kick", "peer_id": "a\x00b"},
    {"action": "ban", "peer_id": "p1", "minutes": "525600000"},
    {"action": "ban", "peer_id": "p1", "reason": "x" * 501},
]


@pytest.mark.parametrize("form", _BAD_LOBBY_POSTS)
def test_bad_input_on_a_lobby_page_is_a_400_never_a_500(signed_in, owner, form):
    lobby = Lobby.objects.create(document_id="arena", owner=owner, title="Arena")
    response = signed_in.post(f"/my/lobbies/{lobby.public_id}/", form)
    assert response.status_code == 400
    lobby.refresh_from_db()
    assert (lobby.title, lobby.state) == ("Arena", "open")


@pytest.mark.parametrize(
    "form",
    [
        {"action": "revoke", "token": "abc"},
        {"action": "revoke", "token": "424242"},
        {"action": "ticket", "ttl": "soon"},
        {"action": "ticket", "ttl": "nan"},
        {"action": "token", "name": ""},
        {"action": "?"},
    ],
)
def test_bad_input_on_the_access_page_is_a_400_never_a_500(signed_in, form):
    assert signed_in.post("/my/access/", form).status_code == 400


@pytest.mark.parametrize(
    "form",
    [
        {"document_id": "x", "data": "{", "topology": "mesh", "visibility": "public"},
        {"document_id": "x" * 300, "topology": "mesh", "visibility": "public"},
        {"document_id": "x", "topology": "mesh", "visibility": "public", "max_peers": "1e9"},
    ],
)
def test_bad_input_on_my_lobbies_is_a_400_never_a_500(signed_in, form):
    assert signed_in.post("/my/", form).status_code == 400
    assert not Lobby.objects.exists()


def test_a_taken_document_id_is_a_400_with_the_reason(signed_in, owner):
    stranger = User.objects.create_user("stranger", password="a long password 3")
    Lobby.objects.create(document_id="taken", owner=stranger, visibility="private")
    form = {"document_id": "taken", "topology": "mesh", "visibility": "public", "data": "{}"}
    response = signed_in.post("/my/", form)
    assert response.status_code == 400
    assert response.context["form"].errors["document_id"] == [
        "a lobby with this document id exists"
    ]


def test_every_page_of_the_relay_uses_its_one_stylesheet(signed_in, owner, rf):
    """Landing, demo, sign-in, locked out and the owners' pages: each links the stylesheet and
    carries no styles of its own (one palette, the admin's)."""
    lobby = Lobby.objects.create(document_id="arena", owner=owner)
    pages = [
        Client().get("/").content,
        Client().get("/demo/").content,
        Client().get("/accounts/login/").content,
        render_to_string("registration/locked_out.html", request=rf.get("/accounts/login/")),
    ]
    for path in ("/my/", "/my/access/", f"/my/lobbies/{lobby.public_id}/"):
        pages.append(signed_in.get(path).content)
    for page in pages:
        text = page.decode() if isinstance(page, bytes) else page
        assert '<link rel="stylesheet" href="/static/relay/site.css">' in text
        assert "<style" not in text and ' style="' not in text
        assert '<header id="header">' in text


def test_the_admin_and_the_owners_pages_name_a_lobbys_capacity_alike(signed_in, owner):
    lobby = Lobby.objects.create(document_id="arena", owner=owner, max_peers=4)
    root = accounts.staff_client("root", superuser=True)
    admin_page = root.get(f"/admin/lobbies/lobby/{lobby.pk}/change/").content.decode()
    owners_page = signed_in.get(f"/my/lobbies/{lobby.public_id}/").content.decode()
    for page in (admin_page, owners_page):
        assert re.search(r'<label[^>]*for="id_max_peers"[^>]*>Capacity:</label>', page)
        assert "Max peers" not in page
