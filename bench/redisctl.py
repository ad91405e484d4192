"""The little the benchmark asks of Redis, over a plain socket (standard library only): which
process serves it (to read its CPU time from /proc) and deleting one run's keys.

The scale-out part of ``run.py`` starts Redis-backed workers under a key prefix of its own, on
a Redis that other programs may share; it deletes the keys under that prefix, and only those
(never FLUSHDB).
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import unquote, urlsplit

# SCAN's COUNT hint and how many keys one DEL takes.
BATCH = 500


class RedisError(RuntimeError):
    """Redis answered with an error, or could not be reached."""


class RedisConnection:
    """One connection to the Redis of a ``redis://`` URL (host, port, password, database)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise RedisError(f"only redis:// URLs are supported, not {url!r}")
        try:
            self.sock = socket.create_connection(
                (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout
            )
        except OSError as exc:
            raise RedisError(f"Redis at {parts.netloc} does not answer: {exc}") from exc
        self.reader = self.sock.makefile("rb")
        if parts.password:
            user = [unquote(parts.username)] if parts.username else []
            self.command("AUTH", *user, unquote(parts.password))
        database = parts.path.strip("/")
        if database:
            self.command("SELECT", database)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def __enter__(self) -> RedisConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, *args: str | bytes) -> Any:
        """Send one command and return its reply (bytes, int, list, or None)."""
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self) -> Any:
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise RedisError(f"unexpected reply {line!r}")


def server_info(url: str) -> dict[str, str]:
    """A few facts of INFO's server section: the version, the mode, the I/O threads."""
    with RedisConnection(url) as conn:
        info = conn.command("INFO", "server").decode()
    wanted = ("redis_version", "redis_mode", "io_threads_active", "multiplexing_api")
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return {key: fields[key].strip() for key in wanted if key in fields}


def server_pid(url: str) -> int | None:
    """The process id of the Redis server of ``url`` if it runs on this machine (its /proc entry
    is a redis-server), else None: its CPU time is then not reported."""
    with RedisConnection(url) as conn:
        info = conn.command("INFO", "server").decode()
    for line in info.splitlines():
        if line.startswith("process_id:"):
            pid = int(line.split(":", 1)[1])
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                return None
            return pid if comm.startswith("redis") and os.path.isdir(f"/proc/{pid}/task") else None
    return None


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key that starts with ``prefix`` (and no other); the number deleted."""
    if not prefix:
        raise ValueError("refusing to delete every key: the prefix is empty")
    deleted = 0
    with RedisConnection(url) as conn:
        cursor = b"0"
        while True:
            cursor, keys = conn.command(
                "SCAN", cursor, "MATCH", _glob_escape(prefix) + "*", "COUNT", str(BATCH)
            )
            if keys:
                deleted += conn.command("DEL", *keys)
            if cursor == b"0":
                return deleted
