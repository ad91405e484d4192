"""``manage.py serve``: run the relay under uvicorn (the default, chosen on measured figures;
see the README) or daphne."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from lobbies.conf import relay_settings

SERVERS = ("uvicorn", "daphne")


class Command(BaseCommand):
    help = "Serve the relay (HTTP and WebSockets) on HOST:PORT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
        parser.add_argument(
            "--server", choices=SERVERS, default=os.environ.get("RELAY_SERVER", "uvicorn")
        )

    def handle(self, *args: Any, host: str, port: int, server: str, **options: Any) -> None:
        from lobbies.engine import servers

        if problem := servers.port_problem(host, port):
            raise CommandError(problem)
        if pending := _unapplied_migrations():
            raise CommandError(
                f"the database lacks {pending} migration(s): run "
                "`.venv/bin/python manage.py migrate` first (`make run` does)"
            )
        shown = "localhost" if host in ("0.0.0.0", "::") else host

        def on_ready() -> None:
            self.stdout.write(f"Relay ({server}) listening on http://{shown}:{port}/")
            self.stdout.write(f"Clients connect to ws://{shown}:{port}")
            self.stdout.flush()

        # One descriptor per socket: up to the hard limit the operator allows.
        servers.raise_open_files_limit()
        run = servers.run_daphne if server == "daphne" else servers.run_uvicorn
        run(host, port, relay_settings(), on_ready)


def _unapplied_migrations() -> int:
    """How many migrations the default database still lacks (lobby rows and bans are read on
    every control socket, so the relay cannot serve without them)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
