"""lobbies.policy: every rule as a table (pure functions, no database)."""

from __future__ import annotations

import pytest

from lobbies.policy import (
    ANONYMOUS,
    CREATE_PERMISSION,
    Access,
    CreationPolicy,
    Identity,
    LobbyFacts,
    LobbyState,
    Refusal,
    Role,
    Topology,
    Visibility,
    may_administer,
    may_ban,
    may_create,
    may_describe,
    may_host,
    may_join,
    may_manage,
    may_pipe,
    may_see,
    may_stay,
    may_take_peer_id,
    roles_granted,
)

OWNER = Identity(user_id=1)
USER = Identity(user_id=2)
CREATOR = Identity(user_id=3, permissions=frozenset({CREATE_PERMISSION}))
OPERATOR = Identity(user_id=4, is_staff=True, is_superuser=True)

ANYONE, AUTHENTICATED, PERMISSION = CreationPolicy


@pytest.mark.parametrize(
    ("identity", "policy", "allowed"),
    [
        (ANONYMOUS, ANYONE, True),
        (ANONYMOUS, AUTHENTICATED, False),
        (USER, AUTHENTICATED, True),
        (USER, PERMISSION, False),
        (CREATOR, PERMISSION, True),
        (OPERATOR, PERMISSION, True),  # superusers hold every permission
        (ANONYMOUS, PERMISSION, False),
    ],
)
def test_who_may_create(identity, policy, allowed):
    decision = may_create(identity, policy)
    assert bool(decision) is allowed
    assert decision.refusal is (None if allowed else Refusal.FORBIDDEN)


def lobby(**facts) -> LobbyFacts:
    return LobbyFacts(owner_id=OWNER.user_id, **facts)


PRIVATE = lobby(visibility=Visibility.PRIVATE)
LOCKED = lobby(state=LobbyState.LOCKED)
CLOSED = lobby(state=LobbyState.CLOSED)
FULL = lobby(max_peers=2)
MEMBER = Access(roles=frozenset({Role.MEMBER}))
MODERATOR = Access(roles=frozenset({Role.MODERATOR}))


@pytest.mark.parametrize(
    ("identity", "facts", "access", "policy", "refusal"),
    [
        # An id without a row: the creation policy decides.
        (ANONYMOUS, None, Access(), ANYONE, None),
        (ANONYMOUS, None, Access(), AUTHENTICATED, Refusal.FORBIDDEN),
        (USER, None, Access(), PERMISSION, Refusal.FORBIDDEN),
        # A public, open lobby: anyone, whatever the creation policy.
        (ANONYMOUS, lobby(), Access(), PERMISSION, None),
        # A ban keeps out everyone it names, the owner too.
        (USER, lobby(), Access(banned=True), ANYONE, Refusal.FORBIDDEN),
        (OWNER, lobby(), Access(banned=True), ANYONE, Refusal.FORBIDDEN),
        (ANONYMOUS, None, Access(banned=True), ANYONE, Refusal.FORBIDDEN),
        # Private: the owner, grant holders and operators; to others it does not exist.
        (USER, PRIVATE, Access(), ANYONE, Refusal.NOT_FOUND),
        (ANONYMOUS, PRIVATE, Access(), ANYONE, Refusal.NOT_FOUND),
        (USER, PRIVATE, MEMBER, ANYONE, None),
        (OWNER, PRIVATE, Access(), ANYONE, None),
        (OPERATOR, PRIVATE, Access(), ANYONE, None),
        # Locked: nobody new, but those inside may Join again, and managers may enter.
        (USER, LOCKED, Access(), ANYONE, Refusal.LOCKED),
        (USER, LOCKED, Access(already_in=True), ANYONE, None),
        (USER, LOCKED, MODERATOR, ANYONE, None),
        (OWNER, LOCKED, Access(), ANYONE, None),
        # Closed: nobody but its managers, not even those who were inside.
        (USER, CLOSED, Access(already_in=True), ANYONE, Refusal.LOCKED),
        (OWNER, CLOSED, Access(), ANYONE, None),
        # Full: counted without the asker; a peer already inside is not refused.
        (USER, FULL, Access(peers_present=1), ANYONE, None),
        (USER, FULL, Access(peers_present=2), ANYONE, Refusal.LOBBY_FULL),
        (USER, FULL, Access(peers_present=2, already_in=True), ANYONE, None),
        (OWNER, FULL, Access(peers_present=2), ANYONE, Refusal.LOBBY_FULL),
    ],
)
def test_who_may_join(identity, facts, access, policy, refusal):
    decision = may_join(identity, facts, access, policy)
    assert decision.refusal is refusal
    assert bool(decision) is (refusal is None)


@pytest.mark.parametrize(
    ("identity", "access", "manage", "host"),
    [
        (OWNER, Access(), True, True),
        (USER, Access(), False, False),
        (USER, MEMBER, False, False),
        (USER, Access(roles=frozenset({Role.HOST})), False, True),
        (USER, MODERATOR, True, False),
        (OPERATOR, Access(), True, False),
        (ANONYMOUS, Access(), False, False),
    ],
)
def test_who_may_manage_and_host(identity, access, manage, host):
    assert may_manage(identity, lobby(), access) is manage
    assert may_host(identity, lobby(), access) is host


