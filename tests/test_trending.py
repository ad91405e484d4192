"""``GET /api/trending`` after real traffic: control sockets joining lobbies (presence, "now")
and the analytics plugin's statistics of those joins ("day"). The busiest first, games added
up, private and unlisted lobbies and plain channels never shown, one cached answer for every
caller, bounded input, the relay without analytics, and the OpenAPI schema."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async as db
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from analytics.buffer import buffer
from lobbies import trending
from lobbies.auth import issue_ticket
from lobbies.conf import relay_settings, setting_errors
from lobbies.events import bus
from lobbies.models import Lobby
from relayclient import Client as RelayClient
from tests.conftest import start_relay, stop_relay
from tests.sockets import join, opened, received

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_presence")]


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """No answer of another test kept (the cache lives as long as the process)."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def owner(transactional_db) -> User:
    return User.objects.create_user("owner", password="a long password 1")


async def present(lobby: str, peer: str, prefix: str = "") -> WebsocketCommunicator:
    """A control socket of ``peer`` (through ``prefix``: a ticket's, say) that has joined
    ``lobby`` and is still in it."""
    socket = await opened(f"{prefix}/introduction/{peer}")
    await socket.send_to(text_data=join(lobby, ext=1))
    answer = await received(socket)
    assert (answer["type"], answer["documentId"]) == ("Joined", lobby), answer
    return socket


async def came_and_went(lobby: str, *peers: str) -> None:
    """``peers`` join ``lobby`` and leave again: joins of the day, nobody there now."""
    for peer in peers:
        await (await present(lobby, peer)).disconnect()


async def flushed() -> None:
    """The statistics of the traffic so far written, as the plugin's timer would write them."""
    await bus.drain()
    await db(buffer.flush)()


async def get(path: str) -> Any:
    # Not thread-sensitive: the view calls presence back in this loop (async_to_sync).
    return await sync_to_async(Client().get, thread_sensitive=False)(path)


