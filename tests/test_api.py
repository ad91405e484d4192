"""The owners' JSON API through Django's test client: the schema and docs, the public list,
lobby management as its owner and as an attacker, grants, tickets and tokens, sessions with
CSRF and Bearer tokens."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import Permission, User
from django.test import Client

from lobbies.auth import issue_ticket, resolve
from lobbies.engine.presence import get_presence
from lobbies.models import ApiToken, Lobby, LobbyGrant
from tests.accounts import signed_in
from tests.sockets import closed_with, met, opened, received

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


@pytest.fixture
def owner() -> User:
    return User.objects.create_user("owner", password="a long password 1")


@pytest.fixture
def other() -> User:
    return User.objects.create_user("other", password="a long password 2")


def bearer(user: User) -> dict[str, str]:
    _, secret = ApiToken.issue(user, "test")
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def post(client: Client, path: str, body: dict | None = None, **headers: str):
    return client.post(path, json.dumps(body or {}), content_type="application/json", **headers)


def patch(client: Client, path: str, body: dict, **headers: str):
    return client.patch(path, json.dumps(body), content_type="application/json", **headers)


def in_lobby(document_id: str, *peers: str) -> None:
    presence = get_presence()
    for peer in peers:
        async_to_sync(presence.connect_peer)(peer, f"c-{peer}", "")
        async_to_sync(presence.join)(peer, f"c-{peer}", (document_id,))


def test_the_openapi_schema_and_the_docs_are_served():
    schema = Client().get("/api/openapi.json").json()
    assert schema["info"]["title"] == "Relay API"
    for path in ("/api/lobbies", "/api/lobbies/{lobby_id}", "/api/tickets", "/api/tokens"):
        assert path in schema["paths"], path
    docs = Client().get("/api/docs")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_the_public_list_filters_and_pages(owner):
    for i in range(25):
        Lobby.objects.create(document_id=f"race-{i:02d}", owner=owner, game="racer", max_peers=2)
    Lobby.objects.create(document_id="chess-1", owner=owner, game="chess", title="Sunday chess")
    for hidden in ("unlisted", "private"):
        Lobby.objects.create(document_id=f"h-{hidden}", owner=owner, visibility=hidden)
    Lobby.objects.create(document_id="h-closed", owner=owner, state="closed")
    in_lobby("race-00", "p1", "p2")  # full
    in_lobby("race-01", "p3")
    client = Client()
    everything = client.get("/api/lobbies").json()
    assert everything["count"] == 26 and len(everything["items"]) == 20
    assert not any(item["documentId"].startswith("h-") for item in everything["items"])
    assert len(client.get("/api/lobbies?page=2").json()["items"]) == 6
    racers = client.get("/api/lobbies?game=racer&has_room=true").json()
    assert racers["count"] == 24
    ids = {
        item["documentId"]: item
        for item in client.get("/api/lobbies?game=racer&page_size=50").json()["items"]
    }
    assert ids["race-01"]["peers"] == 1 and ids["race-00"]["peers"] == 2
    assert [i["documentId"] for i in client.get("/api/lobbies?q=sunday").json()["items"]] == [
        "chess-1"
    ]
    assert client.get("/api/lobbies?page=0").status_code == 422


def test_a_private_lobby_is_found_only_by_its_owner_and_grant_holders(owner, other):
    lobby = Lobby.objects.create(document_id="secret", owner=owner, visibility="private")
    in_lobby("secret", "p1")
    assert Client().get(f"/api/lobbies/{lobby.public_id}").status_code == 404
    assert signed_in(other).get(f"/api/lobbies/{lobby.public_id}").status_code == 404
    mine = signed_in(owner).get(f"/api/lobbies/{lobby.public_id}").json()
    assert (mine["peers"], mine["members"]) == (1, ["p1"])
    LobbyGrant.objects.create(lobby=lobby, user=other, role="member")
    theirs = signed_in(other).get(f"/api/lobbies/{lobby.public_id}").json()
    assert theirs["peers"] == 1 and theirs["members"] is None  # members: only for managers


def test_creating_a_lobby_needs_a_signed_in_user_and_a_csrf_token(owner):
    body = {"documentId": "arena", "game": "racer", "maxPeers": 8, "topology": "host"}
    assert post(Client(), "/api/lobbies", body).status_code == 401
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)
    assert post(strict, "/api/lobbies", body).status_code == 403  # no CSRF token
    strict.get("/admin/login/")  # any page that sets the CSRF cookie
    token = strict.cookies["csrftoken"].value
    created = post(strict, "/api/lobbies", body, HTTP_X_CSRFTOKEN=token)
    assert created.status_code == 201, created.content
    assert created.json()["owner"] == "owner" and created.json()["topology"] == "host"
    again = post(signed_in(owner), "/api/lobbies", body)
    assert again.status_code == 409 and "exists" in again.json()["detail"]


def test_a_bearer_token_works_without_csrf(owner):
    response = post(
        Client(enforce_csrf_checks=True), "/api/lobbies", {"documentId": "x"}, **bearer(owner)
    )
    assert response.status_code == 201
    listed = Client().get("/api/lobbies/mine", **bearer(owner)).json()
    assert [lobby["documentId"] for lobby in listed] == ["x"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"documentId": "a", "maxPeers": 0}, "maxPeers"),
        ({"documentId": "a", "topology": "ring"}, "topology"),
        ({"documentId": "a", "colour": "red"}, "colour"),
        ({"documentId": "bad\nid"}, "documentId"),
        ({"game": "no id"}, "documentId"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(owner, body, field):
    response = post(signed_in(owner), "/api/lobbies", body)
    assert response.status_code == 422
    assert field in json.dumps(response.json()["detail"])


def test_the_creation_policy_applies_to_the_api(owner, settings):
    settings.RELAY_CREATION_POLICY = "permission"
    client = signed_in(owner)
    refused = post(client, "/api/lobbies", {"documentId": "a"})
    assert refused.status_code == 403 and "RELAY_CREATION_POLICY" in refused.json()["detail"]
    owner.user_permissions.add(Permission.objects.get(codename="create_lobby"))
    assert post(signed_in(owner), "/api/lobbies", {"documentId": "a"}).status_code == 201


def test_nobody_manages_another_users_lobby(owner, other):
    lobby = Lobby.objects.create(document_id="arena", owner=owner)
    intruder = signed_in(other)
    for method, path in [
        (patch, f"/api/lobbies/{lobby.public_id}"),
        (post, f"/api/lobbies/{lobby.public_id}/lock"),
        (post, f"/api/lobbies/{lobby.public_id}/close"),
        (post, f"/api/lobbies/{lobby.public_id}/grants"),
    ]:
        response = method(intruder, path, {"title": "mine now"} if method is patch else {})
        assert response.status_code == 403, path
    assert intruder.delete(f"/api/lobbies/{lobby.public_id}").status_code == 403
    lobby.refresh_from_db()
    assert (lobby.title, lobby.state) == ("", "open")
    # A moderator grant lets the other user manage it.
    LobbyGrant.objects.create(lobby=lobby, user=other, role="moderator")
    assert post(intruder, f"/api/lobbies/{lobby.public_id}/lock").json()["state"] == "locked"


def test_the_owner_updates_locks_opens_and_deletes(owner):
    client = signed_in(owner)
    lobby_id = post(client, "/api/lobbies", {"documentId": "arena"}).json()["id"]
    updated = patch(client, f"/api/lobbies/{lobby_id}", {"title": "Arena", "maxPeers": 4})
    assert (updated.json()["title"], updated.json()["maxPeers"]) == ("Arena", 4)
    assert post(client, f"/api/lobbies/{lobby_id}/lock").json()["state"] == "locked"
    assert post(client, f"/api/lobbies/{lobby_id}/open").json()["state"] == "open"
    assert client.delete(f"/api/lobbies/{lobby_id}").status_code == 204
    assert not Lobby.objects.filter(public_id=lobby_id).exists()
    assert client.get(f"/api/lobbies/{lobby_id}").status_code == 404


def test_grants_invite_users_into_a_private_lobby(owner, other):
    client = signed_in(owner)
    lobby = Lobby.objects.create(document_id="secret", owner=owner, visibility="private")
    grant = post(client, f"/api/lobbies/{lobby.public_id}/grants", {"username": "other"})
    assert grant.status_code == 201 and grant.json()["role"] == "member"
    assert signed_in(other).get(f"/api/lobbies/{lobby.public_id}").status_code == 200
    assert client.get(f"/api/lobbies/{lobby.public_id}/grants").json() == [grant.json()]
    missing = post(client, f"/api/lobbies/{lobby.public_id}/grants", {"username": "nobody"})
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
    grants = f"/api/lobbies/{lobby.public_id}/grants"
    both = post(client, grants, {"username": "other", "group": "g"})
    assert both.status_code == 422
    assert client.delete(f"{grants}/{grant.json()['id']}").status_code == 204
    assert signed_in(other).get(f"/api/lobbies/{lobby.public_id}").status_code == 404


def test_a_ticket_from_the_api_authenticates_its_user(owner, settings):
    settings.RELAY_TICKET_TTL = 600
    response = post(signed_in(owner), "/api/tickets", {"ttl": 10_000})
    assert response.status_code == 201
    ticket = response.json()["ticket"]
    assert response.json()["path"] == f"/t/{ticket}"
    user, identity = resolve(ticket, None, None)
    assert user == owner and identity.user_id == owner.pk
    assert post(Client(), "/api/tickets").status_code == 401


def test_tokens_are_made_by_a_session_shown_once_and_revoked(owner):
    client = signed_in(owner)
    created = post(client, "/api/tokens", {"name": "game server"})
    assert created.status_code == 201
    secret = created.json()["secret"]
    listed = client.get("/api/tokens").json()
    assert [t["name"] for t in listed] == ["game server"] and "secret" not in listed[0]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    assert Client().get("/api/lobbies/mine", **auth).status_code == 200
    # A token cannot make more tokens.
    assert post(Client(), "/api/tokens", {"name": "more"}, **auth).status_code == 401
    assert client.delete(f"/api/tokens/{created.json()['id']}").status_code == 204
    assert Client().get("/api/lobbies/mine", **auth).status_code == 401
    assert Client().get("/api/lobbies", **auth).status_code == 401  # a bad token is not anonymous


async def test_closing_a_lobby_takes_its_peers_out(owner):
    lobby = await sync_to_async(Lobby.objects.create)(document_id="arena", owner=owner)
    alice, bob = await met("arena", "alice", "bob")
    pipe = await opened("/connection/alice/bob/arena")
    client = await sync_to_async(signed_in)(owner)
    response = await sync_to_async(post, thread_sensitive=False)(
        client, f"/api/lobbies/{lobby.public_id}/close"
    )
    assert response.status_code == 200 and response.json()["state"] == "closed"
    assert await closed_with(pipe) == 4410
    assert await received(alice) == {"type": "Left", "documentId": "arena", "reason": "closed"}
    assert await get_presence().members("arena") == []
    for socket in (alice, bob):
        await socket.disconnect()


async def test_an_owner_kicks_a_peer_through_the_api(owner, other):
    lobby = await sync_to_async(Lobby.objects.create)(document_id="arena", owner=owner)
    alice, bob = await met("arena", "alice", "bob")
    pipe = await opened("/connection/alice/bob/arena")
    kick = f"/api/lobbies/{lobby.public_id}/kick"

    async def kicked_by(user: User, peer_id: str):
        client = await sync_to_async(signed_in)(user)
        return await sync_to_async(post, thread_sensitive=False)(client, kick, {"peerId": peer_id})

    assert (await kicked_by(other, "alice")).status_code == 403  # not their lobby
    assert await get_presence().members("arena") == ["alice", "bob"]
    assert (await kicked_by(owner, "alice")).status_code == 204
    assert await closed_with(pipe) == 4410
    assert await received(alice) == {"type": "Left", "documentId": "arena", "reason": "kicked"}
    assert await get_presence().members("arena") == ["bob"]
    gone = await kicked_by(owner, "alice")
    assert gone.status_code == 404 and "not in this lobby" in gone.json()["detail"]
    assert (await kicked_by(owner, "")).status_code == 422
    for socket in (alice, bob):
        await socket.disconnect()


# -- as an attacker: walking ids, partial updates, nulls ----------------------------------------


def test_a_lobby_is_found_by_its_document_id_under_the_same_rules(owner, other):
    race = Lobby.objects.create(document_id="team/race 🏁", owner=owner, title="Race")
    secret = Lobby.objects.create(document_id="secret", owner=owner, visibility="private")
    in_lobby("secret", "p1")
    anyone = Client()
    found = anyone.get(f"/api/lobbies/by-document/{quote(race.document_id, safe='')}")
    assert found.status_code == 200
    assert found.json() == anyone.get(f"/api/lobbies/{race.public_id}").json()
    assert (found.json()["id"], found.json()["title"]) == (race.public_id, "Race")
    # A private lobby answers as a missing one to outsiders, and to its owner in full.
    for outsider in (anyone, signed_in(other)):
        hidden = outsider.get("/api/lobbies/by-document/secret")
        assert (hidden.status_code, hidden.json()) == (
            404,
            outsider.get("/api/lobbies/by-document/no-such-doc").json(),
        )
    mine = signed_in(owner).get("/api/lobbies/by-document/secret").json()
    assert (mine["id"], mine["members"]) == (secret.public_id, ["p1"])
    schema = anyone.get("/api/openapi.json").json()
    assert "/api/lobbies/by-document/{document_id}" in schema["paths"]


def test_lobby_ids_in_the_api_are_opaque_and_walking_them_finds_nothing(owner):
    hidden = Lobby.objects.create(document_id="hidden-doc", owner=owner, visibility="unlisted")
    shown = Client().get("/api/lobbies").json()
    assert shown["items"] == []  # unlisted: not in the list
    # The row's sequential key finds nothing, nor do its neighbours.
    for guess in range(hidden.pk - 2, hidden.pk + 3):
        assert Client().get(f"/api/lobbies/{guess}").status_code == 404
    assert len(hidden.public_id) >= 12 and not hidden.public_id.isdigit()
    # Whoever was given the id may read it, as whoever was given the document id may join.
    assert Client().get(f"/api/lobbies/{hidden.public_id}").json()["documentId"] == "hidden-doc"


def test_a_private_lobby_and_a_missing_one_answer_the_same_to_an_outsider(owner, other):
    private = Lobby.objects.create(document_id="secret", owner=owner, visibility="private")
    outsider = signed_in(other)
    answers = []
    for lobby_id in (private.public_id, "no-such-lobby"):
        for method, path in (
            ("get", f"/api/lobbies/{lobby_id}"),
            ("patch", f"/api/lobbies/{lobby_id}"),
            ("post", f"/api/lobbies/{lobby_id}/close"),
            ("delete", f"/api/lobbies/{lobby_id}"),
        ):
            body = {} if method == "get" else {"data": "{}", "content_type": "application/json"}
            response = getattr(outsider, method)(path, **body)
            answers.append((method, response.status_code, response.json()))
    half = len(answers) // 2
    assert answers[:half] == answers[half:]
    assert {status for _, status, _ in answers} == {404}
    # Creating over it answers as for any taken id, without saying it is private.
    owner.user_permissions.add(Permission.objects.get(codename="create_lobby"))
    taken = post(signed_in(other), "/api/lobbies", {"documentId": "secret"})
    Lobby.objects.create(document_id="public-one", owner=owner)
    other_taken = post(signed_in(other), "/api/lobbies", {"documentId": "public-one"})
    assert (taken.status_code, taken.json()) == (other_taken.status_code, other_taken.json())
    assert taken.status_code == 409


def test_a_patch_changes_only_the_fields_it_names(owner):
    lobby = Lobby.objects.create(
        document_id="race",
        owner=owner,
        visibility="unlisted",
        max_peers=4,
        topology="host",
        host_transferable=True,
        data={"map": 3},
    )
    response = patch(signed_in(owner), f"/api/lobbies/{lobby.public_id}", {"title": "x"})
    assert response.status_code == 200
    lobby.refresh_from_db()
    assert (lobby.title, lobby.visibility, lobby.max_peers, lobby.topology) == (
        "x",
        "unlisted",
        4,
        "host",
    )
    assert (lobby.host_transferable, lobby.data) == (True, {"map": 3})


@pytest.mark.parametrize(
    "field", ["game", "title", "topology", "visibility", "hostTransferable", "data"]
)
def test_a_patch_with_null_for_a_required_field_is_a_422(owner, field):
    lobby = Lobby.objects.create(document_id="race", owner=owner, game="kart")
    response = patch(signed_in(owner), f"/api/lobbies/{lobby.public_id}", {field: None})
    assert response.status_code == 422
    lobby.refresh_from_db()
    assert lobby.game == "kart"


def test_null_capacity_means_no_limit(owner):
    lobby = Lobby.objects.create(document_id="race", owner=owner, max_peers=4)
    response = patch(signed_in(owner), f"/api/lobbies/{lobby.public_id}", {"maxPeers": None})
    assert response.status_code == 200 and response.json()["maxPeers"] is None


def test_lobby_data_nested_past_the_bound_is_a_422(owner):
    lobby = Lobby.objects.create(document_id="race", owner=owner)
    data: dict = {}
    for _ in range(900):
        data = {"a": data}
    response = patch(signed_in(owner), f"/api/lobbies/{lobby.public_id}", {"data": data})
    assert response.status_code == 422


def test_the_public_list_builds_only_the_page_it_shows(owner, django_assert_max_num_queries):
    Lobby.objects.bulk_create(
        [Lobby(document_id=f"lobby-{n}", public_id=f"p{n}", max_peers=2) for n in range(300)]
    )
    with django_assert_max_num_queries(3):
        page = Client().get("/api/lobbies?page=2&has_room=true").json()
    assert page["count"] == 300 and len(page["items"]) == 20


def test_facts_for_more_ids_than_a_query_may_name(owner):
    from lobbies.admission import _load_lobbies

    Lobby.objects.create(document_id="id-69999", owner=owner)
    ids = [f"id-{n}" for n in range(70_000)]  # past SQLite's and PostgreSQL's parameter limits
    records = _load_lobbies(ids)
    assert len(records) == 70_000 and records["id-69999"].view is not None


def test_a_page_number_past_the_database_integers_is_a_422_not_a_500(owner):
    # Found by tests/test_api_fuzz.py: the page's offset overflowed SQLite's integers.
    Lobby.objects.create(document_id="listed", owner=owner)
    response = Client().get("/api/lobbies?page=13205638507082480762224640")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "page"]
    assert Client().get("/api/lobbies?page=1000000").json()["items"] == []


def test_a_moderator_can_neither_delete_the_lobby_nor_hand_out_roles(owner, other):
    lobby = Lobby.objects.create(document_id="arena", owner=owner)
    LobbyGrant.objects.create(lobby=lobby, user=other, role="moderator")
    moderator = signed_in(other)
    # Deleting would free the id for the moderator to create again as its own.
    assert moderator.delete(f"/api/lobbies/{lobby.public_id}").status_code == 403
    grants = f"/api/lobbies/{lobby.public_id}/grants"
    made = post(moderator, grants, {"username": "other", "role": "moderator"})
    assert made.status_code == 403
    grant = LobbyGrant.objects.get(lobby=lobby)
    assert moderator.delete(f"{grants}/{grant.pk}").status_code == 403
    assert Lobby.objects.filter(pk=lobby.pk).exists() and LobbyGrant.objects.count() == 1
    # The owner may.
    assert signed_in(owner).delete(f"{grants}/{grant.pk}").status_code == 204


def test_creating_lobbies_through_the_api_is_rate_limited_per_user(owner, settings):
    settings.RELAY_LOBBY_CREATION_RATE = "2/hour"
    client = signed_in(owner)
    made = [post(client, "/api/lobbies", {"documentId": f"l{n}"}).status_code for n in range(3)]
    assert made == [201, 201, 429]
    assert Lobby.objects.count() == 2


def test_revoking_a_grant_takes_its_holder_out_of_a_private_lobby(owner, other):
    lobby = Lobby.objects.create(document_id="secret", owner=owner, visibility="private")
    grant = LobbyGrant.objects.create(lobby=lobby, user=other, role="member")
    ticket, owners_client = issue_ticket(other), signed_in(owner)

    async def scenario() -> None:
        guest = await opened(f"/t/{ticket}/introduction/guest")
        await guest.send_to(
            text_data=json.dumps({"type": "Join", "documentIds": ["secret"], "ext": 1})
        )
        assert (await received(guest))["type"] == "Joined"
        gone = await sync_to_async(owners_client.delete)(
            f"/api/lobbies/{lobby.public_id}/grants/{grant.pk}"
        )
        assert gone.status_code == 204
        assert (await received(guest)) == {
            "type": "Left",
            "documentId": "secret",
            "reason": "private",
        }
        await guest.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize("query", ["game=%00", "q=a%00b"])
def test_a_nul_in_the_list_filters_is_refused_not_a_server_error(client, query):
    # PostgreSQL holds no NUL: the query would fail there with a 500.
    answer = client.get(f"/api/lobbies?{query}")
    assert answer.status_code == 422
    assert "NUL" in json.dumps(answer.json())
