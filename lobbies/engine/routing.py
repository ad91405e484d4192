"""The WebSocket side of the relay: which path goes to which consumer.

Paths are matched on their decoded form only to pick the consumer; each consumer re-reads the
raw path to split ids (which may contain an encoded ``/``) and validates them (4400).

The layers in front of a consumer (``relayproject.asgi``) hand the scope on and *return* the
next layer's coroutine instead of awaiting it, wherever they have nothing to wait for: a socket
lives for hours inside its consumer, and every layer that awaited would keep a coroutine frame
(and Channels' routers a copy of the scope) for all that time, about 2.5 KiB per idle control
socket. :class:`ProtocolRouter` and :class:`WebSocketRouter` are Channels' ``ProtocolTypeRouter``
and ``URLRouter`` in that style.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from django.urls import URLPattern, re_path

from lobbies.engine.consumers import ConnectionConsumer, IntroductionConsumer, InvalidPathConsumer

websocket_urlpatterns = [
    re_path(r"^/?introduction/", IntroductionConsumer.as_asgi()),
    re_path(r"^/?connection/", ConnectionConsumer.as_asgi()),
    re_path(r"", InvalidPathConsumer.as_asgi()),
]


class ProtocolRouter:
    """Channels' ``ProtocolTypeRouter``: the application for the scope's type."""

    _asgi_single_callable = True  # (asgiref: an ASGI 3 application, though not ``async``)

    def __init__(self, applications: Mapping[str, Any]) -> None:
        self.applications = dict(applications)

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        application = self.applications.get(scope["type"])
        if application is None:
            raise ValueError(f"No application configured for scope type {scope['type']!r}")
        return application(scope, receive, send)


class WebSocketRouter:
    """Channels' ``URLRouter`` for consumers' ``as_asgi()`` routes, which makes the consumer
    itself (no ``url_route``: the consumers read the raw path)."""

    _asgi_single_callable = True  # (asgiref: an ASGI 3 application, though not ``async``)

    def __init__(self, patterns: list[URLPattern]) -> None:
        self.routes = [(p.pattern, p.callback.consumer_class) for p in patterns]  # type: ignore[attr-defined]

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        path = scope["path"]
        root_path = scope.get("root_path", "")
        if root_path and not path.startswith(root_path):
            raise ValueError(f"No route found for path {path!r}.")
        path = path[len(root_path) :].lstrip("/")
        for pattern, consumer in self.routes:
            if pattern.match(path):
                return consumer()(scope, receive, send)
        raise ValueError(f"No route found for path {path!r}.")
