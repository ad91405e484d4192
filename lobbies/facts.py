"""What the database says about an identity in some lobbies: the facts ``lobbies.policy`` judges.

Blocking ORM code: the consumers call it through ``channels.db.database_sync_to_async`` (which
closes stale connections around each call, as Channels' consumers that skip ``AsyncConsumer``'s
per-message cleanup must), once per Join of new ids, never per frame. API views call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from lobbies.models import Ban, Lobby, LobbyGrant
from lobbies.policy import Identity, LobbyFacts, Role
from lobbies.schemas import LobbySpec


@dataclass(frozen=True, slots=True)
class LobbyView:
    """One lobby as a peer in it sees it: the policy's facts, and what its ``Joined`` shows."""

    facts: LobbyFacts
    public: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JoinFacts:
    """For one document id: its lobby (None: no row, an LF channel), the asker's roles there
    (its own grants and its groups'), and whether a ban keeps it out."""

    lobby: LobbyView | None
    roles: frozenset[Role] = frozenset()
    banned: bool = False


def _view(lobby: Lobby) -> LobbyView:
    return LobbyView(lobby.facts(), lobby.public())


def _whose(identity: Identity) -> Q:
    who = Q(user_id=identity.user_id)
    if identity.group_ids:
        who |= Q(group_id__in=identity.group_ids)
    return who


def banned_everywhere(identity: Identity, peer_id: str) -> bool:
    """Whether a relay-wide ban applies to this user or this peer id."""
    return (
        Ban.objects.active()
        .applying_to(lobby=None, user_id=identity.user_id, peer_id=peer_id)
        .exists()
    )


def join_facts(identity: Identity, peer_id: str, document_ids: list[str]) -> dict[str, JoinFacts]:
    """The facts of each id, in three queries whatever their number."""
    rows = {
        lobby.document_id: lobby
        for lobby in Lobby.objects.select_related("owner").filter(document_id__in=document_ids)
    }
    who = Q(peer_id=peer_id) | (Q(user_id=identity.user_id) if identity.user_id else Q(pk__in=[]))
    bans = Ban.objects.active().filter(who, Q(lobby__isnull=True) | Q(lobby__in=rows.values()))
    banned_from = set(bans.values_list("lobby_id", flat=True))
    roles: dict[int, set[Role]] = {}
    if identity.is_authenticated and rows:
        grants = LobbyGrant.objects.filter(_whose(identity), lobby__in=rows.values())
        for lobby_id, role in grants.values_list("lobby_id", "role"):
            roles.setdefault(lobby_id, set()).add(Role(role))
    everywhere = None in banned_from
    result = {}
    for document_id in document_ids:
        lobby = rows.get(document_id)
        if lobby is None:
            result[document_id] = JoinFacts(None, banned=everywhere)
            continue
        result[document_id] = JoinFacts(
            _view(lobby),
            frozenset(roles.get(lobby.pk, ())),
            everywhere or lobby.pk in banned_from,
        )
    return result


def create_lobby(identity: Identity, document_id: str, spec: LobbySpec) -> LobbyView:
    """Make the row of a lobby that a Join creates, owned by ``identity`` (nobody, when
    anonymous). If another request created it first, that row wins and is returned."""
    try:
        with transaction.atomic():
            lobby = Lobby.objects.create(
                document_id=document_id, owner_id=identity.user_id, **spec.model_fields_for_row()
            )
    except IntegrityError:
        lobby = Lobby.objects.get(document_id=document_id)
    return _view(Lobby.objects.select_related("owner").get(pk=lobby.pk))


def update_lobby(document_id: str, spec: LobbySpec) -> LobbyView:
    """Apply an owner's new metadata to its lobby."""
    Lobby.objects.filter(document_id=document_id).update(
        **spec.model_fields_for_row(), updated_at=timezone.now()
    )
    return _view(Lobby.objects.select_related("owner").get(document_id=document_id))
