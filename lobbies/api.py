"""The owners' JSON API (django-ninja), with its OpenAPI schema at ``/api/openapi.json`` and
interactive docs at ``/api/docs``.

Anyone may list public lobbies and read a lobby they may see. Signed-in users (the Django session,
with its CSRF token, or ``Authorization: Bearer <API token>``) create and manage their lobbies,
grant roles in them, issue tickets for their game clients and manage their API tokens. Every rule
is asked of ``lobbies.policy``; errors are JSON, ``{"detail": "..."}``, with the right status.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import Field, NinjaAPI, Query, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import PageNumberPagination, paginate
from ninja.security import HttpBearer, django_auth
from ninja.utils import check_csrf
from pydantic import ConfigDict, field_validator

from lobbies import matchmaking, owners, trending
from lobbies.auth import identity_of, issue_ticket
from lobbies.conf import relay_settings
from lobbies.engine.protocol import is_valid_id
from lobbies.matchmaking import QuickJoinSpec
from lobbies.models import ApiToken, Lobby
from lobbies.policy import (
    Identity,
    LobbyFacts,
    LobbyState,
    Role,
    Topology,
    Visibility,
    capacity_of,
)
from lobbies.schemas import LobbySpec, storable

api = NinjaAPI(
    title="Relay API",
    version="1",
    description="Lobbies, grants, tickets and API tokens of the relay. See docs/protocol.md.",
    urls_namespace="api",
)


class ApiTokenAuth(HttpBearer):
    """``Authorization: Bearer rly_...``: an API token its owner has not revoked."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        found = ApiToken.objects.authenticate(token)
        if found is None or not found.user.is_active:
            return None
        request.user, request.api_token = found.user, found  # tickets it mints die with it
        return found.user


SIGNED_IN = [ApiTokenAuth(), django_auth]


def _user(request: HttpRequest) -> Any:
    """The signed-in user (session or token), or None, on endpoints anyone may call."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        user = ApiTokenAuth().authenticate(request, header[7:].strip())
        if user is None:
            raise HttpError(401, "the API token is not valid or has been revoked")
        return user
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _identity(request: HttpRequest) -> Identity:
    return identity_of(_user(request))


# -- schemas ------------------------------------------------------------------------------------


class LobbyOut(Schema):
    id: str = Field(description="The lobby's opaque id in this API's URLs.")
    document_id: str = Field(alias="documentId")
    game: str
    title: str
    max_peers: int | None = Field(alias="maxPeers")
    topology: Topology
    visibility: Visibility
    state: LobbyState
    host_transferable: bool = Field(alias="hostTransferable")
    data: dict[str, Any]
    owner: str | None
    peers: int = Field(description="Peers in the lobby now.")
    created_at: datetime = Field(alias="createdAt")

    model_config = ConfigDict(populate_by_name=True)

    @staticmethod
    def of(lobby: Lobby, peers: int | None = None) -> dict[str, Any]:
        """``lobby`` as the API shows it: its public metadata (``Lobby.public``), with its id,
        when it was made and how many peers are in it now (counted here unless given)."""
        if peers is None:
            peers = owners.counts([lobby.document_id])[lobby.document_id]
        return {
            **lobby.public(),
            "id": lobby.public_id,
            "peers": peers,
            "createdAt": lobby.created_at,
        }

    @staticmethod
    def listed(lobbies: Iterable[Lobby]) -> list[dict[str, Any]]:
        """Several lobbies, their peers counted in one presence call."""
        found = list(lobbies)
        counts = owners.counts([lobby.document_id for lobby in found])
        return [LobbyOut.of(lobby, counts[lobby.document_id]) for lobby in found]


class LobbyDetail(LobbyOut):
    members: list[str] | None = Field(
        description="The peer ids in the lobby now: shown to its owner, moderators and operators."
    )


class LobbyCreate(LobbySpec):
    document_id: str = Field(alias="documentId", description="The id clients Join.")

    @field_validator("document_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not is_valid_id(value, relay_settings().max_id_length):
            raise ValueError("not a valid document id (1 to RELAY_MAX_ID_LENGTH characters)")
        return value


class LobbyFilters(Schema):
    game: str | None = Field(None, description="Only lobbies of this game.")
    has_room: bool = Field(False, description="Only lobbies with room for one more peer.")
    q: str | None = Field(None, description="Text in the title or the document id.")

    @field_validator("game", "q")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        return storable(value)  # a NUL would reach PostgreSQL (a 500): 422 instead


class GrantIn(Schema):
    model_config = ConfigDict(extra="forbid")

    username: str | None = Field(None, description="A user to grant the role (an invitation).")
    group: str | None = Field(None, description="Or a group, by name.")
    role: Role = Role.MEMBER


class GrantOut(Schema):
    id: int
    username: str | None
    group: str | None
    role: Role


class TicketIn(Schema):
    model_config = ConfigDict(extra="forbid")

    ttl: float | None = Field(None, gt=0, description="Seconds; at most RELAY_TICKET_TTL.")


class TicketOut(Schema):
    ticket: str
    expires_at: datetime = Field(alias="expiresAt")
    path: str = Field(description="Give clients ws://HOST + this as their relay URL.")

    model_config = ConfigDict(populate_by_name=True)


class TokenIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime = Field(alias="createdAt")
    last_used_at: datetime | None = Field(alias="lastUsedAt")
    revoked_at: datetime | None = Field(alias="revokedAt")

    model_config = ConfigDict(populate_by_name=True, from_attributes=True)


class TokenCreated(TokenOut):
    secret: str = Field(description="Shown this once; only its hash is kept.")


class KickIn(Schema):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    peer_id: str = Field(alias="peerId", min_length=1, max_length=256)


class Message(Schema):
    detail: str


class Problem(Schema):
    """One thing wrong with a request, as pydantic (through django-ninja) reports it."""

    type: str
    loc: list[str | int] = Field(description="Where: the part of the request, then the field.")
    msg: str
    ctx: dict[str, Any] | None = None


class Invalid(Schema):
    """A 422: the request's input cannot be so. A message (a rule of the relay refused it), or
    django-ninja's list of what failed validation, and where."""

    detail: str | list[Problem]


