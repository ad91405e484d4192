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
    # Its hint names the virtualenv's interpreter, which works outside the virtualenv too.
    assert "See them with `.venv/bin/python manage.py relay_stats`" in said
    stats = run(env, "relay_stats", "--days", "1")
    assert stats.startswith("Last 1 day(s): 13 joins, 13 unique peers")
    lobbies = stats[stats.index("Lobbies by joins:") : stats.index("Game types")]
    assert "kart-grand-prix" in lobbies and "KartMarshal" in stats
    # Run again: the same rows, more traffic.
    assert "Played 13 joins" in run(env, "seed_demo", "--peers", "12", "--frames", "0")
    assert run(env, "relay_stats", "--days", "1").startswith("Last 1 day(s): 26 joins")


def test_history_gives_the_days_before_a_shape(tmp_path):
    env = relay_environ(tmp_path)
    said = run(env, "seed_demo", "--peers", "2", "--frames", "0", "--history", "3")
    made_up = int(said.split("Made-up statistics: ")[1].split()[0])
    assert made_up > 3 * 24  # busier in the evening, never empty for long
    week = run(env, "relay_stats", "--days", "7")
    assert week.startswith(f"Last 7 day(s): {made_up + 3} joins")  # and the burst's 3
    # The most popular demo lobby (by its weight) heads the list, and nicknames are counted.
    assert "Lobbies by joins:\n   1. kart-grand-prix" in week
    assert "Ace" in week[week.index("Nicknames by joins:") :]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--peers", "0"], "--peers must be at least 1"),
        (["--history", "400"], "--history is 0 to 366 days"),
    ],
)
def test_seed_demo_refuses_nonsense(args, said):
    done = subprocess.run([*MANAGE, "seed_demo", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and said in done.stderr
