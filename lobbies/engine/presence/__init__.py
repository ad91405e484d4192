"""Ephemeral relay state; see ``base`` for the interface and the backends beside it."""

from __future__ import annotations

from functools import cache

from django.utils.module_loading import import_string

from .base import (
    Member,
    OpenPipe,
    PeerIdTaken,
    PipeFacts,
    PipeKey,
    PipeKeyTaken,
    Presence,
    Stats,
)

__all__ = [
    "Member",
    "OpenPipe",
    "PeerIdTaken",
    "PipeFacts",
    "PipeKey",
    "PipeKeyTaken",
    "Presence",
    "Stats",
    "get_presence",
]


@cache
def get_presence() -> Presence:
    """This process's presence backend, built once from ``RELAY_PRESENCE_BACKEND``."""
    from lobbies.conf import relay_settings

    return import_string(relay_settings().presence_backend)()