def answers(success: dict[int, Any], *errors: int) -> dict[int, Any]:
    """An operation's documented responses: ``success``, then each error status it can answer,
    with its body (``{"detail": ...}``: :class:`Invalid` for 422, else :class:`Message`).
    django-ninja answers some itself: 400 for a body that is not JSON, 401 for a missing or bad
    token, 403 for a session without its CSRF token, 422 for input that fails validation."""
    return {**success, **{code: Invalid if code == 422 else Message for code in errors}}


# -- lobbies ------------------------------------------------------------------------------------

# The last page number the public list accepts: a million pages of lobbies is beyond any relay.
MAX_PAGE = 1_000_000


def _rejected(rejected: owners.Rejected) -> HttpError:
    return HttpError(rejected.status, rejected.message)


def _visible_lobby(identity: Identity, lobby_id: str) -> Lobby:
    """The lobby ``lobby_id`` names, if ``identity`` may know it exists; else 404, as for an id
    that names nothing (a private lobby is not confirmed to outsiders)."""
    return _visible(identity, public_id=lobby_id)


def _visible(identity: Identity, **lookup: str) -> Lobby:
    """The lobby ``lookup`` finds (by its public or its document id), under the rule of
    :func:`_visible_lobby`."""
    lobby = Lobby.objects.select_related("owner").filter(**lookup).first()
    if lobby is None or not owners.visible(identity, lobby):
        raise HttpError(404, "no such lobby")
    return lobby


def _managed(request: HttpRequest, lobby_id: str) -> tuple[Identity, Lobby]:
    identity = identity_of(request.auth)
    lobby = _visible_lobby(identity, lobby_id)
    if not owners.manages(identity, lobby):
        raise HttpError(403, "only the lobby's owner, its moderators and operators may do this")
    return identity, lobby


def _administered(request: HttpRequest, lobby_id: str) -> tuple[Identity, Lobby]:
    identity, lobby = _managed(request, lobby_id)
    if not owners.administers(identity, lobby):
        raise HttpError(403, "only the lobby's owner and operators may do this")
    return identity, lobby


class LobbyPages(PageNumberPagination):
    """Page numbers, with the peers of the page's lobbies counted in one presence call: only
    the page is built, however many lobbies are listed."""

    class Input(PageNumberPagination.Input):
        # Bounded, so that the page's offset fits the database's integers (a 422, not a 500).
        page: int = Field(1, ge=1, le=MAX_PAGE)

    def paginate_queryset(self, queryset: Any, pagination: Any, **params: Any) -> Any:
        page = super().paginate_queryset(queryset, pagination, **params)
        page[self.items_attribute] = LobbyOut.listed(page[self.items_attribute])
        return page


