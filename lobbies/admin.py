"""The operators' admin for what the relay keeps (lobbies, grants, bans and API tokens) and
their control room: each lobby's page shows who is in it now and acts on the live sockets
(kick, ban for a time, lock, open, close, hand to another owner), each action in the admin log.

Staff see and do what their Django permissions allow: viewing a lobby shows its live view;
acting on it needs ``change_lobby`` (and a ban ``add_ban``).
"""

from __future__ import annotations

import copy
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import QuerySet
from django.forms.models import construct_instance
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from lobbies import owners
from lobbies.forms import (
    BAN_DURATIONS,
    CAPACITY_HELP,
    CAPACITY_LABEL,
    LiveActionForm,
    LobbyDataField,
    ban_minutes,
)
from lobbies.models import ApiToken, Ban, Lobby, LobbyGrant
from lobbies.policy import LobbyState
from lobbies.schemas import FIELDS


class LobbyGrantInline(admin.TabularInline):
    model = LobbyGrant
    extra = 0
    autocomplete_fields = ["user", "group"]


admin.site.site_header = "Relay administration"
admin.site.site_title = "Relay admin"
admin.site.index_title = "Lobbies, bans, tokens and statistics"

_STATES = {"lock": LobbyState.LOCKED, "open": LobbyState.OPEN, "close": LobbyState.CLOSED}
# The lobby fields an operator's form may change (the rest are set by the relay).
_EDITABLE = {"document_id", "owner", "state", *FIELDS.values()}


