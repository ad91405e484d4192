"""What is played most, for game clients' menus (``GET /api/trending``): the public lobbies and
the games with the most peers present now, and with the most joins over the last 24 hours.

Public only, always. "Public" is a lobby row that is public and open or locked *now*: private and
unlisted lobbies, closed ones and plain LF channels (ids without a row) never appear, neither by
id nor in a game's counts. The 24-hour figures come from the analytics plugin's hourly rows,
which record every document id joined (private ones too), so they are read only for ids whose
row is public now. Game totals over the day add up the joins of those public lobbies only: a game
played only in private lobbies does not appear, since its name can be as telling as an id (a
lobby's game is free text its owner chose). Without the analytics app installed, ``day`` is None.

Bounded. Presence has no "busiest lobbies" query (and the per-Join path gains no work for this):
the lobbies counted for ``now`` are at most :data:`MAX_CANDIDATES` public lobbies, the newest
created, plus (with analytics) as many joined most recently in the last 24 hours, all counted in
one presence call. A relay with fewer public lobbies than that is ranked exactly; beyond it, a
lobby that is neither among the newest nor joined in the last 24 hours is not seen. Each list
holds at most :data:`MAX_LIMIT` entries.

Cached. An answer is computed once per ``RELAY_TRENDING_CACHE_SECONDS`` per game filter and
shared by every caller (Django's cache: with several workers, each keeps its own), for the
longest list; a smaller ``limit`` is a slice of it. A request served from the cache costs no
query and no presence call.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from django.apps import apps
from django.core.cache import cache
from django.db.models import Max, QuerySet, Sum
from django.utils import timezone

from lobbies import owners
from lobbies.conf import relay_settings
from lobbies.models import Lobby
from lobbies.policy import LobbyState, Visibility

# The longest list a caller may ask for (``limit``): a menu, not an export.
MAX_LIMIT = 50
# Public lobbies counted in presence for "now", from each source (newest created; joined most
# recently): one presence call of at most twice this many ids per computation.
MAX_CANDIDATES = 1000
CACHE_PREFIX = "relay:trending:"


def public_lobbies(game: str | None = None) -> QuerySet[Lobby]:
    """The lobbies trending may show: public, open or locked (of ``game``, if given)."""
    lobbies = Lobby.objects.filter(
        visibility=Visibility.PUBLIC, state__in=[LobbyState.OPEN, LobbyState.LOCKED]
    )
    return lobbies.filter(game=game) if game else lobbies


def trending(game: str | None = None, limit: int = 10) -> dict[str, Any]:
    """The trending answer for ``game`` (None or empty: every game), its lists cut to
    ``limit``: from the cache when an answer for ``game`` is younger than
    ``RELAY_TRENDING_CACHE_SECONDS``, else computed and kept that long."""
    game = game or None
    seconds = relay_settings().trending_cache_seconds
    # Hashed: a key the cache accepts whatever the game's characters (memcached refuses spaces).
    key = CACHE_PREFIX + hashlib.sha256((game or "").encode()).hexdigest()[:32]
    answer = cache.get(key) if seconds else None
    if answer is None:
        answer = compute(game)
        if seconds:
            cache.set(key, answer, seconds)
    return _cut(answer, limit)


def compute(game: str | None = None) -> dict[str, Any]:
    """The trending answer for ``game``, :data:`MAX_LIMIT` entries a list, computed now."""
    # LobbyOut says how the API shows a lobby; imported here since the API imports this module.
    from lobbies.api import LobbyOut

    public = public_lobbies(game)
    joined = _joined_today(public) if apps.is_installed("analytics") else None
    newest = public.order_by("-created_at").values_list("document_id", "game")
    candidates = dict(newest[:MAX_CANDIDATES])
    day_lobbies: list[dict[str, Any]] = []
    day_games: list[dict[str, Any]] = []
    if joined is not None:
        recent = _recently_joined(joined)
        candidates.update(public.filter(document_id__in=recent).values_list("document_id", "game"))
        day_lobbies, day_games = _most_joined(joined, game)
    day_ids = [row["document_id"] for row in day_lobbies]
    peers = owners.counts(list(dict.fromkeys([*candidates, *day_ids])))  # one presence call

    busiest = sorted((d for d in candidates if peers[d] > 0), key=lambda d: (-peers[d], d))
    busiest = busiest[:MAX_LIMIT]
    games_peers: Counter[str] = Counter()
    games_lobbies: Counter[str] = Counter()
    for document_id, its_game in candidates.items():
        if its_game and peers[document_id] > 0:
            games_peers[its_game] += peers[document_id]
            games_lobbies[its_game] += 1
    games_now = sorted(games_peers, key=lambda g: (-games_peers[g], -games_lobbies[g], g))

    # The rows shown are read again through the public filter: one made private since the
    # queries above is left out rather than shown.
    rows = public.select_related("owner").in_bulk([*busiest, *day_ids], field_name="document_id")
    now = {
        "games": [
            {"game": g, "peers": games_peers[g], "lobbies": games_lobbies[g]}
            for g in games_now[:MAX_LIMIT]
        ],
        "lobbies": [LobbyOut.of(rows[d], peers[d]) for d in busiest if d in rows],
    }
    day = None
    if joined is not None:
        day = {
            "games": day_games,
            "lobbies": [
                {**LobbyOut.of(rows[d], peers[d]), "joins": row["joins"]}
                for row in day_lobbies
                if (d := row["document_id"]) in rows
            ],
        }
    return {"now": now, "day": day, "generatedAt": timezone.now()}


def _joined_today(public: QuerySet[Lobby]) -> QuerySet[Any]:
    """The analytics rows of the last 24 hours (this hour and the 23 before) of lobbies in
    ``public``: never a row of a private or unlisted lobby, or of an id without a row."""
    from analytics.models import HourlyLobby
    from analytics.stats import Period

    period = Period.last_days(1)
    return HourlyLobby.objects.filter(
        hour__gte=period.start, hour__lt=period.end, document_id__in=public.values("document_id")
    )


def _most_joined(
    joined: QuerySet[Any], game: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The lobbies and the games with the most joins in ``joined``, :data:`MAX_LIMIT` each."""
    lobbies = (
        joined.values("document_id")
        .annotate(joins=Sum("joins"))
        .filter(joins__gt=0)  # a row may hold bytes relayed only
        .order_by("-joins", "document_id")
    )
    # Grouped by the game the joins were recorded under; with a filter, that game only (a
    # lobby whose game changed during the day would otherwise add its former game).
    played = joined.exclude(game="").filter(game=game) if game else joined.exclude(game="")
    games = (
        played.values("game")
        .annotate(joins=Sum("joins"))
        .filter(joins__gt=0)
        .order_by("-joins", "game")
    )
    return list(lobbies[:MAX_LIMIT]), list(games[:MAX_LIMIT])


def _recently_joined(joined: QuerySet[Any]) -> list[str]:
    """Up to :data:`MAX_CANDIDATES` lobbies of ``joined``, the most recently joined first:
    where peers are likely present now, beyond the newest lobbies."""
    latest = joined.values("document_id").annotate(latest=Max("hour"), joins=Sum("joins"))
    ordered = latest.order_by("-latest", "-joins", "document_id")[:MAX_CANDIDATES]
    return [row["document_id"] for row in ordered]


def _cut(answer: dict[str, Any], limit: int) -> dict[str, Any]:
    """``answer`` with each list cut to its first ``limit`` entries."""

    def cut(lists: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        return None if lists is None else {name: rows[:limit] for name, rows in lists.items()}

    return {**answer, "now": cut(answer["now"]), "day": cut(answer["day"])}