class WithRoom(Sequence[Lobby]):
    """The lobbies of a list that have room for one more peer now, in the list's order. Only
    ids and capacities are read for the whole list (as tuples, their peers counted in one
    presence call); rows are fetched for the page asked, by primary key."""

    def __init__(self, lobbies: QuerySet[Lobby]) -> None:
        self.lobbies = lobbies
        found = lobbies.values_list("pk", "document_id", "max_peers", "owner_id", "matchmade")
        rows = [
            (pk, document_id, capacity_of(LobbyFacts(owner, max_peers=most, matchmade=made)))
            for pk, document_id, most, owner, made in found
        ]
        present = owners.counts([d for _, d, most in rows if most is not None])
        self.pks = [pk for pk, d, most in rows if most is None or present.get(d, 0) < most]

    def __len__(self) -> int:
        return len(self.pks)

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, slice):
            return self[index : index + 1][0]
        wanted = self.pks[index]
        found = self.lobbies.model._default_manager.select_related("owner").in_bulk(wanted)
        return [found[pk] for pk in wanted if pk in found]


@api.get(
    "/lobbies", response=answers({200: list[LobbyOut]}, 401, 422), tags=["lobbies"], by_alias=True
)
@paginate(LobbyPages, page_size=20)
def list_lobbies(request: HttpRequest, filters: Query[LobbyFilters]) -> QuerySet[Lobby] | WithRoom:
    """Public lobbies that are open or locked, newest first."""
    _user(request)  # a bad token is refused (401) here too, rather than taken as anonymous
    lobbies: QuerySet[Lobby] = Lobby.objects.select_related("owner").filter(
        visibility=Visibility.PUBLIC, state__in=[LobbyState.OPEN, LobbyState.LOCKED]
    )
    if filters.game:
        lobbies = lobbies.filter(game=filters.game)
    if filters.q:
        lobbies = lobbies.filter(
            Q(title__icontains=filters.q) | Q(document_id__icontains=filters.q)
        )
    return WithRoom(lobbies) if filters.has_room else lobbies


@api.get(
    "/lobbies/mine",
    response=answers({200: list[LobbyOut]}, 401, 403),
    auth=SIGNED_IN,
    tags=["lobbies"],
    by_alias=True,
)
def my_lobbies(request: HttpRequest) -> list[dict[str, Any]]:
    """The lobbies the signed-in user owns."""
    lobbies = Lobby.objects.select_related("owner").filter(owner=request.auth)
    return LobbyOut.listed(lobbies)


class QuickJoinIn(QuickJoinSpec):
    peer_id: str = Field(
        alias="peerId", description="The peer id the seat is kept for: the client Joins with it."
    )

    @field_validator("peer_id")
    @classmethod
    def _valid_peer(cls, value: str) -> str:
        if not is_valid_id(value, relay_settings().max_id_length):
            raise ValueError("not a valid peer id (1 to RELAY_MAX_ID_LENGTH characters)")
        return value


class QuickJoinOut(Schema):
    lobby: LobbyOut
    document_id: str = Field(alias="documentId", description="The id to Join.")
    seat_expires_at: datetime = Field(
        alias="seatExpiresAt",
        description="The place is kept for the peer id until then (RELAY_SEAT_TTL): Join before.",
    )
    created: bool = Field(description="Whether the lobby was made for this request.")

    model_config = ConfigDict(populate_by_name=True)


def _asker(request: HttpRequest) -> Identity:
    """Who asks, on an endpoint that changes something and that anyone may call: an API token's
    user (401 when it is not valid), a signed-in session's user only with its CSRF token (403
    without: another site's page cannot act in its name), or anonymous."""
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return _identity(request)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed: send the X-CSRFToken header (or use a token)")
        return identity_of(user)
    return identity_of(None)


