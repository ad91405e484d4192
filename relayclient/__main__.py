"""``python -m relayclient URL PEER DOC``: join DOC as PEER, print what peers send, and send each
line of standard input (as a text frame) to every peer currently connected. For operators
checking a relay by hand, and for scripts: it exits at the end of its input (Ctrl-D), or on
Ctrl-C. A relay it cannot reach is one line on standard error (exit status 2); a relay that
refuses the socket (wrong URL or id, bad ticket, id held by another user, rate limited) or the
Join is one line too, "refused: CODE REASON" with the relay's own code and reason (exit status 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import threading

from websockets.exceptions import InvalidHandshake, InvalidURI

from . import Client, PeerSocket, Refused
from .client import without_ticket
from .protocol import Left, parse_extended

# How long, at the end of input, the lines just sent are given to leave before the client
# disconnects.
FLUSH_SECONDS = 0.5
# How long the relay's answer to the Join is awaited (an LF relay sends none).
ANSWER_SECONDS = 5.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    # The docstring is reStructuredText; a terminal shows its ``literal`` markers as noise.
    description = (__doc__ or "").replace("``", "")
    parser = argparse.ArgumentParser(prog="python -m relayclient", description=description)
    parser.add_argument("url", help="relay base URL, e.g. ws://127.0.0.1:8080 or wss://h/t/TICKET")
    parser.add_argument("peer", help="our peer id")
    parser.add_argument("document", help="document id to join")
    parser.add_argument("--dialect", choices=["msgpack", "json"], default="msgpack")
    parser.add_argument("--token", help="sent as 'Authorization: Bearer TOKEN'")
    parser.add_argument("--nickname", help="our display name in the lobby")
    parser.add_argument(
        "--lobby",
        type=json.loads,
        help='metadata for a lobby this Join creates, as JSON: \'{"title": "Race"}\' '
        "(a private, capped or host lobby needs a ticket in the URL: it is then ours)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def _note(text: str) -> None:
    print(f"* {text}", file=sys.stderr, flush=True)


def _refused(refused: Refused) -> int:
    """Say in one line why the relay refused us (its code and reason); the exit status."""
    print(without_ticket(f"relayclient: refused: {refused}"), file=sys.stderr, flush=True)
    return 3


async def _print_frames(pipe: PeerSocket) -> None:
    _note(f"connected to {pipe.peer_id!r} on {pipe.document_id!r}")
    async for frame in pipe:
        if isinstance(frame, bytes):
            frame = f"<binary, {len(frame)} bytes> {frame[:48].hex(' ')}"
        print(f"[{pipe.peer_id}] {frame}", flush=True)
    _note(f"{pipe.peer_id!r} closed (code {pipe.close_code})")


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    # A daemon thread rather than connect_read_pipe: works for files and ttys alike, and never
    # holds up the exit of the program.
    for line in sys.stdin:
        loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
    loop.call_soon_threadsafe(lines.put_nowait, None)


async def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = _parse(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    client = Client(args.peer, args.url, dialect=args.dialect, headers=headers)
    try:
        await client.connect()
    except Refused as refused:
        return _refused(refused)
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        why = without_ticket(f"cannot connect to {args.url}: {exc}")
        print(f"relayclient: {why}", file=sys.stderr, flush=True)
        return 2
    try:
        printers = set()  # strong references, so the tasks are not garbage-collected

        async def print_peers() -> None:
            async for pipe in client.peers():
                printer = asyncio.create_task(_print_frames(pipe))
                printers.add(printer)
                printer.add_done_callback(printers.discard)

        async def print_departures() -> None:
            async for message in client.messages():
                if isinstance(left := parse_extended(message), Left):
                    _note(f"out of {left.document_id!r}: {left.reason}")

        watcher = asyncio.create_task(print_peers())
        departures = asyncio.create_task(print_departures())
        try:
            async with asyncio.timeout(ANSWER_SECONDS):
                joined = await client.join_lobby(
                    args.document, nickname=args.nickname, lobby=args.lobby
                )
            role = f" ({joined.role})"
        except Refused as refused:  # the socket (a refusal decided after a look-up), or the Join
            return _refused(refused)
        except TimeoutError:
            role = " (not confirmed: the relay sends no extended messages)"
        _note(f"joined {args.document!r} as {args.peer!r}{role}; lines typed go to every peer")
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(target=_read_stdin, args=(loop, lines), daemon=True).start()
        while (line := await lines.get()) is not None:
            pipes = [pipe for pipe in client.pipes if not pipe.closed]
            if not pipes:
                _note("no peer connected yet; line not sent")
            await asyncio.gather(*(pipe.send(line) for pipe in pipes), return_exceptions=True)
        # End of input: give the last lines a moment to leave, then go.
        await asyncio.sleep(FLUSH_SECONDS)
        watcher.cancel()
        departures.cancel()
    finally:
        await client.disconnect()
    _note("end of input; disconnected")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(130)
