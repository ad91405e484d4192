import logging

from django.apps import AppConfig


class LobbiesConfig(AppConfig):
    """The relay itself: protocol, discovery, presence, pipes and their consumers."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "lobbies"
    verbose_name = "Lobbies"

    def ready(self) -> None:
        # The settings' system check; the facts cache's, the events' and the bans' (applied
        # to live sockets) model receivers, the credentials' (lobbies.credentials), the
        # operator actions' log lines (lobbies.logs) and the metrics' event receivers
        # (lobbies.metrics).
        from lobbies import admission, conf, credentials, events, logs, metrics, owners  # noqa: F401

        # No log format of the relay's shows where a line was logged from or its thread
        # (settings.LOGGING), and finding them out was a tenth of a log line's cost, two lines
        # per socket: the logging module's documented switches (its "Optimization" section).
        logging._srcfile = None
        logging.logThreads = False
        logging.logMultiprocessing = False