# Registered before /lobbies/{lobby_id} (whose PATCH would answer its POST with 405).
@api.post(
    "/lobbies/quick-join",
    response=answers({200: QuickJoinOut}, 400, 401, 403, 422, 429, 503),
    tags=["lobbies"],
    by_alias=True,
)
def quick_join(request: HttpRequest, body: QuickJoinIn) -> dict[str, Any]:
    """A place for `peerId` in an open public lobby of `game` that has room and whose `data`
    holds each of `filters`, or in a lobby made for it (public, without an owner, `data` the
    filters, `maxPeers`, `topology` and `title` as asked) when none has room, as
    RELAY_CREATION_POLICY allows. The place is kept until `seatExpiresAt`: the client then Joins
    `documentId` as any LF client does. Players asking at once never take a lobby past its
    capacity. Anonymous callers may ask; 403 when no lobby has room and the caller may not make
    one, 429 past RELAY_QUICK_JOIN_RATE or RELAY_LOBBY_CREATION_RATE, 503 when the lobby made
    for it filled up at once (ask again)."""
    identity = _asker(request)
    address = request.META.get("REMOTE_ADDR", "-")
    try:
        seat = async_to_sync(matchmaking.quick_join)(identity, body.peer_id, body, address)
    except owners.Rejected as rejected:
        raise _rejected(rejected) from None
    lobby = Lobby.objects.select_related("owner").filter(document_id=seat.document_id).first()
    if lobby is None:  # deleted the moment it was found
        raise HttpError(503, "the lobby found was deleted at once: try again")
    return {
        "lobby": LobbyOut.of(lobby),
        "documentId": seat.document_id,
        "seatExpiresAt": seat.expires_at,
        "created": seat.created,
    }


# Registered before /lobbies/{lobby_id}/...: a public id (12 characters) is never "by-document".
# A path converter, since a document id may hold slashes (clients percent-encode them).
@api.get(
    "/lobbies/by-document/{path:document_id}",
    response=answers({200: LobbyDetail}, 401, 404),
    tags=["lobbies"],
    by_alias=True,
)
def lobby_by_document(request: HttpRequest, document_id: str) -> dict[str, Any]:
    """The lobby clients Join as ``document_id``, as ``GET /lobbies/{lobby_id}`` shows it and
    under the same rule: a private lobby is not found by those without a grant."""
    identity = _identity(request)
    return _detail(identity, _visible(identity, document_id=document_id))


@api.get(
    "/lobbies/{lobby_id}",
    response=answers({200: LobbyDetail}, 401, 404),
    tags=["lobbies"],
    by_alias=True,
)
def lobby_detail(request: HttpRequest, lobby_id: str) -> dict[str, Any]:
    """One lobby, with its live peer count (and its members, to those who manage it). A private
    lobby is not found by those without a grant."""
    identity = _identity(request)
    return _detail(identity, _visible_lobby(identity, lobby_id))


def _detail(identity: Identity, lobby: Lobby) -> dict[str, Any]:
    members = owners.members(lobby.document_id) if owners.manages(identity, lobby) else None
    return {**LobbyOut.of(lobby), "members": members}


@api.post(
    "/lobbies",
    response=answers({201: LobbyOut}, 400, 401, 403, 409, 422, 429),
    auth=SIGNED_IN,
    tags=["lobbies"],
    by_alias=True,
)
def create_lobby(request: HttpRequest, body: LobbyCreate) -> Status:
    """A lobby owned by the signed-in user, as RELAY_CREATION_POLICY allows. 409 when the
    document id is taken (by any lobby: whether it is private is not said)."""
    try:
        address = request.META.get("REMOTE_ADDR", "-")
        lobby = owners.create(identity_of(request.auth), body.document_id, body, address)
    except owners.Rejected as rejected:
        raise _rejected(rejected) from None
    return Status(201, LobbyOut.of(lobby))


@api.patch(
    "/lobbies/{lobby_id}",
    response=answers({200: LobbyOut}, 400, 401, 403, 404, 422),
    auth=SIGNED_IN,
    tags=["lobbies"],
    by_alias=True,
)
def update_lobby(request: HttpRequest, lobby_id: str, body: LobbySpec) -> dict[str, Any]:
    """Change a lobby's metadata: only the fields given (``null`` is refused for all but
    ``maxPeers``, where it means no limit). Peers the change leaves without a right to stay
    (made private, capacity lowered) are taken out."""
    identity, lobby = _managed(request, lobby_id)
    try:
        owners.update(lobby, body.changes(), by=identity.user_id)
    except owners.Rejected as rejected:
        raise _rejected(rejected) from None
    return LobbyOut.of(lobby)


def _set_state(request: HttpRequest, lobby_id: str, state: LobbyState) -> dict[str, Any]:
    identity, lobby = _managed(request, lobby_id)
    try:
        owners.set_state(lobby, state, by=identity.user_id)
    except owners.Rejected as rejected:
        raise _rejected(rejected) from None
    return LobbyOut.of(lobby)


@api.post(
    "/lobbies/{lobby_id}/lock",
    response=answers({200: LobbyOut}, 401, 403, 404, 422),
    auth=SIGNED_IN,
    tags=["lobbies"],
    by_alias=True,
)
def lock_lobby(request: HttpRequest, lobby_id: str) -> dict[str, Any]:
    """Nobody new joins; those inside stay."""
    return _set_state(request, lobby_id, LobbyState.LOCKED)


