from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    """A plugin of the relay: aggregates relay events for the admin's popularity charts.

    It will receive ``lobbies.signals``; removing it from ``INSTALLED_APPS`` leaves the relay
    working. Nothing is aggregated yet.
    """

    default_auto_field = "django.db.models.BigAutoField"
    name = "analytics"
    verbose_name = "Analytics"
