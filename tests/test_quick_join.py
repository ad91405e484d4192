"""Quick join: a player asks for a lobby of a game with room and gets a place in one, through the
API or a Join's ``quickJoin`` extra. Players asking at once fill lobbies up to their capacity and
never past it."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
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
    socket = await opened(path)
    await socket.send_to(text_data=join(quickJoin=request))
    return socket, await received(socket)


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


async def test_a_lobby_someone_owns_is_found_when_it_matches():
    owner = await db(User.objects.create_user)("owner")
    await db(Lobby.objects.create)(
        document_id="fridays-race", owner=owner, game="race", max_peers=4, data={"map": "desert"}
    )
    socket, joined = await _quick_joined("/introduction/p1", RACE)
    assert joined["documentId"] == "fridays-race"
    assert joined["lobby"]["owner"] == "owner"
    await socket.disconnect()


async def test_full_locked_private_and_banning_lobbies_are_passed_over():
    owner = await db(User.objects.create_user)("owner")
    for document_id, extra in [
        ("locked", {"state": "locked"}),
        ("private", {"visibility": "private"}),
        ("unlisted", {"visibility": "unlisted"}),
        ("banning", {}),
        ("uncapped", {"max_peers": None}),
    ]:
        fields = {"game": "race", "max_peers": 4, "data": {"map": "desert"}, **extra}
        await db(Lobby.objects.create)(document_id=document_id, owner=owner, **fields)
    banning = await db(Lobby.objects.get)(document_id="banning")
    await db(Ban.objects.create)(lobby=banning, peer_id="p1")
    socket, joined = await _quick_joined("/introduction/p1", RACE)
    assert joined["documentId"].startswith("race-")  # none would do: a lobby made for it
    assert joined["lobby"]["owner"] is None
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
