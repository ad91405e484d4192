"""The operators' admin for what the relay keeps: lobbies, grants, bans and API tokens."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from lobbies.models import ApiToken, Ban, Lobby, LobbyGrant


class LobbyGrantInline(admin.TabularInline):
    model = LobbyGrant
    extra = 0
    autocomplete_fields = ["user", "group"]


@admin.register(Lobby)
class LobbyAdmin(admin.ModelAdmin):
    list_display = ["document_id", "title", "game", "owner", "state", "visibility", "topology"]
    list_filter = ["state", "visibility", "topology", "game"]
    search_fields = ["document_id", "title", "game", "owner__username"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["created_at", "updated_at"]
    inlines = [LobbyGrantInline]


@admin.register(Ban)
class BanAdmin(admin.ModelAdmin):
    list_display = ["__str__", "lobby", "user", "peer_id", "expires_at", "reason", "created_at"]
    list_filter = [("lobby", admin.EmptyFieldListFilter), "expires_at"]
    search_fields = ["peer_id", "user__username", "lobby__document_id", "reason"]
    autocomplete_fields = ["lobby", "user"]
    readonly_fields = ["created_by", "created_at"]

    def save_model(self, request: HttpRequest, obj: Ban, form: object, change: bool) -> None:
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
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{revoked} token(s) revoked.")
