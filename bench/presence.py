#!/usr/bin/env python3
"""How long presence calls take: 10,000 Joins and 10,000 pipe pairings, memory against Redis.

Not part of ``make bench`` (no server, no sockets): the cost of the presence backend alone,
one call at a time (each waits for the previous: the latency a socket sees) and 100 at a time
(what one worker gets from Redis with many sockets busy), on uvloop as the relay runs. Joins go
to 1,000 lobbies of 10 peers, so each Join's answer names up to 9 members.

Usage (from the repository root, Redis on 127.0.0.1:6379; keys under a prefix of their own,
deleted at the end):
  .venv/bin/python bench/presence.py [--url redis://127.0.0.1:6379/0] [--count 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relayproject.settings")

from lobbies.engine.presence import PipeKey, Presence
from lobbies.engine.presence.memory import MemoryPresence
from lobbies.engine.presence.redis import RedisPresence

BATCH = 100


async def _timed(calls: list[Callable[[], Awaitable[object]]], concurrent: bool) -> float:
    started = time.perf_counter()
    if concurrent:
        for start in range(0, len(calls), BATCH):
            await asyncio.gather(*(call() for call in calls[start : start + BATCH]))
    else:
        for call in calls:
            await call()
    return time.perf_counter() - started


async def measure(store: Presence, count: int, concurrent: bool) -> tuple[float, float]:
    """Seconds for ``count`` Joins and for ``count`` pairings (two hold_or_pair calls each)."""
    await store.flush()
    peers = [f"p{n}" for n in range(count)]
    for n, peer in enumerate(peers):
        await store.connect_peer(peer, f"w.{n}", "")

    def join(n: int) -> Callable[[], Awaitable[object]]:
        return lambda: store.join(peers[n], f"w.{n}", (f"doc{n % 1000}",))

    joins = await _timed([join(n) for n in range(count)], concurrent)

    def request(n: int, reciprocal: bool) -> Callable[[], Awaitable[object]]:
        key = PipeKey(f"s{n}", f"t{n}", "doc")
        if reciprocal:
            return lambda: store.hold_or_pair(key.reciprocal(), f"w.b{n}")
        return lambda: store.hold_or_pair(key, f"w.a{n}")

    holds = await _timed([request(n, False) for n in range(count)], concurrent)
    pairs = await _timed([request(n, True) for n in range(count)], concurrent)
    stats = await store.stats()
    assert stats.pipes_open == count, stats
    await store.flush()
    return joins, holds + pairs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    backends: list[tuple[str, Presence]] = [
        ("memory", MemoryPresence()),
        ("redis", RedisPresence(args.url, f"bench:{uuid4().hex}:")),
    ]
    print(f"{args.count} calls each; seconds (calls per second)")
    for name, store in backends:
        for concurrent in (False, True):
            joins, pairings = await measure(store, args.count, concurrent)
            mode = f"{BATCH} at a time" if concurrent else "one at a time"
            print(
                f"{name:7} {mode:15} join {joins:6.3f} s ({args.count / joins:9,.0f}/s)   "
                f"pairing {pairings:6.3f} s ({args.count / pairings:9,.0f}/s)"
            )
        await store.aclose()


if __name__ == "__main__":
    import uvloop  # the relay's own loop under uvicorn

    uvloop.run(main())
