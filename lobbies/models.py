"""What the relay keeps in the database: lobbies and their owners, grants, bans and API tokens.

Only what must outlive a connection lives here; who is online and where is ephemeral presence
(``lobbies.engine.presence``). The rules that read these rows are in ``lobbies.policy``.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q
from django.utils import timezone

from lobbies.policy import LobbyFacts, LobbyState, Role, Topology, Visibility


def new_public_id() -> str:
    """An opaque, unguessable id for a lobby in URLs (the API, the owners' pages): unlike the
    row's sequential key, walking it reveals nothing."""
    return secrets.token_urlsafe(9)


class Lobby(models.Model):
    """A document id with an owner and metadata. Ids without a row behave like LF channels."""

    public_id = models.CharField(
        max_length=16,
        unique=True,
        default=new_public_id,
        editable=False,
        help_text="The lobby's id in the API and the owners' pages (opaque).",
    )
    document_id = models.CharField(
        max_length=256, unique=True, help_text="The id clients Join (LF's documentId)."
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_lobbies",
    )
    game = models.CharField(max_length=100, blank=True, db_index=True, help_text="Game type.")
    title = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True, help_text="Free-form metadata.")
    max_peers = models.PositiveIntegerField(
        null=True, blank=True, help_text="Capacity; empty for no limit."
    )
    visibility = models.CharField(
        max_length=16,
        choices=[(v.value, v.name.title()) for v in Visibility],
        default=Visibility.PUBLIC.value,
    )
    state = models.CharField(
        max_length=16,
        choices=[(s.value, s.name.title()) for s in LobbyState],
        default=LobbyState.OPEN.value,
    )
    topology = models.CharField(
        max_length=16,
        choices=[(t.value, t.name.title()) for t in Topology],
        default=Topology.MESH.value,
    )
    host_transferable = models.BooleanField(
        default=False,
        help_text="In a host lobby, whether the host role passes to the member present longest "
        "when the host leaves (otherwise the lobby closes for its members).",
    )
    matchmade = models.BooleanField(
        default=False,
        editable=False,
        help_text="Made by quick join under an id the relay chose (it may have a capacity and "
        "a host without an owner).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "lobbies"
        permissions = [("create_lobby", "Can create lobbies by joining a new document id")]

    def __str__(self) -> str:
        return self.title or self.document_id

    def facts(self) -> LobbyFacts:
        """What ``lobbies.policy`` needs to know about this lobby."""
        return LobbyFacts(
            owner_id=self.owner_id,
            visibility=Visibility(self.visibility),
            state=LobbyState(self.state),
            topology=Topology(self.topology),
            max_peers=self.max_peers,
            host_transferable=self.host_transferable,
            matchmade=self.matchmade,
        )

    def public(self) -> dict[str, object]:
        """What a peer in the lobby (its extended ``Joined``) and the public API may see."""
        return {
            "documentId": self.document_id,
            "game": self.game,
            "title": self.title,
            "maxPeers": self.max_peers,
            "topology": self.topology,
            "visibility": self.visibility,
            "hostTransferable": self.host_transferable,
            "data": self.data,
            "owner": self.owner.get_username() if self.owner else None,
            "state": self.state,
        }


class LobbyGrant(models.Model):
    """A role in one lobby, given to a user or to every member of a group."""

    lobby = models.ForeignKey(Lobby, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE)
    role = models.CharField(
        max_length=16, choices=[(r.value, r.name.title()) for r in Role], default=Role.MEMBER.value
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True)
                | Q(user__isnull=True, group__isnull=False),
                name="grant_to_a_user_or_a_group",
            ),
            models.UniqueConstraint(fields=["lobby", "user", "role"], name="one_grant_per_user"),
            models.UniqueConstraint(fields=["lobby", "group", "role"], name="one_grant_per_group"),
        ]

    def __str__(self) -> str:
        return f"{self.role} of {self.lobby} for {self.user or self.group}"


class BanQuerySet(models.QuerySet):
    def active(self, now: object = None) -> BanQuerySet:
        """Bans in force: not expired."""
        now = now or timezone.now()
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))

    def applying_to(
        self, *, lobby: Lobby | None, user_id: int | None, peer_id: str | None
    ) -> BanQuerySet:
        """Bans of this user or peer id, in this lobby or everywhere."""
        who = Q(pk__in=[])
        if user_id is not None:
            who |= Q(user_id=user_id)
        if peer_id:
            who |= Q(peer_id=peer_id)
        where = Q(lobby__isnull=True) | (Q(lobby=lobby) if lobby is not None else Q(pk__in=[]))
        return self.filter(who & where)


class Ban(models.Model):
    """A user or a peer id kept out of one lobby, or of the whole relay, until it expires."""

    lobby = models.ForeignKey(
        Lobby,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="bans",
        help_text="Empty: banned from the whole relay.",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    peer_id = models.CharField(max_length=256, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="bans_given",
    )

    objects = BanQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(peer_id=""), name="ban_names_a_user_or_peer"
            )
        ]

    def __str__(self) -> str:
        where = self.lobby or "everywhere"
        return f"{self.user or self.peer_id} banned from {where}"


TOKEN_PREFIX = "rly_"


def _digest(raw: str) -> str:
    # The token is 256 random bits: a plain hash cannot be brute-forced, and lookups stay cheap.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def usable(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)

    def authenticate(self, raw: str) -> ApiToken | None:
        """The usable token whose secret is ``raw`` (its last use recorded), or None."""
        if not raw.startswith(TOKEN_PREFIX):
            return None
        token = self.usable().select_related("user").filter(digest=_digest(raw)).first()
        if token is not None:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token


class ApiToken(models.Model):
    """A named, revocable credential for scripts and game servers. Only its hash is stored: the
    secret is shown once, when it is issued."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=12, help_text="The secret's first characters, to tell tokens apart."
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user: object, name: str) -> tuple[ApiToken, str]:
        """Create a token for ``user``; returns it and its secret, which is not kept."""
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=raw[:12], digest=_digest(raw))
        return token, raw

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
