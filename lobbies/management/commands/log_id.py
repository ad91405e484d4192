"""``manage.py log_id ID [ID ...]``: how log lines written with ``RELAY_LOG_IDS=hashed`` show
each peer id, document id or username, one a line, to find their lines (``grep``) without the
logs ever holding the ids themselves."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from lobbies.logs import hashed_id


class Command(BaseCommand):
    help = (
        "Print the hash that log lines show for each ID (a peer id, document id or username) "
        "with RELAY_LOG_IDS=hashed. It depends on the secret key: run it with the relay's."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("ids", nargs="+", metavar="ID")

    def handle(self, *args: Any, ids: list[str], **options: Any) -> None:
        for value in ids:
            self.stdout.write(hashed_id(value))
