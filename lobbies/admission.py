"""What the control sockets ask the product side before they admit a peer to lobbies, and the
answers: what the database says about an identity in some lobbies (the facts ``lobbies.policy``
judges), the Join extras that create or change a lobby (through ``lobbies.owners``), and the
ownerless lobbies that age out. The wire engine reaches the product side through this module.

Answers are asked when a socket opens (relay-wide bans) and when it Joins ids (the lobby rows,
their bans and grants), never per frame, and kept in this process's :class:`LobbyCache` for
``RELAY_FACTS_CACHE_SECONDS``: a lobby that a thousand peers join costs one query, not a
thousand. A change committed in this process (admin, API, a Join that creates a lobby) drops the
cached answer at once, through model signals, and tells the other workers to drop theirs
(``RELAY_REDIS_URL``); one saved outside the relay's processes is seen when the answer expires.

The ORM runs in Channels' ``database_sync_to_async`` (which closes stale connections around each
call, as consumers that skip ``AsyncConsumer``'s per-message cleanup must).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver
from django.utils import timezone

from lobbies import matchmaking, owners
from lobbies.conf import relay_settings
from lobbies.engine import orders, workers
from lobbies.engine.presence import get_presence
from lobbies.engine.tasks import spawn
from lobbies.matchmaking import QuickJoinSpec
from lobbies.models import Ban, Lobby, LobbyGrant
from lobbies.owners import Rejected as Rejected  # (the sockets ask this module only)
from lobbies.policy import Access, Identity, LobbyFacts, Role, roles_granted
from lobbies.schemas import LobbySpec

logger = logging.getLogger(__name__)

# At most this many lobbies' answers are kept; the oldest go first.
_CACHED_LOBBIES = 10_000
# Values named in one query (see _chunks).
_QUERY_VALUES = 500


@dataclass(frozen=True, slots=True)
class LobbyView:
    """One lobby as a peer in it sees it: the policy's facts, and what its ``Joined`` shows."""

    facts: LobbyFacts
    public: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JoinFacts:
    """For one document id: its lobby (None: no row, an LF channel), the asker's roles there
    (its own grants and its groups'), and whether a ban keeps it out."""

    lobby: LobbyView | None
    roles: frozenset[Role] = frozenset()
    banned: bool = False

    @property
    def lobby_facts(self) -> LobbyFacts | None:
        """What the policy judges of the lobby (None: no row)."""
        return self.lobby.facts if self.lobby is not None else None

    def access(self, peers_present: int = 0) -> Access:
        """The asker's access to the lobby (``lobbies.policy``), ``peers_present`` others in
        it now."""
        return Access(self.roles, self.banned, peers_present)


@dataclass(frozen=True, slots=True)
class BanRecord:
    """A ban as cached: whom it names, and until when."""

    user_id: int | None
    peer_id: str
    expires_at: datetime | None

    def applies(self, identity: Identity, peer_id: str, now: datetime) -> bool:
        if self.expires_at is not None and self.expires_at <= now:
            return False
        named_user = self.user_id is not None and self.user_id == identity.user_id
        return named_user or (bool(self.peer_id) and self.peer_id == peer_id)


@dataclass(frozen=True, slots=True)
class LobbyRecord:
    """A document id's row (None: it has none), with the bans and grants of that lobby."""

    view: LobbyView | None
    bans: tuple[BanRecord, ...] = ()
    grants: tuple[tuple[int | None, int | None, Role], ...] = ()  # (user, group, role)

    def roles(self, identity: Identity) -> frozenset[Role]:
        return roles_granted(identity, self.grants)


def _ban_record(ban: Ban) -> BanRecord:
    return BanRecord(ban.user_id, ban.peer_id, ban.expires_at)


def _view(lobby: Lobby) -> LobbyView:
    return LobbyView(lobby.facts(), lobby.public())


