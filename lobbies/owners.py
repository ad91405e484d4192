"""Every change to a lobby, in one place: creating one (a Join's ``lobby`` extra, the API, the
owners' pages, the admin), changing its metadata or state, deleting it, granting roles, kicking,
banning, handing it to another owner; and what owners may see of lobbies.

Each write asks ``lobbies.policy`` once, takes out the live peers the change leaves without a
right to be there (closed, deleted, made private, capacity lowered), and does so once the change
is committed, as the facts cache forgets the old row then too (``lobbies.admission``): a Join that
raced the change is judged again against the new row. A write the rules refuse raises
:class:`Rejected`, which the API turns into its status and the pages into a message.

Blocking code (the ORM), for views and for the sockets' own thread hops; the live side
(``lobbies.moderation``: who is in a lobby, taking peers out) is reached through
``async_to_sync``, on the server's event loop where the sockets live. Each operator's action is
reported as ``signals.operator_action`` with who did it (``by``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.text import slugify

from lobbies import moderation, signals
from lobbies.conf import relay_settings
from lobbies.engine.presence import get_presence
from lobbies.engine.protocol import is_valid_id
from lobbies.engine.ratelimits import get_rate_limits
from lobbies.events import emit
from lobbies.models import Ban, Lobby, LobbyGrant
from lobbies.policy import (
    ANONYMOUS,
    Access,
    CreationPolicy,
    Identity,
    LobbyFacts,
    LobbyState,
    Role,
    Visibility,
    account_of,
    capacity_of,
    may_administer,
    may_ban,
    may_create,
    may_describe,
    may_manage,
    may_see,
    may_stay,
    roles_granted,
)
from lobbies.schemas import LobbySpec

# How a state change is named in ``operator_action`` (besides "create", "update", "delete",
# "kick", "ban" and "transfer").
_STATE_ACTIONS = {LobbyState.OPEN: "open", LobbyState.LOCKED: "lock", LobbyState.CLOSED: "close"}


class NotFound(Exception):
    """No such user or group (its message says which)."""


class Rejected(Exception):
    """A write the rules do not allow. ``status`` is what the API answers (403: not allowed,
    409: the document id is taken, 422: the lobby cannot be so, 429: too many too fast)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_OWNERLESS = (
    "a lobby without an owner can only be open, public or unlisted, a mesh and without a "
    "capacity: give it an owner first"
)
_ANONYMOUS_LOBBY = (
    "an anonymous peer can create only open, public or unlisted mesh lobbies without a "
    "capacity: sign in (a ticket) to own a private, capped or hosted one"
)


def access(identity: Identity, lobby: Lobby) -> Access:
    """The roles ``identity`` holds in ``lobby`` (``lobbies.policy.roles_granted``)."""
    if not identity.is_authenticated:
        return Access()  # (no query)
    grants = lobby.grants.values_list("user_id", "group_id", "role")
    return Access(roles=roles_granted(identity, grants))


def visible(identity: Identity, lobby: Lobby) -> bool:
    """Whether ``identity`` may know ``lobby`` exists (``lobbies.policy.may_see``)."""
    if lobby.visibility != Visibility.PRIVATE:
        return True  # (no query for the common case)
    return may_see(identity, lobby.facts(), access(identity, lobby))


def manages(identity: Identity, lobby: Lobby) -> bool:
    """Whether ``identity`` may change, lock, close or kick in ``lobby`` (``lobbies.policy``)."""
    return may_manage(identity, lobby.facts(), access(identity, lobby))


def administers(identity: Identity, lobby: Lobby) -> bool:
    """Whether ``identity`` may delete ``lobby`` and grant roles in it (``lobbies.policy``)."""
    return may_administer(identity, lobby.facts())


def counts(document_ids: list[str]) -> dict[str, int]:
    """How many peers are in each of these lobbies now."""
    return async_to_sync(moderation.counts)(document_ids)


def members(document_id: str) -> list[str]:
    """The peer ids in the lobby now, the one present longest first."""
    return async_to_sync(get_presence().members)(document_id)


@dataclass(frozen=True, slots=True)
class LivePeer:
    """A peer in a lobby now, as the admin's and the owners' live views show it."""

    peer_id: str
    user: Any  # the signed-in user holding the peer id; None for an anonymous peer
    nickname: str | None
    role: str  # "host" or "member"
    since: datetime  # when it joined the lobby


@dataclass(frozen=True, slots=True)
class LivePipe:
    """A pipe open in a lobby now: its two peers (sorted) and since when."""

    peers: tuple[str, str]
    since: datetime


