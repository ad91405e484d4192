"""Who may create, join, host, pipe and manage: every such rule of the relay, in one place.

Pure functions over plain facts (no ORM, no I/O), so each rule is read and tested here as a
table. Consumers, API views and the admin gather the facts (who is asking, what the lobby row
says, which grants and bans apply) and ask this module; none re-implements a rule.

Words: an *identity* is whoever asks (an anonymous peer, or a Django user); a *lobby* is a
document id that has a row in the database. A document id without a row behaves like an LF
channel wherever the creation policy lets the asker create it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

# The Django permission, in app_label.codename form, that the "permission" creation policy asks.
CREATE_PERMISSION = "lobbies.create_lobby"


class CreationPolicy(StrEnum):
    """Who may create a lobby by joining a document id that has no row (RELAY_CREATION_POLICY)."""

    ANYONE = "anyone"  # the LF relay's behaviour
    AUTHENTICATED = "authenticated"
    PERMISSION = "permission"  # holders of lobbies.create_lobby


class Visibility(StrEnum):
    PUBLIC = "public"  # listed, anyone may join
    UNLISTED = "unlisted"  # not listed, anyone who knows the id may join
    PRIVATE = "private"  # only the owner and holders of a grant


class LobbyState(StrEnum):
    OPEN = "open"
    LOCKED = "locked"  # those inside stay; nobody new joins
    CLOSED = "closed"  # nobody joins


class Topology(StrEnum):
    MESH = "mesh"  # every two peers are introduced (the LF behaviour)
    HOST = "host"  # the host meets every member; members do not meet each other


class Role(StrEnum):
    """What a grant gives a user (or a group) in one lobby."""

    MEMBER = "member"
    HOST = "host"
    MODERATOR = "moderator"


class Refusal(StrEnum):
    """Why a request is refused: the ``code`` of the extended ``Error`` message."""

    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    LOCKED = "locked"
    LOBBY_FULL = "lobby_full"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class Identity:
    """Whoever asks. Anonymous peers have no user id."""

    user_id: int | None = None
    username: str = ""
    is_staff: bool = False
    is_superuser: bool = False
    permissions: frozenset[str] = frozenset()
    group_ids: frozenset[int] = frozenset()
    # What proved it (``lobbies.auth``): "session", "ticket", "token:<id>" (an API token) or
    # "ticket:<id>" (a ticket that token minted); "" for anonymous. Says which live sockets a
    # password change or a token's revocation closes.
    credential: str = ""

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None

    @property
    def account(self) -> str:
        """The account a peer id this identity takes is held by: ``""`` for anonymous, else the
        user's key (``user:<id>``). Presence stores it beside the peer's connection."""
        return account_of(self.user_id)

    def has_permission(self, permission: str) -> bool:
        return self.is_superuser or permission in self.permissions


ANONYMOUS = Identity()


def account_of(user_id: int | None) -> str:
    """The key presence stores for the peers of ``user_id`` (``""``: anonymous)."""
    return "" if user_id is None else f"user:{user_id}"


def user_of(account: str) -> int | None:
    """The user whose key ``account`` is (:func:`account_of`), or None for anonymous."""
    return int(account.removeprefix("user:")) if account.startswith("user:") else None


NO_ROLES: frozenset[Role] = frozenset()


def roles_granted(
    identity: Identity, grants: Iterable[tuple[int | None, int | None, str]]
) -> frozenset[Role]:
    """The roles ``grants`` (user id, group id, role) give ``identity``: its own and its
    groups'. Anonymous identities hold none."""
    if not identity.is_authenticated:
        return NO_ROLES  # (``frozenset()`` is a new object each time: kept per joined lobby)
    return frozenset(
        Role(role)
        for user_id, group_id, role in grants
        if (user_id is not None and user_id == identity.user_id) or group_id in identity.group_ids
    )


