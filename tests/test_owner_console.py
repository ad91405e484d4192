"""The owners' console in a real browser (headless Chromium through Playwright, as
tests/test_browser.py), against the relay as ``make run`` serves it: every relay page is styled
by its one stylesheet and readable at 390 px and 1280 px wide; a lobby's page shows who joins
without a reload, as the admin's live view does; Kick and Ban from it reach the peer's socket.

Screenshots go to ``var/screenshots/``; docs/owner-lobby-1280.png, docs/owner-lobby-390.png
and docs/owner-lobbies-1280.png are copies of three of them, beside the admin's."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.browsers import BROWSER_TESTS
from tests.conftest import ROOT, LiveRelay, _ticket_on, relay_environ, start_relay, stop_relay

SCREENSHOTS = ROOT / "var" / "screenshots"
# The relay of this module has a database of its own (relay_environ): plain names do.
OWNER = "dana"
PASSWORD = "a long test password 5521"
PLAYER = "ann"  # a signed-in player (a ticket of her own)
WIDTHS = (390, 1280)  # a phone, a laptop
# The admin's palette (its base.css): the header is --header-bg (#417690), the site's name
# --header-branding-color (#f5dd5d).
HEADER_BG, BRANDING = "rgb(65, 118, 144)", "rgb(245, 221, 93)"

pytestmark = BROWSER_TESTS


@pytest.fixture(scope="module")
def relay(tmp_path_factory) -> Iterator[LiveRelay]:
    """The relay with a migrated database and an owner's account (no staff rights)."""
    data_dir = tmp_path_factory.mktemp("console")
    make_owner = (
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user({OWNER!r}, password={PASSWORD!r})"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", make_owner],
        cwd=ROOT,
        env=relay_environ(data_dir),
        check=True,
    )
    relay = start_relay("uvicorn", data_dir)
    yield relay
    stop_relay(relay)


async def signed_in(browser: Any, relay: LiveRelay, width: int = 1280) -> Any:
    """A page of the owner's, signed in through the sign-in form, ``width`` px wide."""
    page = await browser.new_page(viewport={"width": width, "height": 900})
    await page.goto(f"{relay.http_url}/my/")  # asks to sign in first
    await page.fill("#id_username", OWNER)
    await page.fill("#id_password", PASSWORD)
    await page.click("main button[type=submit]")
    await page.wait_for_selector("h1:has-text('My lobbies')")
    return page


async def create_lobby(page: Any, document_id: str, title: str) -> None:
    """Create a lobby from "My lobbies"; the page is then the lobby's."""
    await page.fill("#id_document_id", document_id)
    await page.fill("#id_title", title)
    await page.fill("#id_game", "racer")
    await page.fill("#id_max_peers", "8")
    await page.click("button:has-text('Create')")
    await page.wait_for_selector(f"h1:has-text('{title}')")


async def looks(page: Any) -> dict[str, Any]:
    """What a reader notices of the page's style and fit: the header's colours and font, and
    whether anything sticks out sideways (the page itself never scrolls horizontally; a wide
    table scrolls inside its wrapper)."""
    return await page.evaluate(
        """() => {
            const header = getComputedStyle(document.getElementById('header'))
            const root = document.documentElement
            return {
                header: header.backgroundColor,
                branding: getComputedStyle(document.getElementById('site-name')).color,
                font: getComputedStyle(document.body).fontFamily,
                overflows: root.scrollWidth > root.clientWidth,
                wider: [...document.querySelectorAll('main *')]
                    .filter(e => !e.closest('.table-wrap')
                        && e.getBoundingClientRect().right > root.clientWidth + 1)
                    .map(e => e.tagName + (e.id ? '#' + e.id : '')).slice(0, 5),
            }
        }"""
    )


def assert_styled_and_fits(seen: dict[str, Any], where: str) -> None:
    assert (seen["header"], seen["branding"]) == (HEADER_BG, BRANDING), where
    assert "Segoe UI" in seen["font"], where  # the admin's fonts, none fetched from elsewhere
    assert not seen["overflows"] and seen["wider"] == [], (where, seen)


async def joined(url: str, peer_id: str, document_id: str, nickname: str) -> ClientConnection:
    """A control socket of ``peer_id`` that joined ``document_id`` with the extended messages
    (so it is told why it is taken out), once the relay said it is in."""
    socket = await connect(f"{url}/introduction/{peer_id}")
    await socket.send(
        json.dumps({"type": "Join", "documentIds": [document_id], "nickname": nickname, "ext": 1})
    )
    await told(socket, "Joined")
    return socket