def _load_global_bans() -> tuple[BanRecord, ...]:
    bans = Ban.objects.active().filter(lobby__isnull=True)
    return tuple(_ban_record(ban) for ban in bans)


def _chunks(values: list[Any]) -> Iterator[list[Any]]:
    # A query names at most this many values: under every database's parameter limit (SQLite's
    # is 999 before 3.32), however many sockets Joined in one turn.
    for start in range(0, len(values), _QUERY_VALUES):
        yield values[start : start + _QUERY_VALUES]


def _with_rows(document_ids: list[str]) -> list[str]:
    """Those of ``document_ids`` that have a lobby row, in one plain query per 500 of them.

    Most ids a relay sees have none (LF channels: a storm of reconnecting clients is mostly
    those), and building the ORM's query with its joins cost more than the database's answer:
    this one is a fixed statement (from the model's own table and column names) with
    parameters only."""
    table = connection.ops.quote_name(Lobby._meta.db_table)
    column = connection.ops.quote_name(Lobby._meta.get_field("document_id").column)
    found = []
    with connection.cursor() as cursor:
        for chunk in _chunks(document_ids):
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(f"SELECT {column} FROM {table} WHERE {column} IN ({marks})", chunk)
            found.extend(row[0] for row in cursor.fetchall())
    return found


def _load_lobbies(document_ids: list[str]) -> dict[str, LobbyRecord]:
    """The records of these ids: one plain query per 500 of them, and for those that have a
    row, three more."""
    rows = {
        lobby.document_id: lobby
        for chunk in _chunks(_with_rows(document_ids))
        for lobby in Lobby.objects.select_related("owner").filter(document_id__in=chunk)
    }
    bans: dict[int, list[BanRecord]] = {}
    grants: dict[int, list[tuple[int | None, int | None, Role]]] = {}
    for chunk in _chunks([lobby.pk for lobby in rows.values()]):
        for ban in Ban.objects.active().filter(lobby_id__in=chunk):
            bans.setdefault(ban.lobby_id, []).append(_ban_record(ban))
        for grant in LobbyGrant.objects.filter(lobby_id__in=chunk):
            grants.setdefault(grant.lobby_id, []).append(
                (grant.user_id, grant.group_id, Role(grant.role))
            )
    records = {}
    for document_id in document_ids:
        lobby = rows.get(document_id)
        if lobby is None:
            records[document_id] = LobbyRecord(None)
        else:
            pk = lobby.pk
            records[document_id] = LobbyRecord(
                _view(lobby), tuple(bans.get(pk, ())), tuple(grants.get(pk, ()))
            )
    return records


