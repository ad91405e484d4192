#!/usr/bin/env python3
"""Transports for frames between workers, measured: the one ``lobbies/engine/workers.py`` uses
and its alternatives, for a pipe whose two ends are on two workers.

One producer process sends 1 KiB messages to one consumer process, in order (each carries its
sequence number; the consumer checks every one), with the credit window of a split pipe
(``RELAY_PIPE_WINDOW_BYTES``, 1 MiB): the consumer returns credit every quarter window through
the same transport the other way, as ``RemoteEnd`` does. Messages per second are counted by the
consumer over a window after a warm-up. Then one message in flight, echoed straight back by the
consumer: the round trip, p50 and p99 (two crossings, like the echo test of ``run.py``).

Transports (``--only`` takes a comma-separated list of these names):
  pubsub-resp2     PUBLISH / SUBSCRIBE, batched by ``workers.Outlet`` itself (every message queued
                   while a PUBLISH is under way goes in the next one, msgpack, at most 256 KiB),
                   read with ``get_message`` as ``workers.Link`` reads: what workers.py does
  pubsub-resp3     the same over RESP3, redis-py 8's default (redis-py issue 4230)
  layer            channels-redis ``RedisChannelLayer.send`` / ``receive``, one message a call
                   (capacity raised above the window: at the default 100 the producer would
                   get ChannelFull)
  layer-batched    the same layer carrying ``Outlet``'s batches
  streams          XADD one message a call / XREAD BLOCK, many at a time
  streams-batched  XADD of ``Outlet``'s batches / XREAD BLOCK

Producer and consumer are pinned to ``--cpus`` (default 0, as ``run.py`` pins its workers);
Redis runs where it runs and its CPU time is read from /proc when it is on this machine. Every
key made here has a prefix of the run's own and is deleted after (the Redis may be shared).

Usage (from the repository root):
  .venv/bin/python bench/transport.py
  .venv/bin/python bench/transport.py --only pubsub-resp2,layer --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redisctl  # bench/redisctl.py (the script's own folder is on sys.path)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SIZE = 1024
WINDOW_BYTES = 1024 * 1024  # RELAY_PIPE_WINDOW_BYTES' default
TRANSPORTS = (
    "pubsub-resp2",
    "pubsub-resp3",
    "layer",
    "layer-batched",
    "streams",
    "streams-batched",
)
# Entries a stream keeps (XADD MAXLEN ~): far more than the window lets wait unread.
STREAM_MAXLEN = 8192


# ---------------------------------------------------------------------------------------------
# One end of a transport: send() queues a message for the other end, in order; receive() returns
# the next messages that arrived (one, or a batch). A message is a list, as workers.py's are.


class End:
    """One end of a link between two processes: ``inbox`` is read here, ``outbox`` written."""

    def __init__(self, url: str, prefix: str, inbox: str, outbox: str) -> None:
        self.url, self.prefix = url, prefix
        self.inbox, self.outbox = prefix + inbox, prefix + outbox

    async def open(self) -> None:
        """Connect and subscribe; returns once messages sent to ``inbox`` would be received."""

    async def send(self, message: list[Any]) -> None:
        raise NotImplementedError

    async def receive(self) -> list[list[Any]]:
        raise NotImplementedError

    async def close(self) -> None:
        """Disconnect."""


def _outlet(channel: str, publish: Callable[[str, bytes], Awaitable[int]]) -> Any:
    """workers.Outlet, unchanged, publishing its batches through ``publish``."""
    from lobbies.engine import workers

    link = SimpleNamespace(token="bench", publisher=SimpleNamespace(publish=publish))
    return workers.Outlet(link, channel)  # type: ignore[arg-type]


def _lost() -> None:
    raise RuntimeError("a batch reached nobody (the consumer is gone)")


class PubSubEnd(End):
    """Redis pub/sub as workers.Link does it: Outlet batches out, get_message in."""

    def __init__(self, *args: Any, protocol: int) -> None:
        super().__init__(*args)
        self.protocol = protocol

    def _client(self) -> Any:
        from lobbies.engine import workers

        client = workers._client(self.url)
        # The same client as the workers', with the protocol under test.
        client.connection_pool.connection_kwargs["protocol"] = self.protocol
        return client

    async def open(self) -> None:
        import msgpack

        self.unpack = msgpack.unpackb
        self.publisher = self._client()
        self.subscriber = self._client()
        self.pubsub = self.subscriber.pubsub()
        await self.pubsub.subscribe(self.inbox)
        self.outlet = _outlet(self.outbox, self.publisher.publish)

    async def send(self, message: list[Any]) -> None:
        self.outlet.put(message, _lost)

    async def receive(self) -> list[list[Any]]:
        while True:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            if message is not None and message["type"] == "message":
                _sender, messages = self.unpack(message["data"])
                return messages

    async def close(self) -> None:
        await self.pubsub.aclose()
        await self.subscriber.aclose()
        await self.publisher.aclose()


class LayerEnd(End):
    """channels-redis' RedisChannelLayer; with ``batched``, each layer message carries an
    Outlet batch."""

    def __init__(self, *args: Any, batched: bool) -> None:
        super().__init__(*args)
        self.batched = batched

    async def open(self) -> None:
        import msgpack
        from channels_redis.core import RedisChannelLayer

        self.pack, self.unpack = msgpack.packb, msgpack.unpackb
        # Channel names may not hold ':' (the layer's own prefix carries the run's prefix).
        self.inbox, self.outbox = self.inbox.split(":")[-1], self.outbox.split(":")[-1]
        self.layer = RedisChannelLayer(
            hosts=[self.url], prefix=self.prefix + "asgi", capacity=4 * WINDOW_BYTES // SIZE
        )
        if self.batched:

            async def publish(channel: str, payload: bytes) -> int:
                await self.layer.send(channel, {"type": "b", "d": payload})
                return 1

            self.outlet = _outlet(self.outbox, publish)

    async def send(self, message: list[Any]) -> None:
        if self.batched:
            self.outlet.put(message, _lost)
        else:
            await self.layer.send(self.outbox, {"type": "m", "m": message})

    async def receive(self) -> list[list[Any]]:
        received = await self.layer.receive(self.inbox)
        if self.batched:
            return self.unpack(received["d"])[1]
        return [received["m"]]

    async def close(self) -> None:
        await self.layer.flush()


class StreamEnd(End):
    """Redis streams: XADD out (each message, or each Outlet batch), XREAD BLOCK in."""

    def __init__(self, *args: Any, batched: bool) -> None:
        super().__init__(*args)
        self.batched = batched

    async def open(self) -> None:
        import msgpack
        from redis.asyncio import Redis

        self.pack, self.unpack = msgpack.packb, msgpack.unpackb
        self.writer = Redis.from_url(self.url, protocol=2)
        self.reader = Redis.from_url(self.url, protocol=2)
        # Reading starts after an entry of our own, added now, before the other end can add.
        await self.reader.xadd(self.inbox, {"d": b""}, maxlen=STREAM_MAXLEN, approximate=True)
        self.last = (await self.reader.xrevrange(self.inbox, count=1))[0][0]
        if self.batched:

            async def publish(stream: str, payload: bytes) -> int:
                await self.writer.xadd(stream, {"d": payload}, maxlen=STREAM_MAXLEN)
                return 1

            self.outlet = _outlet(self.outbox, publish)

    async def send(self, message: list[Any]) -> None:
        if self.batched:
            self.outlet.put(message, _lost)
        else:
            await self.writer.xadd(
                self.outbox, {"d": self.pack(message)}, maxlen=STREAM_MAXLEN, approximate=True
            )

    async def receive(self) -> list[list[Any]]:
        while True:
            answer = await self.reader.xread({self.inbox: self.last}, count=1000, block=5000)
            if not answer:
                continue
            messages: list[list[Any]] = []
            for entry_id, fields in answer[0][1]:
                self.last = entry_id
                if self.batched:
                    messages.extend(self.unpack(fields[b"d"])[1])
                else:
                    messages.append(self.unpack(fields[b"d"]))
            return messages

    async def close(self) -> None:
        await self.reader.aclose()
        await self.writer.aclose()


def make_end(name: str, url: str, prefix: str, inbox: str, outbox: str) -> End:
    args = (url, prefix, inbox, outbox)
    if name.startswith("pubsub"):
        return PubSubEnd(*args, protocol=int(name[-1]))
    if name.startswith("layer"):
        return LayerEnd(*args, batched=name.endswith("batched"))
    if name.startswith("streams"):
        return StreamEnd(*args, batched=name.endswith("batched"))
    raise ValueError(name)


# ---------------------------------------------------------------------------------------------
# The two roles. Messages: ["f", seq, payload] a frame; ["c", bytes] credit; ["p", seq, t] a
# ping, echoed back as ["q", seq, t]; ["e", seq] the producer's last frame was seq - 1; ["x"]
# the end.


def emit(**event: Any) -> None:
    print(json.dumps(event), flush=True)


async def consumer(end: End, warmup_s: float, duration_s: float) -> dict[str, Any]:
    """Counts and checks the frames, returns credit, echoes the pings."""
    await end.open()
    emit(event="ready")
    expected = 0
    sent = None
    errors = 0
    credit = 0
    first = window_start = window_end = None
    counted = 0
    result: dict[str, Any] = {}
    while True:
        for message in await end.receive():
            kind = message[0]
            if kind == "f":
                now = time.monotonic()
                if first is None:
                    first = now
                    window_start, window_end = first + warmup_s, first + warmup_s + duration_s
                    emit(event="first")
                seq, payload = message[1], message[2]
                if seq != expected or len(payload) != SIZE or payload[8:] != PATTERN[8:]:
                    errors += 1
                expected = seq + 1
                if window_start <= now < window_end:
                    if counted == 0:
                        result["t0"], result["cpu0"] = now, time.process_time()
                        emit(event="mark", name="start")
                    counted += 1
                    result["t1"], result["cpu1"] = now, time.process_time()
                elif now >= window_end and "marked_end" not in result:
                    result["marked_end"] = True
                    emit(event="mark", name="end")
                credit += len(payload)
                if credit >= WINDOW_BYTES // 4:
                    await end.send(["c", credit])
                    credit = 0
            elif kind == "p":
                await end.send(["q", message[1], message[2]])
            elif kind == "e":
                if credit:
                    await end.send(["c", credit])
                sent = message[1]
            elif kind == "x":
                elapsed = result.get("t1", 0) - result.get("t0", 0)
                cpu = result.get("cpu1", 0) - result.get("cpu0", 0)
                return {
                    "messages": counted,
                    "elapsed_s": elapsed,
                    "msgs_per_s": counted / elapsed if elapsed > 0 else None,
                    "consumer_cpu_pct": 100 * cpu / elapsed if elapsed > 0 else None,
                    "received": expected,
                    "sent": sent,
                    "out_of_order_or_altered": errors,
                }


async def producer(end: End, warmup_s: float, duration_s: float, pings: int) -> dict[str, Any]:
    """Streams frames within the window, then times one ping at a time."""
    await end.open()
    in_flight = 0
    credit = asyncio.Event()
    echoes: asyncio.Queue[list[Any]] = asyncio.Queue()

    async def listen() -> None:
        nonlocal in_flight
        while True:
            for message in await end.receive():
                if message[0] == "c":
                    in_flight -= message[1]
                    credit.set()
                elif message[0] == "q":
                    echoes.put_nowait(message)

    listener = asyncio.ensure_future(listen())
    seq = 0
    cpu0 = time.process_time()
    t0 = time.monotonic()
    stop = t0 + warmup_s + duration_s + 0.5  # past the consumer's window
    while time.monotonic() < stop:
        await end.send(["f", seq, PATTERN[:4] + seq.to_bytes(4, "little") + PATTERN[8:]])
        seq += 1
        in_flight += SIZE
        while in_flight > WINDOW_BYTES:
            credit.clear()
            await credit.wait()
    producer_cpu_pct = 100 * (time.process_time() - cpu0) / (time.monotonic() - t0)
    await end.send(["e", seq])
    while in_flight > 0:  # everything arrived
        credit.clear()
        await asyncio.wait_for(credit.wait(), 30)
    samples = []
    for n in range(pings + pings // 10):
        sent = time.perf_counter()
        await end.send(["p", n, sent])
        echo = await asyncio.wait_for(echoes.get(), 10)
        if echo[1] != n:
            raise RuntimeError(f"ping {n} came back as {echo[1]}")
        if n >= pings // 10:  # the first tenth warms up
            samples.append((time.perf_counter() - sent) * 1e6)
    samples.sort()
    await end.send(["x"])
    await asyncio.sleep(0.1)  # (a batched end sends from a task of its own)
    listener.cancel()
    return {
        "producer_cpu_pct": producer_cpu_pct,
        "rtt_p50_us": samples[len(samples) // 2],
        "rtt_p99_us": samples[int(len(samples) * 0.99)],
        "pings": len(samples),
    }


PATTERN = bytes((i * 31 + 7) & 0xFF for i in range(SIZE))


def child(args: argparse.Namespace) -> None:
    """A producer or consumer process: prints its events and its result as JSON lines."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relayproject.settings")
    sys.path.insert(0, str(ROOT))
    import django
    import uvloop

    django.setup()
    inbox, outbox = ("to-consumer", "to-producer")
    if args.role == "producer":
        inbox, outbox = outbox, inbox
    end = make_end(args.transport, args.redis_url, args.prefix, inbox, outbox)

    async def main() -> dict[str, Any]:
        try:
            if args.role == "consumer":
                return await consumer(end, args.warmup, args.duration)
            return await producer(end, args.warmup, args.duration, args.pings)
        finally:
            await end.close()

    emit(event="result", **uvloop.run(main()))


