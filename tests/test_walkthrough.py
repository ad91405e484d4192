"""The README's walk-through ("From an account to a game client in a lobby"), step by step, as a
new owner does it: the operator's ``create_owner``, the link in Chromium, a lobby made on "My
lobbies", a ticket from "Tickets and tokens", then the bundled game client (``python -m
relayclient``) through the ticket URL and an anonymous player, both seen on the lobby's page
without a reload, with their pipe."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.accounts import owner_link
from tests.browsers import BROWSER_TESTS, chromium
from tests.conftest import ROOT, LiveRelay, start_relay, stop_relay

pytestmark = BROWSER_TESTS

PASSWORD = "a long walk-through password 31"


@pytest.fixture
def relay(tmp_path) -> Iterator[LiveRelay]:
    """The relay as ``make run`` serves it, with a database of its own."""
    relay = start_relay("uvicorn", tmp_path)
    yield relay
    stop_relay(relay)


def game_client(url: str, peer: str) -> subprocess.Popen:
    """``python -m relayclient URL PEER spaceRacer-lobby``, as the README runs it; it stays
    connected while its standard input is open."""
    return subprocess.Popen(
        [sys.executable, "-m", "relayclient", url, peer, "spaceRacer-lobby"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def line_typed_arrives(sender: subprocess.Popen, receiver: subprocess.Popen, text: str) -> None:
    """A line typed into ``sender`` is printed by ``receiver`` (the frames its pipes bring)."""
    sender.stdin.write(f"{text}\n".encode())
    sender.stdin.flush()
    while text.encode() not in (line := receiver.stdout.readline()):
        assert line, "the receiving client ended without printing the line"


async def test_an_owner_goes_from_an_account_to_a_game_client_in_a_lobby(relay, tmp_path):
    # 1. The operator makes the account.
    link = await asyncio.to_thread(owner_link, tmp_path, "alice", relay.http_url)
    clients: list[subprocess.Popen] = []
    async with chromium() as browser:
        # 2. The link, a password, "My lobbies", a lobby.
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        await page.goto(link)
        await page.fill("#id_new_password1", PASSWORD)
        await page.fill("#id_new_password2", PASSWORD)
        await page.click("main button[type=submit]")
        await page.wait_for_selector("h1:has-text('My lobbies')")
        await page.fill("#id_document_id", "spaceRacer-lobby")
        await page.fill("#id_title", "Friday race")
        await page.fill("#id_game", "race")
        await page.fill("#id_max_peers", "4")
        await page.click("button:has-text('Create')")
        await page.wait_for_selector("h1:has-text('Friday race')")
        await page.wait_for_selector("#live-members:has-text('Nobody is in this lobby now.')")
        # 3. A ticket, in another tab: the lobby's page stays open.
        access = await context.new_page()
        await access.goto(f"{relay.http_url}/my/")
        await access.click("nav >> text=Tickets and tokens")
        await access.click("button:has-text('Issue a ticket')")
        ticket_url = (await access.inner_text("#ticket-url")).strip()
        assert ticket_url.startswith(f"ws://127.0.0.1:{relay.port}/t/")
        try:
            # 4. Her game client, through the ticket URL: on the page, as alice.
            clients.append(game_client(ticket_url, "host-1"))
            host = page.locator("#live-members tr[data-peer='host-1']")
            await host.wait_for(timeout=20_000)
            assert "alice" in await host.inner_text()
            # 5. An anonymous player: on the page too, and their pipe.
            clients.append(game_client(relay.ws_url, "player-1"))
            player = page.locator("#live-members tr[data-peer='player-1']")
            await player.wait_for(timeout=20_000)
            assert "anonymous" in await player.inner_text()
            await page.wait_for_selector("text=host-1 ↔ player-1", timeout=20_000)
            arrived = asyncio.to_thread(line_typed_arrives, *clients, "ready, set, go")
            await asyncio.wait_for(arrived, 20)
        finally:
            for client in clients:
                client.kill()
                client.wait()
