"""Orders for live connections: the one way the product side acts on a socket.

An operator kicks a peer, closes a lobby or bans a user; each becomes an :class:`Order`
delivered to a control socket by its connection id (``lobbies.engine.connections``), which
carries it out itself (``ControlSocket.carry_out``). Presence names sockets by connection id, so the
same call can later reach a socket held by another worker; today every socket is in this
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import Enum
from typing import Any

from lobbies.engine import connections, workers
from lobbies.engine.protocol import CloseCode
from lobbies.engine.tasks import spawn


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
    """Hand ``order`` to the live control socket named ``connection``, on this worker or
    another; True if it was carried out. False when there was nothing to do, which is not an
    error: the peer left the lobby or the relay on its own meanwhile (or its worker did not
    answer in time)."""
    link = workers.active()
    if link is not None and not connections.is_local(connection):
        fields = [order.action.value, order.reason, order.document_id, int(order.code)]
        try:
            return bool(
                await link.ask(connections.worker_of(connection), ["order", connection, *fields])
            )
        except workers.Unreachable:
            return False
    socket = connections.lookup(connection)
    if socket is None or not hasattr(socket, "carry_out"):  # gone, or a pipe end (takes no orders)
        return False
    return await socket.carry_out(order)


@workers.handler("order", apart=True)
async def _order_from_afar(
    connection: str, action: str, reason: str, document_id: str, code: int
) -> bool:
    return await deliver(connection, Order(Action(action), reason, document_id, CloseCode(code)))


async def close(connection: str, code: CloseCode, reason: str) -> None:
    """Close the socket named ``connection`` with ``code``, on this worker or another."""
    link = workers.active()
    if link is not None and not connections.is_local(connection):
        link.tell(connections.worker_of(connection), ["close", connection, int(code), reason])
        return
    socket = connections.lookup(connection)
    if socket is not None:
        await socket.close(code, reason)


@workers.handler("close")
async def _close_from_afar(connection: str, code: int, reason: str) -> None:
    await close(connection, CloseCode(code), reason)


def soon(action: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run ``action()`` in the event loop where this process's sockets live, without waiting for
    it. For code in another thread (a view, a database hop of a socket's own) that must act on
    sockets: waiting there for a socket that is itself waiting on that thread would never end.
    Nothing is done when no socket ever lived in this process (there is nobody to act on)."""
    loop = connections.loop
    if loop is None or loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        spawn(action())
        return
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no sockets left
        # A context of its own: the caller's (a thread of asgiref's) would make the action's
        # own database hops think they are nested in it.
        loop.call_soon_threadsafe(lambda: spawn(action()), context=contextvars.Context())
