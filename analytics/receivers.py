"""The receivers of ``lobbies.signals`` that feed the statistics (through ``analytics.buffer``).
Connected by ``AnalyticsConfig.ready``: without this app installed, none of it runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.dispatch import receiver

from analytics.buffer import buffer
from lobbies import signals

# Peers online in this process, for the hourly peak (events come from one delivery thread).
_online: set[str] = set()


def _hour(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC).replace(minute=0, second=0, microsecond=0)


@receiver(signals.peer_online, dispatch_uid="analytics.peer_online")
def peer_online(peer_id: str, at: float, **kwargs: Any) -> None:
    _online.add(peer_id)
    buffer.peak(_hour(at), len(_online))


@receiver(signals.peer_offline, dispatch_uid="analytics.peer_offline")
def peer_offline(peer_id: str, at: float, seconds: float, **kwargs: Any) -> None:
    _online.discard(peer_id)
    buffer.add_session(_hour(at), seconds)


@receiver(signals.lobby_joined, dispatch_uid="analytics.lobby_joined")
def lobby_joined(
    document_id: str, peer_id: str, nickname: str | None, game: str | None, at: float, **kwargs: Any
) -> None:
    buffer.join(_hour(at), document_id, game, peer_id, nickname)


@receiver(signals.pipe_opened, dispatch_uid="analytics.pipe_opened")
def pipe_opened(at: float, **kwargs: Any) -> None:
    buffer.add(_hour(at), pipes=1)


@receiver(signals.pipe_traffic, dispatch_uid="analytics.pipe_traffic")
def pipe_traffic(
    document_id: str, frames: tuple[int, int], bytes: tuple[int, int], at: float, **kwargs: Any
) -> None:
    hour = _hour(at)
    buffer.add(hour, frames=sum(frames), bytes=sum(bytes))
    buffer.lobby_bytes(hour, document_id, sum(bytes))


@receiver(signals.relay_stopping, dispatch_uid="analytics.relay_stopping")
def relay_stopping(**kwargs: Any) -> None:
    buffer.flush()  # a clean stop loses nothing
