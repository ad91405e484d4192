"""The owners' pages: "My lobbies" (create, edit, open/lock/close, delete, members, grants) and
"Access" (tickets for game clients, API tokens). Server-rendered Django templates, no JavaScript
build; every rule is asked of ``lobbies.policy`` through ``lobbies.owners``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from lobbies import owners
from lobbies.auth import identity_of, issue_ticket
from lobbies.conf import relay_settings
from lobbies.forms import GrantForm, LobbyForm, StateForm, TicketForm, TokenForm
from lobbies.models import ApiToken, Lobby
from lobbies.policy import CreationPolicy, LobbyState, Role, may_create
from lobbies.views import relay_url


def _invalid(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """The page again with its form's errors: a 400, as every bad form input is."""
    return render(request, template, context, status=400)


@login_required
def my_lobbies(request: HttpRequest) -> HttpResponse:
    """The signed-in user's lobbies with their live peer counts, and a form to create one."""
    identity = identity_of(request.user)
    allowed = bool(may_create(identity, CreationPolicy(relay_settings().creation_policy)))
    form = LobbyForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and form.spec is not None:
        try:
            address = request.META.get("REMOTE_ADDR", "-")
            lobby = owners.create(identity, form.cleaned_data["document_id"], form.spec, address)
        except owners.Rejected as rejected:
            form.add_error("document_id" if rejected.status == 409 else None, rejected.message)
        else:
            messages.success(request, f"Lobby {lobby.document_id} created.")
            return redirect("my-lobby", lobby_id=lobby.public_id)
    mine = list(Lobby.objects.filter(owner=request.user))
    counts = owners.counts([lobby.document_id for lobby in mine])
    lobbies = [(lobby, counts[lobby.document_id]) for lobby in mine]
    context = {"lobbies": lobbies, "form": form, "may_create": allowed}
    if request.method == "POST":
        return _invalid(request, "my/lobbies.html", context)
    return render(request, "my/lobbies.html", context)


@login_required
def my_lobby(request: HttpRequest, lobby_id: str) -> HttpResponse:
    """One lobby for those who manage it: its metadata, state, live members and grants."""
    identity = identity_of(request.user)
    lobby = Lobby.objects.select_related("owner").filter(public_id=lobby_id).first()
    if lobby is None or not owners.visible(identity, lobby) or not owners.manages(identity, lobby):
        raise Http404("no such lobby")
    form = LobbyForm(instance=lobby)
    grant_form = GrantForm()
    if request.method == "POST":
        done = _act(request, lobby, identity.user_id)
        if isinstance(done, HttpResponse):
            return done
        form, grant_form = done
    context = {
        "lobby": lobby,
        "form": form,
        "grant_form": grant_form,
        "members": owners.members(lobby.document_id),
        "grants": [owners.describe_grant(g) for g in lobby.grants.select_related("user", "group")],
        "states": [s.value for s in LobbyState if s.value != lobby.state],
        "administers": owners.administers(identity, lobby),
    }
    if request.method == "POST":
        return _invalid(request, "my/lobby.html", context)
    return render(request, "my/lobby.html", context)


def _act(
    request: HttpRequest, lobby: Lobby, by: int | None
) -> HttpResponse | tuple[LobbyForm, GrantForm]:
    """One action posted on a lobby's page: a redirect once done, or the forms with what was
    wrong (shown again with a 400)."""
    form, grant_form = LobbyForm(instance=lobby), GrantForm()
    back = redirect("my-lobby", lobby_id=lobby.public_id)
    action = request.POST.get("action")
    if action in ("grant", "revoke", "delete") and not owners.administers(
        identity_of(request.user), lobby
    ):
        raise PermissionDenied("only the lobby's owner and operators may do this")
    try:
        if action == "save":
            form = LobbyForm(request.POST, instance=lobby)
            if form.is_valid() and form.spec is not None:
                owners.update(lobby, form.spec.changes(), by=by)
                messages.success(request, "Saved.")
                return back
        elif action == "state":
            state_form = StateForm(request.POST)
            if state_form.is_valid():
                owners.set_state(lobby, LobbyState(state_form.cleaned_data["state"]), by=by)
                messages.success(request, f"The lobby is {lobby.state} now.")
                return back
            messages.error(request, "No such state.")
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
                    return back
        elif action == "revoke":
            if owners.revoke_grant(lobby, _posted_id(request, "grant")):
                messages.success(request, "Grant removed.")
                return back
            messages.error(request, "No such grant.")
        elif action == "kick":
            peer_id = request.POST.get("peer", "")
            if owners.kick(lobby.document_id, peer_id, by=by):
                messages.success(request, f"{peer_id} was taken out of the lobby.")
            else:
                messages.warning(request, f"{peer_id} is not in the lobby (any more).")
            return back
        elif action == "delete":
            owners.delete(lobby, by=by)
            messages.success(request, f"Lobby {lobby.document_id} deleted.")
            return redirect("my-lobbies")
        else:
            messages.error(request, "No such action.")
    except owners.Rejected as rejected:
        messages.error(request, rejected.message)
    return form, grant_form


@login_required
def my_access(request: HttpRequest) -> HttpResponse:
    """Tickets for game clients, and API tokens (each secret shown once)."""
    ticket_form, token_form = TicketForm(), TokenForm()
    shown: dict[str, object] = {}
    action = request.POST.get("action")
    if request.method == "POST":
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
            token = ApiToken.objects.filter(pk=_posted_id(request, "token"), user=request.user)
            if token.exists():
                token.get().revoke()
                messages.success(request, "Token revoked: it no longer works.")
                return redirect("my-access")
            messages.error(request, "No such token.")
    context = {
        "ticket_form": ticket_form,
        "token_form": token_form,
        "tokens": ApiToken.objects.filter(user=request.user),
        "relay_url": relay_url(request),
        **shown,
    }
    # A POST that shows the page again without a result was bad input.
    status = 400 if request.method == "POST" and not shown else 200
    return render(request, "my/access.html", context, status=status)


def _posted_id(request: HttpRequest, name: str) -> int | None:
    """The row id posted as ``name``, or None when it is not one (never a 500)."""
    try:
        return int(request.POST.get(name, ""))
    except ValueError:
        return None
