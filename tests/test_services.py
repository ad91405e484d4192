"""``make test`` names a missing service in one line, with the command that provides it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, free_port


def run_check(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.services"],
        cwd=ROOT,
        env={**os.environ, "TEST_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_missing_postgresql_is_one_clear_line():
    url = f"postgres://postgres@127.0.0.1:{free_port()}/test"  # nothing listens there
    result = run_check(url)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"make test needs PostgreSQL at {url}" in lines[0]
    assert "Connection refused" in lines[0]
    assert "apt-get install -y postgresql" in lines[0]
    assert "Traceback" not in result.stderr


def test_the_configured_postgresql_passes():
    url = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    result = run_check(url)
    assert (result.returncode, result.stderr) == (0, "")


def test_a_missing_redis_is_one_clear_line():
    from tests.services import redis_problem

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    problem = redis_problem(url)
    assert problem is not None
    assert f"make test needs Redis at {url}" in problem
    assert "apt-get install -y redis-server" in problem
    assert redis_problem("redis://127.0.0.1:6379/0") is None
