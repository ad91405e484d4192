"""Presence in Redis: the backend of a relay served by many workers (``RELAY_REDIS_URL``).

All workers share one Redis (5 or newer: scripts read its clock before they write), with keys
under ``RELAY_REDIS_PREFIX`` + ``presence:``. Each method is one round trip: a Lua script
(``redis_scripts``, which also describes the keys) for anything that writes or must read one
consistent state, so the races of the interface (reciprocal pipe requests on two workers, two
sockets claiming one peer id) have exactly one outcome.

Workers: a connection id names its worker (``lobbies.engine.connections.worker_of``). A worker
announces itself (:meth:`RedisPresence.announce`) at least three times per ``RELAY_WORKER_TTL``;
once its announcement has expired, every read treats its peers, held requests and pipes as
absent, and :meth:`RedisPresence.reap` (any worker may run it) removes them. A connection id
whose worker never announced counts as alive, so the shared test suite can use bare ids; real
workers announce before they accept a socket.

A redis.asyncio client is bound to the event loop that made it, and one backend serves every
loop of the process (the server's, and those of ``async_to_sync`` in admin views): there is one
client per running loop, made when first needed and dropped once its loop has closed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from lobbies import metrics
from lobbies.engine import discovery

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
from .redis_scripts import SCRIPTS

# A Redis that does not answer makes a socket's open or Join fail within seconds, not hang.
CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0
# Connections per event loop: Redis serves one command at a time, so more would only queue there.
MAX_CONNECTIONS = 50
_FLUSH_BATCH = 1000


@dataclass(slots=True)
class _Client:
    """One event loop's connection pool and the scripts bound to it."""

    redis: aioredis.Redis
    scripts: dict[str, AsyncScript]


