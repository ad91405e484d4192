"""``manage.py serve``: run the relay under uvicorn (the default, chosen on measured figures;
see the README) or daphne."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

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
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        self.stdout.write(f"Relay ({server}) listening on http://{shown}:{port}/", ending="\n")
        self.stdout.write(f"Clients connect to ws://{shown}:{port}", ending="\n")
        self.stdout.flush()
        from lobbies import servers

        run = servers.run_daphne if server == "daphne" else servers.run_uvicorn
        run(host, port, relay_settings())
