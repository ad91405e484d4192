"""``manage.py relay_stats [--days N] [--top N]``: the dashboard's top lists in a terminal."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from analytics.stats import TOP_LISTS, Period, summary


class Command(BaseCommand):
    help = "Print the relay's most popular lobbies, game types and nicknames."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=7, help="How far back (default 7).")
        parser.add_argument("--top", type=int, default=10, help="Rows per list (default 10).")

    def handle(self, *args: Any, days: int, top: int, **options: Any) -> None:
        period = Period.last_days(days)
        totals = summary(period)
        self.stdout.write(
            f"Last {days} day(s): {totals['joins']} joins, {totals['unique_peers']} unique peers, "
            f"peak {totals['peak_peers']} online, {totals['pipes']} pipes, "
            f"{totals['bytes'] / 1e6:.1f} MB relayed"
        )
        for top_list in TOP_LISTS:
            rows = top_list.rows(period, top)
            self.stdout.write(f"\n{top_list.title} by joins:")
            if not rows:
                self.stdout.write("  (none)")
            for rank, row in enumerate(rows, 1):
                self.stdout.write(f"  {rank:>2}. {row[top_list.key]}  {row['joins']}")
