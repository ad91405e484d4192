"""Settings of the relay project: every knob read once from the environment, with a safe default.

The README's settings table lists each variable. With none set, the relay runs on its embedded
default: SQLite under ``RELAY_DATA_DIR``, the in-memory channel layer, in-memory presence, one
process.
"""

import os
import time
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

# Where the embedded default keeps its files (the SQLite database, a generated secret key).
DATA_DIR = Path(env.str("RELAY_DATA_DIR", default=str(BASE_DIR / "var")))


def _secret_key() -> str:
    """DJANGO_SECRET_KEY, or one generated once and kept in DATA_DIR so restarts keep sessions."""
    if key := env.str("DJANGO_SECRET_KEY", default=""):
        return key
    from django.core.management.utils import get_random_secret_key

    path = DATA_DIR / "secret_key"
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of several processes starting at once, exactly one writes the key; 0o600
        # from the start, never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the writer may not have finished
            if key := path.read_text().strip():
                return key
            time.sleep(0.1)
        raise RuntimeError(f"{path} is empty: delete it or set DJANGO_SECRET_KEY") from None
    key = get_random_secret_key()
    with os.fdopen(fd, "w") as file:
        file.write(key)
    return key


SECRET_KEY = _secret_key()
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The names `make run` answers to on this machine; an operator adds the relay's public name (a
# forged Host header would otherwise reach absolute URLs and the pages that show this server's
# address). WebSockets are not judged by it: Channels' router does not check it, and game
# clients connect by whatever name or address they were given.
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# Behind a TLS proxy that sets this header to "https" (and strips it from clients), requests
# count as secure: pages hand out wss:// URLs, secure cookies work. Empty: trust no header.
if _proxy_ssl_header := env.str("DJANGO_SECURE_PROXY_SSL_HEADER", default=""):
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")

# --- Production over TLS (docs/deploy.md; deploy/systemd/relay.env sets all of these) ---------
# The relay never terminates TLS itself: a proxy does (nginx, deploy/nginx/relay-tls.conf). Each
# default below is what plain `make run` over http needs; behind the proxy they are turned on.
# Session and CSRF cookies only over https (a browser would not send them back over plain http,
# so the default follows DJANGO_SECURE_PROXY_SSL_HEADER: on exactly when behind a TLS proxy).
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool(
    "DJANGO_SECURE_COOKIES", default=bool(_proxy_ssl_header)
)
# HTTP Strict Transport Security: seconds browsers must use https for this host (0: not sent).
# Start small (an hour), then a year once https works everywhere: a browser keeps the rule.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
# The rule also for the subdomains of the relay's own name (relay.example.org covers
# *.relay.example.org, never example.org's other names).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
# Plain http requests that reach the relay answered with a redirect to https (nginx redirects
# its port 80 itself; this catches anything else). Never for the probes an orchestrator or
# Prometheus sends to a worker directly over loopback, without the proxy's header.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)/?$"]
# Silenced with a reason, and only this one: `check --deploy` warns whenever HSTS preload is off.
# Preloading is a commitment of the whole registered domain (only an apex domain can be
# submitted to the browsers' list, and leaving it takes months), which a relay served under
# one name of it cannot make; DJANGO_SECURE_HSTS_PRELOAD=true is there for those who do.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",  # the API's interactive docs, served from its own static files
    "lobbies",
    "analytics",
    "axes",  # sign-in throttling (relayproject/signin.py)
    "csp",  # the Content-Security-Policy header (relayproject/csp.py)
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every page (CONTENT_SECURITY_POLICY below).
    "relayproject.csp.RelayCSPMiddleware",
    # Serves STATIC_ROOT (filled by collectstatic, which `make run` runs) before Django's views.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as axes asks: turns a locked-out sign-in into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "relayproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "relayproject.asgi.application"
WSGI_APPLICATION = None

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
}
# Under ASGI a persistent connection is never reused by the same thread: always 0.
DATABASES["default"]["CONN_MAX_AGE"] = 0

