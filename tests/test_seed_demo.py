"""``manage.py seed_demo``: demo lobbies and a burst of real traffic through a relay it starts,
which the statistics then show (as ``relay_stats`` and the dashboard read them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, relay_environ

pytestmark = pytest.mark.live

MANAGE = (sys.executable, "manage.py")


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [*MANAGE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_seed_demo_fills_the_statistics_with_real_traffic(tmp_path):
    env = relay_environ(tmp_path)
    said = run(env, "seed_demo", "--peers", "12", "--frames", "5", "--seconds", "1")
    assert "6 lobbies" in said and "Played 13 joins" in said  # 12 peers and the kart host
    stats = run(env, "relay_stats", "--days", "1")
    assert stats.startswith("Last 1 day(s): 13 joins, 13 unique peers")
    lobbies = stats[stats.index("Lobbies by joins:") : stats.index("Game types")]
    assert "kart-grand-prix" in lobbies and "KartMarshal" in stats
    # Run again: the same rows, more traffic.
    assert "Played 13 joins" in run(env, "seed_demo", "--peers", "12", "--frames", "0")
    assert run(env, "relay_stats", "--days", "1").startswith("Last 1 day(s): 26 joins")


def test_seed_demo_refuses_nonsense():
    done = subprocess.run(
        [*MANAGE, "seed_demo", "--peers", "0"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode != 0 and "--peers must be at least 1" in done.stderr