def _get_counting_queries(path: str) -> tuple[Any, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = Client().get(path)
    return response, [query["sql"] for query in queries]


async def get_counting_queries(path: str) -> tuple[Any, list[str]]:
    """The answer to ``path``, and the database queries made to answer it."""
    return await sync_to_async(_get_counting_queries, thread_sensitive=False)(path)


async def busy_relay(owner: User) -> list[WebsocketCommunicator]:
    """Public lobbies of two games with peers in them now and joins earlier today; a private
    and an unlisted lobby, and a plain channel, each busier than all of them."""
    for document_id, game, visibility in [
        ("race-big", "racer", "public"),
        ("race-small", "racer", "public"),
        ("chess-club", "chess", "public"),
        ("secret-race", "racer", "private"),
        ("hidden-race", "racer", "unlisted"),
    ]:
        await db(Lobby.objects.create)(
            document_id=document_id, owner=owner, game=game, visibility=visibility
        )
    owners_prefix = f"/t/{await db(issue_ticket)(owner)}"
    sockets = []
    for lobby, peers, prefix in [
        ("race-big", 3, ""),
        ("chess-club", 2, ""),
        ("race-small", 1, ""),
        ("secret-race", 5, owners_prefix),  # only its owner may be there
        ("hidden-race", 5, ""),
        ("plain-channel", 6, ""),  # an id without a row: an LF channel
    ]:
        for i in range(peers):
            sockets.append(await present(lobby, f"{lobby}-{i}", prefix))
    await came_and_went("chess-club", "early-1", "early-2", "early-3", "early-4")
    await flushed()
    return sockets


async def test_trending_after_traffic(owner):
    sockets = await busy_relay(owner)
    response = await get("/api/trending")
    assert response.status_code == 200, response.content
    answer = response.json()

    now = answer["now"]
    assert [(x["documentId"], x["peers"]) for x in now["lobbies"]] == [
        ("race-big", 3),
        ("chess-club", 2),
        ("race-small", 1),
    ]
    assert now["lobbies"][0]["game"] == "racer" and now["lobbies"][0]["owner"] == "owner"
    # The racer peers of the private and unlisted lobbies are not counted.
    assert now["games"] == [
        {"game": "racer", "peers": 4, "lobbies": 2},
        {"game": "chess", "peers": 2, "lobbies": 1},
    ]

    day = answer["day"]
    assert [(x["documentId"], x["joins"], x["peers"]) for x in day["lobbies"]] == [
        ("chess-club", 6, 2),
        ("race-big", 3, 3),
        ("race-small", 1, 1),
    ]
    # Joins of public lobbies only: with the private and unlisted ones, racer would lead (14).
    assert day["games"] == [{"game": "chess", "joins": 6}, {"game": "racer", "joins": 4}]

    # Nothing of the private or unlisted lobby, or of the plain channel, anywhere in the answer.
    hidden = await db(list)(
        Lobby.objects.exclude(visibility="public").values_list("public_id", flat=True)
    )
    for secret in ("secret-race", "hidden-race", "plain-channel", *hidden):
        assert secret not in response.content.decode()

    one = (await get("/api/trending?game=chess&limit=1")).json()
    assert [x["documentId"] for x in one["now"]["lobbies"]] == ["chess-club"]
    assert one["now"]["games"] == [{"game": "chess", "peers": 2, "lobbies": 1}]
    assert one["day"]["games"] == [{"game": "chess", "joins": 6}]
    top = (await get("/api/trending?limit=1")).json()
    assert [len(top[p][k]) for p in ("now", "day") for k in ("games", "lobbies")] == [1, 1, 1, 1]
    for socket in sockets:
        await socket.disconnect()


async def test_a_lobby_made_private_leaves_the_lists(owner):
    sockets = await busy_relay(owner)
    await db(Lobby.objects.filter(document_id="race-big").update)(visibility="unlisted")
    answer = (await get("/api/trending")).json()
    for period in ("now", "day"):
        assert "race-big" not in [x["documentId"] for x in answer[period]["lobbies"]]
    assert answer["now"]["games"] == [
        {"game": "chess", "peers": 2, "lobbies": 1},
        {"game": "racer", "peers": 1, "lobbies": 1},  # race-small's peer alone
    ]
    assert answer["day"]["games"] == [{"game": "chess", "joins": 6}, {"game": "racer", "joins": 1}]
    for socket in sockets:
        await socket.disconnect()


async def test_one_answer_is_shared_for_the_cache_window(owner):
    await db(Lobby.objects.create)(document_id="arena", owner=owner, game="racer")
    first = await present("arena", "p1")
    before = await get("/api/trending")
    assert before["Cache-Control"] == f"public, max-age={relay_settings().trending_cache_seconds}"
    assert [x["peers"] for x in before.json()["now"]["lobbies"]] == [1]

    second = await present("arena", "p2")  # traffic changed within the window
    again, queries = await get_counting_queries("/api/trending")
    assert again.json() == before.json()  # the same answer, generatedAt included
    assert queries == []  # served from the cache: a flood costs the database nothing
    assert (await get("/api/trending?limit=3")).json()["generatedAt"] == again.json()["generatedAt"]

    cache.clear()  # the window has passed
    after = (await get("/api/trending")).json()
    assert after["generatedAt"] > before.json()["generatedAt"]
    assert [x["peers"] for x in after["now"]["lobbies"]] == [2]
    for socket in (first, second):
        await socket.disconnect()


async def test_with_no_cache_window_every_request_is_computed(settings, owner):
    settings.RELAY_TRENDING_CACHE_SECONDS = 0
    await db(Lobby.objects.create)(document_id="arena", owner=owner, game="racer")
    first = await present("arena", "p1")
    before = await get("/api/trending")
    assert before["Cache-Control"] == "no-store"
    second = await present("arena", "p2")
    after = (await get("/api/trending")).json()
    assert [x["peers"] for x in after["now"]["lobbies"]] == [2]
    assert after["generatedAt"] > before.json()["generatedAt"]
    for socket in (first, second):
        await socket.disconnect()


async def test_a_busy_lobby_beyond_the_newest_is_found_by_its_recent_joins(owner, monkeypatch):
    """Past MAX_CANDIDATES public lobbies, the newest are counted and, from the statistics,
    those joined most recently: an old lobby busy now is still seen."""
    monkeypatch.setattr(trending, "MAX_CANDIDATES", 2)
    for name in ("old-busy", "new-1", "new-2", "new-3"):  # created in this order
        await db(Lobby.objects.create)(document_id=name, owner=owner, game="racer")
    sockets = [await present("old-busy", f"p{i}") for i in range(3)]
    sockets.append(await present("new-3", "q"))
    answer = (await get("/api/trending")).json()
    assert [x["documentId"] for x in answer["now"]["lobbies"]] == ["new-3"]  # not flushed yet
    cache.clear()
    await flushed()
    answer = (await get("/api/trending")).json()
    assert [x["documentId"] for x in answer["now"]["lobbies"]] == ["old-busy", "new-3"]
    for socket in sockets:
        await socket.disconnect()


@pytest.mark.parametrize(
    "query",
    ["limit=0", f"limit={trending.MAX_LIMIT + 1}", "limit=many", "game=" + "x" * 101, "game=%00"],
)
def test_bad_input_is_a_422_naming_it(query):
    response = Client().get(f"/api/trending?{query}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == query.split("=")[0]


def test_the_openapi_schema_lists_it():
    schema = Client().get("/api/openapi.json").json()
    operation = schema["paths"]["/api/trending"]["get"]
    assert operation["tags"] == ["trending"] and "security" not in operation
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == trending.MAX_LIMIT
    assert set(operation["responses"]) == {"200", "422"}
    out = schema["components"]["schemas"]["TrendingOut"]
    assert set(out["properties"]) == {"now", "day", "generatedAt"}


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (-1, "RELAY_TRENDING_CACHE_SECONDS must be at least 0"),
        (3601, "RELAY_TRENDING_CACHE_SECONDS must be at most 3600"),
    ],
)
def test_impossible_cache_windows_are_refused(seconds, message):
    errors = setting_errors(dataclasses.replace(relay_settings(), trending_cache_seconds=seconds))
    assert message in errors


def read_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.mark.live
async def test_trending_on_a_relay_without_analytics(tmp_path):
    relay = start_relay(
        "uvicorn", tmp_path, DJANGO_SETTINGS_MODULE="tests.settings_without_analytics"
    )
    try:
        async with RelayClient("a", relay.ws_url) as a, RelayClient("b", relay.ws_url) as b:
            await a.join_lobby("live-race", lobby={"game": "racer"})
            await b.join_lobby("live-race")
            await asyncio.wait_for(b.next_peer(), 5)  # both in the lobby
            answer = await asyncio.to_thread(read_json, f"{relay.http_url}/api/trending")
    finally:
        stop_relay(relay)
    assert answer["day"] is None
    assert [(x["documentId"], x["peers"]) for x in answer["now"]["lobbies"]] == [("live-race", 2)]
    assert answer["now"]["games"] == [{"game": "racer", "peers": 2, "lobbies": 1}]