@dataclass(frozen=True, slots=True)
class LiveView:
    """Who is in a lobby now (the one present longest first) and the pipes open there."""

    members: list[LivePeer]
    pipes: list[LivePipe]


def live(document_id: str) -> LiveView:
    """The lobby as it is now (``lobbies.moderation.live``), with each peer's user read in one
    query: what the admin's and the owners' live views show, refreshed in place."""
    now = async_to_sync(moderation.live)(document_id)
    wanted = {member.user_id for member in now.members if member.user_id}
    users = get_user_model()._default_manager.in_bulk(wanted) if wanted else {}
    members = [
        LivePeer(
            peer_id=member.peer_id,
            user=users.get(member.user_id) if member.user_id else None,
            nickname=member.nickname,
            role="host" if member.host else "member",
            since=_moment(member.since),
        )
        for member in now.members
    ]
    pipes = [LivePipe(peers=pipe.peers, since=_moment(pipe.since)) for pipe in now.pipes]
    return LiveView(members, pipes)


def peer_in(document_id: str, peer_id: str) -> LivePeer | None:
    """``peer_id`` as it is in the lobby now, or None if it is not there (a stale page, or a
    peer id made up: nothing is done to a peer that is not in the lobby)."""
    return next((peer for peer in live(document_id).members if peer.peer_id == peer_id), None)


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _take_peers_out(document_id: str, reason: str) -> None:
    moderation.after_commit(lambda: moderation.evict(document_id, reason))


def _take_out_who_may_not_stay(document_id: str) -> None:
    """After a lobby became private, smaller or someone else's: its peers without a right to
    stay leave (``Left`` with ``private``), then the newest past its capacity (``Left`` with
    ``full``). Judged on the lobby as committed."""
    moderation.after_commit(lambda: _judge_who_stays(document_id))


async def _judge_who_stays(document_id: str) -> None:
    roster = (await moderation.live(document_id)).members
    users = {member.user_id for member in roster if member.user_id}
    found = await database_sync_to_async(_who_may_stay_facts)(document_id, users)
    if found is None:
        return  # deleted meanwhile: its own eviction takes everyone out
    facts, grants, identities = found
    staying = []
    for member in roster:
        identity = identities.get(member.user_id or 0, ANONYMOUS)
        if may_stay(identity, facts, Access(roles_granted(identity, grants))):
            staying.append(member.peer_id)
        else:
            await moderation.kick(document_id, member.peer_id, "private")
    capacity = capacity_of(facts)
    if capacity is not None:
        for peer_id in staying[capacity:]:  # the roster lists the longest present first
            await moderation.kick(document_id, peer_id, "full")


def _who_may_stay_facts(
    document_id: str, user_ids: set[int]
) -> tuple[LobbyFacts, list[tuple[int | None, int | None, str]], dict[int, Identity]] | None:
    """The lobby's facts, its grants and the identities of these users (what ``may_stay``
    asks of them: owner, superuser, groups), in three queries."""
    lobby = Lobby.objects.filter(document_id=document_id).first()
    if lobby is None:
        return None
    grants = list(lobby.grants.values_list("user_id", "group_id", "role"))
    users = get_user_model()._default_manager.filter(pk__in=user_ids).prefetch_related("groups")
    identities = {
        user.pk: Identity(
            user_id=user.pk,
            is_superuser=user.is_superuser,
            group_ids=frozenset(group.pk for group in user.groups.all()),
        )
        for user in users
    }
    return lobby.facts(), grants, identities


def _report(action: str, document_id: str | None, by: int | None, **detail: Any) -> None:
    emit(
        signals.operator_action,
        action=action,
        document_id=document_id,
        peer_id=detail.pop("peer_id", None),
        user_id=by,
        detail=detail,
    )