@api.post(
    "/lobbies/{lobby_id}/open",
    response=answers({200: LobbyOut}, 401, 403, 404, 422),
    auth=SIGNED_IN,
    tags=["lobbies"],
    by_alias=True,
)
def open_lobby(request: HttpRequest, lobby_id: str) -> dict[str, Any]:
    """Open a locked or closed lobby again."""
    return _set_state(request, lobby_id, LobbyState.OPEN)


@api.post(
    "/lobbies/{lobby_id}/close",
    response=answers({200: LobbyOut}, 401, 403, 404, 422),
    auth=SIGNED_IN,
    tags=["lobbies"],
    by_alias=True,
)
def close_lobby(request: HttpRequest, lobby_id: str) -> dict[str, Any]:
    """Nobody joins, and the peers inside are taken out: their pipes in the lobby are closed
    (4410) and those that opted in get ``Left`` with ``closed``."""
    return _set_state(request, lobby_id, LobbyState.CLOSED)


@api.post(
    "/lobbies/{lobby_id}/kick",
    response=answers({204: None}, 400, 401, 403, 404, 422),
    auth=SIGNED_IN,
    tags=["lobbies"],
)
def kick_peer(request: HttpRequest, lobby_id: str, body: KickIn) -> Status:
    """Take a peer out of the lobby now: its pipes there close (4410) and, if it opted in, it
    gets ``Left`` with ``kicked``. It may Join again; a ban keeps it out. 404 if it is not in
    the lobby."""
    identity, lobby = _managed(request, lobby_id)
    if not owners.kick(lobby.document_id, body.peer_id, by=identity.user_id):
        return Status(404, {"detail": f"peer {body.peer_id!r} is not in this lobby"})
    return Status(204, None)


@api.delete(
    "/lobbies/{lobby_id}",
    response=answers({204: None}, 401, 403, 404),
    auth=SIGNED_IN,
    tags=["lobbies"],
)
def delete_lobby(request: HttpRequest, lobby_id: str) -> Status:
    """Delete the lobby's row (peers inside are taken out as by close); its document id then
    behaves like an LF channel again. Its owner and operators only (not its moderators)."""
    identity, lobby = _administered(request, lobby_id)
    owners.delete(lobby, by=identity.user_id)
    return Status(204, None)


# -- trending -----------------------------------------------------------------------------------


class TrendingFilters(Schema):
    game: str | None = Field(
        None, max_length=100, description="Only this game's lobbies (empty: every game)."
    )
    limit: int = Field(
        10, ge=1, le=trending.MAX_LIMIT, description="Entries in each list, the first first."
    )

    @field_validator("game")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        # No game is named so (PostgreSQL cannot hold NUL): a 422, not the database's error.
        if value is not None and "\x00" in value:
            raise ValueError("a game name holds no NUL character")
        return value


class GameNow(Schema):
    game: str
    peers: int = Field(description="Peers present now in the game's public lobbies.")
    lobbies: int = Field(description="The game's public lobbies with a peer present now.")


class GameDay(Schema):
    game: str
    joins: int = Field(description="Joins of the game's public lobbies in the last 24 hours.")


class LobbyDay(LobbyOut):
    joins: int = Field(description="Joins of this lobby in the last 24 hours.")


class TrendingNow(Schema):
    games: list[GameNow] = Field(description="Games by peers present now, the most first.")
    lobbies: list[LobbyOut] = Field(description="Public lobbies by peers now, the most first.")


class TrendingDay(Schema):
    games: list[GameDay] = Field(description="Games by joins in the last 24 hours.")
    lobbies: list[LobbyDay] = Field(description="Public lobbies by joins in the last 24 hours.")


class TrendingOut(Schema):
    now: TrendingNow
    day: TrendingDay | None = Field(
        description="From the statistics of the last 24 hours; null when the relay keeps none "
        "(its analytics app is not installed)."
    )
    generated_at: datetime = Field(
        alias="generatedAt",
        description="When this answer was computed: answers are shared for "
        "RELAY_TRENDING_CACHE_SECONDS.",
    )

    model_config = ConfigDict(populate_by_name=True)