@dataclass(frozen=True, slots=True)
class LobbyFacts:
    """What a lobby row says, as far as the rules care."""

    owner_id: int | None
    visibility: Visibility = Visibility.PUBLIC
    state: LobbyState = LobbyState.OPEN
    topology: Topology = Topology.MESH
    max_peers: int | None = None  # None: no limit
    host_transferable: bool = False
    # Made by quick join (``lobbies.matchmaking``) under an id the relay chose: nobody was
    # after that id, so even without an owner it may have a capacity and a host.
    matchmade: bool = False


@dataclass(frozen=True, slots=True)
class Access:
    """The asker's access to one lobby: its grants' roles (its own and its groups'), whether a
    ban applies to it (its user or its peer id, in this lobby or everywhere), and how many peers
    are in the lobby now, itself not counted."""

    roles: frozenset[Role] = frozenset()
    banned: bool = False
    peers_present: int = 0
    already_in: bool = field(default=False)  # it is in the lobby already (a repeated Join)


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed, or refused with a reason."""

    allowed: bool
    refusal: Refusal | None = None

    def __bool__(self) -> bool:
        return self.allowed


ALLOW = Decision(True)


def _refuse(reason: Refusal) -> Decision:
    return Decision(False, reason)


def _owns(identity: Identity, lobby: LobbyFacts) -> bool:
    return identity.is_authenticated and identity.user_id == lobby.owner_id


def may_manage(identity: Identity, lobby: LobbyFacts, access: Access = Access()) -> bool:
    """Whether ``identity`` may change, lock, close or kick in ``lobby``: its owner, a moderator
    of it, or an operator (superuser). Staff act through their Django permissions instead."""
    return _owns(identity, lobby) or Role.MODERATOR in access.roles or identity.is_superuser


def may_administer(identity: Identity, lobby: LobbyFacts) -> bool:
    """Whether ``identity`` may delete ``lobby`` or hand out and take back roles in it: its
    owner or an operator (superuser). A moderator manages the lobby but cannot make others
    moderators, nor delete it (and take its id)."""
    return _owns(identity, lobby) or identity.is_superuser


def may_ban(
    identity: Identity,
    lobby: LobbyFacts,
    access: Access,
    target: Identity,
    target_access: Access,
) -> bool:
    """Whether ``identity`` may ban ``target`` (the identity holding a peer in the lobby,
    ``ANONYMOUS`` for an anonymous peer) from ``lobby`` alone, as the owners' pages do: whoever
    manages it (its owner, its moderators, operators) may ban anyone in it but another who
    manages it, whom only an operator may: a moderator must not keep the owner out of its own
    lobby, nor another moderator (nor itself). Staff in the admin act through their Django
    permissions instead."""
    if not may_manage(identity, lobby, access):
        return False
    return identity.is_superuser or not may_manage(target, lobby, target_access)


def may_create(identity: Identity, policy: CreationPolicy) -> Decision:
    """Whether ``identity`` may create a lobby by joining an id that has no row."""
    if policy is CreationPolicy.ANYONE:
        return ALLOW
    if policy is CreationPolicy.AUTHENTICATED:
        return ALLOW if identity.is_authenticated else _refuse(Refusal.FORBIDDEN)
    return ALLOW if identity.has_permission(CREATE_PERMISSION) else _refuse(Refusal.FORBIDDEN)


def may_join(
    identity: Identity,
    lobby: LobbyFacts | None,
    access: Access,
    policy: CreationPolicy,
) -> Decision:
    """Whether ``identity`` may join a document id: ``lobby`` is its row, or None for an id
    without one (joining it creates it, as the creation policy allows)."""
    if access.banned:
        return _refuse(Refusal.FORBIDDEN)
    if lobby is None:
        return may_create(identity, policy)
    if lobby.owner_id is None:
        # Nobody could grant a role in it or open it again: an ownerless lobby (made by an
        # anonymous Join, or whose owner was deleted) refuses nobody but the banned, and those
        # past the capacity of one quick join made.
        return _within_capacity(lobby, access)
    privileged = may_manage(identity, lobby, access)
    if lobby.state is LobbyState.CLOSED and not privileged:
        return _refuse(Refusal.LOCKED)
    if access.already_in:
        return ALLOW
    if lobby.state is LobbyState.LOCKED and not privileged:
        return _refuse(Refusal.LOCKED)
    if lobby.visibility is Visibility.PRIVATE and not (privileged or access.roles):
        # Not even its existence is confirmed to someone without a grant.
        return _refuse(Refusal.NOT_FOUND)
    return _within_capacity(lobby, access)


def _within_capacity(lobby: LobbyFacts, access: Access) -> Decision:
    if access.already_in:
        return ALLOW
    capacity = capacity_of(lobby)
    if capacity is not None and access.peers_present >= capacity:
        return _refuse(Refusal.LOBBY_FULL)
    return ALLOW


def capacity_of(lobby: LobbyFacts | None) -> int | None:
    """How many peers ``lobby`` takes (None: no limit applies). An ownerless lobby has none
    unless quick join made it: one whose owner was deleted keeps its number, unenforced."""
    if lobby is None or (lobby.owner_id is None and not lobby.matchmade):
        return None
    return lobby.max_peers


def may_stay(identity: Identity, lobby: LobbyFacts | None, access: Access) -> bool:
    """Whether a peer already in a lobby may stay after the lobby changed (closed, made
    private, a ban): the question asked of everyone inside when such a change is saved, and of
    a Join that raced it."""
    if access.banned:
        return False
    if lobby is None or lobby.owner_id is None or may_manage(identity, lobby, access):
        return True
    if lobby.state is LobbyState.CLOSED:
        return False
    return lobby.visibility is not Visibility.PRIVATE or bool(access.roles)


def may_see(identity: Identity, lobby: LobbyFacts, access: Access) -> bool:
    """Whether ``identity`` may know ``lobby`` exists: a private lobby only to those it grants
    a role and those who manage it (to anyone else it answers as a missing one would)."""
    if lobby.visibility is not Visibility.PRIVATE or lobby.owner_id is None:
        return True
    return bool(access.roles) or may_manage(identity, lobby, access)


def may_describe(lobby: LobbyFacts) -> Decision:
    """Whether a lobby may be as ``lobby`` says. One without an owner (made by an anonymous
    Join, or whose owner's account was deleted) can only be open, public or unlisted, without a
    capacity and a mesh: nobody could grant a role in it or open it again, and whoever made it
    must not be able to keep everyone else out (a private, locked, full or hosted lobby held by
    one idle socket) Quick join's lobbies (``matchmade``) may have a capacity and a
    host, being open and public."""
    if lobby.owner_id is not None:
        return ALLOW
    if lobby.visibility is Visibility.PRIVATE or lobby.state is not LobbyState.OPEN:
        return _refuse(Refusal.FORBIDDEN)
    if lobby.matchmade:
        # Its id was the relay's choice and quick join fills it: a capacity or a host keeps
        # nobody out of an id they wanted.
        return ALLOW
    if lobby.max_peers is not None or lobby.topology is not Topology.MESH:
        return _refuse(Refusal.FORBIDDEN)
    return ALLOW


def may_host(identity: Identity, lobby: LobbyFacts, access: Access) -> bool:
    """Whether ``identity`` may be the host of a ``host``-topology lobby: its owner, holders of
    a host grant, or, in a lobby nobody owns (made by an anonymous peer), whoever comes first."""
    return lobby.owner_id is None or _owns(identity, lobby) or Role.HOST in access.roles


def may_pipe(*, holds_seeker: bool, introduced: bool) -> Decision:
    """Whether a ``/connection/<A>/<B>/<doc>`` request may open: only from the identity holding
    A, and only for a pair the relay introduced on that document."""
    return ALLOW if holds_seeker and introduced else _refuse(Refusal.FORBIDDEN)


def may_take_peer_id(claimant: str, account: str | None) -> bool:
    """Whether an identity (its :attr:`Identity.account`) may become a peer id's control socket
    while ``account`` has it (``None``: nobody is online as that peer).

    An id held by a user stays that user's while it is online: anyone else is refused (4403),
    and the same user replaces its older socket (4409). An id held anonymously has the LF
    relay's trust: whoever comes next takes it over.
    """
    return account is None or account == "" or account == claimant
