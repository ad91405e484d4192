"""Who is on the other end of a WebSocket: tickets, API tokens and the Django session.

A client proves who it is by one of (first found wins):

- a **ticket** as a path prefix, ``/t/<ticket>/introduction/<peerId>``: an unmodified LF client
  given ``ws://relay/t/<ticket>`` as its URL sends it on every socket it opens;
- ``Authorization: Bearer <ticket or API token>`` (game servers, scripts);
- the Django session cookie (pages served by the relay itself).

A ticket is signed with the project's secret key and expires (``RELAY_TICKET_TTL``); an API
token is a database row (``lobbies.models.ApiToken``) that its owner can revoke. A bad or expired
ticket or token closes the socket with 4401; a stale session cookie is simply anonymous (browsers
keep cookies long after sessions end). Anonymous clients keep the LF relay's trust level.

:class:`RelayAuthMiddleware` resolves the credentials once per handshake, into
``scope["identity"]`` (a :class:`lobbies.policy.Identity`) and ``scope["user"]``; a handshake that
carries none costs no database query and no thread hop.
"""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core import signing

from lobbies.conf import relay_settings
from lobbies.policy import ANONYMOUS, Identity

_TICKET_SALT = "lobbies.auth.ticket"
_TICKET_PREFIX = "/t/"


class AuthError(Exception):
    """Credentials were given but are not valid (close code 4401)."""


def issue_ticket(user: Any, ttl: float | None = None) -> str:
    """A signed ticket for ``user``, valid for ``ttl`` seconds (default ``RELAY_TICKET_TTL``).

    The ticket is URL-safe (it is used as a path segment) and carries the user's id and the
    moment it stops being valid; nothing is stored.
    """
    ttl = relay_settings().ticket_ttl if ttl is None else ttl
    return signing.Signer(salt=_TICKET_SALT).sign_object(
        {"u": user.pk, "exp": int(time.time() + ttl)}
    )


def _ticket_user(ticket: str) -> Any:
    try:
        claims = signing.Signer(salt=_TICKET_SALT).unsign_object(ticket)
        user_id, expires = claims["u"], float(claims["exp"])
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise AuthError("the ticket is not valid") from exc
    if time.time() >= expires:
        raise AuthError("the ticket has expired")
    user = get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise AuthError("the ticket's user is not active")
    return user


def _bearer_user(credential: str) -> Any:
    from lobbies.models import TOKEN_PREFIX, ApiToken

    if credential.startswith(TOKEN_PREFIX):
        token = ApiToken.objects.authenticate(credential)
        if token is None or not token.user.is_active:
            raise AuthError("the API token is not valid or has been revoked")
        return token.user
    return _ticket_user(credential)


def _session_user(session_key: str) -> Any:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
    from django.utils.crypto import constant_time_compare
    from django.utils.module_loading import import_string

    store = import_string(settings.SESSION_ENGINE + ".SessionStore")(session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(store[SESSION_KEY])
        backend = load_backend(store[BACKEND_SESSION_KEY])
    except (KeyError, ImportError, ValueError):
        return None
    user = backend.get_user(user_id)
    # As django.contrib.auth.get_user: a password change ends the session's other logins.
    if user is None or not constant_time_compare(
        store.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
    ):
        return None
    return user


def identity_of(user: Any) -> Identity:
    """The facts ``lobbies.policy`` needs about ``user`` (a Django user, or None)."""
    if user is None or not user.is_authenticated:
        return ANONYMOUS
    return Identity(
        user_id=user.pk,
        username=user.get_username(),
        is_staff=user.is_staff,
        is_superuser=user.is_superuser,
        permissions=frozenset(user.get_all_permissions()),
        group_ids=frozenset(user.groups.values_list("pk", flat=True)),
    )


def resolve(
    ticket: str | None, bearer: str | None, session_key: str | None
) -> tuple[Any, Identity]:
    """The user and identity these credentials prove (blocking: database queries).

    Raises :class:`AuthError` for a ticket or token that is not valid.
    """
    if ticket is not None:
        user = _ticket_user(ticket)
    elif bearer is not None:
        user = _bearer_user(bearer)
    else:
        user = _session_user(session_key) if session_key else None
    return user, identity_of(user)


def split_ticket(path: str) -> tuple[str | None, str]:
    """``(ticket, rest)`` of a path that starts with ``/t/<ticket>/``; ``(None, path)`` else."""
    if not path.startswith(_TICKET_PREFIX):
        return None, path
    ticket, slash, rest = path[len(_TICKET_PREFIX) :].partition("/")
    return ticket, slash + rest


def _credentials(scope: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    bearer = session_key = None
    cookie_name = settings.SESSION_COOKIE_NAME.encode()
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                bearer = credential.strip()
        elif name == b"cookie" and cookie_name in value:
            for part in value.decode("latin-1").split(";"):
                key, _, cookie = part.strip().partition("=")
                if key == settings.SESSION_COOKIE_NAME:
                    session_key = cookie
    ticket, _ = split_ticket(scope["path"])
    return ticket, bearer, session_key


class RelayAuthMiddleware(BaseMiddleware):
    """Puts the handshake's ``identity`` and ``user`` in the scope, and takes a ``/t/<ticket>``
    prefix off the path (so that routing and logs never see the ticket).

    Bad credentials do not refuse the handshake here: the consumer accepts and closes with
    4401, since a close code reaches only an accepted socket. ``scope["auth_error"]`` says why.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        ticket, bearer, session_key = _credentials(scope)
        scope = dict(scope, identity=ANONYMOUS, user=AnonymousUser())
        if ticket is not None:
            scope["path"] = split_ticket(scope["path"])[1]
            raw = scope.get("raw_path")
            if raw:
                scope["raw_path"] = split_ticket(raw.decode("latin-1"))[1].encode("latin-1")
        if ticket is not None or bearer is not None or session_key:
            try:
                user, identity = await database_sync_to_async(resolve)(ticket, bearer, session_key)
            except AuthError as exc:
                scope["auth_error"] = str(exc)
            else:
                if user is not None:
                    scope["user"], scope["identity"] = user, identity
        return await self.inner(scope, receive, send)
