"""The relay's numbers for Prometheus (``GET /metrics``, served by ``lobbies.operations``).

**One worker, one set of numbers.** Each worker process exports what it did and holds itself,
in prometheus-client's ordinary in-memory registry, and Prometheus scrapes every worker on its
own port (``deploy/README.md``, ``deploy/prometheus.yml``); sums over workers are taken in
PromQL. Chosen over prometheus-client's multiprocess mode, which shares files between the
processes of one machine: that mode cannot export the process's own RSS and open file
descriptors, needs its directory emptied when the whole relay (not a worker) starts and a
``mark_process_dead`` for every worker that dies (a killed worker cannot call it), and keeps a
file per process that ever ran. Here a worker that dies takes its numbers with it, and
Prometheus's ``up`` says so. The cost: ``/metrics`` through nginx would be whichever worker
nginx picked, so nginx refuses it (``deploy/nginx/relay.conf``).

**Relay-wide numbers are not per worker.** Peers online, lobbies active and pipes open come
from presence, which with Redis counts every worker's: each worker exports the same value under
``relay_presence_*``, and a dashboard takes their ``max``, never their ``sum`` (the HELP text
says so). Everything else is this worker's own: sum it.

**Never a call per frame.** Frames and bytes come from the ``pipe_traffic`` event, which the
engine sends when a pipe closes and every ``RELAY_PIPE_REPORT_SECONDS`` while it is open (the
spliced path keeps counters of its own, read then); a pipe's frames show in
``relay_pipe_frames_total`` at those moments, not as they move. Gauges of what a worker holds
(sockets, held pipes, tasks, queues) are read when ``/metrics`` is asked, from the structures the
engine keeps anyway.

**How the engine reaches it.** The functions below, each one counter increment: a socket opened
or refused (:func:`handshake`), closed (:func:`closed`), a limit hit (:func:`limit_hit`), Joins
(:func:`joins`), Introductions (:func:`introductions`), a presence call's time
(:func:`presence_call`). The rest comes from ``lobbies.signals``: ``pipe_opened`` (pipes paired
and how), ``pipe_traffic`` (frames and bytes) and ``operator_action``. Metric names follow
Prometheus's conventions: ``relay_`` first, units last (``_seconds``, ``_bytes``), counters
ending in ``_total``. Every label takes values from a fixed set, whatever clients send.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from django.apps import apps
from django.dispatch import receiver
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from lobbies import signals

logger = logging.getLogger(__name__)

# No ``*_created`` series beside every counter: Prometheus does not need them, and they would
# double what each scrape carries.
disable_created_metrics()

# -- counted as it happens -------------------------------------------------------------------

HANDSHAKES = Counter(
    "relay_handshakes",
    "WebSocket handshakes by socket kind and outcome: accepted (the socket opened), refused "
    "(4400, 4401, 4403, 4409, 4429 as it opened), unavailable (1013: Redis did not answer), "
    "failed (1011: a fault of the relay's)",
    ["kind", "outcome"],
)
CLOSES = Counter(
    "relay_socket_closes",
    "Sockets closed, by kind, close code and who closed first (relay or client); refusals "
    "included. A code a client chose outside the known ones counts as 'other'",
    ["kind", "code", "initiator"],
)
JOINS = Counter(
    "relay_joins",
    "Document ids joined by control sockets (outcome 'joined'), or refused, by the refusal "
    "code an ext client is told (forbidden, not_found, locked, lobby_full, rate_limited, "
    "invalid); a Leave refused for its rate counts as rate_limited",
    ["outcome"],
)
INTRODUCTIONS = Counter(
    "relay_introductions",
    "Peers introduced to each other: one per pair of peers meeting on a document (each of the "
    "two is sent an Introduction)",
)
PIPES_PAIRED = Counter(
    "relay_pipes_paired",
    "Pipes paired, by how their frames move: spliced (inside uvicorn), in_process (through the "
    "consumers: daphne), cross_worker (through Redis, counted by one of the two workers)",
    ["how"],
)
PIPE_FRAMES = Counter(
    "relay_pipe_frames",
    "Frames relayed through pipes, reported when a pipe closes and every "
    "RELAY_PIPE_REPORT_SECONDS while it is open (not as they move)",
)
PIPE_BYTES = Counter(
    "relay_pipe_bytes",
    "Bytes relayed through pipes as written to the receiving clients (frame headers "
    "included), reported as relay_pipe_frames_total is",
)
LIMIT_HITS = Counter(
    "relay_limit_hits",
    "Times a client was stopped by a limit, named by its setting without RELAY_ "
    "(max_connections_per_address, handshake_rate, join_rate, ...)",
    ["limit"],
)
OPERATOR_ACTIONS = Counter(
    "relay_operator_actions",
    "Actions of owners and operators on lobbies (lobbies.signals.operator_action): create, "
    "update, lock, open, close, delete, kick, ban, transfer",
    ["action"],
)
PRESENCE_SECONDS = Histogram(
    "relay_presence_seconds",
    "Time of each call to Redis presence (one round trip: one Lua script), by operation",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# -- read when /metrics is asked -------------------------------------------------------------

SOCKETS_OPEN = Gauge(
    "relay_sockets_open", "WebSockets this worker holds open, by kind (control, pipe)", ["kind"]
)
PIPES_OPEN = Gauge(
    "relay_pipes_open",
    "Paired pipes open on this worker, by how their frames move (a pipe split across two "
    "workers is counted by one of them)",
    ["how"],
)
PIPES_HELD = Gauge("relay_pipe_requests_held", "Pipe requests waiting for their match")
HELD_BYTES = Gauge(
    "relay_held_bytes",
    "Bytes this worker holds for pipes: frames sent before the match arrived, and frames "
    "waiting for the readers of pipes split across workers (RELAY_MAX_HELD_BYTES_TOTAL)",
)
ASYNCIO_TASKS = Gauge("relay_asyncio_tasks", "asyncio tasks of this worker's event loop")
EVENT_QUEUE = Gauge(
    "relay_event_queue_depth", "Relay events (lobbies.signals) waiting to be delivered to plugins"
)
ANALYTICS_PENDING = Gauge(
    "relay_analytics_pending_rows",
    "Rows of statistics the analytics plugin holds until its next write (grows while the "
    "database is away)",
)
DRAINING = Gauge(
    "relay_worker_draining", "1 while this worker drains (told to stop), else 0 (see /readyz)"
)
_RELAY_WIDE = "relay-wide, as presence counts them: every worker reports the same value, "
PRESENCE_PEERS = Gauge(
    "relay_presence_peers_online", _RELAY_WIDE + "aggregate with max(), never sum(): peers online"
)
PRESENCE_LOBBIES = Gauge(
    "relay_presence_lobbies_active",
    _RELAY_WIDE + "aggregate with max(), never sum(): lobbies with someone in them",
)
PRESENCE_PIPES = Gauge(
    "relay_presence_pipes_open", _RELAY_WIDE + "aggregate with max(), never sum(): pipes open"
)
PRESENCE_UP = Gauge(
    "relay_presence_up", "1 if presence answered this scrape's question, 0 if it did not"
)


class _KeptCounters(Collector):
    """Counters the relay keeps anyway, read as they are at each scrape."""

    def describe(self) -> list[CounterMetricFamily]:
        return []  # (collect() is not called at registration: the apps may not be ready)

    def collect(self) -> Iterator[CounterMetricFamily]:
        from lobbies.events import bus

        yield CounterMetricFamily(
            "relay_events_dropped",
            "Relay events dropped because receivers were too slow (RELAY_EVENT_QUEUE)",
            value=bus.dropped,
        )
        if apps.is_installed("analytics"):
            from analytics.buffer import buffer

            yield CounterMetricFamily(
                "relay_analytics_dropped_rows",
                "Rows of statistics given up after failed writes (past 100,000 pending)",
                value=buffer.dropped,
            )


REGISTRY.register(_KeptCounters())

# Close codes as labels: the ones the relay sends or a WebSocket stack reports. A client may
# close with any code from 3000 to 4999: those are 'other', so no client can grow the label set.
_KNOWN_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 1013}
    | {4400, 4401, 4403, 4408, 4409, 4410, 4413, 4429}
)
_ACTIONS = frozenset(
    {"create", "update", "lock", "open", "close", "delete", "kick", "ban", "transfer"}
)
_HOWS = frozenset({"spliced", "in_process", "cross_worker"})

# What the engine counts, every label named here so that each shows as 0 from the first scrape
# (a rate over a series that appears only at its first hit misses that hit).
KINDS = ("control", "pipe", "invalid")
OUTCOMES = ("accepted", "refused", "unavailable", "failed")
JOIN_OUTCOMES = (
    "joined",
    "forbidden",
    "not_found",
    "locked",
    "lobby_full",
    "rate_limited",
    "invalid",
)
LIMITS = (
    "allowed_origins",
    "max_connections_per_address",
    "handshake_rate",
    "refusal_rate",
    "join_rate",
    "introduction_rate",
    "max_new_lobbies_per_join",
    "lobby_creation_rate",
    "quick_join_rate",
    "max_frame_bytes",
    "max_control_frame_bytes",
    "control_queue_bytes",
    "max_held_bytes",
    "max_held_bytes_total",
    "max_held_pipes",
)
for _kind in KINDS:
    for _outcome in OUTCOMES:
        HANDSHAKES.labels(_kind, _outcome)
for _outcome in JOIN_OUTCOMES:
    JOINS.labels(_outcome)
for _limit in LIMITS:
    LIMIT_HITS.labels(_limit)
for _how in sorted(_HOWS):
    PIPES_PAIRED.labels(_how)
for _action in sorted(_ACTIONS):
    OPERATOR_ACTIONS.labels(_action)


# -- what the engine calls ------------------------------------------------------------------

# Each labelled series once looked up: ``labels()`` takes a lock and builds a key every time,
# which is most of an increment's cost (a few µs per socket otherwise).
_series: dict[tuple[Any, ...], Any] = {}


def _one(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    series = _series.get(key)
    if series is None:
        series = _series[key] = metric.labels(*labels)
    return series


def kind_of_path(path: str) -> str:
    """The kind (:data:`KINDS`) of a WebSocket to ``path``, for a handshake refused before its
    consumer knew."""
    endpoint = path.lstrip("/").partition("/")[0]
    return {"introduction": "control", "connection": "pipe"}.get(endpoint, "invalid")


def handshake(kind: str, outcome: str) -> None:
    """A WebSocket of ``kind`` (:data:`KINDS`) opened or did not (:data:`OUTCOMES`)."""
    _one(HANDSHAKES, kind, outcome).inc()


def closed(kind: str, code: int | None, *, by_client: bool) -> None:
    """A socket of ``kind`` closed with ``code`` (None: its client vanished without one), the
    relay's code unless ``by_client``."""
    label = "none" if code is None else str(code) if code in _KNOWN_CODES else "other"
    _one(CLOSES, kind, label, "client" if by_client else "relay").inc()


