"""The pages and small JSON endpoints the relay serves over HTTP."""

from __future__ import annotations

import dataclasses

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from lobbies.conf import relay_settings
from lobbies.engine.presence import get_presence
from lobbies.engine.protocol import is_valid_id

DEMO_LOBBY = "demo-lobby"


def relay_url(request: HttpRequest) -> str:
    """This relay's WebSocket base URL as the requesting client sees it."""
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{request.get_host()}"


async def index(request: HttpRequest) -> HttpResponse:
    """The landing page: what this server is, how to connect, and live counts."""
    stats = await get_presence().stats()
    return render(request, "index.html", {"relay_url": relay_url(request), "stats": stats})


async def stats(request: HttpRequest) -> JsonResponse:
    """``GET /api/stats``: the live counts, as the landing page shows them (it polls this)."""
    counts = dataclasses.asdict(await get_presence().stats())
    return JsonResponse(counts, headers={"Cache-Control": "no-store"})


def demo(request: HttpRequest) -> HttpResponse:
    """``GET /demo/?lobby=ID``: two tabs of this page meet in a lobby and see each other move and
    chat, through a relay pipe (a few lines of plain JavaScript speaking the 3.x dialect)."""
    lobby = request.GET.get("lobby", DEMO_LOBBY)
    if not is_valid_id(lobby, relay_settings().max_id_length):
        lobby = DEMO_LOBBY
    return render(request, "demo.html", {"lobby": lobby})