def test_an_ownerless_lobby_is_managed_by_nobody_and_hosted_by_whoever_comes_first():
    ownerless = LobbyFacts(owner_id=None, topology=Topology.HOST)  # made by an anonymous peer
    assert not may_manage(ANONYMOUS, ownerless)
    assert may_host(ANONYMOUS, ownerless, Access())
    owned = LobbyFacts(owner_id=1, topology=Topology.HOST)
    assert not may_host(ANONYMOUS, owned, Access())
    assert may_host(Identity(user_id=1), owned, Access())
    assert may_host(Identity(user_id=2), owned, Access(roles=frozenset({Role.HOST})))


@pytest.mark.parametrize(
    ("holds_seeker", "introduced", "allowed"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_who_may_pipe(holds_seeker, introduced, allowed):
    assert bool(may_pipe(holds_seeker=holds_seeker, introduced=introduced)) is allowed


@pytest.mark.parametrize(
    ("claimant", "account", "allowed"),
    [
        ("", None, True),  # nobody online as that peer
        ("user:1", None, True),
        ("", "", True),  # anonymous ids keep the LF trust: taken over by whoever comes
        ("user:1", "", True),
        ("user:1", "user:1", True),  # the same user again: replaces its older socket
        ("user:2", "user:1", False),  # another user's id, while it is online
        ("", "user:1", False),
    ],
)
def test_who_may_take_a_peer_id(claimant, account, allowed):
    assert may_take_peer_id(claimant, account) is allowed


def test_an_identity_holds_peer_ids_as_its_user():
    assert ANONYMOUS.account == ""
    assert OWNER.account == "user:1"


NOBODYS = LobbyFacts(owner_id=None)
MODERATOR = Access(roles=frozenset({Role.MODERATOR}))


@pytest.mark.parametrize(
    ("lobby", "allowed"),
    [
        (NOBODYS, True),
        (LobbyFacts(owner_id=None, visibility=Visibility.UNLISTED), True),
        (LobbyFacts(owner_id=None, visibility=Visibility.PRIVATE), False),
        (LobbyFacts(owner_id=None, state=LobbyState.LOCKED), False),
        (LobbyFacts(owner_id=None, state=LobbyState.CLOSED), False),
        (LobbyFacts(owner_id=None, max_peers=1), False),
        (LobbyFacts(owner_id=None, topology=Topology.HOST), False),
        (LobbyFacts(owner_id=1, visibility=Visibility.PRIVATE, max_peers=1), True),
    ],
)
def test_a_lobby_without_an_owner_can_keep_nobody_out(lobby, allowed):
    assert bool(may_describe(lobby)) is allowed


def test_an_ownerless_lobby_refuses_only_the_banned():
    full = LobbyFacts(owner_id=None, max_peers=1, state=LobbyState.CLOSED)  # (an old row)
    assert may_join(ANONYMOUS, full, Access(peers_present=5), CreationPolicy.ANYONE)
    assert not may_join(ANONYMOUS, full, Access(banned=True), CreationPolicy.ANYONE)


@pytest.mark.parametrize(
    ("identity", "access", "stays"),
    [
        (ANONYMOUS, Access(), False),
        (USER, Access(roles=frozenset({Role.MEMBER})), True),
        (USER, MODERATOR, True),
        (OWNER, Access(), True),
        (OPERATOR, Access(), True),
        (USER, Access(roles=frozenset({Role.MEMBER}), banned=True), False),
    ],
)
def test_who_may_stay_in_a_lobby_made_private(identity, access, stays):
    private = LobbyFacts(owner_id=1, visibility=Visibility.PRIVATE)
    assert may_stay(identity, private, access) is stays
    assert may_see(identity, private, access) is (stays or access.banned)


@pytest.mark.parametrize(
    ("identity", "access", "target", "target_access", "allowed"),
    [
        (OWNER, Access(), ANONYMOUS, Access(), True),
        (OWNER, Access(), USER, Access(), True),
        (OWNER, Access(), USER, MEMBER, True),
        (USER, MODERATOR, ANONYMOUS, Access(), True),  # moderators ban, as they kick
        (USER, MODERATOR, CREATOR, Access(), True),
        # Nobody bans one who manages the lobby too, but an operator: a moderator would keep
        # the owner out of its own lobby, or another moderator (or itself).
        (USER, MODERATOR, OWNER, Access(), False),
        (USER, MODERATOR, CREATOR, MODERATOR, False),
        (OWNER, Access(), CREATOR, MODERATOR, False),
        (OWNER, Access(), OWNER, Access(), False),
        (USER, MODERATOR, OPERATOR, Access(), False),
        (OPERATOR, Access(), OWNER, Access(), True),
        # Who does not manage the lobby bans nobody.
        (USER, MEMBER, ANONYMOUS, Access(), False),
        (ANONYMOUS, Access(), ANONYMOUS, Access(), False),
    ],
)
def test_who_may_ban_whom_from_a_lobby(identity, access, target, target_access, allowed):
    assert may_ban(identity, lobby(), access, target, target_access) is allowed


def test_moderators_manage_but_only_owners_and_operators_administer():
    lobby = LobbyFacts(owner_id=1)
    assert may_manage(USER, lobby, MODERATOR) and not may_administer(USER, lobby)
    assert may_administer(OWNER, lobby) and may_administer(OPERATOR, lobby)


def test_roles_come_from_the_users_own_grants_and_its_groups():
    grants = [(2, None, "member"), (None, 7, "host"), (9, None, "moderator")]
    member_of_7 = Identity(user_id=2, group_ids=frozenset({7}))
    assert roles_granted(member_of_7, grants) == {Role.MEMBER, Role.HOST}
    assert roles_granted(ANONYMOUS, grants) == frozenset()
