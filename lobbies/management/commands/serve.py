"""``manage.py serve``: run the relay under uvicorn (the default, chosen on measured figures;
see the README) or daphne."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

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
        # The transport's own limit sits above the relay's, so an oversized frame reaches the
        # relay and is refused with the documented 4413 rather than a bare 1009.
        transport_max = settings.RELAY_MAX_FRAME_BYTES + settings.RELAY_MAX_CONTROL_FRAME_BYTES
        if server == "daphne":
            from lobbies.servers import run_daphne

            run_daphne(host, port, max_message_bytes=transport_max)
        else:
            from lobbies.servers import run_uvicorn

            run_uvicorn(host, port, max_message_bytes=transport_max)
