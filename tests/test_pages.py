"""The owners' pages through Django's test client: sign in, "My lobbies", one lobby's page
(settings, state, members, roles), and tickets and tokens."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.test import Client

from lobbies.auth import resolve
from lobbies.engine.presence import get_presence
from lobbies.models import ApiToken, Lobby, LobbyGrant
from tests import accounts

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


async def test_an_owner_kicks_a_peer_from_the_lobby_page(signed_in, owner):
    from asgiref.sync import sync_to_async

    from tests.sockets import join, opened, received

    lobby = await sync_to_async(Lobby.objects.create)(document_id="arena", owner=owner)
    peer = await opened("/introduction/p1")
    await peer.send_to(text_data=join("arena", ext=1))
    assert (await received(peer))["type"] == "Joined"
    page = f"/my/lobbies/{lobby.public_id}/"
    answer = await sync_to_async(signed_in.post, thread_sensitive=False)(
        page, {"action": "kick", "peer": "p1"}, follow=True
    )
    assert "p1 was taken out of the lobby." in answer.content.decode()
    assert await received(peer) == {"type": "Left", "documentId": "arena", "reason": "kicked"}
    assert await get_presence().members("arena") == []
    await peer.disconnect()


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