def limit_hit(limit: str) -> None:
    """A client was stopped by ``limit`` (one of :data:`LIMITS`: a setting's name, lower case,
    without ``RELAY_``)."""
    _one(LIMIT_HITS, limit).inc()


def joins(outcome: str, count: int = 1) -> None:
    """``count`` ids joined (``"joined"``) or refused with ``outcome`` (a refusal code)."""
    if count:
        _one(JOINS, outcome).inc(count)


def introductions(count: int) -> None:
    """``count`` pairs of peers introduced to each other."""
    if count:
        INTRODUCTIONS.inc(count)


def presence_call(operation: str, seconds: float) -> None:
    """One presence round trip (``operation``: the Lua script's name) took ``seconds``."""
    _one(PRESENCE_SECONDS, operation).observe(seconds)


# -- from the relay's events (delivered in the events thread; the counters are thread-safe) ------


@receiver(signals.pipe_opened, dispatch_uid="metrics.pipe_opened")
def _pipe_opened(how: str = "in_process", **kwargs: Any) -> None:
    _one(PIPES_PAIRED, how if how in _HOWS else "in_process").inc()


@receiver(signals.pipe_traffic, dispatch_uid="metrics.pipe_traffic")
def _pipe_traffic(frames: tuple[int, int], bytes: tuple[int, int], **kwargs: Any) -> None:
    PIPE_FRAMES.inc(sum(frames))
    PIPE_BYTES.inc(sum(bytes))


