"""Orders for live connections: the one way the product side acts on a socket.

An operator kicks a peer, closes a lobby or bans a user; each becomes an :class:`Order`
delivered to a control socket by its connection id (``lobbies.engine.connections``), which
carries it out itself (``ControlSocket.carry_out``). Presence names sockets by connection id, so the
same call can later reach a socket held by another worker; today every socket is in this
process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from lobbies.engine import connections
from lobbies.engine.protocol import CloseCode


class Action(Enum):
    """What an order asks of a peer's control socket."""

    KICK = "kick"  # leave one lobby, now: its pipes there close with ``code``
    EVICT = "evict"  # the lobby itself goes (closed, deleted); its pipes were closed already
    DISCONNECT = "disconnect"  # close the control socket with ``code``


@dataclass(frozen=True, slots=True)
class Order:
    """An order for one connection. ``reason`` is the word an ext client's ``Left`` carries
    (``kicked``, ``banned``, ``closed``) or, for DISCONNECT, the close reason."""

    action: Action
    reason: str
    document_id: str = ""
    code: CloseCode = CloseCode.GONE


async def deliver(connection: str, order: Order) -> bool:
    """Hand ``order`` to the live control socket named ``connection``; True if it was carried
    out. False when there was nothing to do, which is not an error: the peer left the lobby or
    the relay on its own meanwhile."""
    socket = connections.lookup(connection)
    if socket is None or not hasattr(socket, "carry_out"):  # gone, or a pipe end (takes no orders)
        return False
    return await socket.carry_out(order)
