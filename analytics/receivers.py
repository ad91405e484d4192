"""The receivers of ``lobbies.signals`` that feed the statistics (through ``analytics.buffer``).
Connected by ``AnalyticsConfig.ready``: without this app installed, none of it runs.

The hourly peak of peers online is the relay's, not one process's. These receivers run in the
event-delivery thread, which cannot ask presence (it is async and lives in the server's event
loop), so the socket asks it in the loop as it comes online and ``peer_online`` carries the
answer (``online``). Peers online only grow when one comes, so the greatest count seen just
after each arrival is the hour's peak. With Redis presence (``RELAY_REDIS_URL``) that count is
every worker's: each worker reports its own arrivals, each sees the relay-wide count at that
moment, and the writer keeps the greatest per hour (``GREATEST``), so the row holds the
relay-wide peak whichever worker saw it. Two arrivals racing on two workers each count after
their own registration, so the later count includes both. A worker killed without cleaning up
leaves its peers counted until presence forgets them (``RELAY_WORKER_TTL``); an hour in which
nobody arrives has no peak row, as before.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.dispatch import receiver

from analytics.buffer import buffer
from lobbies import signals


def _hour(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC).replace(minute=0, second=0, microsecond=0)


@receiver(signals.peer_online, dispatch_uid="analytics.peer_online")
def peer_online(peer_id: str, at: float, online: int | None = None, **kwargs: Any) -> None:
    # The relay-wide count, taken in the event loop as the peer came (the module's docstring).
    if online is not None:
        buffer.peak(_hour(at), online)


@receiver(signals.peer_offline, dispatch_uid="analytics.peer_offline")
def peer_offline(peer_id: str, at: float, seconds: float, **kwargs: Any) -> None:
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
