"""Wire format of the relay's control socket, and the URLs of its two WebSocket endpoints.

Pure functions, no I/O, so the rest of the client (and tests) can rely on them directly.

Two dialects exist for control messages (see docs/protocol.md):

- ``"json"``: the 3.x clients' dialect, JSON in text frames; Introductions name the other peer
  in the field ``userName``.
- ``"msgpack"``: the 4.x clients' dialect, MessagePack in binary frames; the field is ``peerId``.

A server answers in the dialect of the peer's latest frame, but we decode by frame type rather
than by the dialect we chose, so a server that answers in the other dialect is still understood.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import msgpack

Dialect = Literal["json", "msgpack"]
DIALECTS: tuple[Dialect, ...] = ("json", "msgpack")

# The field of an Introduction that names the other peer, per dialect.
PEER_FIELD: dict[Dialect, str] = {"json": "userName", "msgpack": "peerId"}


class MalformedMessage(ValueError):
    """A control frame that could not be decoded into a message object."""


@dataclass(frozen=True)
class Introduction:
    """A validated Introduction: the server says we share ``document_ids`` with ``peer_id``."""

    peer_id: str
    document_ids: tuple[str, ...]
    raw: Mapping[str, Any]


def encode(message: Mapping[str, Any], dialect: Dialect) -> str | bytes:
    """Encode a control message: a JSON ``str`` (text frame) or MessagePack ``bytes`` (binary)."""
    if dialect == "json":
        # ensure_ascii=False keeps ids readable on the wire; both are valid JSON.
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    if dialect == "msgpack":
        return msgpack.packb(message, use_bin_type=True)
    raise ValueError(f"unknown dialect {dialect!r}; expected one of {DIALECTS}")


def decode(frame: str | bytes) -> dict[str, Any]:
    """Decode one control frame by its frame type (text is JSON, binary is MessagePack).

    Raises MalformedMessage when the frame is not a map with a string ``type``.
    """
    try:
        # raw=False: MessagePack str -> Python str. The strict_map_key default stays: a control
        # message only ever has string keys.
        message = json.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame, raw=False)
    except Exception as error:
        # Broad on purpose: a hostile or buggy frame can raise ValueError, OutOfData, TypeError
        # (unhashable keys) or RecursionError (deep nesting); none of it may kill the client.
        raise MalformedMessage(f"undecodable control frame: {error}") from error
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise MalformedMessage(f"control frame is not a typed message: {message!r:.200}")
    return message


def parse_introduction(message: Mapping[str, Any], dialect: Dialect) -> Introduction | None:
    """Return the Introduction in ``message``, or None if it is not a well-formed one.

    Prefer the field of our own dialect and fall back to the other one, so either server answer
    is accepted. Document ids that are not strings are dropped rather than failing the message.
    """
    if message.get("type") != "Introduction":
        return None
    other_field = PEER_FIELD["msgpack" if dialect == "json" else "json"]
    peer_id = message.get(PEER_FIELD[dialect], message.get(other_field))
    document_ids = message.get("documentIds", [])
    if not isinstance(peer_id, str) or not peer_id or not isinstance(document_ids, list):
        return None
    valid_ids = tuple(d for d in document_ids if isinstance(d, str) and d)
    return Introduction(peer_id=peer_id, document_ids=valid_ids, raw=message)


@dataclass(frozen=True)
class Joined:
    """Extended ``Joined``: we are in ``document_id`` as ``role`` (``host`` or ``member``);
    ``lobby`` is its metadata, or None for an id without a lobby row (an LF channel)."""

    document_id: str
    role: str
    lobby: Mapping[str, Any] | None


@dataclass(frozen=True)
class Refusal:
    """Extended ``Error``: the relay refused a Join of ``document_id`` (``code``: lobby_full,
    forbidden, not_found, locked, invalid, rate_limited)."""

    code: str
    document_id: str | None
    message: str


@dataclass(frozen=True)
class Left:
    """Extended ``Left``: we are no longer in ``document_id`` (``reason``: kicked, closed,
    host_left)."""

    document_id: str
    reason: str


def parse_extended(message: Mapping[str, Any]) -> Joined | Refusal | Left | None:
    """The extended message in ``message`` (sent only to clients that asked with ``"ext": 1``),
    or None if it is none, or not a well-formed one."""
    kind, document_id = message.get("type"), message.get("documentId")
    if kind == "Joined" and isinstance(document_id, str) and isinstance(message.get("role"), str):
        lobby = message.get("lobby")
        return Joined(document_id, message["role"], lobby if isinstance(lobby, dict) else None)
    if kind == "Error" and isinstance(message.get("code"), str):
        where = document_id if isinstance(document_id, str) else None
        return Refusal(message["code"], where, str(message.get("message", "")))
    if kind == "Left" and isinstance(document_id, str):
        return Left(document_id, str(message.get("reason", "")))
    return None


def join_message(document_ids: list[str], extra: Mapping[str, Any] | None = None) -> dict:
    """Build a Join. ``extra`` carries optional fields (``ext``, ``nickname``, ``lobby``)."""
    return {**(extra or {}), "type": "Join", "documentIds": list(document_ids)}


def leave_message(document_ids: list[str]) -> dict:
    """Build a Leave."""
    return {"type": "Leave", "documentIds": list(document_ids)}


HEARTBEAT: dict[str, str] = {"type": "Heartbeat"}


def _segment(value: str) -> str:
    # safe='' so that '/' inside an id becomes %2F and stays one path segment.
    return quote(value, safe="")


def normalize_base_url(url: str) -> str:
    """Accept ``http(s)://`` like the LF client does, and drop a trailing slash.

    The base URL may carry a path prefix (``ws://host/t/<ticket>``); it is kept as it is.
    """
    if url.startswith("http://"):
        url = "ws://" + url[len("http://") :]
    elif url.startswith("https://"):
        url = "wss://" + url[len("https://") :]
    return url.rstrip("/")


def introduction_url(base_url: str, peer_id: str) -> str:
    """URL of the control socket of ``peer_id``."""
    return f"{normalize_base_url(base_url)}/introduction/{_segment(peer_id)}"


def connection_url(base_url: str, me: str, other: str, document_id: str) -> str:
    """URL of the pipe that ``me`` asks for, to ``other``, about ``document_id``."""
    path = f"{_segment(me)}/{_segment(other)}/{_segment(document_id)}"
    return f"{normalize_base_url(base_url)}/connection/{path}"
