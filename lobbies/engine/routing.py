"""The WebSocket side of the relay: which path goes to which consumer.

Paths are matched on their decoded form only to pick the consumer; each consumer re-reads the
raw path to split ids (which may contain an encoded ``/``) and validates them (4400).
"""

from django.urls import re_path

from lobbies.engine.consumers import ConnectionConsumer, IntroductionConsumer, InvalidPathConsumer

websocket_urlpatterns = [
    re_path(r"^/?introduction/", IntroductionConsumer.as_asgi()),
    re_path(r"^/?connection/", ConnectionConsumer.as_asgi()),
    re_path(r"", InvalidPathConsumer.as_asgi()),
]
