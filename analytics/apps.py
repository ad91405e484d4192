from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    """A plugin of the relay: aggregates its events (``lobbies.signals``) into hourly statistics
    for the admin's popularity dashboard. Removing it from ``INSTALLED_APPS`` leaves the relay
    working: the relay then sends no event at all (nobody listens)."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "analytics"
    verbose_name = "Analytics"

    def ready(self) -> None:
        from analytics import receivers  # noqa: F401 (connects them)
