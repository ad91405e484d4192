"""The pages the relay serves over HTTP."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from lobbies.presence import get_presence


def relay_url(request: HttpRequest) -> str:
    """This relay's WebSocket base URL as the requesting client sees it."""
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{request.get_host()}"


async def index(request: HttpRequest) -> HttpResponse:
    """The landing page: what this server is, how to connect, and live counts."""
    stats = await get_presence().stats()
    return render(request, "index.html", {"relay_url": relay_url(request), "stats": stats})
