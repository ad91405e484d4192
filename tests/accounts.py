"""Signed-in test clients: a user's browser session, an operator's admin session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.contrib.auth.models import Permission, User
from django.test import Client


def signed_in(user: User) -> Client:
    """A test client with ``user``'s session, as after signing in."""
    client = Client()
    client.force_login(user)
    return client


def staff_client(name: str, *codenames: str, superuser: bool = False) -> Client:
    """A signed-in admin client for a new staff user holding these permissions."""
    user = User.objects.create_user(
        name, password="a long password 5", is_staff=True, is_superuser=superuser
    )
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return signed_in(user)


def owner_link(data_dir: Path, username: str, url: str) -> str:
    """Run ``manage.py create_owner USERNAME --url URL`` against the database of the relay
    keeping its files in ``data_dir``, as its operator would; the sign-in link it prints."""
    from tests.conftest import ROOT, relay_environ

    made = subprocess.run(
        [sys.executable, "manage.py", "create_owner", username, "--url", url],
        cwd=ROOT,
        env=relay_environ(data_dir),
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip().splitlines()[-1]