@api.get("/trending", response=answers({200: TrendingOut}, 422), tags=["trending"], by_alias=True)
def get_trending(
    request: HttpRequest, response: HttpResponse, filters: Query[TrendingFilters]
) -> dict[str, Any]:
    """The most played public lobbies and games: now (peers present) and over the last 24
    hours (joins). Private and unlisted lobbies never appear. Anyone may ask (credentials are
    not read: the answer is the same for all); one answer per game filter is computed every
    RELAY_TRENDING_CACHE_SECONDS and shared by every caller, as the Cache-Control header says."""
    seconds = relay_settings().trending_cache_seconds
    response["Cache-Control"] = f"public, max-age={seconds}" if seconds else "no-store"
    return trending.trending(filters.game, filters.limit)


# -- grants -------------------------------------------------------------------------------------


@api.get(
    "/lobbies/{lobby_id}/grants",
    response=answers({200: list[GrantOut]}, 401, 403, 404),
    auth=SIGNED_IN,
    tags=["grants"],
)
def list_grants(request: HttpRequest, lobby_id: str) -> list[dict[str, Any]]:
    """Who holds a role in the lobby."""
    _, lobby = _managed(request, lobby_id)
    return [owners.describe_grant(g) for g in lobby.grants.select_related("user", "group")]


@api.post(
    "/lobbies/{lobby_id}/grants",
    response=answers({201: GrantOut}, 400, 401, 403, 404, 422),
    auth=SIGNED_IN,
    tags=["grants"],
)
def add_grant(request: HttpRequest, lobby_id: str, body: GrantIn) -> Status:
    """Give a user (an invitation to a private lobby) or a group a role in the lobby. Its owner
    and operators only."""
    _, lobby = _administered(request, lobby_id)
    if (body.username is None) == (body.group is None):
        raise HttpError(422, "give either username or group")
    try:
        grant = owners.grant(lobby, body.role, body.username, body.group)
    except owners.NotFound as exc:
        raise HttpError(404, str(exc)) from None
    return Status(201, owners.describe_grant(grant))


@api.delete(
    "/lobbies/{lobby_id}/grants/{grant_id}",
    response=answers({204: None}, 401, 403, 404, 422),
    auth=SIGNED_IN,
    tags=["grants"],
)
def remove_grant(request: HttpRequest, lobby_id: str, grant_id: int) -> Status:
    """Take a role back (its owner and operators only). In a private lobby, the peers it let in
    leave (``Left`` with ``private``)."""
    _, lobby = _administered(request, lobby_id)
    if not owners.revoke_grant(lobby, grant_id):
        raise HttpError(404, "no such grant")
    return Status(204, None)


# -- tickets and tokens -------------------------------------------------------------------------


@api.post(
    "/tickets",
    response=answers({201: TicketOut}, 400, 401, 403, 422),
    auth=SIGNED_IN,
    tags=["identity"],
    by_alias=True,
)
def create_ticket(request: HttpRequest, body: TicketIn) -> Status:
    """A ticket that authenticates the signed-in user's game client on the relay's sockets."""
    longest = relay_settings().ticket_ttl
    ttl = min(body.ttl or longest, longest)
    ticket = issue_ticket(request.auth, ttl, token=getattr(request, "api_token", None))
    expires = timezone.now() + timedelta(seconds=ttl)
    return Status(201, {"ticket": ticket, "expires_at": expires, "path": f"/t/{ticket}"})


@api.get(
    "/tokens",
    response=answers({200: list[TokenOut]}, 401, 403),
    auth=SIGNED_IN,
    tags=["identity"],
    by_alias=True,
)
def list_tokens(request: HttpRequest) -> QuerySet[ApiToken]:
    """The signed-in user's API tokens (their secrets are never shown again)."""
    return ApiToken.objects.filter(user=request.auth)


@api.post(
    "/tokens",
    response=answers({201: TokenCreated}, 400, 401, 403, 422),
    auth=[django_auth],
    tags=["identity"],
    by_alias=True,
)
def create_token(request: HttpRequest, body: TokenIn) -> Status:
    """A new API token, its secret shown once. Only a signed-in browser session (with its CSRF
    token) makes tokens: a leaked token cannot make more."""
    token, secret = ApiToken.issue(request.auth, body.name)
    return Status(201, {**TokenOut.model_validate(token).model_dump(), "secret": secret})


@api.delete(
    "/tokens/{token_id}",
    response=answers({204: None}, 401, 403, 404, 422),
    auth=SIGNED_IN,
    tags=["identity"],
)
def revoke_token(request: HttpRequest, token_id: int) -> Status:
    """Revoke one of the signed-in user's tokens: it stops working at once."""
    get_object_or_404(ApiToken, pk=token_id, user=request.auth).revoke()
    return Status(204, None)
