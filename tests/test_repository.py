"""The repository explains itself: nothing it tracks sends a reader to a path outside it, or to
one machine's directories."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

from tests.conftest import ROOT

# Documents beside a checkout (shared notes), or directories of one machine.
OUTSIDE = re.compile(r"\.\./shared/|\bshared/[A-Z]+\.md\b|/work/|/root/|/home/\w+/")
# Recorded benchmark results are data: they name the directories the run used.
DATA = ("bench/results/", "package-lock.json")


def test_no_tracked_file_cites_a_path_outside_the_repository():
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for name in files:
        if name.startswith(DATA) or name.endswith(DATA):
            continue
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line) and name != "tests/test_repository.py":
                offenders.append(f"{name}:{number}: {line.strip()[:120]}")
    assert offenders == []


def test_benchmark_results_name_paths_in_the_repository_not_the_machines(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_run", bench)  # its dataclasses look themselves up
    spec.loader.exec_module(bench)
    command = bench.in_repository(bench.DEFAULT_OURS_CMD)
    assert command.startswith(".venv/bin/python manage.py serve") and str(ROOT) not in command
    executable = bench.versions()["python_executable"]
    assert str(ROOT) not in executable and "/../" not in executable
