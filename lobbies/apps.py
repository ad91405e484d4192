from django.apps import AppConfig


class LobbiesConfig(AppConfig):
    """The relay itself: protocol, discovery, presence, pipes and their consumers."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "lobbies"
    verbose_name = "Lobbies"

    def ready(self) -> None:
        from lobbies import conf  # noqa: F401 (registers the settings' system check)
