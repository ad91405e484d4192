"""The uvicorn fast path (lobbies.engine.splice), with uvicorn serving the app in the test's loop
so the server's protocol objects can be inspected: paired pipes are spliced, and stay
faithful."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

from lobbies.engine.splice import RelayWebSocketProtocol


@pytest.fixture(autouse=True)
async def peers_a_and_b(uvicorn_server, introduce):
    """Every pipe here is between peers a and b on doc, whom the relay must have introduced."""
    await introduce(uvicorn_server[1], "a", "b")


def spliced(server: uvicorn.Server) -> list[RelayWebSocketProtocol]:
    return [p for p in server.server_state.connections if getattr(p, "splice_partner", None)]


async def test_paired_pipes_are_spliced_and_unspliced_on_close(uvicorn_server):
    server, url = uvicorn_server
    async with connect(f"{url}/connection/a/b/doc") as a:
        await a.send("held")
        async with connect(f"{url}/connection/b/a/doc") as b:
            assert await b.recv() == "held"
            frames = [b"\x00bin", "text ✓", b"", ""] * 50
            for frame in frames:
                await a.send(frame)
            assert [await b.recv() for _ in frames] == frames
            await b.send(b"back")
            assert await a.recv() == b"back"
            pair = spliced(server)
            assert len(pair) == 2 and pair[0].splice_partner is pair[1]
        # b closed: a is closed by the relay, and nothing stays spliced.
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(a.recv(), 5)
        assert a.close_code == 1000
    assert spliced(server) == []


async def test_an_oversized_frame_on_a_spliced_pipe_still_closes_4413(uvicorn_server, settings):
    settings.RELAY_MAX_FRAME_BYTES = 1000
    server, url = uvicorn_server
    async with connect(f"{url}/connection/a/b/doc") as a, connect(f"{url}/connection/b/a/doc") as b:
        await a.send(b"x" * 1000)
        assert await b.recv() == b"x" * 1000
        assert len(spliced(server)) == 2
        await a.send(b"x" * 1001)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(a.recv(), 5)
        assert a.close_code == 4413
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(b.recv(), 5)
        assert b.close_code == 1000


async def test_invalid_utf8_text_on_a_spliced_pipe_fails_the_connection(uvicorn_server):
    server, url = uvicorn_server
    async with connect(f"{url}/connection/a/b/doc") as a, connect(f"{url}/connection/b/a/doc") as b:
        await a.send("ok")
        assert await b.recv() == "ok"
        assert len(spliced(server)) == 2
        # A text frame with invalid UTF-8, which websockets' client API would refuse to send.
        a.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe"))
        a.send_data()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(b.recv(), 5)  # nothing relayed; the pipe is closed
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(a.recv(), 5)
    assert a.close_code == 1007
    assert b.close_code == 1000


def masked(first_byte: int, payload: bytes, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
    """A client frame as it goes on the wire (RFC 6455 5.2), built by hand so tests can split
    and interleave frames freely."""
    n = len(payload)
    if n < 126:
        header = bytes((first_byte, 0x80 | n))
    elif n < 65536:
        header = bytes((first_byte, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first_byte, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def spliced_pair(server, url):
    a = await connect(f"{url}/connection/a/b/doc", max_size=None)
    b = await connect(f"{url}/connection/b/a/doc", max_size=None)
    await a.send(b"ready")
    assert await b.recv() == b"ready"
    assert len(spliced(server)) == 2
    return a, b


async def test_frames_split_across_reads_arrive_whole_and_in_order(uvicorn_server):
    server, url = uvicorn_server
    a, b = await spliced_pair(server, url)
    frames = [b"\x01" * 10, "two ✓", b"\x03" * 300, b"\x04" * 70_000, "five", b""]
    wire = b"".join(
        masked(0x81 if isinstance(f, str) else 0x82, f.encode() if isinstance(f, str) else f)
        for f in frames
    )
    # Odd-sized pieces, each its own read on the server: headers, masks and payloads are cut
    # at every possible place over the run.
    for start in range(0, len(wire), 997):
        a.transport.write(wire[start : start + 997])
        await asyncio.sleep(0)
    assert [await asyncio.wait_for(b.recv(), 5) for _ in frames] == frames
    await a.close()
    await b.close()


async def test_fragmented_messages_and_pings_between_plain_frames(uvicorn_server):
    server, url = uvicorn_server
    a, b = await spliced_pair(server, url)
    wire = (
        masked(0x82, b"first")
        + masked(0x01, b"frag")  # text, not final
        + masked(0x89, b"ping")  # a ping in the middle of a fragmented message
        + masked(0x80, "mented ✓".encode())  # continuation, final
        + masked(0x82, b"last")
    )
    a.transport.write(wire)
    assert await asyncio.wait_for(b.recv(), 5) == b"first"
    assert await asyncio.wait_for(b.recv(), 5) == "fragmented ✓"
    assert await asyncio.wait_for(b.recv(), 5) == b"last"
    # The relay is still fast-pathing afterwards, and the pipe still works both ways.
    await b.send("back")
    assert await asyncio.wait_for(a.recv(), 5) == "back"
    await a.close()
    await b.close()


async def test_an_unmasked_client_frame_is_a_protocol_error(uvicorn_server):
    server, url = uvicorn_server
    a, b = await spliced_pair(server, url)
    a.transport.write(bytes((0x82, 3)) + b"bad")  # clients must mask (RFC 6455 5.1)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(b.recv(), 5)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(a.recv(), 5)
    assert a.close_code == 1002


async def test_a_frame_in_flight_when_the_pipe_is_spliced_arrives_intact(uvicorn_server):
    """A's frame header and mask reach the relay before the pipe is paired, its payload after:
    the fast path must not start in the middle of it."""
    _server, url = uvicorn_server
    payload = b"\x82\xa4" + b"looks like a frame header" * 3
    frame = masked(0x82, payload, mask=b"\x00\x00\x00\x00")
    a = await connect(f"{url}/connection/a/b/doc", max_size=None)
    a.transport.write(frame[:6])  # header and mask only
    await asyncio.sleep(0.05)
    b = await connect(f"{url}/connection/b/a/doc", max_size=None)
    await asyncio.sleep(0.05)
    a.transport.write(frame[6:])
    a.transport.write(masked(0x81, b"after"))
    assert await asyncio.wait_for(b.recv(), 5) == payload
    assert await asyncio.wait_for(b.recv(), 5) == "after"
    await a.close()
    await b.close()


async def test_a_frame_hidden_in_a_split_control_header_is_not_relayed(uvicorn_server):
    """An empty ping's header arrives alone; the next bytes are its mask, not a new frame."""
    server, url = uvicorn_server
    a, b = await spliced_pair(server, url)
    a.transport.write(bytes((0x89, 0x80)))  # ping, masked, empty: the mask follows
    await asyncio.sleep(0.05)
    a.transport.write(bytes((0x82, 0x85, 0, 0, 0, 0)) + b"hello")
    # b"\x82\x85\x00\x00" was the ping's mask, so the relay then reads a frame starting with
    # the bytes 00 00 h e...: a protocol error, never b"hello" relayed.
    received = []
    with pytest.raises(ConnectionClosed):
        while True:
            received.append(await asyncio.wait_for(b.recv(), 5))
    assert b"hello" not in received