async def told(socket: ClientConnection, kind: str) -> dict[str, Any]:
    """The next control message of type ``kind`` (Introductions on the way are skipped)."""
    while True:
        message = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if message["type"] == kind:
            return message


async def act_on(page: Any, peer_id: str, action: str) -> None:
    """Press a peer's Kick or Ban button on the live view. Focused first: the view is not
    refreshed under a control in use, so the button clicked is the one found."""
    button = page.locator(f'#live-members tr[data-peer="{peer_id}"] button[value={action}]')
    await button.focus()
    await button.click()
    await page.wait_for_selector(".messages")


async def test_every_relay_page_is_styled_and_fits_390_and_1280_px(relay, browser):
    for width in WIDTHS:
        page = await browser.new_page(viewport={"width": width, "height": 900})
        for path in ("/", f"/demo/?lobby=styled-{os.getpid()}&name=styled", "/accounts/login/"):
            await page.goto(f"{relay.http_url}{path}")
            assert_styled_and_fits(await looks(page), f"{path} at {width} px")
        await page.close()
        page = await signed_in(browser, relay, width)
        assert_styled_and_fits(await looks(page), f"/my/ at {width} px")
        await page.goto(f"{relay.http_url}/my/access/")
        await page.fill("#id_name", "game server")
        await page.click("button:has-text('Create a token')")
        await page.wait_for_selector("#token-secret")  # a long secret, wrapped
        assert_styled_and_fits(await looks(page), f"/my/access/ at {width} px")
        await page.close()


async def test_peers_appear_on_the_owners_page_without_a_reload_and_are_kicked_and_banned(
    relay, browser
):
    document_id = f"friday-race-{os.getpid()}"
    page = await signed_in(browser, relay)
    await create_lobby(page, document_id, "Friday race")
    assert "Nobody is in this lobby now." in await page.inner_text("#live-panel")
    # Marked: a reload would lose it.
    await page.evaluate("window.notReloaded = true")

    # Ann (signed in with a ticket), then bob and cleo (anonymous) join; Ann and bob open a
    # pipe.
    ticket = _ticket_on(relay.log_path.parent, PLAYER)
    ann = await joined(f"{relay.ws_url}/t/{ticket}", "ann", document_id, "Ace")
    bob = await joined(relay.ws_url, "bob", document_id, "Bobby")
    cleo = await joined(relay.ws_url, "cleo", document_id, "Cleo")
    await told(ann, "Introduction")
    ends = [
        await connect(f"{relay.ws_url}/t/{ticket}/connection/ann/bob/{document_id}"),
        await connect(f"{relay.ws_url}/connection/bob/ann/{document_id}"),
    ]
    await ends[1].send("hi")
    assert await asyncio.wait_for(ends[0].recv(), 10) == "hi"

    # The live view refreshes by itself: the three appear, with the admin's columns and words.
    await page.wait_for_function(
        "() => document.querySelectorAll('#live-members tr[data-peer]').length === 3"
        " && document.getElementById('live-pipes')",
        timeout=10_000,
    )
    assert await page.evaluate("window.notReloaded") is True
    rows = {}
    for peer_id in ("ann", "bob", "cleo"):
        rows[peer_id] = await page.locator(
            f'#live-members tr[data-peer="{peer_id}"] td'
        ).all_inner_texts()
    assert rows["ann"][:4] == ["ann", PLAYER, "Ace", "member"]
    assert rows["bob"][:4] == ["bob", "anonymous", "Bobby", "member"]
    assert re.fullmatch(r"\d\d:\d\d:\d\d \(\d+\s+minutes?\)", rows["ann"][4]), rows["ann"]
    panel = await page.inner_text("#live-panel")
    assert "3 peers in the lobby, 1 pipe open" in panel and "ann ↔ bob" in panel
    headings = await page.locator("#live-members th").all_inner_texts()
    assert [h.lower() for h in headings] == [
        "peer id",
        "user",
        "nickname",
        "role",
        "in since",
        "act",
    ]

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "owner-lobby-1280.png", full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    seen = await looks(page)
    assert_styled_and_fits(seen, "the lobby's page at 390 px")
    # Each peer is a card there, its Kick and Ban in view without scrolling sideways.
    for peer_id in ("ann", "bob", "cleo"):
        for action in ("kick", "ban"):
            button = f'#live-members tr[data-peer="{peer_id}"] button[value={action}]'
            box = await page.locator(button).bounding_box()
            assert box["x"] > 0 and box["x"] + box["width"] <= 390, (peer_id, action, box)
    await page.screenshot(path=SCREENSHOTS / "owner-lobby-390.png", full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})

    # Kick bob: his socket is told, his pipe closes (4410), his row goes.
    await act_on(page, "bob", "kick")
    assert "Kicked peer 'bob'." in await page.inner_text(".messages")
    assert await told(bob, "Left") == {
        "type": "Left",
        "documentId": document_id,
        "reason": "kicked",
    }
    closed = [end async for end in _closed(ends)]
    assert 4410 in closed
    assert await page.locator('#live-members tr[data-peer="bob"]').count() == 0

    # Ban Ann for an hour: her account is banned from this lobby, and her rejoin is refused.
    row = page.locator('#live-members tr[data-peer="ann"]')
    await row.locator("select[name=minutes]").select_option(label="1 hour")
    await row.locator("input[name=reason]").fill("spamming the chat")
    await act_on(page, "ann", "ban")
    assert f"Banned user '{PLAYER}' until" in await page.inner_text(".messages")
    assert (await told(ann, "Left"))["reason"] == "banned"
    await ann.send(json.dumps({"type": "Join", "documentIds": [document_id], "ext": 1}))
    assert (await told(ann, "Error"))["code"] == "forbidden"
    assert await page.locator('#live-members tr[data-peer="ann"]').count() == 0
    assert await page.locator('#live-members tr[data-peer="cleo"]').count() == 1

    # The lobby list, as an owner sees it.
    await page.goto(f"{relay.http_url}/my/")
    assert "1 / 8" in await page.inner_text("#my-lobbies")  # cleo is still in
    await page.screenshot(path=SCREENSHOTS / "owner-lobbies-1280.png", full_page=True)
    await page.set_viewport_size({"width": 390, "height": 844})
    assert_styled_and_fits(await looks(page), "the lobby list at 390 px")
    await page.screenshot(path=SCREENSHOTS / "owner-lobbies-390.png", full_page=True)
    for socket in (ann, bob, cleo):
        await socket.close()


