"""ASGI entry point: HTTP goes to Django, WebSockets to the relay's consumers.

Run by ``python manage.py serve`` (uvicorn by default, or daphne), or by any ASGI server as
``relayproject.asgi:application``.
"""

import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relayproject.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the consumers are imported

from lobbies.auth import NoTickets, RelayAuthMiddleware, TicketPath  # noqa: E402
from lobbies.engine.routing import (  # noqa: E402
    ProtocolRouter,
    WebSocketRouter,
    websocket_urlpatterns,
)
from lobbies.engine.security import origin_checked  # noqa: E402
from lobbies.operations import OperationsEndpoints  # noqa: E402
from lobbies.proxies import ForwardedClient  # noqa: E402

# uvicorn's websockets protocol logs each upgrade's request line at DEBUG, ticket included.
for _name in ("uvicorn.error", "uvicorn.access"):
    logging.getLogger(_name).addFilter(NoTickets())

# The real client first (behind a trusted proxy, from X-Forwarded-For), so that every limit
# and log line below, Django's REMOTE_ADDR included, sees it; then the ticket leaves the path
# (before a refusal or a log line could show it); the origin check comes before the credentials
# are resolved, so a refused origin costs no query. /healthz, /readyz and /metrics are answered
# before Django (lobbies.operations): no Host check, no session, no sign-in throttling. Each layer
# returns the next one's coroutine rather than awaiting it where it can (lobbies.engine.routing):
# a socket keeps no frame of theirs.
application = ForwardedClient(
    TicketPath(
        ProtocolRouter(
            {
                "http": OperationsEndpoints(django_asgi_app),
                "websocket": origin_checked(
                    RelayAuthMiddleware(WebSocketRouter(websocket_urlpatterns))
                ),
            }
        )
    )
)
