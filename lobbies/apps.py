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