@receiver(signals.operator_action, dispatch_uid="metrics.operator_action")
def _operator_action(action: str, **kwargs: Any) -> None:
    _one(OPERATOR_ACTIONS, action if action in _ACTIONS else "other").inc()


# -- the scrape ------------------------------------------------------------------------------


def how_paired(end: Any) -> str:
    """How the frames of a paired pipe end move: ``spliced``, ``in_process`` or
    ``cross_worker``."""
    from lobbies.engine.pipes import RemoteEnd

    partner = end.partner
    if isinstance(partner, RemoteEnd):
        return "cross_worker"
    if end.handle is not None and partner is not None and partner.handle is not None:
        return "spliced"
    return "in_process"


def _read_sockets() -> None:
    from lobbies.engine import connections
    from lobbies.engine.peers import ControlSocket
    from lobbies.engine.pipes import PipeEnd, PipeState, held_budget

    kinds: Tally[str] = Tally()
    pipes: Tally[str] = Tally()
    for socket in connections.sockets():
        if isinstance(socket, ControlSocket):
            kinds["control"] += 1
        elif isinstance(socket, PipeEnd):
            kinds["pipe"] += 1
            partner = socket.partner
            # Each pipe once: of its two ends (here, or one here and one on another worker),
            # the one whose key sorts first.
            paired = socket.state is PipeState.PAIRED and partner is not None
            if paired and socket.key < partner.key:
                pipes[how_paired(socket)] += 1
    for kind in ("control", "pipe"):
        SOCKETS_OPEN.labels(kind).set(kinds[kind])
    for how in sorted(_HOWS):
        PIPES_OPEN.labels(how).set(pipes[how])
    PIPES_HELD.set(held_budget.pipes)
    HELD_BYTES.set(held_budget.bytes)


