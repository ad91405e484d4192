"""What owners (and moderators, and operators) do to lobbies, shared by the JSON API and the
owners' pages: see a lobby, change its state, delete it, grant roles, look at who is in it.

Blocking code (the ORM), for views; the live side (who is in a lobby, taking peers out) is
reached through ``async_to_sync``, on the server's event loop where the sockets live.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import Q

from lobbies import signals
from lobbies.events import emit
from lobbies.models import Lobby, LobbyGrant
from lobbies.policy import Identity, LobbyState, Role, Standing, Visibility, may_manage
from lobbies.presence import get_presence


class NotFound(Exception):
    """No such user or group (its message says which)."""


def standing(identity: Identity, lobby: Lobby) -> Standing:
    """The roles ``identity`` holds in ``lobby`` (its own grants and its groups')."""
    if not identity.is_authenticated:
        return Standing()
    grants = lobby.grants.filter(Q(user_id=identity.user_id) | Q(group_id__in=identity.group_ids))
    return Standing(roles=frozenset(Role(r) for r in grants.values_list("role", flat=True)))


def visible(identity: Identity, lobby: Lobby) -> bool:
    """Whether ``identity`` may know ``lobby`` exists: a private lobby only to those it
    grants a role and those who manage it."""
    if lobby.visibility != Visibility.PRIVATE:
        return True
    held = standing(identity, lobby)
    return bool(held.roles) or may_manage(identity, lobby.facts(), held)


def manages(identity: Identity, lobby: Lobby) -> bool:
    """Whether ``identity`` may change, close or delete ``lobby`` (``lobbies.policy``)."""
    return may_manage(identity, lobby.facts(), standing(identity, lobby))


def members(document_id: str) -> list[str]:
    """The peer ids in the lobby now, the one present longest first."""
    return async_to_sync(get_presence().members)(document_id)


def _take_peers_out(document_id: str) -> None:
    from lobbies.peers import evict  # (the wire engine; imported when first needed)

    async_to_sync(evict)(document_id, "closed")


def set_state(lobby: Lobby, state: LobbyState) -> None:
    """Open, lock or close ``lobby``. Closing takes its peers out: their pipes in it are closed
    (4410) and those that opted in get ``Left`` with ``closed``."""
    lobby.state = state.value
    lobby.save(update_fields=["state", "updated_at"])
    emit(signals.lobby_changed, document_id=lobby.document_id, state=state.value)
    if state is LobbyState.CLOSED:
        _take_peers_out(lobby.document_id)


def delete(lobby: Lobby) -> None:
    """Delete ``lobby``'s row, taking its peers out as :func:`set_state` closing does; its
    document id then behaves like an LF channel again."""
    _take_peers_out(lobby.document_id)
    lobby.delete()


def grant(
    lobby: Lobby, role: Role, username: str | None = None, group: str | None = None
) -> LobbyGrant:
    """Give a user (an invitation, for a private lobby) or a group ``role`` in ``lobby``.
    Raises :class:`NotFound` for an unknown name."""
    user = found_group = None
    if username is not None:
        model = get_user_model()
        user = model._default_manager.filter(**{model.USERNAME_FIELD: username}).first()
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


def describe_grant(grant: LobbyGrant) -> dict[str, Any]:
    """A grant as the API and the pages show it."""
    return {
        "id": grant.pk,
        "username": grant.user.get_username() if grant.user else None,
        "group": grant.group.name if grant.group else None,
        "role": grant.role,
    }