# Many workers (lobbies/engine/workers.py): one Redis URL (e.g. redis://127.0.0.1:6379/0) moves
# presence, the channel layer, the workers' messages, shared rate limits and cache invalidation
# there. Empty: the embedded default, one process, everything in its memory.
RELAY_REDIS_URL = env.str("RELAY_REDIS_URL", default="")
# What every Redis key and channel of this relay starts with (several relays may share a Redis).
RELAY_REDIS_PREFIX = env.str("RELAY_REDIS_PREFIX", default="relay:")
# Seconds after which a worker that stopped announcing itself (killed, say) is gone from presence
# with all its peers, held pipe requests and pipes. A worker announces itself every quarter of it.
RELAY_WORKER_TTL = env.float("RELAY_WORKER_TTL", default=15.0)
# Bytes one direction of a pipe whose ends are on two workers may have in flight (sent, not yet
# written to the reader): a reader that stops reading stops its writer, on either worker.
RELAY_PIPE_WINDOW_BYTES = env.int("RELAY_PIPE_WINDOW_BYTES", default=1024 * 1024)
# Addresses or networks of the proxies whose X-Forwarded-For is believed (the client address then
# comes from it, for per-address limits and logs); from anyone else the header is ignored.
RELAY_TRUSTED_PROXIES = env.list("RELAY_TRUSTED_PROXIES", default=["127.0.0.1", "::1"])

if RELAY_REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [RELAY_REDIS_URL], "prefix": f"{RELAY_REDIS_PREFIX}asgi"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Axes first: a locked-out sign-in is refused before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "my-lobbies"
LOGOUT_REDIRECT_URL = "index"

STATIC_URL = "static/"
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default=str(DATA_DIR / "static"))
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)  # served even before the first collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
# Static files with a hash of their content in their names (site.3f2a9c.css), for production:
# they can then be cached for ever (nginx's `expires max`, whitenoise's own headers), an upgrade
# bringing new names. Needs `collectstatic` before the relay serves a page (relay-setup does; a
# page naming a file that was not collected is a 500). Off: the plain names `make run` uses.
DJANGO_STATIC_MANIFEST = env.bool("DJANGO_STATIC_MANIFEST", default=False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed copies beside the originals (whitenoise serves gzip or brotli when asked).
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if DJANGO_STATIC_MANIFEST
        else "whitenoise.storage.CompressedStaticFilesStorage"
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Content-Security-Policy (django-csp) on every page the relay serves, the admin and the API docs
# included: scripts, styles, images and fonts only from the relay itself (static files: no inline
# script or style anywhere in templates/), fetches and WebSockets only to it (connect-src 'self',
# plus ws:// or wss:// to the page's own host, added per request by relayproject/csp.py: not
# every browser counts WebSockets to the same host as 'self'), no plugins, no framing, forms
# posted only to itself. data: images: the admin's and Swagger UI's icons are inlined in their CSS.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# How log lines are written (lobbies/logs.py): "plain", one human-readable line each, or "json",
# one JSON object a line with every field of the line as a key (timestamp, level, logger,
# message, event, peer_id, document_id, connection_id, worker, client, close_code, duration_s...)
# for a log pipeline. Anything else is refused by the system check (lobbies/conf.py).
RELAY_LOG_FORMAT = env.str("RELAY_LOG_FORMAT", default="plain")
# How log lines show peer ids, document ids and usernames: "plain", or "hashed" (a keyed hash,
# HMAC with the secret key: one id's lines can be followed, the id cannot be read back).
RELAY_LOG_IDS = env.str("RELAY_LOG_IDS", default="plain")
_LOG_FORMATTERS = {
    "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    "json": {
        "()": "pythonjsonlogger.json.JsonFormatter",
        # Each record's extra fields (lobbies/logs.py) are added as keys of their own.
        "fmt": "%(levelname)s %(name)s %(message)s %(process)d",
        "rename_fields": {"levelname": "level", "name": "logger", "process": "pid"},
        "timestamp": True,  # ISO 8601 in UTC, under "timestamp"
    },
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"relay": _LOG_FORMATTERS.get(RELAY_LOG_FORMAT, _LOG_FORMATTERS["plain"])},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "relay"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="WARNING")},
    # The relay's own lines: at INFO, one per connection opened, refused and closed (peer,
    # endpoint, close code, duration, traffic) and one per operator action, never one per frame.
    "loggers": {"lobbies": {"level": env.str("RELAY_LOG_LEVEL", default="INFO")}},
}

