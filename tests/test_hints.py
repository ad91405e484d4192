"""The commands the relay suggests to its users (on its pages and in its commands' messages) run
as written from a clone set up by ``make run``: ``.venv/bin/python``, never a bare ``python``
that is not the virtualenv's outside it, and no reStructuredText markup in a terminal."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from html import unescape

import pytest
from django.test import Client

from tests.conftest import ROOT, free_port

# What `make run` creates; every hint names this interpreter.
VENV_PYTHON = ".venv/bin/python"


def shown_commands(html: str) -> list[str]:
    """The Python commands a page shows in its ``<code>`` elements."""
    codes = (unescape(code) for code in re.findall(r"<code>(.*?)</code>", html, re.S))
    return [code for code in codes if "python" in code]


def runs_as_written(command: str) -> subprocess.CompletedProcess:
    """Run the command's interpreter, module or script and subcommand with ``--help`` from the
    clone's root, as a user pasting the hint there would (its other arguments are examples)."""
    # `.venv/bin/python manage.py CMD ...` or `.venv/bin/python -m MODULE ...`
    prefix = shlex.split(command)[:3]
    return subprocess.run([*prefix, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)


def assert_works(command: str) -> None:
    assert command.startswith(f"{VENV_PYTHON} "), command
    done = runs_as_written(command)
    assert done.returncode == 0, (command, done.stderr[-2000:])


@pytest.mark.django_db
def test_every_command_the_pages_show_runs_as_written():
    browser = Client(REMOTE_ADDR="203.0.113.9")
    landing = browser.get("/").content.decode()
    sign_in = browser.get("/accounts/login/").content.decode()
    for _ in range(30):  # guessing until the sign-in page locks this address out
        locked = browser.post("/accounts/login/", {"username": "nobody", "password": "guess"})
        if locked.status_code == 429:
            break
    assert locked.status_code == 429
    commands = {
        "landing": shown_commands(landing),
        "sign-in": shown_commands(sign_in),
        "locked out": shown_commands(locked.content.decode()),
    }
    assert all(commands.values()), commands  # each page does suggest one
    for shown in commands.values():
        for command in shown:
            assert_works(command)


def test_the_migration_hint_of_serve_runs_as_written(tmp_path):
    """``manage.py serve`` on a database never migrated names the command that migrates it."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        cwd=ROOT,
        env={**env, "RELAY_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    hint = re.search(r"run `([^`]+)`", done.stderr)
    assert hint, done.stderr
    assert_works(hint.group(1))


def test_help_texts_show_no_markup():
    """``--help`` of the client and of this project's commands is plain text."""
    helps = [[sys.executable, "-m", "relayclient", "--help"]]
    for command in ("issue_ticket", "seed_demo", "serve", "relay_stats", "prune_analytics"):
        helps.append([sys.executable, "manage.py", command, "--help"])
    for argv in helps:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "``" not in done.stdout, (argv, done.stdout)
