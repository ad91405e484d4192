"""``python -m tests.services``: check, before the test suite runs, that the services it talks to
are reachable; if one is not, say so in one line, with the command that provides it.

``make test`` runs this first. The suite needs PostgreSQL (its second pass runs against
``TEST_DATABASE_URL``) and Redis (the presence suite, shared rate limits and the multi-worker
tests, at 127.0.0.1:6379); everything else it starts itself.
"""

from __future__ import annotations

import os
import sys

import environ
import psycopg
import redis

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

POSTGRES_HELP = (
    "on Debian: sudo apt-get install -y postgresql && sudo -u postgres createdb test, then set "
    "TEST_DATABASE_URL=postgres://USER:PASSWORD@127.0.0.1:5432/test for a user that may create "
    "databases (the README's Tests section)"
)


def postgres_problem(url: str) -> str | None:
    """Why PostgreSQL at ``url`` cannot serve the tests, or None when it can."""
    config = environ.Env.db_url_config(url)
    try:
        with psycopg.connect(
            host=config.get("HOST") or None,
            port=config.get("PORT") or None,
            user=config.get("USER") or None,
            password=config.get("PASSWORD") or None,
            dbname=config.get("NAME") or None,
            connect_timeout=5,
        ):
            return None
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"make test needs PostgreSQL at {url} (TEST_DATABASE_URL): {reason}; {POSTGRES_HELP}"


def redis_problem(url: str) -> str | None:
    """Why Redis at ``url`` cannot serve the tests, or None when it can."""
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return (
            f"make test needs Redis at {url}: {exc}; on Debian: sudo apt-get install -y "
            "redis-server (the tests use the local one at 127.0.0.1:6379, under key prefixes "
            "of their own)"
        )
    finally:
        client.close()


def main() -> int:
    """Print one line per missing service; exit 1 if any is missing."""
    problems = [
        postgres_problem(os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL)),
        redis_problem(DEFAULT_REDIS_URL),
    ]
    for problem in problems:
        if problem:
            print(problem, file=sys.stderr)
    return 1 if any(problems) else 0


if __name__ == "__main__":
    sys.exit(main())
