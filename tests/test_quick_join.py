"""Quick join: a player asks for a lobby of a game with room and gets a place in one, through the
API or a Join's ``quickJoin`` extra. Players asking at once fill lobbies up to their capacity and
never past it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async as db
from django.contrib.auth.models import User
from pydantic import ValidationError

from lobbies.auth import issue_ticket
from lobbies.engine.presence import get_presence
from lobbies.matchmaking import QuickJoinSpec, pool_of
from lobbies.models import Ban, Lobby
from tests.sockets import join, opened, received

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]

RACE = {"game": "race", "filters": {"map": "desert"}, "maxPeers": 4}


# -- what may be asked ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [
        {"a__contains": "x"},  # an ORM lookup
        {"0": "x"},  # a JSON array index
        {"": 1},
        {"map": "x" * 101},
        {"map": 1.5},
        {"map": {"nested": 1}},
        {f"f{n}": n for n in range(9)},
        {"x" * 41: 1},
    ],
)
def test_bad_filters_are_refused(filters):
    with pytest.raises(ValidationError):
        QuickJoinSpec.model_validate({"game": "race", "filters": filters})


def test_a_pool_is_its_game_and_filters_in_any_order():
    one = QuickJoinSpec.model_validate({"game": "race", "filters": {"a": 1, "b": "x"}})
    two = QuickJoinSpec.model_validate({"game": "race", "filters": {"b": "x", "a": 1}})
    other = QuickJoinSpec.model_validate({"game": "race", "filters": {"a": 2, "b": "x"}})
    assert pool_of(one) == pool_of(two) != pool_of(other)


# -- through a Join's quickJoin extra ----------------------------------------------------------


async def _quick_joined(path: str, request: dict) -> tuple[object, dict]:
    """A socket that asked quick join, and the answer (an Introduction of another player who
    joined meanwhile may come first: it is skipped)."""
    socket = await opened(path)
    await socket.send_to(text_data=join(quickJoin=request))
    while (answer := await received(socket))["type"] == "Introduction":
        pass
    return socket, answer


def _tickets(count: int) -> list[str]:
    users = [User.objects.create_user(f"player{n}") for n in range(count)]
    return [issue_ticket(user) for user in users]


@pytest.mark.parametrize("signed_in", [False, True], ids=["anonymous", "signed-in"])
async def test_twenty_players_at_once_fill_five_lobbies_of_four(signed_in):
    prefixes = [f"/t/{t}" for t in await db(_tickets)(20)] if signed_in else [""] * 20
    sockets, messages = [], []
    answers = await asyncio.gather(
        *(_quick_joined(f"{prefix}/introduction/p{n}", RACE) for n, prefix in enumerate(prefixes))
    )
    for socket, message in answers:
        sockets.append(socket)
        messages.append(message)
    assert {m["type"] for m in messages} == {"Joined"}
    placed = Counter(m["documentId"] for m in messages)
    assert sorted(placed.values()) == [4, 4, 4, 4, 4]
    for document_id in placed:
        assert len(await get_presence().members(document_id)) == 4
    lobbies = await db(list)(Lobby.objects.filter(game="race"))
    assert len(lobbies) == 5
    for lobby in lobbies:
        # Public, the filters as data, and nobody's: no player gets power over strangers.
        assert (lobby.owner_id, lobby.max_peers, lobby.visibility) == (None, 4, "public")
        assert (lobby.matchmade, lobby.data) == (True, {"map": "desert"})
    assert {m["lobby"]["documentId"] for m in messages} == set(placed)
    for socket in sockets:
        await socket.disconnect()


async def test_players_of_a_lobby_meet_as_in_any_lobby():
    first, joined = await _quick_joined("/introduction/alice", RACE)
    second, again = await _quick_joined("/introduction/bob", RACE)
    assert joined["documentId"] == again["documentId"]
    introduction = await received(first)
    assert (introduction["type"], introduction["userName"]) == ("Introduction", "bob")
    assert (await received(second))["userName"] == "alice"
    for socket in (first, second):
        await socket.disconnect()


async def test_other_filters_and_games_get_lobbies_of_their_own():
    placed, sockets = set(), []
    for n, request in enumerate(
        [RACE, {**RACE, "filters": {"map": "ice"}}, {**RACE, "game": "chess"}, RACE]
    ):
        socket, joined = await _quick_joined(f"/introduction/p{n}", request)
        placed.add(joined["documentId"])
        sockets.append(socket)
    assert len(placed) == 3  # the last one joins the first's lobby
    for socket in sockets:
        await socket.disconnect()


async def test_a_lobby_an_owner_made_is_never_filled_by_quick_join():
    # Its owner chooses who comes: nobody may keep places there, or take them in passing.
    owner = await db(User.objects.create_user)("owner")
    await db(Lobby.objects.create)(
        document_id="fridays-race", owner=owner, game="race", max_peers=4, data={"map": "desert"}
    )
    socket, joined = await _quick_joined("/introduction/p1", RACE)
    assert joined["documentId"] != "fridays-race"
    assert joined["lobby"]["owner"] is None
    await socket.disconnect()


def _matchmade(document_id: str, **fields) -> Lobby:
    row = {"game": "race", "max_peers": 4, "data": {"map": "desert"}, **fields}
    return Lobby.objects.create(document_id=document_id, matchmade=True, **row)


async def test_lobbies_of_another_shape_or_state_or_banning_the_player_are_passed_over():
    for document_id, fields in [
        ("locked", {"state": "locked"}),
        ("private", {"visibility": "private"}),
        ("unlisted", {"visibility": "unlisted"}),
        ("banning", {}),
        ("bigger", {"max_peers": 100_000}),
        ("hosted", {"topology": "host"}),
        ("other-map", {"data": {"map": "ice"}}),
    ]:
        await db(_matchmade)(document_id, **fields)
    banning = await db(Lobby.objects.get)(document_id="banning")
    await db(Ban.objects.create)(lobby=banning, peer_id="p1")
    await db(_matchmade)("fits")
    socket, joined = await _quick_joined("/introduction/p1", RACE)
    assert joined["documentId"] == "fits"
    await socket.disconnect()
    # And without "fits", none will do: a lobby is made for the player.
    await db(Lobby.objects.filter(document_id="fits").delete)()
    socket, joined = await _quick_joined("/introduction/p1", RACE)
    assert joined["documentId"].startswith("race-")
    await socket.disconnect()


@pytest.mark.parametrize("name", ["contains", "isnull", "regex", "range", "has_key", "exact", "gt"])
async def test_a_filter_named_as_a_lookup_is_a_key_of_the_data_like_any_other(name):
    await db(_matchmade)("holds-it", data={name: "yes"})
    await db(_matchmade)("holds-another", data={"map": "yes"})
    socket, joined = await _quick_joined(
        "/introduction/p1", {"game": "race", "maxPeers": 4, "filters": {name: "yes"}}
    )
    assert joined["documentId"] == "holds-it"
    await socket.disconnect()


async def test_asking_again_from_the_same_socket_finds_another_lobby():
    socket, first = await _quick_joined("/introduction/p1", RACE)
    await socket.send_to(text_data=join(quickJoin=RACE))
    second = await received(socket)
    assert second["type"] == "Joined" and second["documentId"] != first["documentId"]
    await socket.disconnect()


async def test_a_socket_without_room_for_another_id_takes_no_seat_and_makes_no_lobby(settings):
    settings.RELAY_MAX_IDS_PER_PEER = 1
    socket = await opened("/introduction/p1")
    await socket.send_to(text_data=join("mine", ext=1))
    assert (await received(socket))["type"] == "Joined"
    await socket.send_to(text_data=join(quickJoin=RACE))
    error = await received(socket)
    assert (error["code"], error["documentId"]) == ("invalid", None)
    assert not await db(Lobby.objects.filter(game="race").exists)()
    await socket.disconnect()


async def test_a_player_who_may_not_create_is_told_when_no_lobby_has_room(settings):
    settings.RELAY_CREATION_POLICY = "authenticated"
    socket, error = await _quick_joined("/introduction/p1", RACE)
    assert (error["type"], error["code"], error["documentId"]) == ("Error", "forbidden", None)
    await socket.disconnect()


async def test_a_bad_request_is_refused_with_invalid():
    socket, error = await _quick_joined("/introduction/p1", {"game": "race", "filters": {"0": 1}})
    assert (error["type"], error["code"], error["documentId"]) == ("Error", "invalid", None)
    assert error["message"].startswith("quickJoin.filters")
    await socket.disconnect()


async def test_quick_joins_are_counted_per_address(settings):
    settings.RELAY_QUICK_JOIN_RATE = "2/minute"
    codes = []
    for n in range(3):
        socket, message = await _quick_joined(f"/introduction/p{n}", RACE)
        codes.append(message.get("code", message["type"]))
        await socket.disconnect()
    assert codes == ["Joined", "Joined", "rate_limited"]


# -- through the API -----------------------------------------------------------------------------


def _ask(client, headers: dict | None = None, **body):
    path = "/api/lobbies/quick-join"
    return client.post(path, {**RACE, **body}, content_type="application/json", headers=headers)


def test_the_api_finds_a_place_for_a_peer_id_and_keeps_it(client):
    first = _ask(client, peerId="p1")
    assert first.status_code == 200, first.content
    found = first.json()
    assert found["created"] is True
    assert found["documentId"] == found["lobby"]["documentId"]
    assert (found["lobby"]["maxPeers"], found["lobby"]["owner"]) == (4, None)
    assert "seatExpiresAt" in found
    again = _ask(client, peerId="p2").json()
    assert (again["documentId"], again["created"]) == (found["documentId"], False)


def test_places_kept_by_the_api_fill_the_lobby_for_everyone_else(client):
    places = [_ask(client, peerId=f"p{n}").json()["documentId"] for n in range(4)]
    assert len(set(places)) == 1

    async def joins() -> tuple[dict, dict]:
        stranger = await opened("/introduction/stranger")
        await stranger.send_to(text_data=join(places[0], ext=1))
        refused = await received(stranger)
        seated = await opened("/introduction/p3")
        await seated.send_to(text_data=join(places[0], ext=1))
        joined = await received(seated)
        for socket in (stranger, seated):
            await socket.disconnect()
        return refused, joined

    refused, joined = async_to_sync(joins)()
    assert (refused["type"], refused["code"]) == ("Error", "lobby_full")
    assert (joined["type"], joined["documentId"]) == ("Joined", places[0])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"peerId": ""}, "peerId"),
        ({"peerId": "a\u202eb"}, "peerId"),
        ({"peerId": "p", "filters": {"contains__x": 1}}, "filters"),
        ({"peerId": "p", "game": "a\x00b"}, "game"),
        ({"peerId": "p", "maxPeers": 0}, "maxPeers"),
        ({"peerId": "p", "colour": "red"}, "colour"),
    ],
)
def test_bad_requests_are_a_422_naming_the_field(client, body, field):
    answer = _ask(client, **body)
    assert answer.status_code == 422
    assert field in json.dumps(answer.json())


def test_a_signed_in_browser_must_send_its_csrf_token(transactional_db):
    from django.test import Client

    user = User.objects.create_user("player", password="a long password 9")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    answer = _ask(browser, peerId="p1")
    assert answer.status_code == 403
    assert "CSRF" in answer.json()["detail"]


def test_an_api_token_asks_as_its_user_and_a_bad_one_is_refused(client, settings):
    from lobbies.models import ApiToken

    settings.RELAY_CREATION_POLICY = "authenticated"
    assert _ask(client, peerId="anon").status_code == 403  # may not make the lobby
    user = User.objects.create_user("player")
    _, secret = ApiToken.issue(user, "game server")
    asked = _ask(client, {"Authorization": f"Bearer {secret}"}, peerId="p1")
    assert asked.status_code == 200, asked.content
    bad = _ask(client, {"Authorization": "Bearer rly_nope"}, peerId="p1")
    assert bad.status_code == 401


def test_a_relay_wide_ban_is_refused(client):
    Ban.objects.create(peer_id="banned")
    answer = _ask(client, peerId="banned")
    assert answer.status_code == 403
    assert "banned" in answer.json()["detail"]


def test_the_openapi_schema_documents_quick_join(client):
    operation = client.get("/api/openapi.json").json()["paths"]["/api/lobbies/quick-join"]["post"]
    assert {"200", "403", "422", "429", "503"} <= set(operation["responses"])
