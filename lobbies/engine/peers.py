"""Control sockets: a peer's ``/introduction/<peerId>`` socket, its lobbies and its Introductions.

A peer joins and leaves document ids; whoever shares one with it is introduced to it and it to
them (``lobbies.engine.discovery`` decides who, ``lobbies.engine.presence`` remembers who is
where). An Introduction is written straight to a socket that can take it; one that cannot gets an
:class:`Outbox`, bounded in bytes, so a peer that never reads cannot stall a lobby.

A control socket's life is one :class:`PeerState` and one way out, :meth:`ControlSocket.close`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from enum import Enum
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from lobbies import admission, metrics, signals
from lobbies.admission import JoinFacts, LobbyView
from lobbies.conf import RelaySettings
from lobbies.engine import connections, discovery, orders, pipes, workers
from lobbies.engine.connections import Refused, Send, send_close
from lobbies.engine.orders import Action, Order
from lobbies.engine.presence import PeerIdTaken, Presence
from lobbies.engine.protocol import (
    CloseCode,
    Dialect,
    Join,
    Leave,
    decode_control,
    encode_error,
    encode_introduction,
    encode_joined,
    encode_left,
    frame_size,
)
from lobbies.engine.ratelimits import MAX_SPREAD_SECONDS, TokenBucket, get_rate_limits
from lobbies.engine.splice import SpliceHandle
from lobbies.engine.tasks import spawn
from lobbies.events import emit, wanted
from lobbies.logs import shown_id
from lobbies.policy import (
    Access,
    CreationPolicy,
    Identity,
    Refusal,
    Role,
    Topology,
    capacity_of,
    may_host,
    may_join,
    may_manage,
    may_stay,
)
from lobbies.schemas import LobbySpec

logger = logging.getLogger(__name__)


class PeerState(Enum):
    """Where a control socket is in its life. Every one ends CLOSED, through
    :meth:`ControlSocket.close`."""

    OPENING = "opening"  # registering with presence
    OPEN = "open"
    CLOSED = "closed"


class Outbox:
    """Introductions waiting for a socket whose write buffer is full, sent in order by one task
    that exists only while there is something to send. Bounded in bytes."""

    __slots__ = ("frames", "queued_bytes", "send", "writer")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.frames: deque[str | bytes] = deque()
        self.queued_bytes = 0
        self.writer: asyncio.Task[None] | None = None

    def __bool__(self) -> bool:
        return self.writer is not None or bool(self.frames)

    def put(self, frame: str | bytes, limit: int) -> bool:
        """Queue ``frame`` unless that would take the queue over ``limit`` bytes."""
        if self.queued_bytes + len(frame) > limit:
            return False
        self.frames.append(frame)
        self.queued_bytes += len(frame)
        if self.writer is None:
            self.writer = spawn(self._write())
        return True

    def clear(self) -> None:
        """Drop what is queued (the socket is closing); the writer stops after its send."""
        self.frames.clear()
        self.queued_bytes = 0

    async def _write(self) -> None:
        try:
            while self.frames:
                frame = self.frames.popleft()
                self.queued_bytes -= len(frame)
                key = "text" if isinstance(frame, str) else "bytes"
                await self.send({"type": "websocket.send", key: frame})
        except Exception:
            logger.debug("an introduction after its socket had gone")
            self.clear()
        finally:
            self.writer = None


class ControlSocket:
    """One peer's control socket: Join, Leave and Heartbeat in; Introductions out (and, for a
    client that opted in with ``"ext": 1``, the extended ``Joined``, ``Error`` and ``Left``)."""

    def __init__(
        self,
        peer_id: str,
        identity: Identity,
        send: Send,
        presence: Presence,
        settings: RelaySettings,
        handle: SpliceHandle | None = None,
        address: str = "-",
    ) -> None:
        self.peer_id = peer_id
        self.address = address  # the client's, for the limits counted by address
        self.identity = identity
        self.send = send
        self.presence = presence
        self.settings = settings
        # The server's relay.splice handle (uvicorn): writes an Introduction without a task.
        self.handle = handle
        self.state = PeerState.OPENING
        self.dialect = Dialect.MSGPACK
        self.ext = False  # the client asked for the extended messages
        self.nickname: str | None = None
        # The ids joined, each with the facts it was admitted on (its lobby as it was then, or
        # None: no row, an LF channel). Decided once per Join of an id, never per frame.
        self.lobbies: dict[str, JoinFacts] = {}
        self.outbox: Outbox | None = None  # made when first needed: most sockets sit idle
        # Its own rate limits (lobbies.engine.ratelimits), made at its first Join likewise.
        self.join_bucket: TokenBucket | None = None
        self.introduction_bucket: TokenBucket | None = None
        self.connection = connections.register(self)
        self.frames_in = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.opened_at = time.monotonic()
        self.joined_at: dict[str, float] = {}  # since when it is in each lobby
        # Joins, Leaves and operators' orders take turns: a kick must not land in the middle of
        # a Join waiting on the database, which would put the peer back in afterwards.
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        """Become the peer's control socket, closing the one it replaces (4409). Raises
        :class:`Refused` (4403) while another user holds the peer id, or when a relay-wide ban
        applies."""
        if await admission.banned_everywhere(self.identity, self.peer_id):
            raise Refused(CloseCode.FORBIDDEN, "banned from this relay")
        if await self.presence.connections([self.peer_id]):
            # Two clients sharing a peer id replace each other in a loop (each reconnects at
            # once): past a few replacements, each waits.
            delay = await get_rate_limits().refusal_delay("peer", self.peer_id)
            if delay:
                await asyncio.sleep(delay)
        if self.state is PeerState.CLOSED:
            return  # the client left while we looked
        try:
            replaced = await self.presence.connect_peer(
                self.peer_id, self.connection, self.identity.account
            )
        except PeerIdTaken:
            raise Refused(CloseCode.FORBIDDEN, "this peer id is online as another user") from None
        # Counted before the check below, which also covers a client that left meanwhile.
        online = await self._peers_online() if wanted(signals.peer_online) else None
        if self.state is PeerState.CLOSED:
            # The client left while we registered; close() ran before presence knew us.
            await self.presence.disconnect_peer(self.peer_id, self.connection)
            return
        self.state = PeerState.OPEN
        emit(
            signals.peer_online,
            peer_id=self.peer_id,
            user_id=self.identity.user_id,
            online=online,
        )
        if replaced:
            # The LF relay leaves the old socket open, and its later close deletes the new
            # registration; closing it here avoids both.
            await orders.close(replaced, CloseCode.CONFLICT, "replaced by a newer connection")

    async def _peers_online(self) -> int | None:
        """Peers online on the whole relay, as presence counts them (every worker's, with
        Redis presence), for the statistics' peak; None rather than a failed open when
        presence cannot say."""
        try:
            return (await self.presence.stats()).peers_online
        except Exception as exc:  # a statistic must never cost a client its socket
            logger.warning("peers online could not be counted: %r", exc)
            return None

    async def handle_frame(self, message: dict[str, Any]) -> None:
        """One control frame from the client."""
        if self.state is not PeerState.OPEN:
            return
        self.frames_in += 1
        data = message.get("bytes")
        if data is None:
            data = message.get("text", "")
        if frame_size(data) > self.settings.max_control_frame_bytes:
            metrics.limit_hit("max_control_frame_bytes")
            await self.close(CloseCode.TOO_LARGE, "control frame too large")
            return
        self.dialect, control = decode_control(
            data, max_id_length=self.settings.max_id_length, max_ids=self.settings.max_ids_per_peer
        )
        if isinstance(control, Join):
            async with self.lock:
                deferred = await self.join(control)
            if deferred:
                await self._introduce_in_time(deferred)
        elif isinstance(control, Leave):
            self.ext = self.ext or control.ext
            if not self._may_change():
                joined = [d for d in control.document_ids if d in self.lobbies]
                self._refuse(joined, Refusal.RATE_LIMITED, "too many Joins and Leaves")
                return
            async with self.lock:
                await self.leave(control.document_ids)
        # Heartbeats and malformed frames need no answer; the socket stays open.

    def _may_change(self) -> bool:
        """Whether this socket may Join or Leave again now (``RELAY_JOIN_RATE``)."""
        rate = get_rate_limits().join_rate
        if rate is None:
            return True
        if self.join_bucket is None:
            self.join_bucket = TokenBucket(rate)
        if self.join_bucket.take(rate):
            return True
        metrics.limit_hit("join_rate")
        return False

    async def join(self, join: Join) -> dict[str, list[str]]:
        """Join the ids the policy allows (within the per-peer limit), tell an ext client what
        happened to each, and introduce the peers who meet there. Returns the meetings whose
        Introductions wait for this socket's budget (``RELAY_INTRODUCTION_RATE``):
        :meth:`_introduce_in_time` sends them."""
        # Asking quick join opts in: its answer is the Joined that names the lobby found.
        self.ext = self.ext or join.ext or join.quick_join is not None
        if join.nickname is not None:
            self.nickname = join.nickname
        if not self._may_change():
            named = join.document_ids + join.over_limit
            if join.quick_join is not None:
                named += (None,)  # the quick join's own answer
            self._refuse(named, Refusal.RATE_LIMITED, "too many Joins and Leaves")
            return {}
        if join.quick_join is None:
            # The database is waited for here, a few coroutine frames deep, rather than at the
            # bottom of the Join's calls: a reconnect storm has thousands of Joins waiting for
            # it at once, and what they hold meanwhile stays in the process as freed memory.
            await admission.prefetch(join.document_ids)
            return await self._join_ids(join)
        found = await self._quick_join(join)
        if found is None:
            return await self._join_ids(join)  # the frame's other ids, if any
        meetings = await self._join_ids(
            replace(join, document_ids=(*join.document_ids, found)), found
        )
        if found not in self.lobbies:
            # Not joined after all (refused, or the socket closed): the place goes back now.
            await self.presence.unreserve(found, self.peer_id)
        return meetings

    async def _join_ids(self, join: Join, found: str | None = None) -> dict[str, list[str]]:
        """Join's work for its ids (``found``: the one quick join found among them)."""
        self._refuse(join.over_limit, Refusal.INVALID, self._over_limit)
        document_ids = self._within_limit(join.document_ids)
        fresh = [d for d in document_ids if d not in self.lobbies]
        generation = admission.lobby_cache.generation
        admitted = await self._admit(document_ids, fresh, join)
        if found in admitted and self.lobbies[found].lobby is None:
            # Deleted between the seat and this Join (it was empty): not a plain channel now.
            del self.lobbies[found]
            self._refuse((found,), Refusal.LOBBY_FULL, "the lobby found was deleted: ask again")
            admitted = tuple(d for d in admitted if d != found)
        if not admitted or self.state is not PeerState.OPEN:
            return {}
        capacities = self._capacities(admitted, fresh)
        members = await self.presence.join(
            self.peer_id, self.connection, admitted, join.nickname, capacities
        )
        # Presence has the last word on capacity: it counted the peers (and seats) that joined
        # on other sockets and workers since this Join was judged.
        full = [d for d in capacities if d not in members]
        if full:
            for document_id in full:
                del self.lobbies[document_id]
            self._refuse(full, Refusal.LOBBY_FULL, _REFUSALS[Refusal.LOBBY_FULL])
            admitted = tuple(d for d in admitted if d not in full)
            if not admitted:
                return {}
        if admission.changed_since(generation):
            # A lobby changed while this Join was judged (closed, made private, a ban): the
            # change's eviction may have looked before this peer was in. Judged again now.
            admitted = await self._judge_again(admitted, fresh)
            if not admitted:
                return {}
        hosts = await self._claim_hosts(admitted)
        meetings = discovery.introductions(self.peer_id, admitted, members, hosts)
        now = self._introductions_now(2 * len(meetings))
        if now is None:
            # Undone rather than joined without introductions: being in a lobby is what lets
            # two peers open a pipe.
            await self._withdraw([d for d in admitted if d in fresh])
            metrics.limit_hit("introduction_rate")
            self._refuse(admitted, Refusal.RATE_LIMITED, "too many Introductions")
            return {}
        if self.ext:
            for document_id in admitted:
                self._tell_joined(document_id, hosts.get(document_id))
        self._report_joins(admitted, fresh, hosts, meetings)
        if not now:
            return meetings
        await self.introduce(meetings)
        return {}

    def _capacities(self, admitted: tuple[str, ...], fresh: list[str]) -> dict[str, int]:
        """The capacity each id this Join newly enters has (``lobbies.policy.capacity_of``)."""
        capacities = {}
        for document_id in admitted:
            if document_id in fresh:
                capacity = capacity_of(self.lobbies[document_id].lobby_facts)
                if capacity is not None:
                    capacities[document_id] = capacity
        return capacities

    async def _quick_join(self, join: Join) -> str | None:
        """The document id of the lobby quick join finds (or makes) with a seat for this peer,
        never one it is in or names in this Join; or None when it cannot (an ``Error`` without
        a ``documentId`` says why)."""
        try:
            spec = admission.QuickJoinSpec.model_validate(join.quick_join)
        except ValidationError as exc:
            self._refuse((None,), Refusal.INVALID, _first_error(exc, "quickJoin"))
            return None
        named = {*self.lobbies, *join.document_ids}
        if len(named) >= self.settings.max_ids_per_peer:
            self._refuse((None,), Refusal.INVALID, self._over_limit)  # (no seat taken for it)
            return None
        try:
            return await admission.quick_join(
                self.identity, self.peer_id, spec, self.address, frozenset(named)
            )
        except admission.Rejected as refused:
            refusal = _QUICK_JOIN_REJECTED.get(refused.status, Refusal.INVALID)
            self._refuse((None,), refusal, refused.message)
            return None

    def _introductions_now(self, count: int) -> bool | None:
        """Whether ``count`` Introductions fit this socket's budget now (they are counted),
        False when they must be spread over the next seconds, None when that would take longer
        than ``MAX_SPREAD_SECONDS`` (a Join repeated over a popular lobby is an amplifier)."""
        rate = get_rate_limits().introduction_rate
        if rate is None or count == 0:
            return True
        if self.introduction_bucket is None:
            self.introduction_bucket = TokenBucket(rate)
        bucket = self.introduction_bucket
        if bucket.take(rate, count):
            return True
        if rate.burst < 2 or bucket.wait(rate, count) > MAX_SPREAD_SECONDS:
            return None
        return False

    async def _introduce_in_time(self, meetings: dict[str, list[str]]) -> None:
        """Introduce ``meetings`` a batch at a time, as this socket's budget refills. Its next
        frames wait meanwhile (a client spreads one Join at a time), operators' orders do not:
        the turn is taken per batch, and an id left in between is no longer introduced."""
        rate, bucket = get_rate_limits().introduction_rate, self.introduction_bucket
        pending = list(meetings.items())
        batch = max(1, rate.burst // 20) if rate else len(pending)
        done = 0
        while done < len(pending) and self.state is PeerState.OPEN:
            count = len(pending) - done
            if rate is not None and bucket is not None:
                count = min(count, bucket.available(rate) // 2)
                if not count:
                    wait = bucket.wait(rate, 2 * min(len(pending) - done, batch))
                    # A second at most: a socket closed meanwhile (an order) stops soon.
                    await asyncio.sleep(min(wait, 1.0))
                    continue
                bucket.take(rate, 2 * count)
            async with self.lock:
                still = {}
                for other, shared in pending[done : done + count]:
                    joined = [d for d in shared if d in self.lobbies]
                    if joined:
                        still[other] = joined
                done += count
                if self.state is PeerState.OPEN:
                    await self.introduce(still)

    def _report_joins(
        self,
        admitted: tuple[str, ...],
        fresh: list[str],
        hosts: dict[str, str | None],
        meetings: dict[str, list[str]],
    ) -> None:
        now = time.monotonic()
        metrics.joins("joined", sum(1 for d in admitted if d in fresh))
        metrics.introductions(len(meetings))
        for document_id in admitted:
            if document_id in fresh:
                self.joined_at[document_id] = now
                lobby = self.lobbies[document_id].lobby
                emit(
                    signals.lobby_joined,
                    document_id=document_id,
                    peer_id=self.peer_id,
                    user_id=self.identity.user_id,
                    nickname=self.nickname,
                    game=lobby.public.get("game") or None if lobby else None,
                    role=Role.HOST.value if hosts.get(document_id) == self.peer_id else "member",
                )
        met: dict[str, int] = {}
        for shared in meetings.values():
            for document_id in shared:
                met[document_id] = met.get(document_id, 0) + 1
        for document_id, count in met.items():
            emit(signals.introduced, document_id=document_id, peers=count)

    def _report_left(self, document_id: str, reason: str) -> None:
        since = self.joined_at.pop(document_id, None)
        seconds = time.monotonic() - since if since is not None else 0.0
        emit(
            signals.lobby_left,
            document_id=document_id,
            peer_id=self.peer_id,
            reason=reason,
            seconds=seconds,
        )

    def _within_limit(self, document_ids: tuple[str, ...]) -> tuple[str, ...]:
        room = max(self.settings.max_ids_per_peer - len(self.lobbies), 0)
        new = [d for d in document_ids if d not in self.lobbies]
        if len(new) <= room:
            return document_ids
        self._refuse(new[room:], Refusal.INVALID, self._over_limit)
        allowed = set(new[:room])
        return tuple(d for d in document_ids if d in self.lobbies or d in allowed)

    @property
    def _over_limit(self) -> str:
        return f"a socket may join at most {self.settings.max_ids_per_peer} ids"

    def _refuse(self, document_ids: Sequence[str | None], refusal: Refusal, text: str) -> None:
        """Refuse ids for one reason: one log line, and an ``Error`` for each (ext clients).
        ``None`` stands for a request about no id (a quick join that found none)."""
        if not document_ids:
            return
        logger.info("peer %r refused %s ids: %s", shown_id(self.peer_id), len(document_ids), text)
        metrics.joins(refusal.value, len(document_ids))
        if self.ext:
            for document_id in document_ids:
                self.deliver(encode_error(self.dialect, refusal.value, document_id, text))

    async def _admit(
        self, document_ids: tuple[str, ...], fresh: list[str], join: Join
    ) -> tuple[str, ...]:
        """The ids of this Join that the policy lets in; the others are refused (an ``Error``
        for an ext client) and not applied. Ids joined before (not ``fresh``) are let in again
        unasked."""
        spec = None
        if join.lobby is not None:
            try:
                spec = LobbySpec.model_validate(join.lobby)
            except ValidationError as exc:
                self._refuse(document_ids, Refusal.INVALID, _first_error(exc, "lobby"))
                return ()
        if not fresh and spec is None:
            return document_ids
        found = await admission.join_facts(self.identity, self.peer_id, list(document_ids))
        # Capacity is only a question for lobby rows: one presence call counts them all.
        rows = [d for d in document_ids if d not in self.lobbies and found[d].lobby is not None]
        present = await self.presence.counts(rows) if rows else {}
        creations = self.settings.max_new_lobbies_per_join
        admitted = []
        for document_id in document_ids:
            about = found[document_id]
            if document_id not in self.lobbies:
                access = about.access(present.get(document_id, 0))
                if not self._may_join(document_id, about, access):
                    continue
            if spec is not None:
                if about.lobby is None:
                    if creations <= 0:
                        metrics.limit_hit("max_new_lobbies_per_join")
                        self._refuse((document_id,), Refusal.RATE_LIMITED, _TOO_MANY_NEW)
                        continue
                    creations -= 1
                try:
                    about = replace(about, lobby=await self._apply_spec(document_id, about, spec))
                except admission.Rejected as refused:
                    about = await self._after_refused_spec(document_id, refused)
                    if about is None:
                        continue
            self.lobbies[document_id] = about
            admitted.append(document_id)
        return tuple(admitted)

    def _may_join(self, document_id: str, about: JoinFacts, access: Access) -> bool:
        policy_name = CreationPolicy(self.settings.creation_policy)
        decision = may_join(self.identity, about.lobby_facts, access, policy_name)
        if not decision:
            self._refuse((document_id,), decision.refusal, _REFUSALS[decision.refusal])
        return decision.allowed

    async def _apply_spec(
        self, document_id: str, about: JoinFacts, spec: LobbySpec
    ) -> LobbyView | None:
        """A Join's ``lobby`` extra creates the lobby (it was allowed to create it) or, from its
        owner or a moderator, changes the fields it names; from anyone else it is ignored.
        Raises ``admission.Rejected`` when the rules refuse the write."""
        lobby = about.lobby
        if lobby is None:
            return await admission.create_lobby(self.identity, document_id, spec, self.address)
        if may_manage(self.identity, lobby.facts, about.access()):
            return await admission.update_lobby(document_id, spec, self.identity.user_id)
        return lobby

    async def _after_refused_spec(
        self, document_id: str, refused: admission.Rejected
    ) -> JoinFacts | None:
        """The facts to join ``document_id`` on after its ``lobby`` extra was refused: none
        (refused, said why) unless another Join created the row meanwhile (409), which is then
        judged as any row is."""
        if refused.status != 409:
            refusal = _REJECTED.get(refused.status, Refusal.INVALID)
            self._refuse((document_id,), refusal, refused.message)
            return None
        about = (await admission.join_facts(self.identity, self.peer_id, [document_id]))[
            document_id
        ]
        present = await self.presence.counts([document_id])
        access = about.access(present.get(document_id, 0))
        return about if self._may_join(document_id, about, access) else None

    async def _judge_again(self, admitted: tuple[str, ...], fresh: list[str]) -> tuple[str, ...]:
        """``admitted``, less the fresh ids whose lobby no longer lets this peer stay (it was
        closed, made private, or a ban came, while the Join was judged): those are left again
        and refused."""
        joined = [d for d in admitted if d in fresh]
        found = await admission.join_facts(self.identity, self.peer_id, joined)
        out = []
        for document_id in joined:
            about = found[document_id]
            if may_stay(self.identity, about.lobby_facts, about.access()):
                self.lobbies[document_id] = about
            else:
                out.append(document_id)
        await self._withdraw(out)
        self._refuse(out, Refusal.LOCKED, "the lobby changed as you joined")
        return tuple(d for d in admitted if d not in out)

    async def _withdraw(self, document_ids: Sequence[str]) -> None:
        """Undo the joining of these ids (admitted by this Join, then refused after all)."""
        for document_id in document_ids:
            del self.lobbies[document_id]
        if document_ids:
            await self.presence.leave(self.peer_id, self.connection, tuple(document_ids))

    async def _claim_hosts(self, document_ids: tuple[str, ...]) -> dict[str, str | None]:
        """The host of each joined id that is a host lobby, this peer if it may host and the
        lobby has none."""
        hosts: dict[str, str | None] = {}
        for document_id in document_ids:
            about = self.lobbies[document_id]
            lobby = about.lobby
            if lobby is None or lobby.facts.topology is not Topology.HOST:
                continue
            access = about.access()
            claimant = self.peer_id if may_host(self.identity, lobby.facts, access) else None
            hosts[document_id] = await self.presence.claim_host(document_id, claimant)
        return hosts

    async def introduce(self, meetings: dict[str, list[str]]) -> None:
        """Introduce this peer to each other peer, and each to this one, for the shared ids."""
        if not meetings:
            return
        online = await self.presence.connections(list(meetings))
        # Everyone in a lobby gets the same Introduction of this peer: encode it once per
        # dialect and id list, not once per recipient.
        encoded: dict[tuple[Dialect, tuple[str, ...]], str | bytes] = {}
        for other, shared in meetings.items():
            self.deliver(encode_introduction(self.dialect, other, shared))
            connection = online.get(other, "")
            socket = connections.lookup(connection)
            if socket is not None:
                key = (socket.dialect, tuple(shared))
                frame = encoded.get(key)
                if frame is None:
                    frame = encoded[key] = encode_introduction(socket.dialect, self.peer_id, shared)
                socket.deliver(frame)
            elif connection:
                _tell_afar(connection, "introduced", self.peer_id, shared)

    async def leave(self, document_ids: tuple[str, ...]) -> None:
        """Leave the ids; where this peer hosts, its members are told (``host_left``)."""
        leaving = [d for d in document_ids if d in self.lobbies]
        for document_id in leaving:
            await self._hand_over(document_id)
            del self.lobbies[document_id]
            self._report_left(document_id, "left")
        await self.presence.leave(self.peer_id, self.connection, tuple(leaving))

    async def remove(self, document_id: str, reason: str) -> None:
        """Take this peer out of ``document_id`` on the relay's initiative (its host left, an
        operator closed the lobby or kicked it); an ext client gets ``Left`` with ``reason``."""
        if self.lobbies.pop(document_id, None) is None:
            return
        self._report_left(document_id, reason)
        await self.presence.leave(self.peer_id, self.connection, (document_id,))
        if self.ext:
            self.deliver(encode_left(self.dialect, document_id, reason))

    async def _hand_over(self, document_id: str) -> None:
        """This peer leaves ``document_id``: if it is the host there, the role passes to the
        member present longest (where the lobby allows it) or the lobby closes for its members:
        4410 on their pipes with the host, and ``Left`` with ``host_left``."""
        lobby = self.lobbies[document_id].lobby
        if lobby is None or lobby.facts.topology is not Topology.HOST:
            return
        hosts = await self.presence.hosts([document_id])
        if hosts.get(document_id) != self.peer_id:
            return
        # A socket replaced by a newer one of the same peer (4409) hosts nothing any more, even
        # where the newer one, on another worker, already hosts again before this one hears
        # it was replaced: the role is the newer socket's.
        online = await self.presence.connections([self.peer_id])
        if online.get(self.peer_id, self.connection) != self.connection:
            return
        heir = await self.presence.drop_host(
            document_id, self.peer_id, lobby.facts.host_transferable
        )
        members = [p for p in await self.presence.members(document_id) if p != self.peer_id]
        online = await self.presence.connections(members)
        if heir is not None:
            logger.info(
                "lobby %r: host %r left, %r hosts now",
                *map(shown_id, (document_id, self.peer_id, heir)),
            )
            for member in members:
                await _reach(online.get(member, ""), "host_is", document_id, heir)
            others = {m: [document_id] for m in members if m != heir}
            await _reach(online.get(heir, ""), "introduce", others)
            return
        logger.info(
            "lobby %r: host %r left, closed for its members",
            shown_id(document_id),
            shown_id(self.peer_id),
        )
        await pipes.close_between(self.peer_id, document_id, CloseCode.GONE, "the host left")
        for member in members:
            await _reach(online.get(member, ""), "remove", document_id, "host_left")

    def _tell_joined(self, document_id: str, host: str | None) -> None:
        lobby = self.lobbies[document_id].lobby
        info = dict(lobby.public, host=host) if lobby is not None else None
        role = Role.HOST if host == self.peer_id else Role.MEMBER
        self.deliver(encode_joined(self.dialect, document_id, role.value, info))

    def deliver(self, frame: str | bytes) -> None:
        """Send an encoded message to this socket, now if it can take it, else queued.

        Never waits: a peer that does not read its control socket must not stall the peers
        joining its lobby. Past its queue's bound it is closed (4413).
        """
        if self.state is not PeerState.OPEN:
            return
        if not self.outbox and self.handle is not None and self.handle.send_nowait(frame):
            return
        if self.outbox is None:
            self.outbox = Outbox(self.send)
        if not self.outbox.put(frame, self.settings.control_queue_bytes):
            metrics.limit_hit("control_queue_bytes")
            spawn(self.close(CloseCode.TOO_LARGE, "introductions not read"))

    async def close(self, code: CloseCode | None, reason: str = "") -> None:
        """The one way a control socket closes: send ``code`` (``None``: the client has gone
        already), hand over the lobbies it hosts, and forget the peer's presence. Idempotent;
        never waits for a client."""
        if self.state is PeerState.CLOSED:
            return
        was_open = self.state is PeerState.OPEN
        self.state = PeerState.CLOSED
        if self.outbox is not None:
            self.outbox.clear()
        connections.unregister(self.connection)
        if code is not None:
            self.close_code, self.close_reason = int(code), reason
            await send_close(self.send, code, reason)
        if was_open:
            try:
                for document_id in list(self.lobbies):
                    await self._hand_over(document_id)
                    self._report_left(document_id, "offline")
            except RedisError as exc:  # its members are told nothing: presence is away
                logger.warning("peer %r left without handing over: %r", shown_id(self.peer_id), exc)
            # (If Redis does not answer, presence forgets the peer once it does.)
            await workers.settle(
                lambda: self.presence.disconnect_peer(self.peer_id, self.connection)
            )
            emit(
                signals.peer_offline,
                peer_id=self.peer_id,
                user_id=self.identity.user_id,
                seconds=time.monotonic() - self.opened_at,
            )

    async def carry_out(self, order: Order) -> bool:
        """Carry out an operator's order (``lobbies.engine.orders``): leave a lobby now, or close
        (its pipes too: they were judged when they opened, and would outlive a ban). False when
        there was nothing to do: the socket is closing, or not in that lobby."""
        async with self.lock:
            if self.state is not PeerState.OPEN:
                return False
            if order.action is Action.DISCONNECT:
                await pipes.close_between(
                    self.peer_id, None, order.code, order.reason, peer_gets_code=True
                )
                await self.close(order.code, order.reason)
                return True
            document_id = order.document_id
            if document_id not in self.lobbies:
                return False
            if order.action is Action.KICK:
                await self._hand_over(document_id)
                await pipes.close_between(
                    self.peer_id, document_id, order.code, order.reason, peer_gets_code=True
                )
            await self.remove(document_id, order.reason)
            return True

    def traffic(self) -> dict[str, int]:
        """What the client sent, for the log line of its close (``lobbies.logs``)."""
        return {"control_frames_in": self.frames_in, "ids_joined": len(self.lobbies)}


# -- control sockets reached from another worker, or from this one by connection id ------------


def _tell_afar(connection: str, kind: str, *fields: Any) -> None:
    link = workers.active()
    if link is not None and not connections.is_local(connection):
        link.tell(connections.worker_of(connection), [kind, connection, *fields])


async def _reach(connection: str, kind: str, *fields: Any) -> None:
    """Carry out ``kind`` on the control socket ``connection``, here or on its worker."""
    if connections.is_local(connection):
        await _CARRIED[kind](connection, *fields)
    elif connection:
        _tell_afar(connection, kind, *fields)


@workers.handler("introduced")
async def _introduced(connection: str, peer_id: str, shared: list[str]) -> None:
    socket = connections.lookup(connection)
    if isinstance(socket, ControlSocket):
        socket.deliver(encode_introduction(socket.dialect, peer_id, shared))


@workers.handler("host_is")
async def _host_is(connection: str, document_id: str, host: str | None) -> None:
    socket = connections.lookup(connection)
    if isinstance(socket, ControlSocket) and socket.ext and document_id in socket.lobbies:
        socket._tell_joined(document_id, host)


@workers.handler("introduce")
async def _introduce(connection: str, meetings: dict[str, list[str]]) -> None:
    socket = connections.lookup(connection)
    if isinstance(socket, ControlSocket):
        await socket.introduce(meetings)


@workers.handler("remove")
async def _remove(connection: str, document_id: str, reason: str) -> None:
    socket = connections.lookup(connection)
    if isinstance(socket, ControlSocket):
        await socket.remove(document_id, reason)


_CARRIED = {"host_is": _host_is, "introduce": _introduce, "remove": _remove}

_TOO_MANY_NEW = "too many new lobbies in one Join (RELAY_MAX_NEW_LOBBIES_PER_JOIN)"
# A lobby write refused (``lobbies.owners.Rejected``: an HTTP status) as the Join's Error code.
_REJECTED = {403: Refusal.FORBIDDEN, 429: Refusal.RATE_LIMITED}
# Quick join's refusals: 503, the lobby made for the peer filled up at once.
_QUICK_JOIN_REJECTED = {**_REJECTED, 503: Refusal.LOBBY_FULL}
_REFUSALS = {
    Refusal.FORBIDDEN: "you may not join this lobby",
    Refusal.NOT_FOUND: "no such lobby",
    Refusal.LOCKED: "the lobby is not open to new peers",
    Refusal.LOBBY_FULL: "the lobby is full",
}


def _first_error(exc: ValidationError, extra: str) -> str:
    """The first thing wrong with a Join's ``extra`` (``lobby``, ``quickJoin``), in one line."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{extra}.{where}: {error['msg']}" if where else f"{extra}: {error['msg']}"
