"""In-process presence: the embedded default, for a relay served by one process.

Plain dicts and sets; no method awaits, so each call is atomic under asyncio.
"""

from __future__ import annotations

from .base import PipeKey, PipeKeyTaken, Presence, Stats


class MemoryPresence(Presence):
    """Presence in this process's memory."""

    def __init__(self) -> None:
        self.peer_connection: dict[str, str] = {}
        self.peer_documents: dict[str, set[str]] = {}
        self.document_peers: dict[str, set[str]] = {}
        self.held: dict[PipeKey, str] = {}
        self.pipes_open = 0

    def _forget_documents(self, peer_id: str) -> None:
        for document_id in self.peer_documents.pop(peer_id, ()):
            members = self.document_peers[document_id]
            members.discard(peer_id)
            if not members:
                del self.document_peers[document_id]

    async def connect_peer(self, peer_id: str, connection: str) -> str | None:
        previous = self.peer_connection.get(peer_id)
        self._forget_documents(peer_id)
        self.peer_connection[peer_id] = connection
        return previous

    async def disconnect_peer(self, peer_id: str, connection: str) -> None:
        if self.peer_connection.get(peer_id) == connection:
            del self.peer_connection[peer_id]
            self._forget_documents(peer_id)

    async def join(
        self, peer_id: str, connection: str, document_ids: tuple[str, ...]
    ) -> dict[str, list[str]]:
        if self.peer_connection.get(peer_id) != connection:
            return {}
        mine = self.peer_documents.setdefault(peer_id, set())
        others: dict[str, list[str]] = {}
        for document_id in document_ids:
            members = self.document_peers.setdefault(document_id, set())
            others[document_id] = [p for p in members if p != peer_id]
            members.add(peer_id)
            mine.add(document_id)
        return others

    async def leave(self, peer_id: str, connection: str, document_ids: tuple[str, ...]) -> None:
        if self.peer_connection.get(peer_id) != connection:
            return
        mine = self.peer_documents.get(peer_id, set())
        for document_id in document_ids:
            if document_id in mine:
                mine.discard(document_id)
                members = self.document_peers[document_id]
                members.discard(peer_id)
                if not members:
                    del self.document_peers[document_id]

    async def connections(self, peer_ids: list[str]) -> dict[str, str]:
        online = self.peer_connection
        return {p: online[p] for p in peer_ids if p in online}

    async def hold_or_pair(self, key: PipeKey, connection: str) -> str | None:
        partner = self.held.pop(key.reciprocal(), None)
        if partner is not None:
            self.pipes_open += 1
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

    async def pipe_closed(self) -> None:
        self.pipes_open = max(0, self.pipes_open - 1)

    async def stats(self) -> Stats:
        return Stats(len(self.peer_connection), len(self.document_peers), self.pipes_open)

    async def flush(self) -> None:
        self.__init__()
