"""Who is introduced to whom. Pure logic: no I/O, no Django.

When a peer joins document ids, every other peer already in one of those ids is introduced to it
and it to them, each Introduction listing the ids of that Join which the two now share. This is
the LF relay's mesh behaviour: every two peers in a lobby meet. A peer is never introduced to
itself. Re-joining an id introduces again (clients re-Join after a lost pipe to meet again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def introductions(
    joiner: str, joined_ids: Iterable[str], members: Mapping[str, Iterable[str]]
) -> dict[str, list[str]]:
    """The peers to introduce ``joiner`` to, each with the shared ids in Join order.

    ``members`` maps each joined id to the peers in it (the joiner may or may not be listed);
    ids missing from it have no other members. The cost is the size of those lobbies, never the
    number of peers online.
    """
    shared: dict[str, list[str]] = {}
    for document_id in joined_ids:
        for peer in members.get(document_id, ()):
            if peer != joiner:
                shared.setdefault(peer, []).append(document_id)
    return shared