class LobbyCache:
    """This process's cache of lobby records and relay-wide bans. Used from the event loop's
    thread; the signal handlers below only drop entries, which is safe from any thread.

    Many sockets asking at once (a crowd joining one lobby) wait for one query, not one each.
    """

    def __init__(self) -> None:
        self.lobbies: dict[str, tuple[float, LobbyRecord]] = {}
        self.global_bans: tuple[float, tuple[BanRecord, ...]] | None = None
        self.loading: dict[str | None, asyncio.Future[Any]] = {}  # None: the relay-wide bans
        # Counts changes: a load that a change overtook returns its answer but does not keep it.
        self.generation = 0
        self.batch: asyncio.Future[Any] | None = None  # the load gathering ids
        self.batch_ids: list[str] = []
        self.latest_batch: asyncio.Future[Any] | None = None  # the latest load made by _batch

    def forget(self, document_id: str | None = None) -> None:
        """Drop the cached record of ``document_id``, or (None) the relay-wide bans."""
        self.generation += 1
        # A load already under way may have read the old row: later askers start a new one.
        self.loading.pop(document_id, None)
        if document_id is None:
            self.global_bans = None
        else:
            self.lobbies.pop(document_id, None)

    def clear(self) -> None:
        self.generation += 1
        self.lobbies.clear()
        self.global_bans = None
        self.latest_batch = None  # (perhaps of another event loop: tests run one after another)

    async def bans_everywhere(self) -> tuple[BanRecord, ...]:
        cached = self.global_bans
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        pending = self.loading.get(None)
        if pending is None:
            pending = self.loading[None] = asyncio.ensure_future(self._load_bans())
        return await asyncio.shield(pending)

    async def _load_bans(self) -> tuple[BanRecord, ...]:
        generation = self.generation
        try:
            bans = await database_sync_to_async(_load_global_bans)()
            if generation == self.generation:
                expires = time.monotonic() + relay_settings().facts_cache_seconds
                self.global_bans = (expires, bans)
            return bans
        finally:
            self.loading.pop(None, None)

    async def records(self, document_ids: list[str]) -> dict[str, LobbyRecord]:
        now = time.monotonic()
        found: dict[str, LobbyRecord] = {}
        waiting: dict[str, asyncio.Future[Any]] = {}
        missing = []
        for document_id in document_ids:
            cached = self.lobbies.get(document_id)
            if cached is not None and cached[0] > now:
                found[document_id] = cached[1]
            elif document_id in self.loading:
                waiting[document_id] = self.loading[document_id]
            else:
                missing.append(document_id)
        if missing:
            load = self._batch(missing)
            for document_id in missing:
                waiting[document_id] = self.loading[document_id] = load
        for document_id, pending in waiting.items():
            found[document_id] = (await asyncio.shield(pending))[document_id]
        return found

    def _batch(self, document_ids: list[str]) -> asyncio.Future[Any]:
        """The load that will fetch ``document_ids``. It gathers ids for a turn of the event
        loop, and for as long as the load before it is still asking the database: sockets
        joining different lobbies at the same moment share one query, and a storm of them (a
        worker's clients all reconnecting after a restart) is asked in a few large queries
        instead of one small query per turn, each of which costs the ORM's fixed overhead."""
        if self.batch is None:
            before = self.latest_batch
            self.batch = self.latest_batch = asyncio.ensure_future(self._load_batch(before))
        self.batch_ids.extend(document_ids)
        return self.batch

    async def _load_batch(self, before: asyncio.Future[Any] | None) -> dict[str, LobbyRecord]:
        await asyncio.sleep(0)  # the other sockets of this turn add their ids meanwhile
        if before is not None and not before.done():
            await asyncio.wait([before])  # (its outcome is its askers' business)
        document_ids, self.batch_ids, self.batch = self.batch_ids, [], None
        return await self._load(document_ids)

    async def _load(self, document_ids: list[str]) -> dict[str, LobbyRecord]:
        generation = self.generation
        try:
            loaded = await database_sync_to_async(_load_lobbies)(document_ids)
            if generation != self.generation:
                return loaded
            expires = time.monotonic() + relay_settings().facts_cache_seconds
            for document_id, record in loaded.items():
                self.lobbies.pop(document_id, None)  # re-inserted last: the newest
                self.lobbies[document_id] = (expires, record)
            while len(self.lobbies) > _CACHED_LOBBIES:
                del self.lobbies[next(iter(self.lobbies))]
            return loaded
        finally:
            for document_id in document_ids:
                self.loading.pop(document_id, None)


lobby_cache = LobbyCache()


async def banned_everywhere(identity: Identity, peer_id: str) -> bool:
    """Whether a relay-wide ban applies to this user or this peer id."""
    now = timezone.now()
    return any(ban.applies(identity, peer_id, now) for ban in await lobby_cache.bans_everywhere())


async def prefetch(document_ids: tuple[str, ...]) -> None:
    """Have the answers :func:`join_facts` will need for these ids cached (or being asked)."""
    await lobby_cache.bans_everywhere()
    await lobby_cache.records(list(document_ids))


