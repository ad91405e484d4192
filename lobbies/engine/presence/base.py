"""The presence store's interface: who is online, in which lobbies, which pipe requests are held.

Presence is ephemeral state (never written to the database, never touched by a pipe frame). One
small async interface with interchangeable backends, chosen by the ``RELAY_PRESENCE_BACKEND``
setting: ``memory`` (one process) now, Redis (many workers) later. A backend stores strings only:
peer ids, document ids and *connection ids*, which name a live socket (see
``lobbies.engine.connections``) and tell which worker holds it.

Every method is atomic with respect to the others: two workers racing to pair the same pipe get
exactly one winner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from lobbies.policy import user_of


class PipeKey(NamedTuple):
    """A pipe request: ``seeker`` asks to be piped to ``target`` about ``document_id``."""

    seeker: str
    target: str
    document_id: str

    def reciprocal(self) -> PipeKey:
        """The request that completes this one."""
        return PipeKey(self.target, self.seeker, self.document_id)


@dataclass(frozen=True, slots=True)
class PipeFacts:
    """What a pipe request is judged by (``lobbies.policy.may_pipe``)."""

    seeker_account: str | None  # who holds the seeker's peer id; None: it is not online
    introduced: bool


@dataclass(frozen=True, slots=True)
class Member:
    """A peer in a lobby, as the operators' live view shows it."""

    peer_id: str
    account: str  # who holds its peer id (``lobbies.policy.Identity.account``): "" if anonymous
    nickname: str | None
    since: float  # when it joined the lobby (``time.time()``)
    host: bool

    @property
    def user_id(self) -> int | None:
        """The signed-in user holding this peer id, or None for an anonymous peer."""
        return user_of(self.account)


@dataclass(frozen=True, slots=True)
class OpenPipe:
    """A pipe paired in a lobby: its two peers (in sorted order) and since when."""

    peers: tuple[str, str]
    since: float  # ``time.time()``


@dataclass(frozen=True, slots=True)
class Stats:
    """Live counts for the landing page and the admin."""

    peers_online: int
    lobbies_active: int
    pipes_open: int


class PeerIdTaken(Exception):
    """The peer id is online under another user's identity; the newcomer is refused (4403)."""


class PipeKeyTaken(Exception):
    """Another connection already holds this pipe request; the newcomer is refused (4409), so
    nobody can take over a pipe that is waiting for its match."""


