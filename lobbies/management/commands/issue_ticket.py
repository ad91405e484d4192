"""``manage.py issue_ticket USERNAME [--ttl SECONDS]``: a ticket for a user, alone on the last
line, for scripts and for handing to a game client as ``ws://relay/t/<ticket>``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from lobbies.auth import issue_ticket
from lobbies.conf import relay_settings
from lobbies.owners import find_user


class Command(BaseCommand):
    help = "Print a signed, expiring ticket that authenticates USERNAME on the relay's sockets."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--ttl",
            type=float,
            default=None,
            help="Seconds the ticket stays valid (default: RELAY_TICKET_TTL).",
        )

    def handle(self, *args: Any, username: str, ttl: float | None, **options: Any) -> None:
        if ttl is not None and ttl <= 0:
            raise CommandError("--ttl must be above 0")
        user = find_user(username)
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if not user.is_active:
            raise CommandError(f"{username!r} is not active: its tickets would be refused")
        seconds = relay_settings().ticket_ttl if ttl is None else ttl
        if options["verbosity"] > 0:
            self.stderr.write(f"valid for {seconds:g} s; give clients ws://HOST/t/<ticket>")
        self.stdout.write(issue_ticket(user, seconds))
