"""``manage.py prune_analytics [--days N]``: delete statistics older than the retention period
(``RELAY_ANALYTICS_RETENTION_DAYS``), for a daily cron job or systemd timer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from analytics.models import HOURLY_MODELS, DailyNickname


class Command(BaseCommand):
    help = "Delete statistics older than RELAY_ANALYTICS_RETENTION_DAYS days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None, help="Keep this many days instead.")

    def handle(self, *args: Any, days: int | None, **options: Any) -> None:
        days = settings.RELAY_ANALYTICS_RETENTION_DAYS if days is None else days
        if days < 1:
            raise CommandError("keep at least 1 day")
        cutoff = timezone.now() - timedelta(days=days)
        deleted = 0
        for model in HOURLY_MODELS:
            deleted += model.objects.filter(hour__lt=cutoff).delete()[0]
        deleted += DailyNickname.objects.filter(day__lt=cutoff.date()).delete()[0]
        self.stdout.write(f"{deleted} rows older than {days} day(s) deleted")
