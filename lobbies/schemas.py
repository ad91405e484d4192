"""The shapes of lobby metadata, validated wherever it arrives: a Join's ``lobby`` extra and the
owners' JSON API. Pydantic (through django-ninja) does the validation; these classes say what is
allowed."""

from __future__ import annotations

from typing import Any

from ninja import Schema
from pydantic import ConfigDict, Field

from lobbies.policy import Topology, Visibility


class LobbySpec(Schema):
    """Metadata an owner sets on a lobby. Field names are the wire's (camelCase)."""

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
    data: dict[str, Any] = Field(default_factory=dict, description="Free-form metadata.")

    def model_fields_for_row(self) -> dict[str, Any]:
        """The values as ``lobbies.models.Lobby`` field names."""
        return {
            "game": self.game,
            "title": self.title,
            "max_peers": self.max_peers,
            "topology": self.topology.value,
            "visibility": self.visibility.value,
            "host_transferable": self.host_transferable,
            "data": self.data,
        }
