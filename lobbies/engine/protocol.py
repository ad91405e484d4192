"""The relay's wire protocol: frames <-> messages, and id validation. Pure: no I/O, no Django.

Two dialects share one set of messages (see docs/protocol.md):

- ``json``: JSON in WebSocket *text* frames, spoken by ``@localfirst/relay-client`` 3.x, whose
  Introduction names the other peer ``userName``;
- ``msgpack``: MessagePack in *binary* frames, spoken by ``@localfirst/relay`` 4.x, whose
  Introduction names it ``peerId``.

The dialect is chosen by the frame type of each control frame, and the server answers a peer in
the dialect of that peer's latest control frame. Pipe frames are never parsed here: the relay
moves them untouched.

Words: a *peer id* names a client (the seed's ``userName``); a *document id* names what peers
meet about (the seed's channel or lobby; LF's discovery key).
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any
from urllib.parse import unquote

import msgpack


class CloseCode(IntEnum):
    """Every close code the relay itself sends (docs/protocol.md and the README list them all,
    with the codes the WebSocket layer sends on its own: 1002, 1007, 1009, 1011, 1012)."""

    NORMAL = 1000  # the other side of the pipe closed
    GOING_AWAY = 1001  # this worker is shutting down (daphne); reconnect
    INTERNAL_ERROR = 1011  # a fault of the relay's (also sent by the servers' keepalive)
    SERVICE_RESTART = 1012  # this worker lost its link to Redis, or is restarting; reconnect
    TRY_AGAIN_LATER = 1013  # the relay cannot serve new sockets now (Redis unreachable)
    INVALID = 4400  # bad path: unknown endpoint, invalid id, a pipe to oneself
    UNAUTHORIZED = 4401  # a ticket or API token that is not valid, or has expired
    FORBIDDEN = 4403  # a peer id held by another user; a pipe not introduced; banned
    PAIR_TIMEOUT = 4408  # a held pipe request was not matched in time
    CONFLICT = 4409  # replaced by a newer control socket; or the same pipe request is waiting
    GONE = 4410  # removed from the lobby: its host left, an operator closed it or kicked the peer
    TOO_LARGE = 4413  # a frame, a held backlog or an unread queue over its bound
    RATE_LIMITED = 4429  # too many pipe requests waiting in this process


class Dialect(StrEnum):
    """How a peer encodes its control frames."""

    JSON = "json"
    MSGPACK = "msgpack"


# The peer field each dialect's Introduction carries (the clients accept no other key).
_PEER_FIELD = {Dialect.JSON: "userName", Dialect.MSGPACK: "peerId"}


@dataclass(frozen=True, slots=True)
class Join:
    """The peer is now interested in these document ids (set union).

    Extras that LF servers ignore: ``ext`` (the client also wants the extended messages),
    ``nickname`` (a display name), ``lobby`` (metadata for a lobby this Join creates or its
    owner updates; validated by ``lobbies.schemas.LobbySpec``, not here) and ``quick_join``
    (the wire's ``quickJoin``: join a lobby quick join finds; validated by
    ``lobbies.matchmaking.QuickJoinSpec``).
    """

    document_ids: tuple[str, ...]
    ext: bool = False
    nickname: str | None = None
    lobby: dict[str, Any] | None = None
    quick_join: dict[str, Any] | None = None
    # Ids the frame named past RELAY_MAX_IDS_PER_PEER: not joined, only told about (at most as
    # many again; any further ones are dropped unanswered, so one frame's answers stay bounded).
    over_limit: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Leave:
    """The peer is no longer interested in these document ids."""

    document_ids: tuple[str, ...]
    ext: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Keep-alive; never answered."""


ControlMessage = Join | Leave | Heartbeat

_HEARTBEAT = Heartbeat()
_HEARTBEAT_TYPES = frozenset({"Heartbeat", "❤️"})


class PathError(ValueError):
    """A WebSocket path that names no valid endpoint or holds an invalid id (close code 4400)."""


def is_valid_id(value: object, max_length: int) -> bool:
    """Whether ``value`` may serve as a peer id or document id.

    Ids are non-empty strings of at most ``max_length`` characters with no control characters,
    format characters (bidi overrides and isolates, zero-width spaces, the BOM: they would make an
    id or nickname show as another in the admin and the pages), line or paragraph separators, or
    lone surrogates (ids end up in logs, the admin and other peers' URLs); any other Unicode is
    allowed, since the clients percent-encode ids in their URLs. The zero-width joiner and
    non-joiner are format characters that writing needs (emoji such as 👩‍💻, Persian, Indic
    scripts): they are allowed.
    """
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        return False
    # The common case, checked in C: printable strings (ASCII ones, and "Zoë" or "玩家") hold
    # none of these categories, so only the rare others are looked at character by character.
    if value.isprintable():
        return True
    return not any(
        unicodedata.category(ch) in _REFUSED_IN_IDS and ch not in _JOINERS for ch in value
    )


# Control, format, line and paragraph separator, surrogate.
_REFUSED_IN_IDS = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_JOINERS = frozenset("\u200c\u200d")  # zero-width non-joiner and joiner


def _decode_segment(segment: str, max_length: int) -> str:
    try:
        value = unquote(segment, errors="strict")
    except UnicodeDecodeError as exc:
        raise PathError("id is not valid UTF-8 once percent-decoded") from exc
    if not is_valid_id(value, max_length):
        raise PathError(f"invalid id {segment[:64]!r}")
    return value