# --- The relay (see lobbies/conf.py and the README's settings table) -------------------------

# Browser origins allowed to open WebSockets ("*" = any). Clients that send no Origin header
# (game clients, Node.js, tools) are not judged by it.
RELAY_ALLOWED_ORIGINS = env.list("RELAY_ALLOWED_ORIGINS", default=["*"])
# Where presence lives: in this process's memory, or with RELAY_REDIS_URL in Redis.
RELAY_PRESENCE_BACKEND = env.str(
    "RELAY_PRESENCE_BACKEND",
    default="lobbies.engine.presence.redis.RedisPresence"
    if RELAY_REDIS_URL
    else "lobbies.engine.presence.memory.MemoryPresence",
)
# Longest peer id or document id, in characters (longer: close 4400, or the Join is ignored).
RELAY_MAX_ID_LENGTH = env.int("RELAY_MAX_ID_LENGTH", default=256)
# Document ids one control socket may have joined at once (further Joins are ignored).
RELAY_MAX_IDS_PER_PEER = env.int("RELAY_MAX_IDS_PER_PEER", default=1000)
# Largest pipe frame in bytes (UTF-8 bytes for text frames). Larger: close 4413.
RELAY_MAX_FRAME_BYTES = env.int("RELAY_MAX_FRAME_BYTES", default=4 * 1024 * 1024)
# Largest control frame. Larger: close 4413.
RELAY_MAX_CONTROL_FRAME_BYTES = env.int("RELAY_MAX_CONTROL_FRAME_BYTES", default=64 * 1024)
# Bytes a held pipe request may send before its match arrives (each frame is charged what it
# really costs in memory, see lobbies/engine/pipes.py). More: close 4413.
RELAY_MAX_HELD_BYTES = env.int("RELAY_MAX_HELD_BYTES", default=8 * 1024 * 1024)
# Bytes all held pipe requests of this process may hold together. More: close 4413.
RELAY_MAX_HELD_BYTES_TOTAL = env.int("RELAY_MAX_HELD_BYTES_TOTAL", default=256 * 1024 * 1024)
# Pipe requests this process holds at once, waiting for their match. More: close 4429.
RELAY_MAX_HELD_PIPES = env.int("RELAY_MAX_HELD_PIPES", default=10_000)
# The share of those two one client address (an IPv6 /64) may take, so that one address cannot
# fill the budget for everyone. More: close 4413 (bytes) or 4429 (pipes), as above.
RELAY_MAX_HELD_BYTES_PER_ADDRESS = env.int(
    "RELAY_MAX_HELD_BYTES_PER_ADDRESS", default=RELAY_MAX_HELD_BYTES_TOTAL // 8
)
RELAY_MAX_HELD_PIPES_PER_ADDRESS = env.int(
    "RELAY_MAX_HELD_PIPES_PER_ADDRESS", default=RELAY_MAX_HELD_PIPES // 8
)
# Seconds a held pipe request waits for its match. Then: close 4408.
RELAY_PAIR_TIMEOUT = env.float("RELAY_PAIR_TIMEOUT", default=30.0)
# Bytes of introductions queued for a control socket that is not reading. More: close 4413.
RELAY_CONTROL_QUEUE_BYTES = env.int("RELAY_CONTROL_QUEUE_BYTES", default=1024 * 1024)
# Seconds a closing socket has to take its close frame (and answer it) before the connection is
# aborted: a client that stops reading cannot keep a socket, its buffers or a task alive.
RELAY_CLOSE_TIMEOUT = env.float("RELAY_CLOSE_TIMEOUT", default=5.0)
# Keepalive: a ping every RELAY_PING_INTERVAL seconds (0: none); a socket that answers nothing
# for RELAY_PING_TIMEOUT seconds while the relay is reading it is closed with 1011.
RELAY_PING_INTERVAL = env.float("RELAY_PING_INTERVAL", default=20.0)
RELAY_PING_TIMEOUT = env.float("RELAY_PING_TIMEOUT", default=20.0)
# Seconds a new connection has to send its request headers (the WebSocket upgrade).
RELAY_HANDSHAKE_TIMEOUT = env.float("RELAY_HANDSHAKE_TIMEOUT", default=10.0)
# Seconds a ticket from `manage.py issue_ticket` or the API stays valid. A client keeps using its
# URL for every socket it opens (reconnects too), so it must last as long as a session may.
RELAY_TICKET_TTL = env.float("RELAY_TICKET_TTL", default=12 * 3600.0)
# Seconds a worker keeps what the database said about a lobby (its row, bans, grants) and about
# relay-wide bans, so that a lobby a thousand peers join costs one query. A change made in the
# same process applies at once; one made by another worker within this many seconds (0: always
# ask the database).
RELAY_FACTS_CACHE_SECONDS = env.float("RELAY_FACTS_CACHE_SECONDS", default=2.0)
# Seconds one answer of GET /api/trending (per game filter) is kept and shared by every caller,
# and announced as Cache-Control max-age: an anonymous flood is served from the cache, not the
# database. 0: computed for every request; at most 3600 (an hour-old "now" is not now).
RELAY_TRENDING_CACHE_SECONDS = env.int("RELAY_TRENDING_CACHE_SECONDS", default=10)
# Who may create a lobby by joining a document id that has no row: anyone (the LF relay's
# behaviour), authenticated (any signed-in user), or permission (holders of lobbies.create_lobby).
RELAY_CREATION_POLICY = env.str("RELAY_CREATION_POLICY", default="anyone")
# Lobby rows one Join's `lobby` extra may create (its other new ids are refused, rate_limited).
RELAY_MAX_NEW_LOBBIES_PER_JOIN = env.int("RELAY_MAX_NEW_LOBBIES_PER_JOIN", default=4)
# Lobby rows one identity (a user, or an anonymous client's address) may create by Joins.
RELAY_LOBBY_CREATION_RATE = env.str("RELAY_LOBBY_CREATION_RATE", default="60/hour")
# Seconds after which a lobby without an owner (made by an anonymous Join, or whose owner was
# deleted) that nobody is in is deleted: an id a stranger took comes back.
RELAY_ORPHAN_LOBBY_TTL = env.float("RELAY_ORPHAN_LOBBY_TTL", default=3600.0)
# Quick join (docs/protocol.md): requests per address and per user, and how long the seat it
# finds is kept for a player who has not joined yet.
RELAY_QUICK_JOIN_RATE = env.str("RELAY_QUICK_JOIN_RATE", default="60/minute")
RELAY_SEAT_TTL = env.float("RELAY_SEAT_TTL", default=30.0)

