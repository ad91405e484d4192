"""The buffered writer: relay events are added up in memory and written every
``RELAY_ANALYTICS_FLUSH_SECONDS``, a few queries per flush however many events came in, and once
more when the process exits cleanly.

Every write adds (``UPDATE ... SET n = n + k``, or ``GREATEST`` for a peak), so several worker
processes feed the same rows without counting anything twice. One flush is one transaction:
when it fails (the database away, say) nothing of it was written, so its counts go back into
the buffer and are written by the next flush, once. While the database stays away they are kept
up to ``MAX_PENDING_ROWS`` rows; past that a failed flush's counts are dropped, logged and
counted in ``Buffer.dropped``. Rows are written in key order, so two workers' transactions
touching the same rows never wait for each other in a cycle.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
from collections import Counter
from datetime import date, datetime
from typing import Any

from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    close_old_connections,
    connection,
    models,
    transaction,
)
from django.db.models import F
from django.db.models.functions import Greatest

from analytics.models import (
    DailyNickname,
    HourlyGame,
    HourlyLobby,
    HourlyPeer,
    HourlyTotals,
    SessionLength,
)

logger = logging.getLogger(__name__)

# Rows (keys of all tables together) that failed flushes may leave waiting for the next one: a
# few minutes of a busy relay's statistics, a few tens of MB at most.
MAX_PENDING_ROWS = 100_000


def length_bucket(seconds: float) -> int:
    """The histogram bucket of a session: 0 (under a second), 1, 2, 4, 8 ... seconds."""
    bucket = 1
    if seconds < 1:
        return 0
    while bucket * 2 <= seconds:
        bucket *= 2
    return bucket


def peer_key(peer_id: str) -> str:
    """A peer id as the statistics keep it: hashed (unique counts need no readable ids)."""
    return hashlib.sha256(peer_id.encode()).hexdigest()[:32]


class Buffer:
    """Counters waiting to be written, by table and key. Thread-safe: events arrive in the
    relay's delivery thread and in views' threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        self.dropped = 0  # rows of failed flushes given up (MAX_PENDING_ROWS)
        self._reset()

    def _reset(self) -> None:
        self.totals: dict[datetime, Counter[str]] = {}
        self.session_seconds: Counter[datetime] = Counter()
        self.peaks: dict[datetime, int] = {}
        # [joins, bytes] by (hour, lobby): a two-item list, where a Counter would cost four
        # times the memory, and a storm of peers each in a lobby of its own makes a row each.
        self.lobbies: dict[tuple[datetime, str], list[int]] = {}
        self.lobby_games: dict[tuple[datetime, str], str] = {}
        self.games: Counter[tuple[datetime, str]] = Counter()
        self.peers: set[tuple[datetime, str]] = set()
        self.lengths: Counter[tuple[datetime, int]] = Counter()
        self.nicknames: Counter[tuple[date, str]] = Counter()

    def add(self, hour: datetime, **counts: int) -> None:
        with self.lock:
            self.totals.setdefault(hour, Counter()).update(counts)
            self._due()

    def add_session(self, hour: datetime, seconds: float) -> None:
        with self.lock:
            self.totals.setdefault(hour, Counter())["sessions"] += 1
            self.session_seconds[hour] += seconds
            self.lengths[hour, length_bucket(seconds)] += 1
            self._due()

    def peak(self, hour: datetime, peers: int) -> None:
        with self.lock:
            self.peaks[hour] = max(self.peaks.get(hour, 0), peers)
            self._due()

    def join(
        self, hour: datetime, document_id: str, game: str | None, peer_id: str, nickname: str | None
    ) -> None:
        with self.lock:
            self.totals.setdefault(hour, Counter())["joins"] += 1
            self.lobbies.setdefault((hour, document_id), [0, 0])[0] += 1
            if game:
                self.lobby_games[hour, document_id] = game
                self.games[hour, game] += 1
            self.peers.add((hour, peer_key(peer_id)))
            if nickname and settings.RELAY_ANALYTICS_NICKNAMES:
                self.nicknames[hour.date(), nickname] += 1
            self._due()

    def lobby_bytes(self, hour: datetime, document_id: str, size: int) -> None:
        with self.lock:
            self.lobbies.setdefault((hour, document_id), [0, 0])[1] += size
            self._due()

    def pending_rows(self) -> int:
        """Rows (keys of all tables together) waiting for the next flush (``/metrics``)."""
        with self.lock:
            return sum(len(getattr(self, name)) for name in _FIELDS)

    def _due(self) -> None:
        # A flush a few seconds after the first event waiting: one per period, however many.
        if self.timer is None:
            self.timer = threading.Timer(settings.RELAY_ANALYTICS_FLUSH_SECONDS, self.flush)
            self.timer.daemon = True
            self.timer.start()

    def discard(self) -> None:
        """Drop everything waiting, unwritten (tests)."""
        with self.lock:
            self._reset()
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    def flush(self, *, final: bool = False) -> None:
        """Write everything waiting, in one transaction, then start afresh. Safe to call at any
        time. If the database fails, the counts wait for the next flush (one is due a period
        later), unless this is the ``final`` one, as the process exits."""
        with self.lock:
            taken = {name: getattr(self, name) for name in _FIELDS}
            self._reset()
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        if not any(taken.values()):
            return
        close_old_connections()
        try:
            with transaction.atomic():
                _write(**taken)
        except DatabaseError:
            if final:
                logger.exception("analytics: the last flush failed; its counts are lost")
            else:
                logger.exception("analytics: a flush failed; its counts wait for the next one")
                self._put_back(taken)
        except Exception:  # a fault of ours: writing it again would fail again
            logger.exception("analytics: a flush failed; its counts are lost")
        finally:
            close_old_connections()

    def _put_back(self, taken: dict[str, Any]) -> None:
        """Add the counts of a failed flush to those gathered since, and have them written by
        the next flush; or drop them if that would make more than ``MAX_PENDING_ROWS``."""
        with self.lock:
            rows = sum(len(value) for value in taken.values())
            waiting = sum(len(getattr(self, name)) for name in _FIELDS)
            if rows + waiting > MAX_PENDING_ROWS:
                self.dropped += rows
                logger.error(
                    "analytics: %d rows of statistics dropped (%d since the start): the "
                    "database has failed for too long",
                    rows,
                    self.dropped,
                )
                return
            for hour, counts in taken["totals"].items():
                self.totals.setdefault(hour, Counter()).update(counts)
            for key, (joins, size) in taken["lobbies"].items():
                counts = self.lobbies.setdefault(key, [0, 0])
                counts[0] += joins
                counts[1] += size
            for name in ("session_seconds", "games", "lengths", "nicknames"):
                getattr(self, name).update(taken[name])
            for hour, peers in taken["peaks"].items():
                self.peaks[hour] = max(self.peaks.get(hour, 0), peers)
            for key, game in taken["lobby_games"].items():
                self.lobby_games.setdefault(key, game)  # a game named since is newer
            self.peers |= taken["peers"]
            self._due()