class RedisPresence(Presence):
    """Presence shared by every worker through one Redis."""

    def __init__(self, url: str | None = None, prefix: str | None = None) -> None:
        if url is None or prefix is None:
            from lobbies.conf import relay_settings

            settings = relay_settings()
            url = settings.redis_url if url is None else url
            prefix = settings.redis_prefix if prefix is None else prefix
        if not url:
            raise ValueError("RedisPresence needs a Redis URL: set RELAY_REDIS_URL")
        self.url = url
        self.prefix = prefix
        # Presence's own part of the prefix: the channel layer and the rate limits keep theirs
        # beside it, and flush() never touches them.
        self.keys = f"{prefix}presence:"
        self._clients: dict[asyncio.AbstractEventLoop, _Client] = {}
        # Workers this instance announced: the store forgetting one of them means its sockets
        # are no longer in presence (``announce`` returns False).
        self._announced: set[str] = set()

    # -- the client of this loop -----------------------------------------------------------

    def _client(self) -> _Client:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # A loop that has closed (a finished async_to_sync call, a test's loop) can never
            # use its client again: drop it here rather than keep it for the process's life.
            # (list() first: another thread's loop may add its client meanwhile.)
            for other in list(self._clients):
                if other.is_closed():
                    self._clients.pop(other, None)
            # A blocking pool: with more calls in flight than connections, a call waits for a
            # free one (up to COMMAND_TIMEOUT) instead of failing with "Too many connections".
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=MAX_CONNECTIONS,
                timeout=COMMAND_TIMEOUT,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=COMMAND_TIMEOUT,
            )
            shared = aioredis.Redis.from_pool(pool)
            scripts = {name: shared.register_script(text) for name, text in SCRIPTS.items()}
            client = self._clients[loop] = _Client(shared, scripts)
        return client

    async def _run(self, script: str, *args: str) -> Any:
        """Run one script with the key prefix and ``args``: one round trip (after the first
        call, which loads the script into a Redis that does not know it yet)."""
        started = time.perf_counter()  # (per call, never per frame: lobbies.metrics)
        try:
            return await self._client().scripts[script](args=(self.keys, *args))
        finally:
            metrics.presence_call(script, time.perf_counter() - started)

    async def aclose(self) -> None:
        """Close this loop's connections to Redis."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.redis.aclose()

    # -- peers and lobbies -------------------------------------------------------------------

    async def connect_peer(self, peer_id: str, connection: str, account: str) -> str | None:
        outcome = await self._run("connect_peer", peer_id, connection, account)
        if outcome[0] == "taken":
            raise PeerIdTaken(peer_id)
        return outcome[1] or None

    async def disconnect_peer(self, peer_id: str, connection: str) -> None:
        await self._run("disconnect_peer", peer_id, connection)

    async def join(
        self,
        peer_id: str,
        connection: str,
        document_ids: tuple[str, ...],
        nickname: str | None = None,
        capacities: Mapping[str, int] | None = None,
    ) -> dict[str, list[str]]:
        has_nickname = "0" if nickname is None else "1"
        capacities = capacities or {}
        pairs = [
            value
            for document_id in document_ids
            for value in (document_id, str(capacities.get(document_id, "")))
        ]
        others = await self._run("join", peer_id, connection, has_nickname, nickname or "", *pairs)
        if others is None:
            return {}
        # (0 stands for an id without room: not joined.)
        return {
            document_id: found
            for document_id, found in zip(document_ids, others, strict=True)
            if found != 0
        }

    async def leave(self, peer_id: str, connection: str, document_ids: tuple[str, ...]) -> None:
        if document_ids:
            await self._run("leave", peer_id, connection, *document_ids)

    async def connections(self, peer_ids: list[str]) -> dict[str, str]:
        if not peer_ids:
            return {}
        return _pairs(await self._run("connections", *peer_ids))

    async def pipe_facts(self, key: PipeKey) -> PipeFacts:
        account, both_in, host = await self._run("pipe_facts", *key)
        star = host is not None
        introduced = bool(both_in) and discovery.meets(key.seeker, key.target, star, host or None)
        return PipeFacts(account, introduced)

    async def claim_host(self, document_id: str, peer_id: str | None) -> str | None:
        return await self._run("claim_host", document_id, peer_id or "")

    async def hosts(self, document_ids: list[str]) -> dict[str, str | None]:
        if not document_ids:
            return {}
        found = _pairs(await self._run("hosts", *document_ids))
        return {document_id: host or None for document_id, host in found.items()}

    async def drop_host(self, document_id: str, peer_id: str, successor: bool) -> str | None:
        return await self._run("drop_host", document_id, peer_id, "1" if successor else "0")

    async def members(self, document_id: str) -> list[str]:
        return await self._run("members", document_id)

    async def roster(self, document_id: str) -> list[Member]:
        host, *found = await self._run("roster", document_id)
        return [
            Member(peer_id, account, nickname, float(since) / 1e6, peer_id == host)
            for peer_id, account, nickname, since in _rows(found, 4)
        ]

    async def pipes(self, document_id: str) -> list[OpenPipe]:
        found = await self._run("pipes", document_id)
        return [
            OpenPipe((first, second), float(since) / 1e6)
            for first, second, since in _rows(found, 3)
        ]

    async def counts(self, document_ids: list[str]) -> dict[str, int]:
        # Sizes of the member sets: a worker that stopped announcing still counts here until
        # it is reaped (at most RELAY_WORKER_TTL and a reaper's period), unlike the reads that
        # decide who meets whom.
        if not document_ids:
            return {}
        async with self._client().redis.pipeline(transaction=False) as pipe:
            for document_id in document_ids:
                pipe.zcard(f"{self.keys}members:{document_id}")
            found = await pipe.execute()
        return dict(zip(document_ids, found, strict=True))

    async def peers_of(self, account: str) -> dict[str, str]:
        return _pairs(await self._run("peers_of", account))

    # -- pipes -----------------------------------------------------------------------------

    async def hold_or_pair(self, key: PipeKey, connection: str) -> str | None:
        first, second = _pair(key)
        outcome = await self._run(
            "hold_or_pair",
            held_field(key),
            held_field(key.reciprocal()),
            connection,
            key.document_id,
            first,
            second,
        )
        if outcome[0] == "taken":
            raise PipeKeyTaken(key)
        return outcome[1] if outcome[0] == "paired" else None

    async def release(self, key: PipeKey, connection: str) -> None:
        await self._run("release", held_field(key), connection)

    async def pipe_closed(self, key: PipeKey) -> None:
        await self._run("pipe_closed", key.document_id, *_pair(key))

    # -- quick join ------------------------------------------------------------------------

    async def reserve(self, document_id: str, peer_id: str, capacity: int, ttl: float) -> bool:
        milliseconds = str(max(1, round(ttl * 1000)))
        return bool(await self._run("reserve", document_id, peer_id, str(capacity), milliseconds))

    async def unreserve(self, document_id: str, peer_id: str) -> None:
        await self._client().redis.zrem(f"{self.keys}seats:{document_id}", peer_id)

    async def lease(self, name: str, ttl: float) -> str | None:
        token = secrets.token_hex(8)
        key = f"{self.keys}lease:{name}"
        taken = await self._client().redis.set(key, token, nx=True, px=max(1, round(ttl * 1000)))
        return token if taken else None

    async def unlease(self, name: str, token: str) -> None:
        await self._run("unlease", name, token)

    async def stats(self) -> Stats:
        peers_online, lobbies_active, pipes_open = await self._run("stats")
        return Stats(peers_online, lobbies_active, pipes_open)

    async def flush(self) -> None:
        """Delete every presence key under this backend's prefix, and nothing else: the
        channel layer, other relays and tests may share the Redis (never FLUSHDB)."""
        client = self._client().redis
        pattern = _glob_escape(self.keys) + "*"
        batch: list[str] = []
        async for name in client.scan_iter(match=pattern, count=_FLUSH_BATCH):
            batch.append(name)
            if len(batch) >= _FLUSH_BATCH:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
        self._announced.clear()

    # -- workers -----------------------------------------------------------------------------

    async def announce(self, worker: str, ttl: float) -> bool:
        known = await self._run("announce", worker, repr(float(ttl)))
        announced_before = worker in self._announced
        self._announced.add(worker)
        return bool(known) or not announced_before

    async def reap(self) -> list[str]:
        return await self._run("reap")

    async def gone(self, workers: list[str]) -> list[str]:
        if not workers:
            return []
        return await self._run("gone", *workers)

    async def withdraw(self, worker: str) -> None:
        await self._run("withdraw", worker)
        self._announced.discard(worker)


def held_field(key: PipeKey) -> str:
    """The field naming a held pipe request in ``P held``: JSON, so no id can be mistaken for
    a separator."""
    return json.dumps(list(key), separators=(",", ":"))


def _pair(key: PipeKey) -> tuple[str, str]:
    # Sorted here rather than in Lua, whose string order depends on the locale.
    first, second = sorted((key.seeker, key.target))
    return first, second


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _rows(flat: list[Any], width: int) -> list[tuple[Any, ...]]:
    return [tuple(flat[i : i + width]) for i in range(0, len(flat), width)]


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