def create(identity: Identity, document_id: str, spec: LobbySpec, address: str) -> Lobby:
    """Make a lobby for ``document_id`` with ``spec``'s metadata, owned by ``identity``'s user
    (nobody, when anonymous: then it can only be an open, public or unlisted mesh without a
    capacity), asked from ``address``. Raises :class:`Rejected`: 403 when the creation policy
    does not let ``identity`` create, 409 when the id has a row already (whatever that row is: a
    private lobby is not confirmed as such), 422 for an impossible lobby, 429 past
    ``RELAY_LOBBY_CREATION_RATE`` (per address, and per user)."""
    if not may_create(identity, CreationPolicy(relay_settings().creation_policy)):
        raise Rejected(403, "you may not create lobbies (RELAY_CREATION_POLICY)")
    if not is_valid_id(document_id, relay_settings().max_id_length):
        raise Rejected(422, "not a valid document id (1 to RELAY_MAX_ID_LENGTH characters)")
    lobby = Lobby(document_id=document_id, owner_id=identity.user_id, **spec.row())
    if not may_describe(lobby.facts()):
        raise Rejected(403, _ANONYMOUS_LOBBY)
    # Per address and per user, whichever way the rows are made (a Join, the API, the pages).
    if not get_rate_limits().lobby_creation(identity.account, address):
        raise Rejected(429, "too many new lobbies lately (RELAY_LOBBY_CREATION_RATE)")
    add(lobby)
    return Lobby.objects.select_related("owner").get(pk=lobby.pk)


def create_matchmade(identity: Identity, fields: dict[str, Any], address: str) -> Lobby:
    """Make a lobby for quick join (``lobbies.matchmaking``), asked by ``identity`` from
    ``address``: ``fields`` (``Lobby`` field names), public, open, without an owner and
    ``matchmade``, under a new id of the relay's choosing (the game's name, then a random part).
    Raises :class:`Rejected` as :func:`create` does (403: the creation policy, 429:
    ``RELAY_LOBBY_CREATION_RATE``)."""
    if not may_create(identity, CreationPolicy(relay_settings().creation_policy)):
        raise Rejected(403, "no lobby has room, and you may not create one (RELAY_CREATION_POLICY)")
    if not get_rate_limits().lobby_creation(identity.account, address):
        raise Rejected(429, "too many new lobbies lately (RELAY_LOBBY_CREATION_RATE)")
    lobby = Lobby(document_id=_matchmade_id(fields.get("game", "")), matchmade=True, **fields)
    add(lobby)
    return Lobby.objects.select_related("owner").get(pk=lobby.pk)


def _matchmade_id(game: str) -> str:
    """``<game as a slug>-<12 random characters>``: readable in lists, never guessed ahead."""
    token = secrets.token_urlsafe(9)
    room = min(40, relay_settings().max_id_length - len(token) - 1)
    name = slugify(game)[: max(room, 0)].strip("-") or "lobby"
    if len(name) > room:
        return token[: relay_settings().max_id_length]  # (a relay with very short ids)
    return f"{name}-{token}"


def add(lobby: Lobby, by: int | None = None) -> None:
    """Save a new ``lobby`` row made elsewhere (by :func:`create`, or the admin's form, whose
    operators are not bound by the creation policy). Raises :class:`Rejected`: 409 when its
    document id is taken, 422 when it cannot be so (:func:`check`)."""
    check(lobby)
    try:
        with transaction.atomic():
            lobby.save(force_insert=True)
    except IntegrityError:
        raise Rejected(409, "a lobby with this document id exists") from None
    if by is not None:
        _report("create", lobby.document_id, by)


def check(lobby: Lobby) -> None:
    """Raise :class:`Rejected` (422) if ``lobby`` as it is now may not be saved: one without an
    owner can only be an open, public or unlisted mesh without a capacity
    (``lobbies.policy.may_describe``)."""
    if not may_describe(lobby.facts()):
        raise Rejected(422, _OWNERLESS)


def update(lobby: Lobby, changes: dict[str, Any], by: int | None = None) -> Lobby:
    """Apply ``changes`` (``lobbies.models.Lobby`` field names, e.g. from
    :meth:`LobbySpec.changes`) to ``lobby``: only those fields are written. Peers that the
    change leaves without a right to stay are taken out once it is committed. Raises
    :class:`Rejected` (422) when the lobby cannot be so (an ownerless one made private)."""
    changes = {name: value for name, value in changes.items() if getattr(lobby, name) != value}
    if not changes:
        return lobby
    was = lobby.facts()
    for name, value in changes.items():
        setattr(lobby, name, value)
    try:
        check(lobby)
    except Rejected:
        lobby.refresh_from_db()
        raise
    lobby.save(update_fields=[*changes, "updated_at"])
    emit(signals.lobby_changed, document_id=lobby.document_id, state=lobby.state)
    _report("update", lobby.document_id, by, fields=sorted(changes))
    now = lobby.facts()
    if now.state is LobbyState.CLOSED and was.state is not LobbyState.CLOSED:
        _take_peers_out(lobby.document_id, "closed")
        return lobby
    made_private = now.visibility is Visibility.PRIVATE and was.visibility is not Visibility.PRIVATE
    smaller = now.max_peers is not None and (was.max_peers is None or now.max_peers < was.max_peers)
    if made_private or smaller or now.owner_id != was.owner_id:
        _take_out_who_may_not_stay(lobby.document_id)
    return lobby


