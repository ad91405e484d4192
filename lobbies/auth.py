"""Who is on the other end of a WebSocket: tickets, API tokens and the Django session.

A client proves who it is by one of (first found wins):

- a **ticket** as a path prefix, ``/t/<ticket>/introduction/<peerId>``: an unmodified LF client
  given ``ws://relay/t/<ticket>`` as its URL sends it on every socket it opens;
- ``Authorization: Bearer <ticket or API token>`` (game servers, scripts);
- the Django session cookie (pages served by the relay itself, or by an origin
  ``RELAY_ALLOWED_ORIGINS`` names: ``lobbies.engine.security.cookie_trusted``).

A ticket is signed with the project's secret key and expires (``RELAY_TICKET_TTL``). Nothing is
stored, yet it can be taken back: it carries a digest of its user's session-auth hash (which
changes with the password, as Django's password-reset tokens use it) and, when an API token
minted it, that token's id; it dies with the password, the user's ``is_active`` and the token.
An API token is a database row (``lobbies.models.ApiToken``) that its owner can revoke. A bad,
expired or revoked ticket or token closes the socket with 4401; a stale session cookie is simply
anonymous (browsers keep cookies long after sessions end). Anonymous clients keep the LF relay's
trust level. Live sockets whose credential dies are closed by ``lobbies.credentials``.

:class:`TicketPath` takes the ticket off the path before anything else sees it (routing, the
origin check's refusal, the servers' own log lines); :class:`RelayAuthMiddleware` resolves the
credentials once per handshake, into ``scope["identity"]`` (a :class:`lobbies.policy.Identity`)
and ``scope["user"]``. A handshake that carries none (or only a cookie its origin may not use)
costs no database query and no thread hop.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable
from typing import Any

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib import auth
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.http.cookie import parse_cookie
from django.utils.crypto import constant_time_compare
from django.utils.module_loading import import_string

from lobbies.conf import relay_settings
from lobbies.engine.ratelimits import get_rate_limits
from lobbies.engine.security import cookie_trusted
from lobbies.policy import ANONYMOUS, Identity

_TICKET_SALT = "lobbies.auth.ticket"
_TICKET_PREFIX = "/t/"


class AuthError(Exception):
    """Credentials were given but are not valid (close code 4401)."""


def _password_digest(session_hash: str) -> str:
    # The session-auth hash is an HMAC of the password hash with the secret key; a ticket is
    # signed, not encrypted, so it carries a short digest of it, not the hash itself.
    return hashlib.sha256(session_hash.encode()).hexdigest()[:16]


def issue_ticket(user: Any, ttl: float | None = None, token: Any = None) -> str:
    """A signed ticket for ``user``, valid for ``ttl`` seconds (default ``RELAY_TICKET_TTL``),
    minted by the API token ``token`` (an ``ApiToken``) or by the user's own session (None).

    The ticket is URL-safe (it is used as a path segment) and carries the user's id, the moment
    it stops being valid, a digest of the user's session-auth hash (a password change ends it)
    and the minting token's id (revoking the token ends it); nothing is stored.
    """
    ttl = relay_settings().ticket_ttl if ttl is None else ttl
    claims = {
        "u": user.pk,
        "exp": int(time.time() + ttl),
        "h": _password_digest(user.get_session_auth_hash()),
    }
    if token is not None:
        claims["k"] = token.pk
    return signing.Signer(salt=_TICKET_SALT).sign_object(claims)


def _ticket_user(ticket: str) -> tuple[Any, str]:
    """The user a ticket proves, and the credential it names (``ticket`` or ``ticket:<id>``)."""
    from lobbies.models import ApiToken

    try:
        claims = signing.Signer(salt=_TICKET_SALT).unsign_object(ticket)
        user_id, expires, digest = claims["u"], float(claims["exp"]), str(claims["h"])
        token_id = claims.get("k")
    except (signing.BadSignature, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AuthError("the ticket is not valid") from exc
    if time.time() >= expires:
        raise AuthError("the ticket has expired")
    user = auth.get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise AuthError("the ticket's user is not active")
    # As django.contrib.auth.get_user: also the hashes made with SECRET_KEY_FALLBACKS.
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    if not any(constant_time_compare(digest, _password_digest(h)) for h in hashes):
        raise AuthError("the ticket's user has changed their password")
    if token_id is None:
        return user, "ticket"
    if not ApiToken.objects.usable().filter(pk=token_id, user=user).exists():
        raise AuthError("the API token that made the ticket has been revoked")
    return user, f"ticket:{token_id}"


def _bearer_user(credential: str) -> tuple[Any, str]:
    from lobbies.models import TOKEN_PREFIX, ApiToken

    if credential.startswith(TOKEN_PREFIX):
        token = ApiToken.objects.authenticate(credential)
        if token is None or not token.user.is_active:
            raise AuthError("the API token is not valid or has been revoked")
        return token.user, f"token:{token.pk}"
    return _ticket_user(credential)


class _ReadOnlySession:
    """The handshake's session, as ``django.contrib.auth.get_user`` reads it. A handshake never
    writes the session: a socket cannot hand the browser a new cookie, so the key rotation
    ``get_user`` does for a session made with an old secret key (``SECRET_KEY_FALLBACKS``) is
    left to the browser's next page, and a session that no longer verifies is left to it too
    (the socket is anonymous either way)."""

    def __init__(self, session_key: str) -> None:
        self._store = import_string(settings.SESSION_ENGINE + ".SessionStore")(session_key)

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        pass

    def cycle_key(self) -> None:
        pass

    def flush(self) -> None:
        pass


class _SessionRequest:
    """What ``django.contrib.auth.get_user`` needs of a request: its session."""

    def __init__(self, session_key: str) -> None:
        self.session = _ReadOnlySession(session_key)


def _session_user(session_key: str) -> Any:
    # Django's own loading: the configured session engine, the session's auth backend, the
    # session-auth hash (a password change ends the session) with SECRET_KEY_FALLBACKS.
    user = auth.get_user(_SessionRequest(session_key))  # type: ignore[arg-type]
    return user if user.is_authenticated else None


def identity_of(user: Any, credential: str = "") -> Identity:
    """The facts ``lobbies.policy`` needs about ``user`` (a Django user, or None), proved by
    ``credential`` (see :attr:`lobbies.policy.Identity.credential`)."""
    if user is None or not user.is_authenticated:
        return ANONYMOUS
    return Identity(
        user_id=user.pk,
        username=user.get_username(),
        is_staff=user.is_staff,
        is_superuser=user.is_superuser,
        permissions=frozenset(user.get_all_permissions()),
        group_ids=frozenset(user.groups.values_list("pk", flat=True)),
        credential=credential,
    )


def resolve(
    ticket: str | None, bearer: str | None, session_key: str | None
) -> tuple[Any, Identity]:
    """The user and identity these credentials prove (blocking: database queries).

    Raises :class:`AuthError` for a ticket or token that is not valid.
    """
    if ticket is not None:
        user, credential = _ticket_user(ticket)
    elif bearer is not None:
        user, credential = _bearer_user(bearer)
    else:
        user, credential = (_session_user(session_key) if session_key else None), "session"
    return user, identity_of(user, credential)


def split_ticket(path: str) -> tuple[str | None, str]:
    """``(ticket, rest)`` of a path that starts with ``/t/<ticket>/``; ``(None, path)`` else."""
    if not path.startswith(_TICKET_PREFIX):
        return None, path
    ticket, slash, rest = path[len(_TICKET_PREFIX) :].partition("/")
    return ticket, slash + rest


class TicketPath:
    """Moves a ``/t/<ticket>`` path prefix into ``scope["ticket"]``, before any other layer but
    ``lobbies.proxies.ForwardedClient`` (which reads no path) sees the scope.

    In place, on purpose (ASGI middleware usually copies the scope): the server keeps the same
    scope for its own log lines (uvicorn's ``"WebSocket /path" [accepted]``, its access log),
    which must never show a ticket; nor must routing, Django's ``Not Found`` warning for an HTTP
    request to such a path, or the relay's own log.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    _asgi_single_callable = True  # (asgiref: an ASGI 3 application, though not ``async``)

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        # The application's coroutine, not awaited here: no frame of this layer's for the
        # socket's life (see lobbies.engine.routing).
        if scope["type"] in ("websocket", "http") and scope["path"].startswith(_TICKET_PREFIX):
            scope["ticket"], scope["path"] = split_ticket(scope["path"])
            if raw := scope.get("raw_path"):
                scope["raw_path"] = split_ticket(raw.decode("latin-1"))[1].encode("latin-1")
        return self.application(scope, receive, send)


class NoTickets(logging.Filter):
    """A log filter that replaces the ticket of any ``/t/<ticket>`` in a record's message with
    ``...``. For the servers' loggers (``relayproject.asgi`` installs it on uvicorn's), whose debug
    lines show a WebSocket upgrade's request line before any application code runs."""

    _ticket = re.compile(r"/t/[^/\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _TICKET_PREFIX in message:
            record.msg, record.args = self._ticket.sub("/t/...", message), ()
        return True


def _credentials(scope: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    bearer = session_key = None
    cookies = b""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                bearer = credential.strip()
        elif name == b"cookie":
            cookies = value
    if cookies and settings.SESSION_COOKIE_NAME.encode() in cookies:
        session_key = parse_cookie(cookies.decode("latin-1")).get(settings.SESSION_COOKIE_NAME)
        if session_key and not cookie_trusted(scope.get("headers", [])):
            session_key = None  # a page of another site: the socket is anonymous
    return scope.get("ticket"), bearer, session_key


# Stateless: one for every anonymous socket.
ANONYMOUS_USER = AnonymousUser()


class RelayAuthMiddleware(BaseMiddleware):
    """Puts the handshake's ``identity`` and ``user`` in the scope (after :class:`TicketPath`).

    Bad credentials do not refuse the handshake here: the consumer accepts and closes with
    4401, since a close code reaches only an accepted socket. ``scope["auth_error"]`` says why.
    """

    _asgi_single_callable = True  # (asgiref: an ASGI 3 application, though not ``async``)

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[Any]:
        # Returns the inner application's coroutine rather than awaiting it, when nothing here
        # waits (an anonymous handshake): a layer that awaits keeps a coroutine frame for the
        # socket's whole life (see lobbies.engine.routing).
        if scope["type"] != "websocket":
            return self.inner(scope, receive, send)
        ticket, bearer, session_key = _credentials(scope)
        # In place rather than a copy (as TicketPath): a copy of the scope would live as long
        # as the socket, and most sockets are idle control sockets (about 500 bytes each).
        scope["identity"], scope["user"] = ANONYMOUS, ANONYMOUS_USER
        if ticket is not None or bearer is not None or session_key:
            return self._authenticated(scope, receive, send, ticket, bearer, session_key)
        return self.inner(scope, receive, send)

    async def _authenticated(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        ticket: str | None,
        bearer: str | None,
        session_key: str | None,
    ) -> Any:
        # Counted before the database is asked: credentials, good or junk, must not buy a
        # client more handshakes (and queries) than RELAY_HANDSHAKE_RATE.
        address = scope["client"][0] if scope.get("client") else "-"
        scope["handshake_allowed"] = await get_rate_limits().handshake(address)
        if not scope["handshake_allowed"]:
            return await self.inner(scope, receive, send)  # refused there (4429)
        try:
            user, identity = await database_sync_to_async(resolve)(ticket, bearer, session_key)
        except AuthError as exc:
            scope["auth_error"] = str(exc)
        else:
            if user is not None:
                scope["user"], scope["identity"] = user, identity
        return await self.inner(scope, receive, send)
