"""Pages in a real browser: headless Chromium from Debian's packages (``make test`` installs it),
driven by Playwright, against the relay as ``make run`` serves it (``DJANGO_DEBUG`` off, static
files collected). Screenshots go to ``var/screenshots/``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.browsers import BROWSER_TESTS
from tests.conftest import ROOT, LiveRelay, relay_environ, start_relay, stop_relay

SCREENSHOTS = ROOT / "var" / "screenshots"
ADMIN_PASSWORD = "a long test password 8461"
# Unique: under DATABASE_URL (the PostgreSQL pass) the server's database outlives the test.
MANAGE = [sys.executable, "manage.py"]
ADMIN_USER = f"operator-{os.getpid()}-{time.time_ns()}"

pytestmark = BROWSER_TESTS


@pytest.fixture(scope="module")
def relay(tmp_path_factory) -> Iterator[LiveRelay]:
    """The relay with a migrated database and an operator account, as after ``make run`` and
    ``createsuperuser``."""
    data_dir = tmp_path_factory.mktemp("browser")
    env = relay_environ(data_dir)
    subprocess.run(
        [*MANAGE, "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "o@x.io"],
        cwd=ROOT,
        env={**env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
        check=True,
    )
    relay = start_relay("uvicorn", data_dir)
    yield relay
    stop_relay(relay)


async def test_the_admin_is_styled_with_debug_off(relay, browser):
    page = await browser.new_page()
    await page.goto(f"{relay.http_url}/admin/")
    await page.fill("#id_username", ADMIN_USER)
    await page.fill("#id_password", ADMIN_PASSWORD)
    await page.click("input[type=submit]")
    await page.wait_for_selector("#site-name")
    # Django's admin stylesheet applied: its header bar is a coloured flex box, not a bare div.
    header = await page.eval_on_selector(
        "#header",
        "e => ({display: getComputedStyle(e).display,"
        " background: getComputedStyle(e).backgroundColor})",
    )
    assert header["display"] == "flex"
    assert header["background"] not in ("rgba(0, 0, 0, 0)", "transparent")
    assert await page.title() == "Lobbies, bans, tokens and statistics | Relay admin"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "admin.png", full_page=True)


async def test_two_tabs_of_the_demo_see_each_other_move_and_chat(relay, browser):
    lobby = f"demo-{os.getpid()}"
    alice = await browser.new_page()
    bob = await browser.new_page()
    await alice.goto(f"{relay.http_url}/demo/?lobby={lobby}&name=alice")
    await bob.goto(f"{relay.http_url}/demo/?lobby={lobby}&name=bob")
    # Introduced and piped: each tab shows the other's player.
    await alice.wait_for_selector('[data-player="bob"]', timeout=10_000)
    await bob.wait_for_selector('[data-player="alice"]', timeout=10_000)
    assert "Connected to bob" in await alice.inner_text("#status")

    # Alice moves: Bob sees her there.
    box = await alice.locator("#board").bounding_box()
    await alice.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.25)
    await bob.wait_for_function(
        """() => {
            const dot = document.querySelector('[data-player="alice"]')
            return dot && Math.abs(parseFloat(dot.style.left) - 75) < 1
                && Math.abs(parseFloat(dot.style.top) - 25) < 1
        }""",
        timeout=10_000,
    )
    # Bob chats: Alice reads it.
    await bob.fill("#line", "nice move")
    await bob.click("#say button")
    await alice.wait_for_function(
        "() => document.getElementById('chat').textContent.includes('bob: nice move')",
        timeout=10_000,
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await alice.screenshot(path=SCREENSHOTS / "demo-alice.png", full_page=True)


async def test_the_landing_page_counts_refresh_by_themselves(relay, browser):
    from websockets.asyncio.client import connect

    page = await browser.new_page()
    await page.goto(f"{relay.http_url}/")
    before = int(await page.inner_text('[data-stat="peers_online"]'))
    async with connect(f"{relay.ws_url}/introduction/counted-{os.getpid()}"):
        # No reload: the page polls /api/stats.
        await page.wait_for_function(
            "n => document.querySelector('[data-stat=peers_online]').textContent === String(n)",
            arg=before + 1,
            timeout=10_000,
        )
    favicon = await page.evaluate("document.querySelector('link[rel=icon]').href")
    assert favicon.endswith("/static/relay/favicon.svg")


async def test_an_owner_signs_in_creates_a_lobby_and_sees_a_client_join_it(relay, browser):
    from websockets.asyncio.client import connect

    page = await browser.new_page()
    await page.goto(f"{relay.http_url}/my/")  # asks to sign in first
    await page.fill("#id_username", ADMIN_USER)
    await page.fill("#id_password", ADMIN_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("h1:has-text('My lobbies')")
    lobby = f"browser-{os.getpid()}"
    await page.fill("#id_document_id", lobby)
    await page.fill("#id_title", "Browser race")
    await page.fill("#id_max_peers", "4")
    await page.select_option("#id_topology", "host")
    await page.click("button:has-text('Create')")
    await page.wait_for_selector("h1:has-text('Browser race')")
    # The page is styled by the relay's own stylesheet, served with debug off: the admin's
    # header colour (--secondary, #417690).
    header = await page.eval_on_selector("#header", "e => getComputedStyle(e).backgroundColor")
    assert header == "rgb(65, 118, 144)"
    async with connect(f"{relay.ws_url}/introduction/player-{os.getpid()}") as player:
        await player.send(f'{{"type": "Join", "documentIds": ["{lobby}"]}}')
        await page.wait_for_timeout(300)
        await page.reload()
        assert f"player-{os.getpid()}" in await page.inner_text("body")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "my-lobby.png", full_page=True)
    # The interactive API docs render from the relay's own static files.
    await page.goto(f"{relay.http_url}/api/docs")
    await page.wait_for_selector(".swagger-ui .info .title", timeout=10_000)
    assert "Relay API" in await page.inner_text(".swagger-ui .info .title")
    await page.screenshot(path=SCREENSHOTS / "api-docs.png", full_page=True)


async def sign_in_to_admin(browser, relay: LiveRelay, next_path: str = "/admin/"):
    """A page of the admin, signed in as the operator."""
    from urllib.parse import quote

    page = await browser.new_page()
    await page.goto(f"{relay.http_url}/admin/login/?next={quote(next_path)}")
    await page.fill("#id_username", ADMIN_USER)
    await page.fill("#id_password", ADMIN_PASSWORD)
    await page.click("input[type=submit]")
    await page.wait_for_selector("#site-name")
    return page


async def test_an_operator_watches_two_demo_tabs_in_the_lobby_and_kicks_one(relay, browser):
    """``seed_demo`` played against this relay makes its demo lobbies; two /demo/ tabs appear
    in the lobby's live view without a reload, and a kick takes one out for real."""
    seeded = await asyncio.to_thread(
        subprocess.run,
        [*MANAGE, "seed_demo", "--url", relay.ws_url, "--peers", "20", "--history", "7"],
        cwd=ROOT,
        env=relay_environ(relay.log_path.parent),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    admin = await sign_in_to_admin(browser, relay, "/admin/lobbies/lobby/?q=demo-lobby")
    await admin.click("#result_list a:text-is('demo-lobby')")
    await admin.wait_for_selector("#live-members")
    tabs = {}
    for name in (f"ann-{os.getpid()}", f"bob-{os.getpid()}"):
        tabs[name] = await browser.new_page()
        await tabs[name].goto(f"{relay.http_url}/demo/?lobby=demo-lobby&name={name}")
    ann, bob = tabs
    await tabs[ann].wait_for_selector(f'[data-player="{bob}"]', timeout=10_000)
    # The live view refreshes by itself: both tabs appear, with their nicknames.
    for name in tabs:
        row = f'#live-members tr[data-peer="{name}"]'
        await admin.wait_for_selector(row, timeout=10_000)
        cells = await admin.locator(f"{row} td").all_inner_texts()
        assert cells[:4] == [name, "anonymous", name, "member"], cells
    assert "1 pipe open" in await admin.inner_text("#live-panel")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await admin.screenshot(path=SCREENSHOTS / "admin-live-lobby.png", full_page=True)

    await admin.click(f'#live-members tr[data-peer="{ann}"] button[value=kick]')
    await admin.wait_for_selector(".messagelist")
    assert f"Kicked peer '{ann}'." in await admin.inner_text(".messagelist")
    assert await admin.locator(f'#live-members tr[data-peer="{ann}"]').count() == 0
    assert await admin.locator(f'#live-members tr[data-peer="{bob}"]').count() == 1
    # Its pipe was closed (4410): each tab sees the other player leave the board.
    await tabs[bob].wait_for_selector(f'[data-player="{ann}"]', state="detached", timeout=10_000)
    await admin.screenshot(path=SCREENSHOTS / "admin-after-kick.png", full_page=True)
    # The admin's history of the lobby records who kicked whom.
    await admin.click("a.historylink")
    assert f"Kicked peer '{ann}'." in await admin.inner_text("#change-history")


async def test_the_dashboard_shows_the_traffic_of_the_tests_above(relay, browser):
    """The demo tabs, the owner's player and seed_demo's burst above made real traffic; the
    analytics plugin writes it within RELAY_ANALYTICS_FLUSH_SECONDS (5 s), and the dashboard
    shows it."""
    page = await sign_in_to_admin(browser, relay, "/admin/analytics/dashboard/?days=1")
    await page.wait_for_selector("#totals")
    for _ in range(30):
        if "kart-grand-prix" in await page.inner_text("#top-lobbies"):
            break
        await asyncio.sleep(0.5)
        await page.reload()
    top = await page.inner_text("#top-lobbies")
    assert "kart-grand-prix" in top and "demo-" in top
    assert not (await page.inner_text("#totals")).startswith("0 joins")
    assert "racing" in await page.inner_text("#top-games")
    # One bar per hour of the last day, each with its value as a tooltip.
    assert await page.locator("#joins-chart rect.bar-joins").count() == 24
    assert len((await page.get_attribute("#peers-line", "points")).split()) == 24
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "dashboard.png", full_page=True)
    # The week, drawn by day: seed_demo's made-up history gives it its shape. (This is the
    # screenshot in docs/, taken at 1280 px wide.)
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(f"{relay.http_url}/admin/analytics/dashboard/?days=7")
    assert await page.locator("#joins-chart rect.bar-joins").count() == 7  # one bar a day
    await page.screenshot(path=SCREENSHOTS / "dashboard-week.png", full_page=True)