def _endpoint_segments(raw_path: bytes | str, endpoint: str, count: int) -> list[str]:
    """The ``count`` raw segments after ``endpoint`` at the end of a path.

    The path is split *before* percent-decoding, so an id may contain an encoded ``/``. Only the
    tail is read: anything before the endpoint (such as a ``/t/<ticket>`` prefix) is left to the
    router and auth middleware.
    """
    path = raw_path.decode("ascii", "replace") if isinstance(raw_path, bytes) else raw_path
    path = path.split("?", 1)[0]
    segments = path.split("/")
    if len(segments) < count + 1 or segments[-count - 1] != endpoint:
        raise PathError(f"expected /{endpoint}/ followed by {count} id(s)")
    return segments[-count:]


def parse_introduction_path(raw_path: bytes | str, max_length: int) -> str:
    """The peer id of an ``/introduction/<peerId>`` path. Raises :class:`PathError`."""
    (peer,) = _endpoint_segments(raw_path, "introduction", 1)
    return _decode_segment(peer, max_length)


def parse_connection_path(raw_path: bytes | str, max_length: int) -> tuple[str, str, str]:
    """``(A, B, documentId)`` of a ``/connection/<A>/<B>/<documentId>`` path.

    Raises :class:`PathError`, also when A and B are the same peer (a peer never meets itself).
    """
    a, b, doc = (
        _decode_segment(s, max_length) for s in _endpoint_segments(raw_path, "connection", 3)
    )
    if a == b:
        raise PathError("a peer cannot open a pipe to itself")
    return a, b, doc


def _ids(value: object, max_length: int) -> tuple[str, ...] | None:
    # As many as the frame holds: its size is bounded (RELAY_MAX_CONTROL_FRAME_BYTES).
    if not isinstance(value, list) or not all(is_valid_id(v, max_length) for v in value):
        return None
    return tuple(dict.fromkeys(value))  # de-duplicated, order kept


def _unpack(frame: bytes, max_bytes: int) -> object:
    # Explicit limits: a hostile frame must not make msgpack allocate more than it carries.
    unpacker = msgpack.Unpacker(
        max_buffer_size=max_bytes,
        max_str_len=max_bytes,
        max_bin_len=max_bytes,
        max_array_len=max_bytes // 2 + 1,
        max_map_len=max_bytes // 2 + 1,
        max_ext_len=max_bytes,
        raw=False,
        strict_map_key=True,
    )
    unpacker.feed(frame)
    value = unpacker.unpack()
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        return value
    raise ValueError("trailing data after the message")


def decode_control(
    frame: str | bytes, *, max_id_length: int, max_ids: int
) -> tuple[Dialect, ControlMessage | None]:
    """Decode one control frame into ``(dialect, message)``.

    The dialect follows the frame type even when the content is unusable; the message is
    ``None`` for anything malformed or unknown, which the caller ignores (the socket stays open).
    """
    dialect = Dialect.JSON if isinstance(frame, str) else Dialect.MSGPACK
    try:
        data = json.loads(frame) if dialect is Dialect.JSON else _unpack(frame, len(frame) + 16)
    except (ValueError, msgpack.UnpackException, msgpack.ExtraData, RecursionError):
        return dialect, None
    if not isinstance(data, dict):
        return dialect, None
    kind = data.get("type")
    if not isinstance(kind, str):  # also keeps unhashable values out of the set lookup
        return dialect, None
    if kind in _HEARTBEAT_TYPES:
        return dialect, _HEARTBEAT
    if kind in ("Join", "Leave"):
        ids = _ids(data.get("documentIds"), max_id_length)
        if ids is None:
            return dialect, None
        ext = data.get("ext") == 1
        if kind == "Leave":
            return dialect, Leave(ids, ext)
        nickname, lobby, quick = data.get("nickname"), data.get("lobby"), data.get("quickJoin")
        return dialect, Join(
            ids[:max_ids],
            ext,
            nickname if is_valid_id(nickname, max_id_length) else None,
            lobby if isinstance(lobby, dict) else None,
            quick if isinstance(quick, dict) else None,
            ids[max_ids : 2 * max_ids],
        )
    return dialect, None


def frame_size(payload: str | bytes) -> int:
    """A frame's size on the wire: bytes, or UTF-8 bytes for a text frame (cheap for ASCII)."""
    if isinstance(payload, str) and not payload.isascii():
        return len(payload.encode())
    return len(payload)


def encode(dialect: Dialect, message: dict[str, Any]) -> str | bytes:
    """``message`` as a frame of ``dialect``: JSON text, or MessagePack bytes."""
    if dialect is Dialect.JSON:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    return msgpack.packb(message)


def encode_joined(
    dialect: Dialect, document_id: str, role: str, lobby: dict[str, Any] | None
) -> str | bytes:
    """Extended ``Joined``: the peer is in ``document_id`` as ``role`` (host or member)."""
    return encode(
        dialect, {"type": "Joined", "documentId": document_id, "role": role, "lobby": lobby}
    )


def encode_error(dialect: Dialect, code: str, document_id: str | None, text: str) -> str | bytes:
    """Extended ``Error``: a Join (or other request) about ``document_id`` was refused."""
    message = {"type": "Error", "code": code, "documentId": document_id, "message": text}
    return encode(dialect, message)


def encode_left(dialect: Dialect, document_id: str, reason: str) -> str | bytes:
    """Extended ``Left``: the peer is no longer in ``document_id`` (kicked, closed, host_left)."""
    return encode(dialect, {"type": "Left", "documentId": document_id, "reason": reason})


def encode_introduction(dialect: Dialect, peer_id: str, document_ids: list[str]) -> str | bytes:
    """An Introduction of ``peer_id`` for the given shared ids, with exactly the keys the
    clients of ``dialect`` accept: JSON text for 3.x, MessagePack bytes for 4.x."""
    message = {"type": "Introduction", _PEER_FIELD[dialect]: peer_id, "documentIds": document_ids}
    return encode(dialect, message)
