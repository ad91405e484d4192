"""The shape of lobby metadata, validated wherever it arrives: a Join's ``lobby`` extra, the
owners' JSON API (create and PATCH), the owners' pages and the admin. Pydantic (through
django-ninja) does the validation; :class:`LobbySpec` says what is allowed.

One schema for creating and for changing a lobby: what a client *names* is what changes
(:meth:`LobbySpec.changes`, built on pydantic's ``exclude_unset``), so ``{"title": "x"}`` never
resets visibility, capacity, topology or data to their defaults. A field a lobby cannot be without
(everything but ``maxPeers``, where ``null`` means no limit) refuses ``null`` with a 422.
"""

from __future__ import annotations

import json
from typing import Any

from ninja import Schema
from pydantic import ConfigDict, Field, field_validator

from lobbies.policy import Topology, Visibility

# Free-form lobby data is shown by the admin and sent in every extended ``Joined``: it is kept
# shallow enough for a template to render (Django's admin recurses per level) and small.
MAX_DATA_DEPTH = 16
MAX_DATA_BYTES = 16 * 1024

# The schema's (wire) names -> ``lobbies.models.Lobby``'s field names.
FIELDS = {
    "game": "game",
    "title": "title",
    "max_peers": "max_peers",
    "topology": "topology",
    "visibility": "visibility",
    "host_transferable": "host_transferable",
    "data": "data",
}


def depth(value: Any, limit: int) -> int:
    """How many lists and dicts ``value`` nests (a scalar: 0, ``{"a": {}}``: 2), counted up to
    ``limit + 1`` without recursion, so that a hostile value cannot exhaust the stack."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if not isinstance(item, dict | list):
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            break
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, level + 1) for child in children)
    return deepest


def storable(value: Any) -> Any:
    """``value`` (a string, or JSON: its keys and strings at every level) if the database can
    store it; else a ValueError. PostgreSQL holds no NUL character in text or JSON (a 500 from
    the database otherwise). Walked without recursion, as :func:`depth` is."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("must not contain NUL characters")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


class LobbySpec(Schema):
    """Metadata of a lobby. Field names are the wire's (camelCase); the defaults are a new
    lobby's. On a change, only the fields given are applied (:meth:`changes`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    game: str = Field("", max_length=100, description="Game type, for the public list's filter.")
    title: str = Field("", max_length=200)
    max_peers: int | None = Field(
        None, alias="maxPeers", ge=1, le=100_000, description="Capacity; null for no limit."
    )
    topology: Topology = Topology.MESH
    visibility: Visibility = Visibility.PUBLIC
    host_transferable: bool = Field(
        False,
        alias="hostTransferable",
        description="In a host lobby: the host role passes on when the host leaves.",
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Free-form metadata: JSON of at most {MAX_DATA_BYTES} bytes, nested at "
        f"most {MAX_DATA_DEPTH} levels.",
    )

    @field_validator("game", "title")
    @classmethod
    def _storable(cls, value: str) -> str:
        return storable(value)

    @field_validator("data")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if depth(value, MAX_DATA_DEPTH) > MAX_DATA_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DATA_DEPTH} levels")
        if len(json.dumps(value, separators=(",", ":"))) > MAX_DATA_BYTES:
            raise ValueError(f"larger than {MAX_DATA_BYTES} bytes as JSON")
        return storable(value)

    def changes(self) -> dict[str, Any]:
        """The fields the client named, as ``lobbies.models.Lobby`` field names and values."""
        named = self.model_dump(include=set(FIELDS), exclude_unset=True)
        return {FIELDS[name]: _plain(value) for name, value in named.items()}

    def row(self) -> dict[str, Any]:
        """Every field, defaults included, for a new lobby's row."""
        every = self.model_dump(include=set(FIELDS))
        return {FIELDS[name]: _plain(value) for name, value in every.items()}


def field_named(location: str) -> str | None:
    """The ``lobbies.models.Lobby`` field an error's location names (by its wire name or its
    Python name), or None."""
    for name, info in LobbySpec.model_fields.items():
        if location in (name, info.alias):
            return FIELDS[name]
    return None


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Topology | Visibility) else value
