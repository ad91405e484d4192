"""The relay's settings, read once from ``django.conf.settings`` into one typed object.

Every value comes from an environment variable in ``relayproject/settings.py``, where each has a
safe default and the README a line. Relay code reads them only through :func:`relay_settings`
(never ``django.conf.settings`` directly), and :func:`check_relay_settings`, a Django system
check, refuses impossible values at start-up with a message naming the variable.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from functools import cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Limits, timeouts and backends of the relay (see the README's settings table).

    Each field is read from the Django setting ``RELAY_<FIELD NAME IN CAPITALS>``.
    """

    allowed_origins: tuple[str, ...]
    presence_backend: str
    redis_url: str
    redis_prefix: str
    worker_ttl: float
    pipe_window_bytes: int
    trusted_proxies: tuple[str, ...]
    max_id_length: int
    max_ids_per_peer: int
    max_frame_bytes: int
    max_control_frame_bytes: int
    max_held_bytes: int
    max_held_bytes_total: int
    max_held_pipes: int
    max_held_bytes_per_address: int
    max_held_pipes_per_address: int
    pair_timeout: float
    control_queue_bytes: int
    close_timeout: float
    ping_interval: float
    ping_timeout: float
    handshake_timeout: float
    ticket_ttl: float
    signin_failures: int
    signin_failures_per_address: int
    signin_lockout: float
    signup: bool
    signups_per_address: int
    signin_link_ttl: int
    public_url: str
    creation_policy: str
    max_new_lobbies_per_join: int
    lobby_creation_rate: str
    quick_join_rate: str
    seat_ttl: float
    orphan_lobby_ttl: float
    max_connections_per_address: int
    handshake_rate: str
    join_rate: str
    introduction_rate: str
    refusal_rate: str
    refusal_delay: float
    facts_cache_seconds: float
    trending_cache_seconds: int
    event_queue: int
    pipe_report_seconds: float
    log_format: str
    log_ids: str
    metrics_networks: tuple[str, ...]
    metrics_token: str
    ready_timeout: float
    drain_seconds: float

    @property
    def transport_max_bytes(self) -> int:
        """The ASGI server's own message limit: above the relay's, so that an oversized frame
        reaches the relay and is refused with the documented 4413 rather than a bare 1009."""
        return self.max_frame_bytes + self.max_control_frame_bytes


def _setting_name(field: str) -> str:
    return f"RELAY_{field.upper()}"


@cache
def relay_settings() -> RelaySettings:
    """The relay's settings, read once per process (and again after a test overrides them)."""
    values = {f.name: getattr(settings, _setting_name(f.name)) for f in fields(RelaySettings)}
    values["allowed_origins"] = tuple(values["allowed_origins"])
    values["trusted_proxies"] = tuple(values["trusted_proxies"])
    values["metrics_networks"] = tuple(values["metrics_networks"])
    return RelaySettings(**values)


# Each limit's smallest sensible value: 1 for sizes and counts, above zero for timeouts; 0 for
# the ping interval turns keepalive pings off.
_MINIMUMS: dict[str, float] = {
    "max_id_length": 1,
    "max_ids_per_peer": 1,
    "max_frame_bytes": 1,
    "max_control_frame_bytes": 64,  # a Join naming one short id must fit
    "max_held_bytes": 1,
    "max_held_bytes_total": 1,
    "max_held_pipes": 1,
    "max_new_lobbies_per_join": 0,  # 0: Join extras create no lobby (the API and pages do)
    "max_held_bytes_per_address": 1,
    "max_held_pipes_per_address": 1,
    "signin_failures": 1,
    "signin_failures_per_address": 1,
    "signups_per_address": 1,
    "control_queue_bytes": 1,
    "ping_interval": 0,
    "max_connections_per_address": 0,  # 0: no limit
    "refusal_delay": 0,
    "facts_cache_seconds": 0,  # 0: ask the database every time
    "trending_cache_seconds": 0,  # 0: GET /api/trending computed for every request
    "event_queue": 1,
    "pipe_report_seconds": 0,  # 0: pipes reported only when they close
    "pipe_window_bytes": 1,
    "drain_seconds": 0,  # 0: a worker told to stop closes its sockets at once
}
# The longest GET /api/trending may be cached (by the relay and, through max-age, by clients).
MAX_TRENDING_CACHE_SECONDS = 3600
_RATES = (
    "handshake_rate",
    "join_rate",
    "introduction_rate",
    "refusal_rate",
    "lobby_creation_rate",
    "quick_join_rate",
)
_POSITIVE = (
    "pair_timeout",
    "close_timeout",
    "ping_timeout",
    "handshake_timeout",
    "ticket_ttl",
    "orphan_lobby_ttl",
)
_POSITIVE += ("signin_lockout", "worker_ttl", "seat_ttl")  # 0 would lock out for ever
_POSITIVE += ("signin_link_ttl",)  # 0: every sign-in link dead as printed
_POSITIVE += ("ready_timeout",)
# A probe that waits longer than this is no longer telling anyone anything quickly; a drain longer
# than this outlasts any orchestrator's patience (systemd's unit gives a worker 30 s in all).
MAX_READY_TIMEOUT = 30.0
MAX_DRAIN_SECONDS = 3600.0
# A shared secret shorter than this can be guessed by asking /metrics often enough.
MIN_METRICS_TOKEN_LENGTH = 16


