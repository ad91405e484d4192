"""The relay's log lines: one per connection opened, refused or closed, and one per operator
action, each carrying its facts as structured fields besides its human-readable message.

The message is the line the relay always wrote (``127.0.0.1:51234 /introduction/alice opened``);
the fields, passed as ``extra``, are what the JSON formatter (``RELAY_LOG_FORMAT=json``, set up
in ``relayproject/settings.py``) writes as keys of their own:

``event``            ``connection.opened``, ``connection.refused``, ``connection.closed``,
                     ``operator.action``
``endpoint``         ``introduction`` (a control socket), ``connection`` (a pipe's end), or
                     ``invalid`` (a path that names neither)
``peer_id``          the control socket's peer, or the pipe end's own peer (A of /A/B/doc)
``partner_id``       a pipe end's other peer (B); ``document_id`` its document
``path``             the path as shown (a ticket never appears: it leaves the path first)
``connection_id``    the socket's id in presence (``<worker>.<n>``); ``worker`` the process's
``client``           the client's address and port (behind a trusted proxy, the real client's)
``user``, ``user_id`` who the handshake proved to be (absent for anonymous clients)
``close_code``, ``close_reason``, ``duration_s``, ``frames_in``, ``bytes_in``,
``control_frames_in``, ``ids_joined``, ``delay_s`` (a refusal answered late)
``action``, ``by_user_id`` and the action's details, for operator actions

Never a line per frame: these are written as a socket opens and closes, and as an operator acts.

Ids a client chose (peer ids, document ids) and usernames are personal data as often as not
(``alice-and-bob``, an e-mail address as a peer id), so ``RELAY_LOG_IDS`` decides how every line
shows them: ``plain``, or ``hashed``: a keyed hash (HMAC-SHA256 keyed with the secret key, its
first 16 hex digits after a ``#``). The same id gives the same hash in every line of every
worker sharing the key, so one peer's or one lobby's lines can still be followed, and without
the key the hash cannot be turned back into the id, nor checked against guesses;
``manage.py log_id ID`` prints an id's hash, to find its lines. Client addresses are logged as
they are (per-address limits are enforced and investigated by them).
"""

from __future__ import annotations

import logging
import re
import time
from enum import StrEnum
from typing import Any

from django.dispatch import receiver
from django.utils.crypto import salted_hmac

from lobbies import signals
from lobbies.conf import relay_settings
from lobbies.engine import connections
from lobbies.engine.protocol import PathError, parse_connection_path, parse_introduction_path

# The logger names are the ones the relay has always used: operators filter on them.
connection_logger = logging.getLogger("lobbies.engine.connections")
operator_logger = logging.getLogger("lobbies.operators")


class LogFormat(StrEnum):
    """``RELAY_LOG_FORMAT``: how each line is written."""

    PLAIN = "plain"  # one human-readable line: time, level, logger, message
    JSON = "json"  # one JSON object a line, every field a key (python-json-logger)


class LogIds(StrEnum):
    """``RELAY_LOG_IDS``: how peer ids, document ids and usernames appear in log lines."""

    PLAIN = "plain"
    HASHED = "hashed"


# Hex digits kept of the HMAC: 64 bits, so two ids of one relay practically never share one.
HASH_DIGITS = 16
_HASH_SALT = "lobbies.logs.id"  # another key than sessions' or tickets', derived from the same


def hashed_id(value: str) -> str:
    """``value``'s keyed hash as hashed log lines show it (``#`` and 16 hex digits)."""
    return "#" + salted_hmac(_HASH_SALT, value, algorithm="sha256").hexdigest()[:HASH_DIGITS]


def shown_id(value: str | None) -> str | None:
    """A peer id, document id or username as log lines show it under ``RELAY_LOG_IDS``."""
    if value is None or relay_settings().log_ids == LogIds.PLAIN:
        return value
    return hashed_id(value)


def _hashing() -> bool:
    return relay_settings().log_ids == LogIds.HASHED


# -- connections ------------------------------------------------------------------------------

_INVALID_ID = re.compile(r"^(invalid id )(.+)$")


def _ids(scope: dict[str, Any], socket: Any) -> dict[str, Any]:
    """The endpoint and the ids a socket's path names, from the socket once it exists (its ids
    are parsed already), else from the path (a socket refused before it was made)."""
    peer_id = getattr(socket, "peer_id", None)
    key = getattr(socket, "key", None)
    if peer_id is not None:
        return {"endpoint": "introduction", "peer_id": peer_id}
    if key is not None:
        a, b, document_id = key
        return {"endpoint": "connection", "peer_id": a, "partner_id": b, "document_id": document_id}
    raw = scope.get("raw_path") or scope["path"]
    max_length = relay_settings().max_id_length
    try:
        return {"endpoint": "introduction", "peer_id": parse_introduction_path(raw, max_length)}
    except PathError:
        pass
    try:
        a, b, document_id = parse_connection_path(raw, max_length)
    except PathError:
        return {"endpoint": "invalid"}
    return {"endpoint": "connection", "peer_id": a, "partner_id": b, "document_id": document_id}


def shown_path(scope: dict[str, Any], socket: Any = None) -> str:
    """The socket's path as log lines show it: as it is, or with its ids hashed (what follows
    an endpoint's name in a path that is not valid is hashed as one, any other path whole:
    whatever it holds, a client chose it)."""
    path = scope["path"]
    if not _hashing():
        return path
    ids = _ids(scope, socket)
    if ids["endpoint"] == "introduction":
        return f"/introduction/{hashed_id(ids['peer_id'])}"
    if ids["endpoint"] == "connection":
        shown = "/".join(hashed_id(ids[k]) for k in ("peer_id", "partner_id", "document_id"))
        return f"/connection/{shown}"
    head, _, rest = path.lstrip("/").partition("/")
    if head in ("introduction", "connection") and rest:  # an endpoint, with a bad id
        return f"/{head}/{hashed_id(rest)}"
    return hashed_id(path)


