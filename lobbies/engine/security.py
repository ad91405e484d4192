"""Which WebSocket handshakes may proceed, judged by their ``Origin`` header.

Browsers always send ``Origin``; game clients, Node.js and command-line tools usually send none.
A handshake without one is let through (it is judged by its credentials, not by a header a
non-browser client could forge anyway); a browser's is checked against
``RELAY_ALLOWED_ORIGINS`` (default ``*``: any web app may use the relay, as with the LF relay).
"""

from __future__ import annotations

from typing import Any

from channels.security.websocket import OriginValidator

from lobbies.conf import relay_settings


class BrowserOriginValidator(OriginValidator):
    """``OriginValidator`` that also admits handshakes carrying no ``Origin`` header."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not any(
            name == b"origin" for name, _ in scope.get("headers", ())
        ):
            return await self.application(scope, receive, send)
        return await super().__call__(scope, receive, send)


def origin_checked(application: Any) -> BrowserOriginValidator:
    """Wrap ``application`` in the origin check configured by ``RELAY_ALLOWED_ORIGINS``."""
    return BrowserOriginValidator(application, list(relay_settings().allowed_origins))