async def test_a_large_frame_in_small_reads_arrives_intact(uvicorn_server):
    server, url = uvicorn_server
    a, b = await spliced_pair(server, url)
    payload = bytes(range(256)) * 4096  # 1 MiB
    wire = masked(0x82, payload)
    for start in range(0, len(wire), 1448):
        a.transport.write(wire[start : start + 1448])
        if start % (1448 * 64) == 0:
            await asyncio.sleep(0)
    assert await asyncio.wait_for(b.recv(), 10) == payload
    await a.close()
    await b.close()


def test_server_frames_are_read_back_as_the_messages_they_carry():
    from lobbies.engine.splice import _FIN_BINARY, _FIN_TEXT, _frame_header, server_frames

    messages = ["", "héllo", b"", b"\x00" * 125, b"\x01" * 126, "x" * 70_000]
    data = b"".join(
        _frame_header(
            _FIN_TEXT if isinstance(m, str) else _FIN_BINARY,
            len(b := m.encode() if isinstance(m, str) else m),
        )
        + b
        for m in messages
    )
    assert server_frames(data) == messages
    for broken in (
        data[:-1],
        b"\x81",
        b"\x01\x00",
        b"\x81\x85abcd",
    ):  # cut, a header, fragment, masked
        with pytest.raises(ValueError):
            server_frames(broken)
