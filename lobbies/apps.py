from django.apps import AppConfig


class LobbiesConfig(AppConfig):
    """The relay itself: protocol, discovery, presence, pipes and their consumers."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "lobbies"
    verbose_name = "Lobbies"

    def ready(self) -> None:
        from lobbies import conf, facts  # noqa: F401 (the settings' system check; cache signals)
