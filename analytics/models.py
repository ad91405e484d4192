"""Aggregates of the relay's events, by hour (nicknames by day): what operators ask of them.

Each row is a counter that several worker processes may add to: the writer (``analytics.buffer``)
adds with ``UPDATE ... SET n = n + k``, never overwrites, so nothing is counted twice. Unique
peers are rows of their own (one per hour and peer, the peer id hashed), counted when asked.
"""

from __future__ import annotations

from django.db import models


class HourlyTotals(models.Model):
    """The whole relay, one hour."""

    hour = models.DateTimeField(unique=True)
    joins = models.PositiveBigIntegerField(default=0)
    sessions = models.PositiveBigIntegerField(default=0, help_text="Peers that went offline.")
    session_seconds = models.FloatField(default=0, help_text="Their time online, added up.")
    peak_peers = models.PositiveIntegerField(default=0, help_text="Most peers online at once.")
    pipes = models.PositiveBigIntegerField(default=0, help_text="Pipes opened.")
    frames = models.PositiveBigIntegerField(default=0, help_text="Frames relayed.")
    bytes = models.PositiveBigIntegerField(default=0, help_text="Bytes relayed (on the wire).")

    class Meta:
        ordering = ["-hour"]
        verbose_name_plural = "hourly totals"

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00}"


class HourlyLobby(models.Model):
    """One lobby, one hour."""

    hour = models.DateTimeField()
    document_id = models.CharField(max_length=256)
    game = models.CharField(max_length=100, blank=True)
    joins = models.PositiveBigIntegerField(default=0)
    bytes = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-hour", "-joins"]
        constraints = [
            models.UniqueConstraint(fields=["hour", "document_id"], name="one_row_per_lobby_hour")
        ]


class HourlyGame(models.Model):
    """One game type, one hour."""

    hour = models.DateTimeField()
    game = models.CharField(max_length=100)
    joins = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "game"], name="one_row_per_game_hour")
        ]


class HourlyPeer(models.Model):
    """That a peer was seen in an hour (its id hashed): unique peers, counted when asked."""

    hour = models.DateTimeField()
    peer = models.CharField(max_length=32)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "peer"], name="one_row_per_peer_hour")
        ]


class SessionLength(models.Model):
    """How many sessions of one hour lasted about as long: a histogram (buckets double in
    length), from which the median session time is read."""

    hour = models.DateTimeField()
    bucket = models.PositiveIntegerField(help_text="Sessions of bucket to 2 x bucket seconds.")
    sessions = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "bucket"], name="one_row_per_length_hour")
        ]


class DailyNickname(models.Model):
    """How often a nickname was used to join, one day (not kept when collection is off)."""

    day = models.DateField()
    nickname = models.CharField(max_length=256)
    joins = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "nickname"], name="one_row_per_nickname_day")
        ]


# The tables keyed by hour (pruned together).
HOURLY_MODELS = (HourlyTotals, HourlyLobby, HourlyGame, HourlyPeer, SessionLength)


class Dashboard(HourlyTotals):
    """The admin's popularity dashboard (a view of the hourly rows, no table of its own)."""

    class Meta:
        proxy = True
        verbose_name = "popularity dashboard"
        verbose_name_plural = "popularity dashboard"
