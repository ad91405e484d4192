"""Quick join: a player asks for "a lobby of game G with room, matching these filters" and gets a
place in one: an open public lobby that has room, or a new one made for the purpose.

Words: a **seat** is a place in a lobby that presence keeps for one peer id for
``RELAY_SEAT_TTL`` seconds, until that peer joins (``Presence.reserve``). Seats count against the
lobby's capacity as members do, and presence checks the capacity in the same step as it takes a
seat or joins a peer, so players racing for the last places, on any worker, never take a lobby
past its capacity. A **pool** is every request for one game with the same filters: a pool makes
new lobbies one at a time (a presence lease), so that twenty players arriving at once fill five
lobbies of four rather than make twenty lobbies of one.

Two ways in, one function (:func:`quick_join`): the owners' API (``POST
/api/lobbies/quick-join``, then any client Joins the id it got, an unmodified LF client too), and
a Join carrying a ``quickJoin`` extra (``lobbies.engine.peers``, through ``lobbies.admission``).

Which lobbies are found: quick join's own (``matchmade``; a lobby an owner made is never filled
by it: its owner chooses who comes, and nobody may keep places there), public and open, of the
game, of the capacity and topology asked (a player asking for a race of four is never placed in
a lobby of a thousand around one host), whose ``data`` holds each filter's value, in which no ban
names the asker and that the asking socket is not in already; of the newest :data:`CANDIDATES`
of those, the fullest that has room comes first. A lobby quick join makes has no owner, whoever
asked (no player gets power over the strangers it is filled with): it is public, ``matchmade``
(so ``lobbies.policy`` lets it have a capacity and a host without an owner), its ``data`` is the
filters, and it goes like any ownerless lobby once nobody has been in it for
``RELAY_ORPHAN_LOBBY_TTL``. Making it is asked of the creation policy and counted in
``RELAY_LOBBY_CREATION_RATE``, as every new lobby is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Q
from django.utils import timezone
from ninja import Schema
from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from lobbies import owners
from lobbies.conf import relay_settings
from lobbies.engine.presence import get_presence
from lobbies.engine.ratelimits import get_rate_limits
from lobbies.models import Ban, Lobby
from lobbies.owners import Rejected
from lobbies.policy import Identity, LobbyState, Topology, Visibility
from lobbies.schemas import storable

# The newest lobbies of a pool looked at for room, per request.
CANDIDATES = 50
MAX_FILTERS = 8
# A filter's name: a letter, then letters, digits, and single "_" or "-" between them. Never
# "__" (the ORM's lookup separator) nor a number (a JSON array index).
FILTER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[_-][A-Za-z0-9]+)*")
MAX_FILTER_NAME = 40
MAX_FILTER_TEXT = 100
# A pool's lease: held while one request looks again and makes a lobby (milliseconds of work);
# the others wait for it at most LEASE_WAIT, then go on without it (at worst one lobby more,
# never a place too many: seats are what keep the capacity).
LEASE_TTL = 5.0
LEASE_WAIT = 5.0
# Lobbies one request makes at most, each filled by others before its seat was taken (503).
MADE_AT_MOST = 3


class QuickJoinSpec(Schema):
    """What a player asks quick join for; ``maxPeers``, ``topology``, ``hostTransferable`` and
    ``title`` describe the lobby made when none has room."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    game: str = Field(min_length=1, max_length=100, description="The game to play.")
    filters: dict[str, StrictStr | StrictInt | StrictBool] = Field(
        default_factory=dict,
        description=f"At most {MAX_FILTERS} names, each a letter then letters, digits, `_` or "
        f"`-` (up to {MAX_FILTER_NAME} characters), with a string (up to {MAX_FILTER_TEXT}), an "
        "integer or a boolean: a lobby matches when its `data` holds each of them. A lobby made "
        "for the request has them as its `data`.",
    )
    max_peers: int = Field(
        4, alias="maxPeers", ge=1, le=100_000, description="Capacity of a lobby made for it."
    )
    topology: Topology = Topology.MESH
    host_transferable: bool = Field(
        True,
        alias="hostTransferable",
        description="In a host lobby made for it: the host role passes on when the host leaves "
        "(otherwise the lobby closes for its members).",
    )
    title: str = Field("", max_length=200, description="Title of a lobby made for it.")

    @field_validator("game", "title")
    @classmethod
    def _storable(cls, value: str) -> str:
        return storable(value)

    @field_validator("filters")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_FILTERS:
            raise ValueError(f"at most {MAX_FILTERS} filters")
        for name, wanted in value.items():
            if len(name) > MAX_FILTER_NAME or not FILTER_NAME.fullmatch(name):
                raise ValueError(
                    f"filter name {name[:MAX_FILTER_NAME]!r}: a letter, then letters, digits and "
                    f"single _ or - (up to {MAX_FILTER_NAME} characters)"
                )
            if isinstance(wanted, str) and (len(wanted) > MAX_FILTER_TEXT or "\x00" in wanted):
                raise ValueError(f"filter {name!r}: at most {MAX_FILTER_TEXT} characters, no NUL")
            if isinstance(wanted, int) and not isinstance(wanted, bool) and abs(wanted) > 2**53:
                raise ValueError(f"filter {name!r}: an integer within ±2**53")
        return value


