"""What operators and owners see of, and do to, live lobbies: who is in one now, kick a peer,
take every peer out of a lobby that closes, enforce a ban on the sockets it names, close the
sockets of a credential that died.

The live side of ``lobbies.owners`` (async, on the server's event loop). Every action reaches
its sockets as an order (``lobbies.engine.orders``); what the relay knows of them comes from
presence.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from lobbies.engine import connections, pipes, workers
from lobbies.engine.orders import Action, Order, deliver, soon
from lobbies.engine.presence import Member, OpenPipe, get_presence
from lobbies.engine.protocol import CloseCode


@dataclass(frozen=True, slots=True)
class LiveLobby:
    """A lobby as it is now: its peers (longest present first) and its open pipes."""

    members: list[Member]
    pipes: list[OpenPipe]


async def live(document_id: str) -> LiveLobby:
    """Who is in ``document_id`` now, and the pipes open there."""
    presence = get_presence()
    return LiveLobby(await presence.roster(document_id), await presence.pipes(document_id))


async def counts(document_ids: list[str]) -> dict[str, int]:
    """How many peers are in each of these lobbies now."""
    return await get_presence().counts(document_ids)


async def kick(document_id: str, peer_id: str, reason: str = "kicked") -> bool:
    """Take ``peer_id`` out of ``document_id``: its pipes there close with 4410, it gets
    ``Left`` with ``reason`` (``kicked``; ``private`` or ``full`` after a change to the lobby)
    if it opted in, and a host's role passes on as if it had left. False if it was not there.
    It may Join again unless a ban (or the change) keeps it out."""
    online = await get_presence().connections([peer_id])
    return peer_id in online and await deliver(
        online[peer_id], Order(Action.KICK, reason, document_id)
    )


async def evict(document_id: str, reason: str) -> int:
    """Take every peer out of ``document_id`` (its lobby was closed or deleted): its pipes are
    closed with 4410 and each peer that opted in gets ``Left`` with ``reason``. Returns how many
    peers were taken out."""
    presence = get_presence()
    members = await presence.members(document_id)
    online = await presence.connections(members)
    await pipes.close_between(None, document_id, CloseCode.GONE, f"the lobby was {reason}")
    order = Order(Action.EVICT, reason, document_id)
    removed = 0
    for connection in online.values():
        removed += await deliver(connection, order)
    return removed


async def enforce_ban(document_id: str | None, account: str, peer_id: str) -> int:
    """Apply a new ban to the sockets online now: the peers of user ``account`` (a user's
    key, or "") and the peer id ``peer_id`` (or "") are kicked from ``document_id`` with
    ``banned``, or, for a ban from the whole relay (None), their control sockets are closed
    with 4403. Returns how many peers it reached."""
    presence = get_presence()
    targets = await presence.peers_of(account) if account else {}
    if peer_id:
        targets.update(await presence.connections([peer_id]))
    if document_id is not None:
        order = Order(Action.KICK, "banned", document_id)
    else:
        order = Order(Action.DISCONNECT, "banned from this relay", code=CloseCode.FORBIDDEN)
    return sum([await deliver(connection, order) for connection in targets.values()])


async def disconnect_user(
    user_id: int,
    code: CloseCode,
    reason: str,
    credentials: Collection[str] | None = None,
    *,
    keep_tokens: bool = False,
    everywhere: bool = True,
) -> int:
    """Close the live sockets of user ``user_id`` that authenticated with one of
    ``credentials`` (``Identity.credential``; None: any), or with ``keep_tokens`` any but a
    bare API token, with ``code``: a control socket as a relay-wide ban closes it (a DISCONNECT
    order: its pipes close too), a pipe end at once. On every worker (``everywhere``); returns
    how many sockets it closed on this one."""
    link = workers.active()
    if everywhere and link is not None:
        named = sorted(credentials) if credentials is not None else None
        link.broadcast(["disconnect_user", user_id, int(code), reason, named, keep_tokens])
    order = Order(Action.DISCONNECT, reason, code=code)
    closed = 0
    for socket in connections.sockets():
        identity = getattr(socket, "identity", None)
        if identity is None or identity.user_id != user_id:
            continue
        credential = identity.credential
        if credentials is not None and credential not in credentials:
            continue
        if keep_tokens and credential.startswith("token:"):
            continue  # sessions and tickets end with the password; a bare API token does not
        if hasattr(socket, "carry_out"):
            closed += await deliver(socket.connection, order)
        elif connections.lookup(socket.connection) is socket:  # not closed with its peer's
            await socket.close(code, reason)
            closed += 1
    return closed


@workers.handler("disconnect_user")
async def _disconnect_user_here(
    user_id: int, code: int, reason: str, credentials: list[str] | None, keep_tokens: bool
) -> None:
    named = frozenset(credentials) if credentials is not None else None
    await disconnect_user(
        user_id, CloseCode(code), reason, named, keep_tokens=keep_tokens, everywhere=False
    )


def after_commit(action: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run ``action()`` on the live sockets once the current transaction is committed (a peer
    taken out that comes straight back must find the change in the database), without waiting
    for it (``lobbies.engine.orders.soon``): the committing thread may be the sockets' own
    database thread, and the socket to act on may be waiting for it. The one way the product
    side acts on sockets after a write."""
    transaction.on_commit(lambda: soon(action))