_FIELDS = (
    "totals",
    "session_seconds",
    "peaks",
    "lobbies",
    "lobby_games",
    "games",
    "peers",
    "lengths",
    "nicknames",
)


def _add(
    model: type[models.Model],
    key: dict[str, Any],
    counts: dict[str, Any],
    highest: frozenset[str] = frozenset(),
) -> None:
    """Add ``counts`` to the row of ``key`` (for the fields in ``highest``: keep the larger
    value), making it if it is missing (a worker racing to make it too makes the other add)."""
    changes = {
        name: Greatest(F(name), value) if name in highest else F(name) + value
        for name, value in counts.items()
        if value
    }
    if not changes:
        return
    for _ in range(2):
        if model._default_manager.filter(**key).update(**changes):
            return
        try:
            with transaction.atomic():
                model._default_manager.create(**key, **counts)
            return
        except IntegrityError:
            continue  # made meanwhile by another worker: add to it


# Rows one statement of _add_many writes at most: under every database's parameter limit.
_ROWS_PER_STATEMENT = 200


def _add_many(
    model: type[models.Model], key: tuple[str, ...], rows: list[tuple[tuple, dict[str, int]]]
) -> None:
    """For each row (its ``key`` fields' values, and counts), add the counts to its row, making
    the missing ones: ``INSERT ... ON CONFLICT DO UPDATE`` (PostgreSQL, SQLite 3.24+), a
    statement per 200 rows rather than one or two per row as :func:`_add`, so a flush after a
    storm of new lobbies stays short. Counts add up, as :func:`_add`'s: workers writing the same
    rows each add theirs."""
    if not rows:
        return
    counted = sorted({name for _, counts in rows for name, value in counts.items() if value})
    if not counted:
        return
    ops = connection.ops
    table = ops.quote_name(model._meta.db_table)
    fields = [model._meta.get_field(name) for name in (*key, *counted)]
    # The row's other fields, for the rows made here: their defaults (the ORM's, not the
    # database's, which has none), never changed on a conflict.
    others = [
        f
        for f in model._meta.concrete_fields
        if not f.primary_key and f.name not in key and f.name not in counted
    ]
    defaults = [f.get_db_prep_value(f.get_default(), connection) for f in others]
    columns = ", ".join(ops.quote_name(field.column) for field in (*fields, *others))
    conflict = ", ".join(ops.quote_name(model._meta.get_field(name).column) for name in key)
    updates = ", ".join(
        f"{ops.quote_name(f.column)} = {table}.{ops.quote_name(f.column)} + "
        f"excluded.{ops.quote_name(f.column)}"
        for f in fields[len(key) :]
    )
    one = "(" + ", ".join(["%s"] * (len(fields) + len(others))) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            params: list[Any] = []
            for values, counts in chunk:
                raw = (*values, *(counts.get(name, 0) for name in counted))
                prepared = zip(fields, raw, strict=True)
                params += [field.get_db_prep_value(v, connection) for field, v in prepared]
                params += defaults
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * len(chunk))} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
                params,
            )