async def join_facts(
    identity: Identity, peer_id: str, document_ids: list[str]
) -> dict[str, JoinFacts]:
    """The facts of each id for this identity and peer id."""
    orphans.start()
    orphans.joined(document_ids)
    everywhere = await banned_everywhere(identity, peer_id)
    records = await lobby_cache.records(document_ids)
    now = timezone.now()
    return {
        document_id: JoinFacts(
            record.view,
            record.roles(identity),
            everywhere or any(ban.applies(identity, peer_id, now) for ban in record.bans),
        )
        for document_id, record in records.items()
    }


def _create_lobby(identity: Identity, document_id: str, spec: LobbySpec, address: str) -> LobbyView:
    return _view(owners.create(identity, document_id, spec, address))


async def create_lobby(
    identity: Identity, document_id: str, spec: LobbySpec, address: str
) -> LobbyView:
    """Make the row of a lobby that a Join's ``lobby`` extra creates, owned by ``identity``
    (nobody, when anonymous), through ``lobbies.owners.create``. Raises :class:`Rejected`, as
    it does: when the rules refuse, or another request made the row first (409)."""
    return await database_sync_to_async(_create_lobby)(identity, document_id, spec, address)


async def quick_join(
    identity: Identity, peer_id: str, spec: QuickJoinSpec, address: str, exclude: frozenset[str]
) -> str:
    """The document id of a lobby with a seat for ``peer_id``, found or made by quick join,
    never one of ``exclude`` (``lobbies.matchmaking``; raises :class:`Rejected` as it does)."""
    seat = await matchmaking.quick_join(identity, peer_id, spec, address, exclude)
    return seat.document_id


def _update_lobby(document_id: str, spec: LobbySpec, by: int | None) -> LobbyView:
    lobby = Lobby.objects.select_related("owner").get(document_id=document_id)
    return _view(owners.update(lobby, spec.changes(), by=by))


async def update_lobby(document_id: str, spec: LobbySpec, by: int | None) -> LobbyView:
    """Apply the fields a manager's Join extra names to its lobby (``lobbies.owners.update``;
    raises :class:`Rejected` as it does)."""
    return await database_sync_to_async(_update_lobby)(document_id, spec, by)


def changed_since(generation: int) -> bool:
    """Whether any lobby, grant or ban changed since :attr:`LobbyCache.generation` was
    ``generation``: a Join that read its facts before must be judged again."""
    return lobby_cache.generation != generation


# -- forgetting what changed, once it is committed ----------------------------------------------
# Not before: a Join between the save and the commit would load the old row again and keep it.


def _forget_on_commit(document_id: str | None) -> None:
    transaction.on_commit(lambda: _forget_everywhere(document_id))


def _forget_everywhere(document_id: str | None) -> None:
    """Drop the cached answer here at once, and in every other worker (``RELAY_REDIS_URL``)
    as soon as its message arrives."""
    lobby_cache.forget(document_id)
    if workers.active() is not None:
        orders.soon(lambda: _tell_workers(document_id))


async def _tell_workers(document_id: str | None) -> None:
    link = workers.active()
    if link is not None:
        link.broadcast(["forget", document_id])


@workers.handler("forget")
async def _forgotten_elsewhere(document_id: str | None) -> None:
    lobby_cache.forget(document_id)


@receiver([post_save, post_delete], sender=Lobby)
def _lobby_changed(sender: type, instance: Lobby, **kwargs: Any) -> None:
    _forget_on_commit(instance.document_id)


@receiver([post_save, post_delete], sender=Ban)
@receiver([post_save, post_delete], sender=LobbyGrant)
def _lobby_rule_changed(sender: type, instance: Ban | LobbyGrant, **kwargs: Any) -> None:
    if instance.lobby_id is None:
        _forget_on_commit(None)
        return
    # (When the lobby itself is being deleted, its own signal forgets it.)
    document_id = Lobby.objects.filter(pk=instance.lobby_id).values_list("document_id", flat=True)
    found = document_id.first()
    if found is not None:
        _forget_on_commit(found)


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL)
def _owner_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    # The lobbies lose their owner by an UPDATE (SET_NULL), which sends no signal of its own.
    owned = Lobby.objects.filter(owner_id=instance.pk).values_list("document_id", flat=True)
    for document_id in owned:
        _forget_on_commit(document_id)