# ---------------------------------------------------------------------------------------------
# The harness: one consumer and one producer per transport, a table at the end.


def cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            continue
    return total / 1e9


def measure(name: str, args: argparse.Namespace, redis_pid: int | None) -> dict[str, Any]:
    """One transport: its consumer, then its producer; their results and Redis' CPU."""
    prefix = f"bench:transport:{secrets.token_hex(6)}:"
    base = [
        "taskset",
        "-c",
        args.cpus,
        sys.executable,
        str(Path(__file__).resolve()),
        "--transport",
        name,
        "--prefix",
        prefix,
        "--redis-url",
        args.redis_url,
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
        "--pings",
        str(args.pings),
    ]
    timeout = args.warmup + args.duration + 120
    consumer = subprocess.Popen([*base, "--role", "consumer"], stdout=subprocess.PIPE, text=True)
    producer = None
    try:
        assert consumer.stdout is not None
        if json.loads(consumer.stdout.readline()).get("event") != "ready":
            raise RuntimeError("the consumer did not start")
        producer = subprocess.Popen(
            [*base, "--role", "producer"], stdout=subprocess.PIPE, text=True
        )
        redis_cpu: dict[str, float | None] = {}
        result: dict[str, Any] = {"transport": name}
        for line in consumer.stdout:
            event = json.loads(line)
            if event["event"] == "mark":
                redis_cpu[event["name"]] = cpu_seconds(redis_pid)
            elif event["event"] == "result":
                result.update(event)
        out, _ = producer.communicate(timeout=timeout)
        result.update(json.loads(out.strip().splitlines()[-1]))
        consumer.wait(timeout=10)
        start, end = redis_cpu.get("start"), redis_cpu.get("end")
        if start is not None and end is not None and result.get("elapsed_s"):
            # From the consumer's marks: its window as the harness saw it, close enough.
            result["redis_cpu_pct"] = 100 * (end - start) / result["elapsed_s"]
        result["valid"] = (
            result.get("out_of_order_or_altered") == 0
            and result.get("received") == result.get("sent")
            and bool(result.get("messages"))
        )
        result.pop("event", None)
        return result
    finally:
        for process in (consumer, producer):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        redisctl.delete_prefix(args.redis_url, prefix)


