"""lobbies.models against the real database (SQLite, and PostgreSQL in make test's second pass),
and their admin pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from lobbies.models import ApiToken, Ban, Lobby, LobbyGrant
from lobbies.policy import CREATE_PERMISSION, LobbyFacts, LobbyState, Topology, Visibility

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="a long password 1")


def test_a_token_is_stored_hashed_and_shown_once(alice):
    token, secret = ApiToken.issue(alice, "game server")
    assert secret.startswith("rly_") and len(secret) > 40
    stored = ApiToken.objects.get(pk=token.pk)
    assert secret not in (stored.digest, stored.prefix, stored.name)
    assert stored.prefix == secret[:12]
    assert ApiToken.objects.authenticate(secret) == token
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None
    assert ApiToken.objects.authenticate(secret + "x") is None
    assert ApiToken.objects.authenticate("not a token") is None
    token.revoke()
    assert ApiToken.objects.authenticate(secret) is None


def test_bans_apply_where_and_while_they_should(alice):
    arena, garden = (Lobby.objects.create(document_id=d) for d in ("arena", "garden"))
    now = timezone.now()
    Ban.objects.create(lobby=arena, user=alice, reason="griefing")
    Ban.objects.create(peer_id="spammer", expires_at=now + timedelta(hours=1))  # everywhere
    Ban.objects.create(peer_id="reformed", expires_at=now - timedelta(seconds=1))  # expired

    def banned(lobby: Lobby | None, user: User | None = None, peer_id: str = "") -> bool:
        user_id = user.pk if user else None
        bans = Ban.objects.active().applying_to(lobby=lobby, user_id=user_id, peer_id=peer_id)
        return bans.exists()

    assert banned(arena, alice) and not banned(garden, alice)
    assert banned(arena, peer_id="spammer") and banned(garden, peer_id="spammer")
    assert banned(None, peer_id="spammer")  # an id without a lobby row
    assert not banned(arena, peer_id="reformed")
    assert not banned(arena, peer_id="someone")


def test_a_ban_must_name_someone():
    with pytest.raises(IntegrityError), transaction.atomic():
        Ban.objects.create(reason="nobody")


def test_a_grant_goes_to_a_user_or_a_group_not_both(alice):
    arena = Lobby.objects.create(document_id="arena")
    players = Group.objects.create(name="players")
    LobbyGrant.objects.create(lobby=arena, user=alice)
    LobbyGrant.objects.create(lobby=arena, group=players, role="host")
    for user, group in [(alice, players), (None, None)]:
        with pytest.raises(IntegrityError), transaction.atomic():
            LobbyGrant.objects.create(lobby=arena, user=user, group=group, role="moderator")


def test_creating_lobbies_is_a_django_permission_operators_grant(alice):
    assert not alice.has_perm(CREATE_PERMISSION)
    alice.user_permissions.add(Permission.objects.get(codename="create_lobby"))
    alice = User.objects.get(pk=alice.pk)  # permissions are cached per instance
    assert alice.has_perm(CREATE_PERMISSION)


def test_a_lobby_row_gives_the_policy_its_facts(alice):
    lobby = Lobby.objects.create(
        document_id="arena", owner=alice, visibility="private", state="locked", topology="host"
    )
    assert lobby.facts() == LobbyFacts(
        owner_id=alice.pk,
        visibility=Visibility.PRIVATE,
        state=LobbyState.LOCKED,
        topology=Topology.HOST,
        max_peers=None,
    )


@pytest.mark.parametrize(
    "page",
    [
        "/admin/lobbies/lobby/",
        "/admin/lobbies/lobby/add/",
        "/admin/lobbies/ban/",
        "/admin/lobbies/ban/add/",
        "/admin/lobbies/apitoken/",
        "/admin/lobbies/lobby/?state__exact=open&q=arena",
    ],
)
def test_the_admin_pages_open(admin_client, alice, page):
    Lobby.objects.create(document_id="arena", owner=alice, title="Arena", game="racer")
    ApiToken.issue(alice, "bot")
    assert admin_client.get(page).status_code == 200