def _write(
    *,
    totals: dict[datetime, Counter[str]],
    session_seconds: Counter[datetime],
    peaks: dict[datetime, int],
    lobbies: dict[tuple[datetime, str], list[int]],
    lobby_games: dict[tuple[datetime, str], str],
    games: Counter[tuple[datetime, str]],
    peers: set[tuple[datetime, str]],
    lengths: Counter[tuple[datetime, int]],
    nicknames: Counter[tuple[date, str]],
) -> None:
    for hour in sorted(set(totals) | set(session_seconds) | set(peaks)):
        counts: dict[str, Any] = dict(totals.get(hour, {}))
        if session_seconds.get(hour):
            counts["session_seconds"] = session_seconds[hour]
        if hour in peaks:
            counts["peak_peers"] = peaks[hour]
        _add(HourlyTotals, {"hour": hour}, counts, highest=frozenset({"peak_peers"}))
    # Sorted: workers writing the same rows take their locks in one order (no deadlock).
    _add_many(
        HourlyLobby,
        ("hour", "document_id"),
        [(k, {"joins": j, "bytes": b}) for k, (j, b) in sorted(lobbies.items())],
    )
    for (hour, document_id), game in sorted(lobby_games.items()):
        HourlyLobby.objects.filter(hour=hour, document_id=document_id, game="").update(game=game)
    _add_many(HourlyGame, ("hour", "game"), [(k, {"joins": n}) for k, n in sorted(games.items())])
    _add_many(
        SessionLength,
        ("hour", "bucket"),
        [(k, {"sessions": n}) for k, n in sorted(lengths.items())],
    )
    if peers:
        HourlyPeer.objects.bulk_create(
            [HourlyPeer(hour=hour, peer=peer) for hour, peer in sorted(peers)],
            ignore_conflicts=True,
        )
    for (day, nickname), joins in sorted(nicknames.items()):
        _add(DailyNickname, {"day": day, "nickname": nickname}, {"joins": joins})


buffer = Buffer()
atexit.register(buffer.flush, final=True)  # a clean stop loses nothing