def _read_queues() -> None:
    from lobbies.engine import servers
    from lobbies.events import bus

    EVENT_QUEUE.set(max(0, bus.queued - bus.delivered))
    DRAINING.set(1 if servers.draining() else 0)
    if apps.is_installed("analytics"):
        from analytics.buffer import buffer

        ANALYTICS_PENDING.set(buffer.pending_rows())


async def _read_presence() -> None:
    from lobbies.engine.presence import get_presence

    try:
        stats = await asyncio.wait_for(get_presence().stats(), timeout=2)
    except Exception as exc:  # a scrape says presence is away rather than failing
        logger.warning("/metrics: presence did not answer: %r", exc)
        PRESENCE_UP.set(0)
        return
    PRESENCE_UP.set(1)
    PRESENCE_PEERS.set(stats.peers_online)
    PRESENCE_LOBBIES.set(stats.lobbies_active)
    PRESENCE_PIPES.set(stats.pipes_open)


async def exposition(accept: str) -> tuple[bytes, str]:
    """The text of ``/metrics`` in the format ``accept`` (the request's ``Accept``) asks for
    (Prometheus's text format, or OpenMetrics), and its content type. Called in the server's
    event loop: the gauges above are read there first."""
    _read_sockets()
    _read_queues()
    ASYNCIO_TASKS.set(len(asyncio.all_tasks()))
    await _read_presence()
    encoder, content_type = choose_encoder(accept)
    return encoder(REGISTRY), content_type
