"""pipes: pairing races and the held bounds, driven through PipeEnd's ASGI ``send`` interface
directly (the only way to interleave a timer with a pairing deterministically)."""

from __future__ import annotations

import asyncio

from lobbies.conf import relay_settings
from lobbies.engine.pipes import PipeEnd, PipeState, held_budget
from lobbies.engine.presence import PipeKey
from lobbies.engine.presence.memory import MemoryPresence
from lobbies.policy import ANONYMOUS


async def introduced(*peers: str, doc: str = "doc") -> MemoryPresence:
    """Presence in which these anonymous peers are online and in ``doc`` (so introduced)."""
    presence = MemoryPresence()
    for peer in peers:
        await presence.connect_peer(peer, f"control-{peer}", ANONYMOUS.account)
        await presence.join(peer, f"control-{peer}", (doc,))
    return presence


def recorder() -> tuple[list[dict], object]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    return sent, send


async def test_a_pair_timeout_that_fires_as_the_match_arrives_does_not_close_the_pipe():
    presence, limits = await introduced("a", "b"), relay_settings()
    key = PipeKey("a", "b", "doc")
    sent_a, send_a = recorder()
    sent_b, send_b = recorder()
    a = PipeEnd(key, ANONYMOUS, send_a, presence, limits)
    await a.open()
    a._pair_timeout()  # the timer fires; its task has not run yet
    b = PipeEnd(key.reciprocal(), ANONYMOUS, send_b, presence, limits)
    await b.open()  # the match arrives in the same loop turn
    for _ in range(3):
        await asyncio.sleep(0)
    assert a.state is PipeState.PAIRED and b.state is PipeState.PAIRED
    assert not any(m["type"] == "websocket.close" for m in sent_a + sent_b)
    await a.handle_frame({"type": "websocket.receive", "bytes": b"hi"})
    assert sent_b == [{"type": "websocket.send", "bytes": b"hi"}]
    await a.close(None)
    assert sent_b[-1] == {"type": "websocket.close", "code": 1000, "reason": ""}
    assert (await presence.stats()).pipes_open == 0


async def test_frames_after_the_partner_left_are_dropped_not_held():
    presence, limits = await introduced("a", "b"), relay_settings()
    key = PipeKey("a", "b", "doc")
    _, send_a = recorder()
    _, send_b = recorder()
    a = PipeEnd(key, ANONYMOUS, send_a, presence, limits)
    b = PipeEnd(key.reciprocal(), ANONYMOUS, send_b, presence, limits)
    await a.open()
    await b.open()
    b.partner = a.partner = None  # as close() leaves them just before closing this end
    await a.handle_frame({"type": "websocket.receive", "bytes": b"late"})
    assert not a.held and a.held_bytes == 0
    assert held_budget.bytes == 0