# Abuse limits (lobbies/engine/ratelimits.py). Rates are written as the `limits` library reads them,
# "20/second" or "600/minute"; an empty value turns a limit off. Past each: close 4429, or for a
# Join or Leave an extended Error "rate_limited" (it is not applied).
# Sockets one client address may hold open at once (0: no limit).
RELAY_MAX_CONNECTIONS_PER_ADDRESS = env.int("RELAY_MAX_CONNECTIONS_PER_ADDRESS", default=1000)
# New sockets (WebSocket handshakes) per client address.
RELAY_HANDSHAKE_RATE = env.str("RELAY_HANDSHAKE_RATE", default="200/second")
# Joins and Leaves per control socket.
RELAY_JOIN_RATE = env.str("RELAY_JOIN_RATE", default="50/second")
# Introductions one control socket's Joins may cause (to it and to the peers it meets); past it
# they are spread over time, up to 30 s of it per Join (more: the Join is refused).
RELAY_INTRODUCTION_RATE = env.str("RELAY_INTRODUCTION_RATE", default="5000/second")
# Refusals (4400, 4401, 4403, 4409, 4429) per client address, and replacements per peer id,
# answered at once; past the rate, each further one waits RELAY_REFUSAL_DELAY seconds, so a
# client reconnecting in a loop costs the relay a bounded rate.
RELAY_REFUSAL_RATE = env.str("RELAY_REFUSAL_RATE", default="5/second")
RELAY_REFUSAL_DELAY = env.float("RELAY_REFUSAL_DELAY", default=1.0)