async def _closed(ends: list[ClientConnection]) -> AsyncIterator[int | None]:
    """The close code of each pipe end, once closed (the relay closes both when one goes)."""
    for end in ends:
        await asyncio.wait_for(end.wait_closed(), 10)
        yield end.close_code


async def test_another_signed_in_user_finds_no_such_lobby_page(relay, browser):
    """The lobby page and its live view answer 404 to whoever does not manage the lobby, as a
    lobby that does not exist does; its forms cannot be posted either."""
    owner = await signed_in(browser, relay)
    await create_lobby(owner, f"private-race-{os.getpid()}", "Private race")
    lobby_url = owner.url
    stranger = await browser.new_context()
    page = await stranger.new_page()
    await page.goto(f"{relay.http_url}/accounts/login/")
    # A user of the relay who does not own this lobby (the ticket's player).
    _ticket_on(relay.log_path.parent, PLAYER)
    set_password = (
        "from django.contrib.auth.models import User; "
        f"u = User.objects.get(username={PLAYER!r}); u.set_password({PASSWORD!r}); u.save()"
    )
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "shell", "-c", set_password],
        cwd=ROOT,
        env=relay_environ(relay.log_path.parent),
        check=True,
    )
    await page.fill("#id_username", PLAYER)
    await page.fill("#id_password", PASSWORD)
    await page.click("main button[type=submit]")
    await page.wait_for_selector("h1:has-text('My lobbies')")
    assert (await page.goto(lobby_url)).status == 404
    assert (await page.goto(f"{lobby_url}live/")).status == 404
    await stranger.close()


async def test_closing_or_deleting_a_lobby_asks_first(relay, browser):
    page = await signed_in(browser, relay)
    await create_lobby(page, f"to-delete-{os.getpid()}", "Doomed race")
    answers = iter(["dismiss", "accept"])
    questions: list[str] = []

    async def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        await getattr(dialog, next(answers))()

    page.on("dialog", answer)
    await page.click("button.danger:has-text('Delete')")  # dismissed: nothing happens
    await page.wait_for_timeout(300)
    assert await page.locator("h1:has-text('Doomed race')").count() == 1
    await page.click("button.danger:has-text('Delete')")  # accepted
    await page.wait_for_selector("h1:has-text('My lobbies')")
    assert "deleted" in await page.inner_text(".messages")
    assert [q.split("?")[0] for q in questions] == ["Delete the lobby"] * 2