@admin.register(Lobby)
class LobbyAdmin(admin.ModelAdmin):
    list_display = ["document_id", "title", "game", "owner", "state", "visibility", "online"]
    list_filter = [
        "state",
        "visibility",
        "topology",
        "game",
        "matchmade",
        ("owner", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["document_id", "title", "game", "owner__username"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["matchmade", "created_at", "updated_at"]
    inlines = [LobbyGrantInline]
    change_form_template = "admin/lobbies/lobby/change_form.html"
    formfield_overrides = {models.JSONField: {"form_class": LobbyDataField}}

    def get_form(self, request: HttpRequest, obj: Lobby | None = None, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, **kwargs)

        class CheckedLobbyForm(form):  # type: ignore[misc, valid-type]
            """The admin's form, refusing what ``lobbies.owners`` would (a field error, not
            a 500)."""

            def clean(self) -> dict[str, Any]:
                cleaned = super().clean()
                if not self.errors:
                    # The lobby as it would be saved (the form fills its instance only after
                    # clean()).
                    candidate = construct_instance(self, copy.copy(self.instance))
                    try:
                        owners.check(candidate)
                    except owners.Rejected as rejected:
                        raise ValidationError(rejected.message) from None
                return cleaned

        return CheckedLobbyForm

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "max_peers" and field is not None:
            # The owners' pages' word for it (lobbies.forms), not the column's name.
            field.label, field.help_text = CAPACITY_LABEL, CAPACITY_HELP
        return field

    def save_model(self, request: HttpRequest, obj: Lobby, form: Any, change: bool) -> None:
        """Every write goes through ``lobbies.owners`` (its peers taken out where the change
        requires it, the caches told once committed)."""
        if not change:
            owners.add(obj, by=request.user.pk)
            return
        current = Lobby.objects.get(pk=obj.pk)
        changed = {name: getattr(obj, name) for name in form.changed_data if name in _EDITABLE}
        owners.update(current, changed, by=request.user.pk)

    def get_readonly_fields(self, request: HttpRequest, obj: Lobby | None = None) -> Any:
        # A lobby's document id is what its peers joined: changing it would leave them in a
        # lobby that no longer has that id. Delete it and make another instead.
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "document_id"] if obj is not None else fields

    def delete_model(self, request: HttpRequest, obj: Lobby) -> None:
        owners.delete(obj, by=request.user.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Lobby]) -> None:
        owners.delete_many(queryset, by=request.user.pk)

    @admin.display(description="peers online")
    def online(self, lobby: Lobby) -> int | str:
        return getattr(lobby, "peers_online", "-")

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        changelist = super().get_changelist_instance(request)
        page = list(changelist.result_list)
        counts = owners.counts([lobby.document_id for lobby in page])
        for lobby in page:
            lobby.peers_online = counts.get(lobby.document_id, 0)
        changelist.result_list = page
        return changelist

    def get_urls(self) -> list:
        live = self.admin_site.admin_view(self.live_view)
        return [
            path("<path:object_id>/live/", live, name="lobbies_lobby_live"),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        lobby = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if lobby is not None and self.has_view_permission(request, lobby):
            context.update(self._live_context(request, lobby))
        return super().change_view(request, object_id, form_url, context)

    def live_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the live panel alone (the change page refreshes it). POST: an operator's
        action on the live lobby, then back to its page."""
        lobby = self.get_object(request, object_id)
        if lobby is None:
            raise Http404("no such lobby")
        if not self.has_view_permission(request, lobby):
            raise PermissionDenied
        if request.method == "POST":
            return self._act(request, lobby)
        context = {**self.admin_site.each_context(request), **self._live_context(request, lobby)}
        response = TemplateResponse(request, "lobbies/live_panel.html", context)
        response["Cache-Control"] = "no-store"
        return response

    def _live_context(self, request: HttpRequest, lobby: Lobby) -> dict[str, Any]:
        now = owners.live(lobby.document_id)
        live_url = reverse("admin:lobbies_lobby_live", args=[lobby.pk])
        may_act = self.has_change_permission(request, lobby)
        may_ban = may_act and request.user.has_perm("lobbies.add_ban")
        return {
            "lobby": lobby,
            "live_url": live_url,
            "act_url": live_url,
            "members": now.members,
            "pipes": now.pipes,
            "may_act": may_act,
            "may_ban": may_ban,
            "bannable": {member.peer_id for member in now.members} if may_ban else set(),
            "ban_durations": BAN_DURATIONS,
            "states": [name for name, state in _STATES.items() if state.value != lobby.state],
        }

    def _act(self, request: HttpRequest, lobby: Lobby) -> HttpResponse:
        back = HttpResponseRedirect(reverse("admin:lobbies_lobby_change", args=[lobby.pk]))
        form = LiveActionForm(request.POST)
        if not form.is_valid():
            for error in form.errors.values():
                messages.error(request, " ".join(error))
            return back
        data = form.cleaned_data
        action, peer_id = data["action"], data["peer_id"]
        if not self.has_change_permission(request, lobby):
            raise PermissionDenied
        by = request.user.pk
        if action == "kick":
            if owners.kick(lobby.document_id, peer_id, by=by):
                self._done(request, lobby, owners.describe_kick(peer_id, kicked=True))
            else:
                messages.warning(request, owners.describe_kick(peer_id, kicked=False))
        elif action == "ban":
            if not request.user.has_perm("lobbies.add_ban"):
                raise PermissionDenied
            peer = owners.peer_in(lobby.document_id, peer_id)
            if peer is None:
                messages.warning(request, owners.describe_kick(peer_id, kicked=False))
                return back
            minutes = ban_minutes(data["minutes"])
            ban = owners.ban_peer(
                lobby, peer, minutes=minutes, reason=data["reason"], by=request.user
            )
            self._done(request, lobby, owners.describe_ban(ban))
            self.log_addition(request, ban, [{"added": {}}])
        elif action == "transfer":
            owner = owners.find_user(data["owner"])
            if owner is None:
                messages.error(request, f"No user named {data['owner']!r}.")
                return back
            owners.transfer(lobby, owner, by=by)
            self._done(request, lobby, f"Owner is now {owner.get_username()!r}.")
        else:
            try:
                owners.set_state(lobby, _STATES[action], by=by)
            except owners.Rejected as rejected:
                messages.error(request, rejected.message)
                return back
            self._done(request, lobby, f"The lobby is {lobby.state} now.")
        return back

    def _done(self, request: HttpRequest, lobby: Lobby, message: str) -> None:
        self.log_change(request, lobby, message)
        self.message_user(request, message, messages.SUCCESS)


@admin.register(Ban)
class BanAdmin(admin.ModelAdmin):
    list_display = ["__str__", "lobby", "user", "peer_id", "expires_at", "reason", "created_at"]
    list_filter = [("lobby", admin.EmptyFieldListFilter), "expires_at"]
    search_fields = ["peer_id", "user__username", "lobby__document_id", "reason"]
    autocomplete_fields = ["lobby", "user"]
    readonly_fields = ["created_by", "created_at"]

    def save_model(self, request: HttpRequest, obj: Ban, form: object, change: bool) -> None:
        """(Saved, a ban applies to the sockets it names at once: ``owners.enforce``.)"""
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued by their owners (the secret is shown once); operators see and revoke."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = list(queryset.filter(revoked_at__isnull=True))
        for token in revoked:  # one by one: each closes the sockets it authenticated
            token.revoke()
        self.message_user(request, f"{len(revoked)} token(s) revoked.")
