"""The relay's settings, read once from ``django.conf.settings`` into one typed object.

Every value comes from an environment variable in ``relayproject/settings.py``, where each has a
safe default; this module only gives the relay code a cheap, typed view of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Limits and backends of the relay (see the README's settings table)."""

    presence_backend: str
    max_id_length: int
    max_ids_per_peer: int
    max_frame_bytes: int
    max_control_frame_bytes: int
    max_held_bytes: int
    pair_timeout: float
    control_queue_bytes: int


@cache
def relay_settings() -> RelaySettings:
    """The relay's settings, read once per process (and again after a test overrides them)."""
    return RelaySettings(
        presence_backend=settings.RELAY_PRESENCE_BACKEND,
        max_id_length=settings.RELAY_MAX_ID_LENGTH,
        max_ids_per_peer=settings.RELAY_MAX_IDS_PER_PEER,
        max_frame_bytes=settings.RELAY_MAX_FRAME_BYTES,
        max_control_frame_bytes=settings.RELAY_MAX_CONTROL_FRAME_BYTES,
        max_held_bytes=settings.RELAY_MAX_HELD_BYTES,
        pair_timeout=settings.RELAY_PAIR_TIMEOUT,
        control_queue_bytes=settings.RELAY_CONTROL_QUEUE_BYTES,
    )


@receiver(setting_changed)
def _reload(setting: str, **kwargs: object) -> None:
    if setting.startswith("RELAY_"):
        relay_settings.cache_clear()
        from lobbies.presence import get_presence

        get_presence.cache_clear()
