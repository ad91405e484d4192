"""The endpoints for the machines that watch the relay: ``/healthz``, ``/readyz`` and
``/metrics``, answered in the ASGI layer, before Django.

Before Django because a probe must not depend on what a page depends on: Django answers 400 to
a ``Host`` that ``DJANGO_ALLOWED_HOSTS`` does not list (an orchestrator probes a worker by its
address), its middleware would run sign-in throttling and session code, and its views run in a
thread. Here an answer is a few lines in the event loop; none reads a cookie or a session. They
are still behind :class:`lobbies.proxies.ForwardedClient` (``relayproject.asgi``), so
``/metrics`` judges the real client address, as every limit of the relay does.

- ``GET /healthz``: 200 ``{"status": "alive"}`` while the process serves (``lobbies.health``).
- ``GET /readyz``: 200 when the database and Redis answer and the worker is not draining, else
  503; the body says which (``lobbies.health.readiness``).
- ``GET /metrics``: the Prometheus text (``lobbies.metrics``), to clients from
  ``RELAY_METRICS_NETWORKS`` (loopback by default) or bearing ``RELAY_METRICS_TOKEN``; 403 to
  everyone else (the endpoint's existence is no secret: what it says is).

All three: ``GET`` or ``HEAD`` (others 405), ``Cache-Control: no-store``, any query ignored.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from lobbies import health, metrics
from lobbies.conf import relay_settings
from lobbies.proxies import is_trusted, trusted_networks

PATHS = ("/healthz", "/readyz", "/metrics")
_NOT_SHOWN = (
    "metrics are shown only to the addresses of RELAY_METRICS_NETWORKS "
    "or with the bearer token RELAY_METRICS_TOKEN"
)


def may_read_metrics(client: str | None, authorization: str | None) -> bool:
    """Whether a request from ``client`` (its address) with ``authorization`` (its
    ``Authorization`` header) may read ``/metrics``: the address is in
    ``RELAY_METRICS_NETWORKS``, or the header is ``Bearer <RELAY_METRICS_TOKEN>``."""
    settings = relay_settings()
    networks = trusted_networks(settings.metrics_networks)
    if client and networks and is_trusted(client, networks):
        return True
    token = settings.metrics_token
    if not token or not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # In constant time: a comparison that stops at the first wrong byte tells how many are right.
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class OperationsEndpoints:
    """An ASGI layer for HTTP: the three paths above are answered here, every other request
    goes to ``application`` (Django)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            return await self.application(scope, receive, send)
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _answer(
                send,
                method,
                405,
                _json({"error": "GET or HEAD only"}),
                extra=[(b"allow", b"GET, HEAD")],
            )
            return None
        path = scope["path"]
        if path == "/healthz":
            await _answer(send, method, 200, _json(health.alive()))
        elif path == "/readyz":
            ready, body = await health.readiness()
            await _answer(send, method, 200 if ready else 503, _json(body))
        else:
            client = scope.get("client")
            if not may_read_metrics(
                client[0] if client else None, _header(scope, b"authorization")
            ):
                error = {"error": _NOT_SHOWN}
                await _answer(send, method, 403, _json(error))
                return None
            body, content_type = await metrics.exposition(_header(scope, b"accept") or "")
            await _answer(send, method, 200, (body, content_type))
        return None


def _json(body: dict[str, Any]) -> tuple[bytes, str]:
    return json.dumps(body).encode() + b"\n", "application/json"


async def _answer(
    send: Any,
    method: str,
    status: int,
    content: tuple[bytes, str],
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body, content_type = content
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
        # Never kept by a proxy or a client: each answer is about now.
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
