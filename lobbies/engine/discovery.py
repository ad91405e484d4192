"""Who is introduced to whom. Pure logic: no I/O, no Django.

When a peer joins document ids, every other peer already in one of those ids is introduced to it
and it to them, each Introduction listing the ids of that Join which the two now share. This is
the LF relay's *mesh* behaviour: every two peers in a lobby meet. A peer is never introduced to
itself. Re-joining an id introduces again (clients re-Join after a lost pipe to meet again).

A ``host``-topology lobby is a star instead: its host meets every member, and members do not
meet each other. Until its host is present, a member of such a lobby meets nobody there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def meets(a: str, b: str, star: bool = False, host: str | None = None) -> bool:
    """Whether peers ``a`` and ``b``, both in one lobby, are introduced there: always in a mesh
    lobby, and in a host lobby (``star``) only when one of them is its ``host``."""
    if a == b:
        return False
    return not star or (host is not None and host in (a, b))


def introductions(
    joiner: str,
    joined_ids: Iterable[str],
    members: Mapping[str, Iterable[str]],
    hosts: Mapping[str, str | None] | None = None,
) -> dict[str, list[str]]:
    """The peers to introduce ``joiner`` to, each with the shared ids in Join order.

    ``members`` maps each joined id to the peers in it (the joiner may or may not be listed);
    ids missing from it have no other members. ``hosts`` names the host of each joined id that
    is a host lobby (``None`` there: its host is not present). The cost is the size of those
    lobbies, never the number of peers online.
    """
    hosts = hosts or {}
    shared: dict[str, list[str]] = {}
    for document_id in joined_ids:
        star = document_id in hosts
        host = hosts.get(document_id)
        if star and host is None:
            continue  # a host lobby whose host is not here: nobody to meet yet
        if star and joiner != host:
            peers: Iterable[str] = [host] if host in members.get(document_id, ()) else ()
        else:
            peers = members.get(document_id, ())
        for peer in peers:
            if peer != joiner:
                shared.setdefault(peer, []).append(document_id)
    return shared
