"""The short versions of ``make soak`` and ``make chaos`` (bench/soak.py): a relay of their own
under mixed load for a few seconds (one worker; two over Redis; two while a worker is killed,
Redis restarted and PostgreSQL cut off), then at rest. Each passes only if no frame was lost and
nothing (sockets counted, descriptors, tasks, presence keys, rows, memory) still grows at rest.
The runs' series and plots are written under a temporary directory, not bench/results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.live

RUNS = {
    "one worker": ["--workers", "1", "--duration", "15"],
    "two workers": ["--workers", "2", "--duration", "15"],
    "chaos": ["--workers", "2", "--chaos", "--duration", "25"],
}


@pytest.mark.parametrize("arguments", RUNS.values(), ids=RUNS.keys())
def test_a_short_soak_leaves_nothing_behind(arguments, tmp_path):
    out = tmp_path / "soak.json"
    at_rest = ["--settle", "10", "--quiet", "6", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "bench/soak.py", *arguments, *at_rest],
        cwd=ROOT,
        env={**os.environ, "RELAY_SOAK_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["failures"] == []
    counts = result["counts"]
    # The workload ran: pipes carried every frame, hostile clients and the API were served.
    assert counts["pipes_done"] > 0 and counts["frames_received"] == counts["frames_sent"]
    assert counts.get("frames_lost", 0) == 0
    assert counts["hostile_oversized"] > 0 and counts["api_owner"] > 0
    if "--chaos" in arguments:
        faults = {name for name in counts if name.startswith("fault_")}
        assert {"fault_kill_worker", "fault_restart_redis", "fault_cut_postgres"} <= faults
    assert out.with_suffix(".svg").read_text().startswith("<svg")