# Events for plugins (lobbies/signals.py): how many may wait for slow receivers before new ones
# are dropped (and counted), and how often open pipes report their traffic (0: only at close).
RELAY_EVENT_QUEUE = env.int("RELAY_EVENT_QUEUE", default=100_000)
RELAY_PIPE_REPORT_SECONDS = env.float("RELAY_PIPE_REPORT_SECONDS", default=60.0)

# The analytics plugin (analytics/): seconds between its batched writes, days of statistics kept
# (`manage.py prune_analytics` deletes older ones), and whether nicknames are counted (privacy).
RELAY_ANALYTICS_FLUSH_SECONDS = env.float("RELAY_ANALYTICS_FLUSH_SECONDS", default=5.0)
RELAY_ANALYTICS_RETENTION_DAYS = env.int("RELAY_ANALYTICS_RETENTION_DAYS", default=90)
RELAY_ANALYTICS_NICKNAMES = env.bool("RELAY_ANALYTICS_NICKNAMES", default=True)

# Operations (lobbies/operations.py): who may read GET /metrics (clients from these networks, or
# with `Authorization: Bearer <RELAY_METRICS_TOKEN>`; everyone else gets 403), how long /readyz
# waits for the database and Redis each, and how long a worker told to stop (SIGTERM) goes on
# serving while /readyz says it is draining, so that a load balancer stops sending it clients.
RELAY_METRICS_NETWORKS = env.list("RELAY_METRICS_NETWORKS", default=["127.0.0.0/8", "::1"])
RELAY_METRICS_TOKEN = env.str("RELAY_METRICS_TOKEN", default="")
RELAY_READY_TIMEOUT = env.float("RELAY_READY_TIMEOUT", default=2.0)
RELAY_DRAIN_SECONDS = env.float("RELAY_DRAIN_SECONDS", default=0.0)

# Sign-in throttling (django-axes, relayproject/signin.py): failed sign-ins to the admin and the
# owners' pages allowed for one account from one address, and for one address whatever the
# accounts (password sprays), before that address is refused for RELAY_SIGNIN_LOCKOUT minutes
# (each further try starts them again). The address is the one the ASGI server reports (see the
# README: behind a proxy, the server must be told to trust its X-Forwarded-For).
RELAY_SIGNIN_FAILURES = env.int("RELAY_SIGNIN_FAILURES", default=5)
RELAY_SIGNIN_FAILURES_PER_ADDRESS = env.int("RELAY_SIGNIN_FAILURES_PER_ADDRESS", default=30)
RELAY_SIGNIN_LOCKOUT = env.float("RELAY_SIGNIN_LOCKOUT", default=15.0)
# Self sign-up at /accounts/signup/ (lobbies/onboarding.py): off, the page answers 404 and owners
# are made by operators (the admin, or `manage.py create_owner`). On, anyone who can reach the
# relay may make an account that creates lobbies; each attempt from an address counts in the
# sign-in throttling above, and past RELAY_SIGNUPS_PER_ADDRESS of them (within the lockout's
# minutes of each other) that address is refused (429).
RELAY_SIGNUP = env.bool("RELAY_SIGNUP", default=False)
RELAY_SIGNUPS_PER_ADDRESS = env.int("RELAY_SIGNUPS_PER_ADDRESS", default=10)
# Seconds a sign-in link from `manage.py create_owner` stays valid (unless used first): Django's
# password-reset token, whose timeout this is.
RELAY_SIGNIN_LINK_TTL = env.int("RELAY_SIGNIN_LINK_TTL", default=24 * 3600)
PASSWORD_RESET_TIMEOUT = RELAY_SIGNIN_LINK_TTL
# Where owners open the relay's pages, for links made outside a request (create_owner's sign-in
# link): never the Host header of some request, which a client chooses.
RELAY_PUBLIC_URL = env.str("RELAY_PUBLIC_URL", default="http://127.0.0.1:8080")
AXES_HANDLER = "relayproject.signin.SigninHandler"
# In this order: SigninHandler reads the account's count, then the address's.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_FAILURE_LIMIT = RELAY_SIGNIN_FAILURES
AXES_COOLOFF_TIME = timedelta(minutes=RELAY_SIGNIN_LOCKOUT)
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"  # status 429 (AXES_HTTP_RESPONSE_CODE)
# Never django-ipware's guess from headers a client can send: REMOTE_ADDR, as the server set it.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