async def test_the_landing_pages_code_is_readable_whole_at_1280_px(relay, browser):
    """Nothing of the landing page's code (the client snippet, the commands) is cut off or
    hidden past a scrollbar: long lines wrap."""
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{relay.http_url}/")
    cut_off = await page.evaluate(
        """() => [...document.querySelectorAll('pre, code')]
            .filter(e => e.scrollWidth > e.clientWidth + 1
                || e.getBoundingClientRect().right > document.documentElement.clientWidth)
            .map(e => e.textContent.slice(0, 60))"""
    )
    assert cut_off == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOTS / "landing-1280.png", full_page=True)


async def test_a_demo_tab_says_it_was_kicked_or_the_lobby_closed_and_joins_again(relay, browser):
    """The owner kicks a /demo/ tab, then closes the lobby (through the API, as its session):
    the tab says so each time, and its button takes it back in when the relay lets it."""
    owner = await browser.new_page()
    await owner.goto(f"{relay.http_url}/accounts/login/")
    await owner.fill("#id_username", ADMIN_USER)
    await owner.fill("#id_password", ADMIN_PASSWORD)
    await owner.click("button[type=submit]")
    await owner.wait_for_load_state()
    csrf = next(c["value"] for c in await owner.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": csrf, "Referer": relay.http_url}

    async def api(path: str, body: dict) -> dict:
        answer = await owner.request.post(f"{relay.http_url}{path}", data=body, headers=headers)
        assert answer.ok, await answer.text()
        return await answer.json() if answer.status != 204 else {}

    lobby = f"kick-demo-{os.getpid()}"
    lobby_id = (await api("/api/lobbies", {"documentId": lobby}))["id"]
    ann, bob = f"ann-{os.getpid()}", f"bob-{os.getpid()}"
    tabs = {}
    for name in (ann, bob):
        tabs[name] = await browser.new_page()
        await tabs[name].goto(f"{relay.http_url}/demo/?lobby={lobby}&name={name}")
    await tabs[ann].wait_for_selector(f'[data-player="{bob}"]', timeout=10_000)
    assert not await tabs[ann].is_visible("#notice")

    await api(f"/api/lobbies/{lobby_id}/kick", {"peerId": ann})
    await tabs[ann].wait_for_selector("#notice", state="visible", timeout=10_000)
    assert "You were kicked out of the lobby." in await tabs[ann].inner_text("#notice")
    assert "Out of the lobby." in await tabs[ann].inner_text("#status")
    await tabs[ann].wait_for_selector(f'[data-player="{bob}"]', state="detached", timeout=10_000)
    assert not await tabs[bob].is_visible("#notice")  # only the kicked tab is told
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await tabs[ann].screenshot(path=SCREENSHOTS / "demo-kicked.png", full_page=True)

    # A kick is not a ban: joining again meets Bob again.
    await tabs[ann].click("#rejoin")
    await tabs[ann].wait_for_selector(f'[data-player="{bob}"]', timeout=10_000)
    assert not await tabs[ann].is_visible("#notice")

    await api(f"/api/lobbies/{lobby_id}/close", {})
    for tab in tabs.values():
        await tab.wait_for_selector("#notice", state="visible", timeout=10_000)
        assert "The lobby was closed." in await tab.inner_text("#notice")
    # A closed lobby lets nobody in: the button's Join is refused, and the tab says why.
    await tabs[bob].click("#rejoin")
    await tabs[bob].wait_for_function(
        "() => document.getElementById('notice-text').textContent.includes('refused')",
        timeout=10_000,
    )
    assert not await tabs[bob].is_visible(f'[data-player="{ann}"]')
