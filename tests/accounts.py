"""Signed-in test clients: a user's browser session, an operator's admin session."""

from __future__ import annotations

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
