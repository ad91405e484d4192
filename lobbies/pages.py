"""The owners' pages: "My lobbies" (create, edit, open/lock/close, delete, grants, and each
lobby's live view with Kick and Ban, as the admin shows it) and "Access" (tickets for game
clients, API tokens). Server-rendered Django templates, no JavaScript build (the live view is
refreshed by ``static/relay/live.js``, shared with the admin); every rule is asked of
``lobbies.policy`` through ``lobbies.owners``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from lobbies import owners
from lobbies.auth import identity_of, issue_ticket
from lobbies.conf import relay_settings
from lobbies.forms import (
    BAN_DURATIONS,
    GrantForm,
    LobbyForm,
    PeerActionForm,
    StateForm,
    TicketForm,
    TokenForm,
    ban_minutes,
)
from lobbies.models import ApiToken, Lobby
from lobbies.policy import CreationPolicy, Identity, LobbyState, Role, may_create
from lobbies.views import relay_url


def _invalid(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 400
) -> HttpResponse:
    """The page again with its form's errors or what was refused: a 400 for bad input, as
    every bad form input is (or the 403 or 404 ``status`` says what went wrong)."""
    return render(request, template, context, status=status)


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


def _managed_lobby(request: HttpRequest, lobby_id: str) -> tuple[Lobby, Identity]:
    """The lobby ``lobby_id`` names, if the signed-in user manages it (its owner, a moderator
    of it, an operator), with the user's identity. Anyone else gets 404, as for a lobby that
    does not exist: an opaque id confirms nothing."""
    identity = identity_of(request.user)
    lobby = Lobby.objects.select_related("owner").filter(public_id=lobby_id).first()
    if lobby is None or not owners.visible(identity, lobby) or not owners.manages(identity, lobby):
        raise Http404("no such lobby")
    return lobby, identity


def _live_context(lobby: Lobby, identity: Identity) -> dict[str, Any]:
    """The lobby's live view (``lobbies/live_panel.html``, the admin's too), for one who
    manages it: Kick for every peer, Ban for those ``lobbies.policy.may_ban`` allows."""
    now = owners.live(lobby.document_id)
    page = reverse("my-lobby", kwargs={"lobby_id": lobby.public_id})
    return {
        "lobby": lobby,
        "members": now.members,
        "pipes": now.pipes,
        "live_url": reverse("my-lobby-live", kwargs={"lobby_id": lobby.public_id}),
        "act_url": page,
        "may_act": True,
        "may_ban": True,
        "bannable": owners.bannable(identity, lobby, now.members),
        "ban_durations": BAN_DURATIONS,
    }


@login_required
def my_lobby(request: HttpRequest, lobby_id: str) -> HttpResponse:
    """One lobby for those who manage it: its metadata, state, live view (who is in it now,
    refreshed in place, with Kick and Ban) and grants."""
    lobby, identity = _managed_lobby(request, lobby_id)
    form = LobbyForm(instance=lobby)
    grant_form = GrantForm()
    status = 200
    if request.method == "POST":
        done = _act(request, lobby, identity)
        if isinstance(done, HttpResponse):
            return done
        form, grant_form, status = done
    context = {
        **_live_context(lobby, identity),
        "form": form,
        "grant_form": grant_form,
        "grants": [owners.describe_grant(g) for g in lobby.grants.select_related("user", "group")],
        "states": [s.value for s in LobbyState if s.value != lobby.state],
        "administers": owners.administers(identity, lobby),
    }
    if request.method == "POST":
        return _invalid(request, "my/lobby.html", context, status)
    return render(request, "my/lobby.html", context)


@login_required
@require_GET
def my_lobby_live(request: HttpRequest, lobby_id: str) -> HttpResponse:
    """The lobby's live view alone, which its page fetches every few seconds to refresh it in
    place (as the admin's lobby page does); 404 to whoever does not manage the lobby."""
    lobby, identity = _managed_lobby(request, lobby_id)
    response = render(request, "lobbies/live_panel.html", _live_context(lobby, identity))
    response["Cache-Control"] = "no-store"
    return response


def _act(
    request: HttpRequest, lobby: Lobby, identity: Identity
) -> HttpResponse | tuple[LobbyForm, GrantForm, int]:
    """One action posted on a lobby's page: a redirect once done, or the forms with what was
    wrong and the status to show them with (400 for bad input; 403, 404 for a Kick or a Ban
    refused or of a peer not in the lobby)."""
    form, grant_form = LobbyForm(instance=lobby), GrantForm()
    back = redirect("my-lobby", lobby_id=lobby.public_id)
    by = identity.user_id
    action = request.POST.get("action")
    if action in ("grant", "revoke", "delete") and not owners.administers(identity, lobby):
        raise PermissionDenied("only the lobby's owner and operators may do this")
    if action in ("kick", "ban"):
        done = _act_on_peer(request, lobby, identity)
        return back if done is None else (form, grant_form, done)
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
        elif action == "delete":
            owners.delete(lobby, by=by)
            messages.success(request, f"Lobby {lobby.document_id} deleted.")
            return redirect("my-lobbies")
        else:
            messages.error(request, "No such action.")
    except owners.Rejected as rejected:
        messages.error(request, rejected.message)
    return form, grant_form, 400


def _act_on_peer(request: HttpRequest, lobby: Lobby, identity: Identity) -> int | None:
    """A Kick or a Ban from the lobby's live view: None once done, else the status of the page
    shown again with what was wrong. Only a peer in this lobby now, only from this lobby (a ban
    names this lobby, never another nor the whole relay), only for one of the ban lengths
    offered; a ban of one who manages the lobby too is the operators' (``may_ban``)."""
    action_form = PeerActionForm(request.POST)
    if not action_form.is_valid():
        for field, errors in action_form.errors.items():
            messages.error(request, f"{field}: {' '.join(errors)}")
        return 400
    data = action_form.cleaned_data
    peer_id = data["peer_id"]
    if data["action"] == "kick":
        if owners.kick(lobby.document_id, peer_id, by=identity.user_id):
            messages.success(request, owners.describe_kick(peer_id, kicked=True))
            return None
        messages.warning(request, owners.describe_kick(peer_id, kicked=False))
        return 404
    peer = owners.peer_in(lobby.document_id, peer_id)
    if peer is None:
        messages.warning(request, owners.describe_kick(peer_id, kicked=False))
        return 404
    if peer.peer_id not in owners.bannable(identity, lobby, [peer]):
        messages.error(
            request,
            f"Peer {peer_id!r} manages this lobby too: only an operator may ban it.",
        )
        return 403
    ban = owners.ban_peer(
        lobby,
        peer,
        minutes=ban_minutes(data["minutes"]),
        reason=data["reason"],
        by=request.user,
    )
    messages.success(request, owners.describe_ban(ban))
    return None


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