def public_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as the base of links to the relay's pages (``RELAY_PUBLIC_URL``,
    ``create_owner --url``), or None: it must be ``http(s)://host[:port]``, nothing after."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host, such as https://relay.example.org"
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return "must be the relay's address alone (scheme, host and port), without a path"
    return None


def setting_errors(values: RelaySettings) -> list[str]:
    """What is impossible about ``values``, one sentence each (empty when they are sound)."""
    errors = []
    for name, minimum in _MINIMUMS.items():
        if getattr(values, name) < minimum:
            errors.append(f"{_setting_name(name)} must be at least {minimum}")
    errors += [f"{_setting_name(n)} must be above 0" for n in _POSITIVE if getattr(values, n) <= 0]
    if values.trending_cache_seconds > MAX_TRENDING_CACHE_SECONDS:
        # Clients are told to keep the answer this long too: an hour-old "now" is not now.
        errors.append(f"RELAY_TRENDING_CACHE_SECONDS must be at most {MAX_TRENDING_CACHE_SECONDS}")
    from lobbies.engine.pipes import held_cost  # (pipes reads these settings: imported late)

    largest_held = held_cost(b"") + values.max_frame_bytes
    if largest_held > values.max_held_bytes:
        errors.append(
            f"RELAY_MAX_HELD_BYTES is smaller than one frame of RELAY_MAX_FRAME_BYTES as held "
            f"({largest_held} bytes with its bookkeeping): a pipe could never send a frame of "
            "the allowed size before its match arrives"
        )
    if largest_held > values.max_held_bytes_per_address:
        errors.append(
            "RELAY_MAX_HELD_BYTES_PER_ADDRESS is smaller than one frame of RELAY_MAX_FRAME_BYTES "
            f"as held ({largest_held} bytes with its bookkeeping)"
        )
    if values.max_held_bytes > values.max_held_bytes_total:
        errors.append("RELAY_MAX_HELD_BYTES is larger than RELAY_MAX_HELD_BYTES_TOTAL")
    from lobbies.engine.ratelimits import parse_rate
    from lobbies.policy import CreationPolicy

    for name in _RATES:
        try:
            parse_rate(getattr(values, name))
        except ValueError:
            errors.append(
                f"{_setting_name(name)} must be a rate such as 20/second or 600/minute, "
                "or empty for no limit"
            )

    from lobbies.logs import LogFormat, LogIds

    for name, choices in (("log_format", LogFormat), ("log_ids", LogIds)):
        if getattr(values, name) not in {c.value for c in choices}:
            shown = " or ".join(c.value for c in choices)
            errors.append(f"{_setting_name(name)} must be {shown}")
    if values.creation_policy not in {p.value for p in CreationPolicy}:
        choices = ", ".join(p.value for p in CreationPolicy)
        errors.append(f"RELAY_CREATION_POLICY must be one of {choices}")
    if values.ready_timeout > MAX_READY_TIMEOUT:
        errors.append(f"RELAY_READY_TIMEOUT must be at most {MAX_READY_TIMEOUT:g}")
    if values.drain_seconds > MAX_DRAIN_SECONDS:
        errors.append(f"RELAY_DRAIN_SECONDS must be at most {MAX_DRAIN_SECONDS:g}")
    if values.metrics_token and len(values.metrics_token) < MIN_METRICS_TOKEN_LENGTH:
        errors.append(
            f"RELAY_METRICS_TOKEN must have at least {MIN_METRICS_TOKEN_LENGTH} characters "
            "(or be empty: no token)"
        )
    for network in values.metrics_networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            errors.append(f"RELAY_METRICS_NETWORKS: {network!r} is not an address or a network")
    for proxy in values.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            errors.append(f"RELAY_TRUSTED_PROXIES: {proxy!r} is not an address or a network")
    if problem := public_url_problem(values.public_url):
        errors.append(f"RELAY_PUBLIC_URL {problem}")
    if values.redis_url and urlsplit(values.redis_url).scheme not in ("redis", "rediss", "unix"):
        errors.append("RELAY_REDIS_URL must be a redis://, rediss:// or unix:// URL, or empty")
    try:
        import_string(values.presence_backend)
    except ImportError as exc:
        errors.append(f"RELAY_PRESENCE_BACKEND cannot be imported: {exc}")
    return errors


@checks.register(checks.Tags.compatibility)
def check_relay_settings(**kwargs: object) -> list[checks.CheckMessage]:
    """Django system check: refuse to start with impossible relay settings."""
    try:
        values = relay_settings()
    except (TypeError, AttributeError) as exc:
        return [checks.Error(f"relay settings are incomplete: {exc}", id="lobbies.E000")]
    return [checks.Error(message, id="lobbies.E001") for message in setting_errors(values)]


@receiver(setting_changed)
def _reload(setting: str, **kwargs: object) -> None:
    if setting.startswith("RELAY_"):
        relay_settings.cache_clear()
        from lobbies.admission import lobby_cache
        from lobbies.engine.ratelimits import get_rate_limits

        get_rate_limits.cache_clear()
        lobby_cache.clear()
    if setting == "RELAY_PRESENCE_BACKEND":
        from lobbies.engine.presence import get_presence

        get_presence.cache_clear()
