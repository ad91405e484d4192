"""Which WebSocket handshakes may proceed, and which may use the session cookie, judged by
their ``Origin`` header.

Browsers always send ``Origin``; game clients, Node.js and command-line tools usually send none.
A handshake without one is let through (it is judged by its credentials, not by a header a
non-browser client could forge anyway); a browser's is checked against
``RELAY_ALLOWED_ORIGINS`` (default ``*``: any web app may use the relay, as with the LF relay).

The cookie is another matter: a browser sends it with every handshake to the relay, whichever
page opens the socket, so a page of any site could act as the signed-in user (cross-site
WebSocket hijacking). The cookie therefore counts only for the relay's own pages (``Origin``'s
host is the handshake's ``Host``) and for origins ``RELAY_ALLOWED_ORIGINS`` names explicitly (a
``*`` does not count); from any other origin the socket is anonymous. A handshake without
``Origin`` does not come from a browser page, so no other site can have sent its cookie: the
cookie counts. Tickets and bearer credentials are never sent by a browser on its own: they count
from any origin the check above admits.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any
from urllib.parse import ParseResult, urlparse

from channels.security.websocket import OriginValidator, WebsocketDenier
from django.http.request import split_domain_port

from lobbies import metrics
from lobbies.conf import relay_settings


class BrowserOriginValidator(OriginValidator):
    """``OriginValidator`` that also admits handshakes carrying no ``Origin`` header."""

    _asgi_single_callable = True  # (asgiref: an ASGI 3 application, though not ``async``)

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        # OriginValidator's check, returning the application's coroutine rather than awaiting
        # it: no frame of this layer's for the socket's life (see lobbies.engine.routing).
        if scope["type"] != "websocket":
            raise ValueError("You cannot use OriginValidator on a non-WebSocket connection")
        origins = [value for name, value in scope.get("headers", ()) if name == b"origin"]
        if not origins:
            return self.application(scope, receive, send)
        try:
            parsed: ParseResult | None = urlparse(origins[-1].decode("latin1"))
        except UnicodeDecodeError:
            parsed = None
        if self.valid_origin(parsed):
            return self.application(scope, receive, send)
        # Refused before any consumer (an HTTP 403, no close code): counted here.
        metrics.limit_hit("allowed_origins")
        metrics.handshake(metrics.kind_of_path(scope["path"]), "refused")
        return WebsocketDenier()(scope, receive, send)


def origin_checked(application: Any) -> BrowserOriginValidator:
    """Wrap ``application`` in the origin check configured by ``RELAY_ALLOWED_ORIGINS``."""
    return BrowserOriginValidator(application, list(relay_settings().allowed_origins))


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _same_site(origin: ParseResult, host: str) -> bool:
    # Scheme-insensitive (an https page may open ws:// behind a TLS proxy): the same host name,
    # and the same port when the Host header names one (else the origin's scheme's default).
    name, port = split_domain_port(host)
    if not name or origin.hostname != name.strip("[]"):
        return False
    try:
        origin_port = origin.port
    except ValueError:  # a port out of range
        return False
    default = _DEFAULT_PORTS.get(origin.scheme)
    if port:
        return (origin_port or default) == int(port)
    return origin_port is None or origin_port == default


def cookie_trusted(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a handshake with these headers may be authenticated by the session cookie: no
    ``Origin`` (not a browser page), the relay's own site, or an origin ``RELAY_ALLOWED_ORIGINS``
    lists explicitly."""
    origin = host = None
    for name, value in headers:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1").lower()
    if origin is None:
        return True
    try:
        parsed = urlparse(origin.lower())
    except ValueError:
        return False
    if host is not None and parsed.hostname is not None and _same_site(parsed, host):
        return True
    explicit = OriginValidator(None, [o for o in relay_settings().allowed_origins if o != "*"])
    return explicit.validate_origin(parsed)
