"""What owners (and moderators, and operators) do to lobbies, shared by the JSON API, the
owners' pages and the admin: see a lobby, change its state, delete it, grant roles, look at who
is in it, kick, ban, hand it to another owner.

Blocking code (the ORM), for views; the live side (``lobbies.moderation``: who is in a lobby,
taking peers out) is reached through ``async_to_sync``, on the server's event loop where the
sockets live. Each action is reported as ``signals.operator_action`` with who did it (``by``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Q
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from lobbies import moderation, signals
from lobbies.engine.presence import get_presence
from lobbies.events import emit
from lobbies.models import Ban, Lobby, LobbyGrant
from lobbies.policy import (
    Identity,
    LobbyState,
    Role,
    Standing,
    Visibility,
    holder_of,
    may_manage,
)

# How a state change is named in ``operator_action``.
_STATE_ACTIONS = {LobbyState.OPEN: "open", LobbyState.LOCKED: "lock", LobbyState.CLOSED: "close"}


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


def counts(document_ids: list[str]) -> dict[str, int]:
    """How many peers are in each of these lobbies now."""
    return async_to_sync(moderation.counts)(document_ids)


def members(document_id: str) -> list[str]:
    """The peer ids in the lobby now, the one present longest first."""
    return async_to_sync(get_presence().members)(document_id)


def _take_peers_out(document_id: str) -> None:
    async_to_sync(moderation.evict)(document_id, "closed")


def _report(action: str, document_id: str | None, by: int | None, **detail: Any) -> None:
    emit(
        signals.operator_action,
        action=action,
        document_id=document_id,
        peer_id=detail.pop("peer_id", None),
        user_id=by,
        detail=detail,
    )


def set_state(lobby: Lobby, state: LobbyState, by: int | None = None) -> None:
    """Open, lock or close ``lobby`` (``by``: the user who did it). Closing takes its peers out:
    their pipes in it are closed (4410) and those that opted in get ``Left`` with ``closed``."""
    lobby.state = state.value
    lobby.save(update_fields=["state", "updated_at"])
    emit(signals.lobby_changed, document_id=lobby.document_id, state=state.value)
    _report(_STATE_ACTIONS[state], lobby.document_id, by)
    if state is LobbyState.CLOSED:
        _take_peers_out(lobby.document_id)


def delete(lobby: Lobby, by: int | None = None) -> None:
    """Delete ``lobby``'s row, taking its peers out as :func:`set_state` closing does; its
    document id then behaves like an LF channel again."""
    _take_peers_out(lobby.document_id)
    _report("delete", lobby.document_id, by)
    lobby.delete()


def kick(document_id: str, peer_id: str, by: int | None = None) -> bool:
    """Take ``peer_id`` out of the lobby now (``lobbies.moderation.kick``); False if it was
    not in it. It may come back: a ban keeps it out."""
    kicked = async_to_sync(moderation.kick)(document_id, peer_id)
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


@receiver(post_save, sender=Ban)
def _ban_saved(sender: type, instance: Ban, **kwargs: Any) -> None:
    # Once committed: a peer taken out and straight back must find the ban in the database.
    transaction.on_commit(lambda: enforce(instance))


def enforce(ban: Ban) -> int:
    """Apply ``ban`` to the sockets it names that are online now: kicked from its lobby
    (``Left`` with ``banned``), or from the relay (4403, its pipes closed too). Returns how
    many peers it reached; an expired ban reaches none. Every ban saved is applied so."""
    if ban.expires_at is not None and ban.expires_at <= timezone.now():
        return 0
    document_id = ban.lobby.document_id if ban.lobby_id else None
    reached = async_to_sync(moderation.enforce_ban)(
        document_id, holder_of(ban.user_id), ban.peer_id
    )
    who = ban.user.get_username() if ban.user_id else ban.peer_id
    _report(
        "ban",
        document_id,
        ban.created_by_id,
        peer_id=ban.peer_id or None,
        banned=who,
        expires_at=ban.expires_at.isoformat() if ban.expires_at else None,
    )
    return reached


def transfer(lobby: Lobby, owner: Any, by: int | None = None) -> None:
    """Make ``owner`` (a user) the owner of ``lobby``. The peers inside stay; the new owner's
    rights apply from its next Join (the current host keeps the role until it leaves)."""
    previous = lobby.owner.get_username() if lobby.owner_id else None
    lobby.owner = owner
    lobby.save(update_fields=["owner", "updated_at"])
    emit(signals.lobby_changed, document_id=lobby.document_id, state=lobby.state)
    _report("transfer", lobby.document_id, by, previous=previous, owner=owner.get_username())


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


def describe_grant(grant: LobbyGrant) -> dict[str, Any]:
    """A grant as the API and the pages show it."""
    return {
        "id": grant.pk,
        "username": grant.user.get_username() if grant.user else None,
        "group": grant.group.name if grant.group else None,
        "role": grant.role,
    }