def set_state(lobby: Lobby, state: LobbyState, by: int | None = None) -> None:
    """Open, lock or close ``lobby`` (``by``: the user who did it). Closing takes its peers out:
    their pipes in it are closed (4410) and those that opted in get ``Left`` with ``closed``.
    Raises :class:`Rejected` (422) for a lobby without an owner, which stays open."""
    if not may_describe(replace(lobby.facts(), state=state)):
        raise Rejected(422, _OWNERLESS)
    lobby.state = state.value
    lobby.save(update_fields=["state", "updated_at"])
    emit(signals.lobby_changed, document_id=lobby.document_id, state=state.value)
    _report(_STATE_ACTIONS[state], lobby.document_id, by)
    if state is LobbyState.CLOSED:
        _take_peers_out(lobby.document_id, "closed")


def delete(lobby: Lobby, by: int | None = None, reason: str = "deleted") -> None:
    """Delete ``lobby``'s row, taking its peers out as :func:`set_state` closing does (``Left``
    with ``closed``); its document id then behaves like an LF channel again."""
    _report("delete", lobby.document_id, by, reason=reason)
    document_id = lobby.document_id
    lobby.delete()
    _take_peers_out(document_id, "closed")


def delete_many(lobbies: QuerySet[Lobby], by: int | None = None) -> int:
    """Delete each of ``lobbies`` as :func:`delete` does (the admin's bulk delete)."""
    count = 0
    for lobby in lobbies:
        delete(lobby, by=by)
        count += 1
    return count


def prune_orphans(document_ids: list[str]) -> int:
    """Delete those of these lobbies that still have no owner (``lobbies.admission`` found them
    empty for ``RELAY_ORPHAN_LOBBY_TTL``). Returns how many went."""
    pruned = 0
    for lobby in Lobby.objects.filter(document_id__in=document_ids, owner__isnull=True):
        delete(lobby, reason="orphan")
        pruned += 1
    return pruned


def kick(document_id: str, peer_id: str, by: int | None = None) -> bool:
    """Take ``peer_id`` out of the lobby now (``lobbies.moderation.kick``); False if it was
    not in it. It may come back: a ban keeps it out."""
    kicked = async_to_sync(moderation.kick)(document_id, peer_id, "kicked")
    if kicked:
        _report("kick", document_id, by, peer_id=peer_id)
    return kicked


def ban(
    lobby: Lobby | None,
    *,
    user: Any = None,
    peer_id: str = "",
    minutes: int | None = None,
    reason: str = "",
    by: Any = None,
) -> Ban:
    """Ban a user or a peer id from ``lobby`` (None: the whole relay) for ``minutes`` (None:
    until lifted); it applies to their sockets at once, as every ban saved does
    (:func:`enforce`). ``by`` is the user who bans."""
    expires = timezone.now() + timedelta(minutes=minutes) if minutes else None
    return Ban.objects.create(
        lobby=lobby,
        user=user,
        peer_id=peer_id,
        reason=reason,
        expires_at=expires,
        created_by=by,
    )


def bannable(identity: Identity, lobby: Lobby, peers: list[LivePeer]) -> set[str]:
    """The peer ids among ``peers`` (in ``lobby`` now) that ``identity`` may ban from it on
    the owners' pages (``lobbies.policy.may_ban``: nobody who manages the lobby too, unless
    by an operator). A few queries whatever the number of peers, as the live view asks it at
    every refresh."""
    users = {peer.user.pk for peer in peers if peer.user is not None}
    found = _who_may_stay_facts(lobby.document_id, users)
    if found is None:
        return set()  # deleted meanwhile
    facts, grants, identities = found
    mine = Access(roles_granted(identity, grants))
    allowed = set()
    for peer in peers:
        target = identities.get(peer.user.pk, ANONYMOUS) if peer.user is not None else ANONYMOUS
        if may_ban(identity, facts, mine, target, Access(roles_granted(target, grants))):
            allowed.add(peer.peer_id)
    return allowed


def ban_peer(
    lobby: Lobby, peer: LivePeer, *, minutes: int | None, reason: str = "", by: Any = None
) -> Ban:
    """Ban ``peer`` (in ``lobby`` now) from ``lobby`` and from it alone: its user if it is
    signed in (the user's other peer ids too), else its peer id. It is kicked at once (``Left``
    with ``banned``) and its Joins are refused until the ban expires (``minutes``; None: until
    lifted). The admin's and the owners' Ban buttons."""
    return ban(
        lobby,
        user=peer.user,
        peer_id="" if peer.user is not None else peer.peer_id,
        minutes=minutes,
        reason=reason,
        by=by,
    )