class Presence(ABC):
    """Ephemeral relay state behind one async interface."""

    @abstractmethod
    async def connect_peer(self, peer_id: str, connection: str, account: str) -> str | None:
        """Make ``connection`` the peer's control socket, held by ``account`` (an identity's
        :attr:`~lobbies.policy.Identity.account`), forgetting the ids of any previous one.

        Returns the connection id it replaced (which the caller closes), or ``None``. Raises
        :class:`PeerIdTaken` when :func:`lobbies.policy.may_take_peer_id` says the account
        holding it keeps the id.
        """

    @abstractmethod
    async def disconnect_peer(self, peer_id: str, connection: str) -> None:
        """Forget the peer and its ids, unless ``connection`` has since been replaced."""

    @abstractmethod
    async def join(
        self,
        peer_id: str,
        connection: str,
        document_ids: tuple[str, ...],
        nickname: str | None = None,
        capacities: Mapping[str, int] | None = None,
    ) -> dict[str, list[str]]:
        """Add the ids to the peer's interests and return the *other* members of each. A
        ``nickname`` (the Join's display name) replaces the one the peer had.

        An id given a capacity in ``capacities`` is joined only if the peer is in it already or
        it has room: fewer than that many other members and seats held for others
        (:meth:`reserve`). Decided in the same step as the join, so that peers racing for the
        last place, on any worker, never take the lobby past it. An id not joined for want of
        room is left out of the answer. Joining an id uses up the peer's own seat there.

        Does nothing (returns ``{}``) when ``connection`` is no longer the peer's control socket.
        """

    @abstractmethod
    async def leave(self, peer_id: str, connection: str, document_ids: tuple[str, ...]) -> None:
        """Remove the ids from the peer's interests."""

    @abstractmethod
    async def connections(self, peer_ids: list[str]) -> dict[str, str]:
        """The control-socket connection id of each of these peers that is online."""

    @abstractmethod
    async def pipe_facts(self, key: PipeKey) -> PipeFacts:
        """Who holds the seeker's peer id, and whether the two peers of ``key`` were introduced
        on its document: both are in it now, and its topology lets them meet."""

    @abstractmethod
    async def claim_host(self, document_id: str, peer_id: str | None) -> str | None:
        """Mark ``document_id`` as a host lobby and, if it has no host, make ``peer_id`` (when
        given: a peer that may host) its host. Returns the host, or None while it has none."""

    @abstractmethod
    async def hosts(self, document_ids: list[str]) -> dict[str, str | None]:
        """The host of each of these ids that is a host lobby (None: its host is not here)."""

    @abstractmethod
    async def drop_host(self, document_id: str, peer_id: str, successor: bool) -> str | None:
        """``peer_id`` (the host) is leaving ``document_id``: with ``successor``, the member
        present longest becomes host and is returned; else the id has no host."""

    @abstractmethod
    async def members(self, document_id: str) -> list[str]:
        """The peers in ``document_id``, the one present longest first."""

    @abstractmethod
    async def roster(self, document_id: str) -> list[Member]:
        """The peers in ``document_id`` with who they are and since when, longest present
        first (the operators' live view)."""

    @abstractmethod
    async def pipes(self, document_id: str) -> list[OpenPipe]:
        """The pipes open in ``document_id``, oldest first."""

    @abstractmethod
    async def counts(self, document_ids: list[str]) -> dict[str, int]:
        """How many peers are in each of these ids now (0 for an empty one)."""

    @abstractmethod
    async def peers_of(self, account: str) -> dict[str, str]:
        """The peer ids online under ``account`` (a user's key; never ``""``), each with its
        control socket's connection id: where to reach a user who is banned."""

    @abstractmethod
    async def hold_or_pair(self, key: PipeKey, connection: str) -> str | None:
        """Atomically: if the reciprocal of ``key`` is held, take it and return its connection
        (the two are now paired); otherwise hold ``connection`` under ``key`` and return None.

        Raises :class:`PipeKeyTaken` when ``key`` itself is already held (by another
        connection): the first request keeps its place.
        """

    @abstractmethod
    async def release(self, key: PipeKey, connection: str) -> None:
        """Stop holding ``key`` if it is still held by ``connection``."""

    @abstractmethod
    async def pipe_closed(self, key: PipeKey) -> None:
        """Count the pipe of ``key`` (either end's; paired by :meth:`hold_or_pair`) as
        closed."""

    # -- quick join (``lobbies.matchmaking``) ----------------------------------------------------

    @abstractmethod
    async def reserve(self, document_id: str, peer_id: str, capacity: int, ttl: float) -> bool:
        """Hold a seat in ``document_id`` for ``peer_id`` for ``ttl`` seconds, if the lobby has
        room for it: fewer than ``capacity`` members and seats held for others. True also when
        the peer is in it already or holds a seat (which then lasts ``ttl`` from now). A seat
        counts against the capacity until the peer joins or it expires."""

    @abstractmethod
    async def unreserve(self, document_id: str, peer_id: str) -> None:
        """Give back ``peer_id``'s seat in ``document_id`` (it will not join after all)."""

    @abstractmethod
    async def lease(self, name: str, ttl: float) -> str | None:
        """Take the lease ``name`` for ``ttl`` seconds (at most), unless someone holds it:
        returns the token that gives it back (:meth:`unlease`), or None when it is taken."""

    @abstractmethod
    async def unlease(self, name: str, token: str) -> None:
        """Give back the lease ``name`` taken with ``token`` (nothing if it expired and
        someone else took it since)."""

    @abstractmethod
    async def stats(self) -> Stats:
        """Live counts: peers online, lobbies with at least one peer, pipes open."""

    @abstractmethod
    async def flush(self) -> None:
        """Forget everything (tests, and a restart of a single-process relay)."""

    # -- workers (``lobbies.engine.workers``) ----------------------------------------------------
    # A connection id names its worker (``lobbies.engine.connections.worker_of``). A backend
    # shared by several workers forgets a worker that stopped announcing itself, with
    # everything it held; until it does, every read already treats that worker's records as
    # absent, so nobody is introduced to, or paired with, a ghost. One process alone (memory)
    # has nothing to forget.

    async def announce(self, worker: str, ttl: float) -> bool:
        """``worker`` is alive for ``ttl`` more seconds. False when the store no longer knew a
        worker that had announced itself before (it was forgotten, or the store lost its data:
        a Redis restart): its sockets are not in presence any more."""
        return True

    async def reap(self) -> list[str]:
        """Forget every worker whose announcement expired, with its peers, memberships, held
        pipe requests and pipes; returns those workers."""
        return []

    async def gone(self, workers: list[str]) -> list[str]:
        """Those of ``workers`` that are no longer alive: expired, or forgotten already (reaped
        or withdrawn by any worker, which only that one hears from :meth:`reap`)."""
        return []

    async def withdraw(self, worker: str) -> None:
        """Forget ``worker`` and everything it held now (it is shutting down)."""
        return None

    async def aclose(self) -> None:
        """Release the backend's connections (the event loop is ending)."""
        return None
