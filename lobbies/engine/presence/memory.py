"""In-process presence: the embedded default, for a relay served by one process.

Plain dicts; no method awaits, so each call is atomic under asyncio. A lobby's members are kept
in a dict (insertion-ordered, each with the time it joined), so the member present longest comes
first.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping

from lobbies.engine import discovery
from lobbies.policy import may_take_peer_id

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


class MemoryPresence(Presence):
    """Presence in this process's memory."""

    def __init__(self) -> None:
        self.peer_connection: dict[str, str] = {}
        self.peer_account: dict[str, str] = {}
        self.peer_nickname: dict[str, str] = {}
        # A tuple, not a set: most peers are in one lobby or a few, and a set costs 216 bytes
        # however few it holds (a one-id tuple, 48).
        self.peer_documents: dict[str, tuple[str, ...]] = {}
        self.document_peers: dict[str, dict[str, float]] = {}
        # Host lobbies with members present: their host, or None while it is away.
        self.document_host: dict[str, str | None] = {}
        self.held: dict[PipeKey, str] = {}
        self.document_pipes: dict[str, list[OpenPipe]] = {}
        self.pipes_open = 0
        # Quick join's seats (peer id -> when it expires, monotonic) and leases (name ->
        # token, expiry). Expired ones go when next looked at, and all of them every so often.
        self.seats: dict[str, dict[str, float]] = {}
        self.leases: dict[str, tuple[str, float]] = {}
        self.swept_at = time.monotonic()

    def _remove(self, peer_id: str, document_id: str) -> None:
        members = self.document_peers.get(document_id)
        if members is None:
            return
        members.pop(peer_id, None)
        if self.document_host.get(document_id) == peer_id:
            self.document_host[document_id] = None
        if not members:
            del self.document_peers[document_id]
            self.document_host.pop(document_id, None)

    def _forget_documents(self, peer_id: str) -> None:
        for document_id in self.peer_documents.pop(peer_id, ()):
            self._remove(peer_id, document_id)

    async def connect_peer(self, peer_id: str, connection: str, account: str) -> str | None:
        if not may_take_peer_id(account, self.peer_account.get(peer_id)):
            raise PeerIdTaken(peer_id)
        previous = self.peer_connection.get(peer_id)
        self._forget_documents(peer_id)
        self.peer_nickname.pop(peer_id, None)
        self.peer_connection[peer_id] = connection
        self.peer_account[peer_id] = account
        return previous

    async def disconnect_peer(self, peer_id: str, connection: str) -> None:
        if self.peer_connection.get(peer_id) == connection:
            del self.peer_connection[peer_id]
            del self.peer_account[peer_id]
            self.peer_nickname.pop(peer_id, None)
            self._forget_documents(peer_id)

    async def join(
        self,
        peer_id: str,
        connection: str,
        document_ids: tuple[str, ...],
        nickname: str | None = None,
        capacities: Mapping[str, int] | None = None,
    ) -> dict[str, list[str]]:
        if self.peer_connection.get(peer_id) != connection:
            return {}
        if nickname is not None:
            self.peer_nickname[peer_id] = nickname
        added: list[str] = []
        others: dict[str, list[str]] = {}
        now = time.time()
        for document_id in document_ids:
            capacity = capacities.get(document_id) if capacities else None
            if capacity is not None and self._taken(document_id, peer_id) >= capacity:
                continue
            members = self.document_peers.setdefault(document_id, {})
            others[document_id] = [p for p in members if p != peer_id]
            if peer_id not in members:  # (a peer is in a lobby's members iff it is in its ids)
                members[peer_id] = now
                added.append(document_id)
            if capacity is not None:
                self._drop_seat(document_id, peer_id)  # used up
        if added:
            self.peer_documents[peer_id] = (*self.peer_documents.get(peer_id, ()), *added)
        return others

    def _taken(self, document_id: str, peer_id: str) -> int:
        """Places in ``document_id`` that others take: members and live seats (0 when
        ``peer_id`` is a member: it takes none)."""
        members = self.document_peers.get(document_id, {})
        if peer_id in members:
            return 0
        now = time.monotonic()
        seats = self.seats.get(document_id, {})
        for expired in [p for p, until in seats.items() if until <= now]:
            del seats[expired]
        held = sum(1 for p in seats if p != peer_id and p not in members)
        return len(members) + held

    async def reserve(self, document_id: str, peer_id: str, capacity: int, ttl: float) -> bool:
        self._sweep(ttl)
        if peer_id in self.document_peers.get(document_id, {}):
            return True
        seats = self.seats.get(document_id, {})
        if peer_id not in seats and self._taken(document_id, peer_id) >= capacity:
            return False
        self.seats.setdefault(document_id, {})[peer_id] = time.monotonic() + ttl
        return True

    async def unreserve(self, document_id: str, peer_id: str) -> None:
        self._drop_seat(document_id, peer_id)

    def _drop_seat(self, document_id: str, peer_id: str) -> None:
        seats = self.seats.get(document_id)
        if seats is not None and seats.pop(peer_id, None) is not None and not seats:
            del self.seats[document_id]

    def _sweep(self, ttl: float) -> None:
        # Seats of lobbies nobody asks about again would stay: once per TTL, drop every
        # expired seat and lease (the work is bounded by what was reserved in that time).
        now = time.monotonic()
        if now - self.swept_at < ttl:
            return
        self.swept_at = now
        for document_id in list(self.seats):
            seats = self.seats[document_id]
            for peer in [p for p, until in seats.items() if until <= now]:
                del seats[peer]
            if not seats:
                del self.seats[document_id]
        for name in [n for n, (_, until) in self.leases.items() if until <= now]:
            del self.leases[name]

    async def lease(self, name: str, ttl: float) -> str | None:
        held = self.leases.get(name)
        now = time.monotonic()
        if held is not None and held[1] > now:
            return None
        token = secrets.token_hex(8)
        self.leases[name] = (token, now + ttl)
        return token

    async def unlease(self, name: str, token: str) -> None:
        held = self.leases.get(name)
        if held is not None and held[0] == token:
            del self.leases[name]

    async def leave(self, peer_id: str, connection: str, document_ids: tuple[str, ...]) -> None:
        if self.peer_connection.get(peer_id) != connection:
            return
        gone = {d for d in document_ids if peer_id in self.document_peers.get(d, ())}
        if not gone:
            return
        self.peer_documents[peer_id] = tuple(
            d for d in self.peer_documents.get(peer_id, ()) if d not in gone
        )
        for document_id in gone:
            self._remove(peer_id, document_id)

    async def connections(self, peer_ids: list[str]) -> dict[str, str]:
        online = self.peer_connection
        return {p: online[p] for p in peer_ids if p in online}

    async def pipe_facts(self, key: PipeKey) -> PipeFacts:
        members = self.document_peers.get(key.document_id, {})
        both_in = key.seeker in members and key.target in members
        star = key.document_id in self.document_host
        host = self.document_host.get(key.document_id)
        introduced = both_in and discovery.meets(key.seeker, key.target, star, host)
        return PipeFacts(self.peer_account.get(key.seeker), introduced)

    async def claim_host(self, document_id: str, peer_id: str | None) -> str | None:
        host = self.document_host.get(document_id)
        if host is None and peer_id in self.document_peers.get(document_id, {}):
            host = peer_id
        if document_id in self.document_peers:
            self.document_host[document_id] = host
        return host

    async def hosts(self, document_ids: list[str]) -> dict[str, str | None]:
        found = self.document_host
        return {d: found[d] for d in document_ids if d in found}

    async def drop_host(self, document_id: str, peer_id: str, successor: bool) -> str | None:
        if self.document_host.get(document_id) != peer_id:
            return self.document_host.get(document_id)
        members = self.document_peers.get(document_id, {})
        heir = next((p for p in members if p != peer_id), None) if successor else None
        self.document_host[document_id] = heir
        return heir

    async def members(self, document_id: str) -> list[str]:
        return list(self.document_peers.get(document_id, ()))

    async def roster(self, document_id: str) -> list[Member]:
        host = self.document_host.get(document_id)
        return [
            Member(
                peer_id,
                self.peer_account.get(peer_id, ""),
                self.peer_nickname.get(peer_id),
                since,
                peer_id == host,
            )
            for peer_id, since in self.document_peers.get(document_id, {}).items()
        ]

    async def pipes(self, document_id: str) -> list[OpenPipe]:
        return list(self.document_pipes.get(document_id, ()))

    async def counts(self, document_ids: list[str]) -> dict[str, int]:
        found = self.document_peers
        return {d: len(found.get(d, ())) for d in document_ids}

    async def peers_of(self, account: str) -> dict[str, str]:
        return {
            peer_id: self.peer_connection[peer_id]
            for peer_id, held in self.peer_account.items()
            if held == account and account
        }

    async def hold_or_pair(self, key: PipeKey, connection: str) -> str | None:
        partner = self.held.pop(key.reciprocal(), None)
        if partner is not None:
            self.pipes_open += 1
            pipe = OpenPipe(_pair(key), time.time())
            self.document_pipes.setdefault(key.document_id, []).append(pipe)
            return partner
        # The LF relay lets a repeated request replace the held one, so anyone could take over
        # a pipe waiting for its match; here the first keeps its place.
        if key in self.held:
            raise PipeKeyTaken(key)
        self.held[key] = connection
        return None

    async def release(self, key: PipeKey, connection: str) -> None:
        if self.held.get(key) == connection:
            del self.held[key]

    async def pipe_closed(self, key: PipeKey) -> None:
        self.pipes_open = max(0, self.pipes_open - 1)
        pipes = self.document_pipes.get(key.document_id, [])
        peers = _pair(key)
        for index, pipe in enumerate(pipes):
            if pipe.peers == peers:
                del pipes[index]
                break
        if not pipes:
            self.document_pipes.pop(key.document_id, None)

    async def stats(self) -> Stats:
        return Stats(len(self.peer_connection), len(self.document_peers), self.pipes_open)

    async def flush(self) -> None:
        self.__init__()


def _pair(key: PipeKey) -> tuple[str, str]:
    first, second = sorted((key.seeker, key.target))
    return first, second
