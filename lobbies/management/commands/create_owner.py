"""``manage.py create_owner USERNAME [--email E] [--url URL]``: an owner account (active, not
staff, allowed to create lobbies, no password yet) and a one-time sign-in link, alone on the last
line, with which the owner chooses a password and lands signed in on ``/my/``.

For an existing user it grants the permission and prints a fresh link (their password stays
until they use it). See ``lobbies.onboarding``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from lobbies.conf import public_url_problem, relay_settings
from lobbies.onboarding import OwnerError, make_owner, signin_link


def _duration(seconds: float) -> str:
    """``seconds`` as an operator reads it: "24 hours", "90 minutes", "45 seconds"."""
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"


class Command(BaseCommand):
    help = (
        "Make USERNAME an owner (a user who may create lobbies and use /my/) and print a "
        "one-time link with which they set their password and sign in."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="", help="The owner's e-mail address.")
        parser.add_argument(
            "--url",
            default=None,
            help="The relay's address as the owner's browser reaches it, the link's base "
            "(default: RELAY_PUBLIC_URL, http://127.0.0.1:8080 unless set).",
        )

    def handle(
        self, *args: Any, username: str, email: str, url: str | None, **options: Any
    ) -> None:
        base = relay_settings().public_url if url is None else url
        if problem := public_url_problem(base):
            raise CommandError(f"--url {base!r} {problem}")
        try:
            user, created = make_owner(username, email)
        except OwnerError as exc:
            raise CommandError(str(exc)) from exc
        if options["verbosity"] > 0:
            if created:
                self.stderr.write(f"created the owner {username!r}, who may create lobbies")
            else:
                self.stderr.write(
                    f"{username!r} exists: they may create lobbies now; a fresh sign-in link "
                    "(their password stays until they use it; earlier links work until one "
                    "is used)"
                )
            self.stderr.write(
                f"give them this link: it works once, for "
                f"{_duration(settings.PASSWORD_RESET_TIMEOUT)} (RELAY_SIGNIN_LINK_TTL)"
            )
        self.stdout.write(signin_link(user, base))