# -- ownerless lobbies age out -------------------------------------------------------------------


class OrphanSweeper:
    """Deletes lobbies without an owner that nobody has been in for ``RELAY_ORPHAN_LOBBY_TTL``
    seconds (made by anonymous Joins, or left by a deleted owner), so that ids taken by
    strangers come back. Runs in the event loop where presence lives, started by the first Join
    of the process; one pass every quarter of the TTL (at most every 5 minutes), each over the
    next :data:`_SWEPT_PER_PASS` ownerless lobbies, so that every one is looked at in turn.

    A lobby is deleted once every pass for a whole TTL found it empty and no Join of it came in
    between (:meth:`joined`)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.empty_since: dict[str, float] = {}  # lobbies seen empty, and since when
        self.after: tuple[datetime, int] | None = None  # where the next pass starts

    def start(self) -> None:
        """Make sure a sweep runs in this event loop (cheap: called by every Join)."""
        task = self.task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self.task = spawn(self._run())

    def joined(self, document_ids: list[str]) -> None:
        """Someone Joined these ids: none of them has been empty since it was last looked at."""
        if self.empty_since:
            for document_id in document_ids:
                self.empty_since.pop(document_id, None)

    async def _run(self) -> None:
        while True:
            ttl = relay_settings().orphan_lobby_ttl
            await asyncio.sleep(min(max(ttl / 4, 0.2), 300.0))
            try:
                await self.sweep()
            except Exception:
                logger.exception("sweeping ownerless lobbies failed; trying again later")

    async def sweep(self, now: float | None = None) -> int:
        """One pass: note which ownerless lobbies of the next batch are empty, delete those
        empty for the TTL. Returns how many were deleted."""
        now = time.monotonic() if now is None else now
        ttl = relay_settings().orphan_lobby_ttl
        changed_before = timezone.now() - timedelta(seconds=ttl)
        batch = await database_sync_to_async(_ownerless)(changed_before, self.after)
        self.after = (batch[-1][0], batch[-1][1]) if len(batch) == _SWEPT_PER_PASS else None
        ids = [document_id for _, _, document_id in batch]
        present = await get_presence().counts(ids) if ids else {}
        expired = []
        for document_id in ids:
            if present.get(document_id):
                self.empty_since.pop(document_id, None)
            elif now - self.empty_since.setdefault(document_id, now) >= ttl:
                expired.append(document_id)
                del self.empty_since[document_id]
        if not expired:
            return 0
        pruned = await database_sync_to_async(owners.prune_orphans)(expired)
        logger.info("%s ownerless lobbies nobody was in for %g s deleted", pruned, ttl)
        return pruned


# One pass looks at this many ownerless lobbies at most (the next ones after the last pass's).
_SWEPT_PER_PASS = 5_000


def _ownerless(
    changed_before: datetime, after: tuple[datetime, int] | None
) -> list[tuple[datetime, int, str]]:
    """The next ownerless lobbies unchanged since ``changed_before``, in (updated_at, pk)
    order after ``after``: (updated_at, pk, document id) each."""
    rows = Lobby.objects.filter(owner__isnull=True, updated_at__lte=changed_before)
    if after is not None:
        changed, pk = after
        rows = rows.filter(Q(updated_at__gt=changed) | Q(updated_at=changed, pk__gt=pk))
    ordered = rows.order_by("updated_at", "pk").values_list("updated_at", "pk", "document_id")
    return list(ordered[:_SWEPT_PER_PASS])


orphans = OrphanSweeper()
