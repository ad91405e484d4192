"""The owners' pages: "My lobbies" (create, edit, open/lock/close, delete, members, grants) and
"Access" (tickets for game clients, API tokens). Server-rendered Django templates, no JavaScript
build; every rule is asked of ``lobbies.policy`` through ``lobbies.owners``."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from lobbies import owners
from lobbies.auth import identity_of, issue_ticket
from lobbies.conf import relay_settings
from lobbies.forms import GrantForm, LobbyForm, StateForm, TicketForm, TokenForm
from lobbies.models import ApiToken, Lobby, LobbyGrant
from lobbies.policy import CreationPolicy, LobbyState, Role, may_create
from lobbies.views import relay_url


@login_required
def my_lobbies(request: HttpRequest) -> HttpResponse:
    """The signed-in user's lobbies with their live peer counts, and a form to create one."""
    identity = identity_of(request.user)
    allowed = bool(may_create(identity, CreationPolicy(relay_settings().creation_policy)))
    form = LobbyForm(request.POST or None)
    if request.method == "POST":
        if not allowed:
            messages.error(request, "You may not create lobbies on this relay.")
        elif form.is_valid():
            form.instance.owner = request.user
            lobby = form.save()
            messages.success(request, f"Lobby {lobby.document_id} created.")
            return redirect("my-lobby", lobby_id=lobby.pk)
    mine = list(Lobby.objects.filter(owner=request.user))
    counts = owners.counts([lobby.document_id for lobby in mine])
    lobbies = [(lobby, counts[lobby.document_id]) for lobby in mine]
    context = {"lobbies": lobbies, "form": form, "may_create": allowed}
    return render(request, "my/lobbies.html", context)


@login_required
def my_lobby(request: HttpRequest, lobby_id: int) -> HttpResponse:
    """One lobby for those who manage it: its metadata, state, live members and grants."""
    identity = identity_of(request.user)
    lobby = get_object_or_404(Lobby.objects.select_related("owner"), pk=lobby_id)
    if not owners.visible(identity, lobby) or not owners.manages(identity, lobby):
        raise Http404("no such lobby")
    form = LobbyForm(instance=lobby)
    grant_form = GrantForm()
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "save":
            form = LobbyForm(request.POST, instance=lobby)
            if form.is_valid():
                form.save()
                messages.success(request, "Saved.")
                return redirect("my-lobby", lobby_id=lobby.pk)
        elif action == "state":
            state_form = StateForm(request.POST)
            if state_form.is_valid():
                owners.set_state(
                    lobby, LobbyState(state_form.cleaned_data["state"]), by=request.user.pk
                )
                messages.success(request, f"The lobby is {lobby.state} now.")
                return redirect("my-lobby", lobby_id=lobby.pk)
        elif action == "grant":
            grant_form = GrantForm(request.POST)
            if grant_form.is_valid():
                data = grant_form.cleaned_data
                try:
                    owners.grant(lobby, Role(data["role"]), username=data["username"])
                except owners.NotFound as exc:
                    grant_form.add_error("username", str(exc))
                else:
                    messages.success(request, f"{data['username']} is {data['role']} now.")
                    return redirect("my-lobby", lobby_id=lobby.pk)
        elif action == "revoke":
            get_object_or_404(LobbyGrant, pk=request.POST.get("grant"), lobby=lobby).delete()
            messages.success(request, "Grant removed.")
            return redirect("my-lobby", lobby_id=lobby.pk)
        elif action == "kick":
            peer_id = request.POST.get("peer", "")
            if owners.kick(lobby.document_id, peer_id, by=request.user.pk):
                messages.success(request, f"{peer_id} was taken out of the lobby.")
            else:
                messages.warning(request, f"{peer_id} is not in the lobby (any more).")
            return redirect("my-lobby", lobby_id=lobby.pk)
        elif action == "delete":
            owners.delete(lobby, by=request.user.pk)
            messages.success(request, f"Lobby {lobby.document_id} deleted.")
            return redirect("my-lobbies")
    context = {
        "lobby": lobby,
        "form": form,
        "grant_form": grant_form,
        "members": owners.members(lobby.document_id),
        "grants": [owners.describe_grant(g) for g in lobby.grants.select_related("user", "group")],
        "states": [s.value for s in LobbyState if s.value != lobby.state],
    }
    return render(request, "my/lobby.html", context)


@login_required
def my_access(request: HttpRequest) -> HttpResponse:
    """Tickets for game clients, and API tokens (each secret shown once)."""
    ticket_form, token_form = TicketForm(), TokenForm()
    shown: dict[str, object] = {}
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "ticket":
            ticket_form = TicketForm(request.POST)
            if ticket_form.is_valid():
                longest = relay_settings().ticket_ttl
                ttl = min(ticket_form.cleaned_data["ttl"] or longest, longest)
                ticket = issue_ticket(request.user, ttl)
                shown = {
                    "ticket": ticket,
                    "ticket_url": f"{relay_url(request)}/t/{ticket}",
                    "ticket_expires": timezone.now() + timedelta(seconds=ttl),
                }
        elif action == "token":
            token_form = TokenForm(request.POST)
            if token_form.is_valid():
                token, secret = ApiToken.issue(request.user, token_form.cleaned_data["name"])
                shown = {"secret": secret, "secret_name": token.name}
                token_form = TokenForm()
        elif action == "revoke":
            get_object_or_404(ApiToken, pk=request.POST.get("token"), user=request.user).revoke()
            messages.success(request, "Token revoked: it no longer works.")
            return redirect("my-access")
    context = {
        "ticket_form": ticket_form,
        "token_form": token_form,
        "tokens": ApiToken.objects.filter(user=request.user),
        "relay_url": relay_url(request),
        **shown,
    }
    return render(request, "my/access.html", context)