def _shown_reason(reason: str) -> str:
    # A refused path's reason quotes the invalid id it found (protocol.PathError).
    if _hashing() and (found := _INVALID_ID.match(reason)):
        return found[1] + hashed_id(found[2])
    return reason


def _client(scope: dict[str, Any]) -> str:
    return "{}:{}".format(*scope["client"]) if scope.get("client") else "-"


def connection_fields(scope: dict[str, Any], socket: Any = None) -> dict[str, Any]:
    """The fields every line about this socket carries (its ids shown as ``RELAY_LOG_IDS``
    says), for ``extra``."""
    fields: dict[str, Any] = {
        key: shown_id(value) if key.endswith("_id") else value
        for key, value in _ids(scope, socket).items()
    }
    fields["path"] = shown_path(scope, socket)
    fields["client"] = _client(scope)
    if (connection := getattr(socket, "connection", None)) is not None:
        fields["connection_id"] = connection
    fields["worker"] = connections.PROCESS_TOKEN
    identity = scope.get("identity")
    if identity is not None and identity.is_authenticated:
        fields["user"], fields["user_id"] = shown_id(identity.username), identity.user_id
    return fields


def log_opened(scope: dict[str, Any], socket: Any) -> float:
    """Log that ``socket`` opened; returns when (for :func:`log_closed`'s duration)."""
    fields = connection_fields(scope, socket)
    who = f" as {fields['user']}" if "user" in fields else ""
    connection_logger.info(
        "%s %s opened%s",
        fields["client"],
        fields["path"],
        who,
        extra={"event": "connection.opened", **fields},
    )
    return time.monotonic()


def log_refused(
    scope: dict[str, Any], code: int, reason: str, delay: float, socket: Any = None
) -> None:
    """Log a socket refused as it opened, with its close code and why."""
    fields = connection_fields(scope, socket)
    reason = _shown_reason(reason)
    later = f" (answered after {delay:g} s)" if delay else ""
    connection_logger.info(
        "%s %s refused: %s %s%s",
        fields["client"],
        fields["path"],
        int(code),
        reason,
        later,
        extra={
            "event": "connection.refused",
            **fields,
            "close_code": int(code),
            "close_reason": reason,
            "delay_s": delay,
        },
    )


# What each count of a socket's traffic() is called in its close line's message.
_TRAFFIC_WORDS = {
    "frames_in": "frames",
    "bytes_in": "bytes in",
    "control_frames_in": "control frames in",
    "ids_joined": "ids joined",
}


def log_closed(
    scope: dict[str, Any], socket: Any, code: int | None, reason: str, started: float
) -> None:
    """Log that ``socket`` closed: its close code (the relay's, or the client's own when it
    closed first), how long it was open, and what its client sent (``socket.traffic()``)."""
    fields = connection_fields(scope, socket)
    duration = time.monotonic() - started
    traffic: dict[str, int] = socket.traffic()
    counts = ", ".join(f"{value} {_TRAFFIC_WORDS.get(key, key)}" for key, value in traffic.items())
    shown_reason = f" ({reason})" if reason else ""
    connection_logger.info(
        "%s %s closed: %s%s, %.1f s, %s",
        fields["client"],
        fields["path"],
        code,
        shown_reason,
        duration,
        counts,
        extra={
            "event": "connection.closed",
            **fields,
            "close_code": code,
            "close_reason": reason,
            "duration_s": round(duration, 3),
            **traffic,
        },
    )


# -- operator actions -------------------------------------------------------------------------

# Details of an operator action that name a person or an id (lobbies.owners._report): shown as
# RELAY_LOG_IDS says. The others (``fields``, ``reason``, ``expires_at``) are the relay's words.
_PERSONAL_DETAILS = ("banned", "previous", "owner")


@receiver(signals.operator_action, dispatch_uid="lobbies.logs.operator_action")
def log_operator_action(
    *,
    action: str,
    document_id: str | None,
    peer_id: str | None,
    user_id: int | None,
    detail: dict[str, Any],
    **kwargs: Any,
) -> None:
    """Receiver of ``signals.operator_action``: one line per action (a kick, a ban, a lobby
    closed or deleted...), whether taken in the admin, the API or the owners' pages."""
    detail = {
        key: shown_id(value) if key in _PERSONAL_DETAILS and isinstance(value, str) else value
        for key, value in detail.items()
    }
    lobby = shown_id(document_id)
    peer = shown_id(peer_id)
    where = f"lobby {lobby}" if document_id is not None else "the relay"
    whom = f" peer {peer}" if peer_id is not None else ""
    by = f"user {user_id}" if user_id is not None else "the relay itself"
    extras = "".join(f", {key} {value}" for key, value in detail.items() if value is not None)
    operator_logger.info(
        "%s%s in %s by %s%s",
        action,
        whom,
        where,
        by,
        extras,
        extra={
            "event": "operator.action",
            "action": action,
            "document_id": lobby,
            "peer_id": peer,
            "by_user_id": user_id,
            "worker": connections.PROCESS_TOKEN,
            # Under keys of their own: a detail named like a LogRecord attribute cannot clash.
            **{f"detail_{key}": value for key, value in detail.items()},
        },
    )