@dataclass(frozen=True, slots=True)
class Seat:
    """Where quick join placed a peer: the lobby's document id, until when its place is kept,
    and whether the lobby was made for it."""

    document_id: str
    expires_at: datetime
    created: bool


def pool_of(spec: QuickJoinSpec) -> str:
    """The name of ``spec``'s pool: its game, filters (whatever their order) and the shape of
    the lobbies it is placed in."""
    key = json.dumps([spec.game, sorted(spec.filters.items()), *_shape(spec).values()])
    return "pool:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _shape(spec: QuickJoinSpec) -> dict[str, Any]:
    """What a lobby must be to take ``spec``'s player (``Lobby`` field names): the capacity and
    topology asked, and in a host lobby whether the host role passes on. A player asking for a
    race of four is never placed in someone's lobby of a thousand around one host."""
    shape: dict[str, Any] = {"max_peers": spec.max_peers, "topology": spec.topology.value}
    if spec.topology is Topology.HOST:
        shape["host_transferable"] = spec.host_transferable
    return shape


def matching(spec: QuickJoinSpec) -> Q:
    """The lobbies ``spec`` may be placed in, as a query: quick join's own (never a lobby an
    owner made: its owner chooses who comes, and nobody may keep places there), public, open,
    of the game and shape asked, holding each filter in its ``data``."""
    where = Q(
        matchmade=True,
        game=spec.game,
        visibility=Visibility.PUBLIC.value,
        state=LobbyState.OPEN.value,
        **_shape(spec),
    )
    for name, wanted in spec.filters.items():
        # "__exact" last: a filter named as a lookup ("contains", "isnull", "regex") is a key of
        # the data like any other, never a lookup on the whole column.
        where &= Q(**{f"data__{name}__exact": wanted})
    return where


def _candidates(
    identity: Identity, peer_id: str, spec: QuickJoinSpec, exclude: frozenset[str]
) -> list[tuple[str, int]]:
    """The newest lobbies ``spec`` matches that no ban keeps the asker out of, but those in
    ``exclude``: (document id, capacity) each."""
    bans = Ban.objects.active().filter(lobby__isnull=False)
    lobbies = (
        Lobby.objects.filter(matching(spec))
        .exclude(pk__in=bans.filter(_naming(identity, peer_id)).values("lobby_id"))
        .exclude(document_id__in=exclude)
        .order_by("-created_at", "-pk")
        .values_list("document_id", "max_peers")
    )
    return list(lobbies[:CANDIDATES])


def _naming(identity: Identity, peer_id: str) -> Q:
    """Bans of this user (if signed in) or this peer id."""
    named = Q(peer_id=peer_id)
    if identity.user_id is not None:
        named |= Q(user_id=identity.user_id)
    return named