def render(results: list[dict[str, Any]]) -> str:
    """The table: rate, round trip and CPU of each transport."""
    headers = ["transport", "msg/s", "MB/s", "RTT p50 µs", "RTT p99 µs", "CPU prod/cons/Redis %"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["transport"], "failed: " + r["error"][:60], "", "", "", ""])
            continue
        rate = r.get("msgs_per_s") or 0
        cpu = "/".join(
            "-" if r.get(k) is None else f"{r[k]:.0f}"
            for k in ("producer_cpu_pct", "consumer_cpu_pct", "redis_cpu_pct")
        )
        rows.append(
            [
                r["transport"] + ("" if r.get("valid") else " (!)"),
                f"{rate:,.0f}",
                f"{rate * SIZE / 1e6:,.1f}",
                f"{r['rtt_p50_us']:,.0f}",
                f"{r['rtt_p99_us']:,.0f}",
                cpu,
            ]
        )
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in pairs)

    lines = [line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
    lines.append("(!): a message lost, reordered or altered")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", help="comma-separated transports (default: all)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before counting (1)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds counted (3)")
    p.add_argument("--pings", type=int, default=2000, help="round trips timed (2000)")
    p.add_argument("--cpus", default="0", help="taskset CPU list of both processes (0)")
    p.add_argument(
        "--out", type=Path, help="JSON path (default bench/results/<time>-transport.json)"
    )
    # A child process's own options.
    p.add_argument("--role", choices=("producer", "consumer"), help=argparse.SUPPRESS)
    p.add_argument("--transport", choices=TRANSPORTS, help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role:
        child(args)
        return 0
    names = args.only.split(",") if args.only else list(TRANSPORTS)
    unknown = set(names) - set(TRANSPORTS)
    if unknown:
        raise SystemExit(f"unknown transports: {', '.join(sorted(unknown))}")
    redis_pid = redisctl.server_pid(args.redis_url)
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results = []
    for name in names:
        try:
            result = measure(name, args, redis_pid)
        except Exception as exc:  # one transport failing leaves the others' figures
            result = {"transport": name, "error": f"{type(exc).__name__}: {exc}", "valid": False}
        print(f"{name}: {json.dumps(result)}", file=sys.stderr, flush=True)
        results.append(result)
    table = render(results)
    out = args.out or BENCH / "results" / f"{started}-transport.json"
    report = {
        "schema": "relay-bench-transport/1",
        "started_at": started,
        "config": {
            "size": SIZE,
            "window_bytes": WINDOW_BYTES,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "pings": args.pings,
            "cpus": args.cpus,
            "redis": redisctl.server_info(args.redis_url),
        },
        "table": table.splitlines(),
        "results": results,
    }
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(table)
    print(f"\nresults: {out}")
    return 0 if all(r.get("valid") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