def describe_ban(ban: Ban) -> str:
    """What the admin and the owners' pages say once a ban is given."""
    until = f"until {ban.expires_at:%Y-%m-%d %H:%M} UTC" if ban.expires_at else "for good"
    who = f"user {ban.user.get_username()!r}" if ban.user_id else f"peer {ban.peer_id!r}"
    return f"Banned {who} {until}."


def describe_kick(peer_id: str, kicked: bool) -> str:
    """What the admin and the owners' pages say after a Kick (``kicked``: it was there)."""
    if kicked:
        return f"Kicked peer {peer_id!r}."
    return f"Peer {peer_id!r} is not in the lobby (any more)."


@receiver(post_save, sender=Ban)
def _ban_saved(sender: type, instance: Ban, **kwargs: Any) -> None:
    # Once committed: a peer taken out and straight back must find the ban in the database.
    transaction.on_commit(lambda: enforce(instance))


def enforce(ban: Ban) -> None:
    """Apply ``ban`` to the sockets it names that are online: kicked from its lobby (``Left``
    with ``banned``), or from the relay (4403, its pipes closed too), in the sockets' event
    loop, not waited for. An expired ban reaches none. Every ban saved is applied so."""
    if ban.expires_at is not None and ban.expires_at <= timezone.now():
        return
    document_id = ban.lobby.document_id if ban.lobby_id else None
    account, peer_id = account_of(ban.user_id), ban.peer_id
    moderation.soon(lambda: moderation.enforce_ban(document_id, account, peer_id))
    who = ban.user.get_username() if ban.user_id else ban.peer_id
    _report(
        "ban",
        document_id,
        ban.created_by_id,
        peer_id=ban.peer_id or None,
        banned=who,
        expires_at=ban.expires_at.isoformat() if ban.expires_at else None,
    )


def transfer(lobby: Lobby, owner: Any, by: int | None = None) -> None:
    """Make ``owner`` (a user) the owner of ``lobby``. The peers inside stay (in a private
    lobby, but the previous owner if it holds no grant); the new owner's rights apply from its
    next Join (the current host keeps the role until it leaves)."""
    previous = lobby.owner.get_username() if lobby.owner_id else None
    lobby.owner = owner
    lobby.save(update_fields=["owner", "updated_at"])
    emit(signals.lobby_changed, document_id=lobby.document_id, state=lobby.state)
    _report("transfer", lobby.document_id, by, previous=previous, owner=owner.get_username())
    if lobby.visibility == Visibility.PRIVATE:
        _take_out_who_may_not_stay(lobby.document_id)


def find_user(username: str) -> Any:
    """The user named ``username``, or None."""
    model = get_user_model()
    return model._default_manager.filter(**{model.USERNAME_FIELD: username}).first()


def grant(
    lobby: Lobby, role: Role, username: str | None = None, group: str | None = None
) -> LobbyGrant:
    """Give a user (an invitation, for a private lobby) or a group ``role`` in ``lobby``.
    Raises :class:`NotFound` for an unknown name."""
    user = found_group = None
    if username is not None:
        user = find_user(username)
        if user is None:
            raise NotFound(f"no user named {username!r}")
    else:
        found_group = Group.objects.filter(name=group).first()
        if found_group is None:
            raise NotFound(f"no group named {group!r}")
    created, _ = LobbyGrant.objects.get_or_create(
        lobby=lobby, user=user, group=found_group, role=role.value
    )
    return created


def revoke_grant(lobby: Lobby, grant_id: int | None) -> bool:
    """Take back a role given in ``lobby``; False if it has no such grant. In a private lobby
    the peers it let in leave (``Left`` with ``private``) unless another right keeps them."""
    grant = lobby.grants.filter(pk=grant_id).first() if grant_id is not None else None
    if grant is None:
        return False
    grant.delete()
    if lobby.visibility == Visibility.PRIVATE:
        _take_out_who_may_not_stay(lobby.document_id)
    return True


def describe_grant(grant: LobbyGrant) -> dict[str, Any]:
    """A grant as the API and the pages show it."""
    return {
        "id": grant.pk,
        "username": grant.user.get_username() if grant.user else None,
        "group": grant.group.name if grant.group else None,
        "role": grant.role,
    }