def _asked(
    identity: Identity, peer_id: str, spec: QuickJoinSpec, address: str, exclude: frozenset[str]
) -> list[tuple[str, int]]:
    """Count the request (``RELAY_QUICK_JOIN_RATE``; :class:`Rejected` 429 past it), refuse
    one a relay-wide ban applies to (403), then :func:`_candidates`. In the database's
    thread."""
    if not get_rate_limits().quick_join(identity.account, address):
        raise Rejected(429, "too many quick joins lately (RELAY_QUICK_JOIN_RATE)")
    everywhere = Ban.objects.active().filter(lobby__isnull=True)
    if everywhere.filter(_naming(identity, peer_id)).exists():
        raise Rejected(403, "you are banned from this relay")
    return _candidates(identity, peer_id, spec, exclude)


async def _seat_in(candidates: list[tuple[str, int]], peer_id: str) -> str | None:
    """A seat for ``peer_id`` in the fullest of ``candidates`` with room, or None."""
    presence = get_presence()
    present = await presence.counts([document_id for document_id, _ in candidates])
    order = sorted(
        (document_id for document_id, capacity in candidates if present[document_id] < capacity),
        key=lambda document_id: -present[document_id],  # (a stable sort: newest first on ties)
    )
    capacity = dict(candidates)
    ttl = relay_settings().seat_ttl
    for document_id in order:
        if await presence.reserve(document_id, peer_id, capacity[document_id], ttl):
            return document_id
    return None


@asynccontextmanager
async def _pool(name: str) -> AsyncIterator[None]:
    """Hold the pool's lease (waiting for it up to :data:`LEASE_WAIT`) for the block."""
    presence = get_presence()
    deadline = time.monotonic() + LEASE_WAIT
    delay = 0.002
    token = await presence.lease(name, LEASE_TTL)
    while token is None and time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
        token = await presence.lease(name, LEASE_TTL)
    try:
        yield
    finally:
        if token is not None:
            await presence.unlease(name, token)


async def quick_join(
    identity: Identity,
    peer_id: str,
    spec: QuickJoinSpec,
    address: str,
    exclude: frozenset[str] = frozenset(),
) -> Seat:
    """A seat for ``peer_id`` (asked by ``identity`` from ``address``) in a lobby ``spec``
    matches that has room, or in a new one; never one of ``exclude`` (the lobbies the asking
    socket is in). Raises :class:`Rejected`: 429 past ``RELAY_QUICK_JOIN_RATE`` or
    ``RELAY_LOBBY_CREATION_RATE``, 403 for a relay-wide ban or when no lobby has room and the
    creation policy does not let ``identity`` make one, 503 when every lobby it made filled up
    before its own seat was taken (:data:`MADE_AT_MOST` of them: try again)."""
    ttl = relay_settings().seat_ttl
    candidates = await database_sync_to_async(_asked)(identity, peer_id, spec, address, exclude)
    for _ in range(MADE_AT_MOST):
        found = await _seat_in(candidates, peer_id)
        if found is not None:
            return Seat(found, _expiry(ttl), created=False)
        async with _pool(pool_of(spec)):
            # Looked for again once the lease is ours: whoever held it may have made a lobby.
            candidates = await database_sync_to_async(_candidates)(identity, peer_id, spec, exclude)
            found = await _seat_in(candidates, peer_id)
            if found is not None:
                return Seat(found, _expiry(ttl), created=False)
            made = await database_sync_to_async(owners.create_matchmade)(
                identity, _new_lobby(spec), address
            )
            capacity = made.max_peers or spec.max_peers
            if await get_presence().reserve(made.document_id, peer_id, capacity, ttl):
                return Seat(made.document_id, _expiry(ttl), created=True)
        # Players who had not waited for the lease found the new lobby (it was visible once
        # made) and took every place before this one's seat: look again, as they did.
        candidates = await database_sync_to_async(_candidates)(identity, peer_id, spec, exclude)
    raise Rejected(503, "the lobbies made for you filled up at once: try again")


def _expiry(ttl: float) -> datetime:
    return timezone.now() + timedelta(seconds=ttl)


def _new_lobby(spec: QuickJoinSpec) -> dict[str, Any]:
    """The fields of a lobby made for ``spec`` (``lobbies.models.Lobby`` names)."""
    made = {"game": spec.game, "title": spec.title, "data": dict(spec.filters)}
    return {**made, "host_transferable": spec.host_transferable, **_shape(spec)}
