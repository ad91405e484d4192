"""The Content-Security-Policy in a real browser: every page the relay serves (landing, demo with
its WebSockets, sign-in, the owners' pages, the admin with a lobby's live view and the dashboard,
the API docs) is sent the header and works under it, with no violation reported."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.browsers import BROWSER_TESTS
from tests.conftest import ROOT, LiveRelay, relay_environ, start_relay, stop_relay

pytestmark = BROWSER_TESTS
PASSWORD = "a long test password 5512"
OPERATOR = f"csp-operator-{os.getpid()}"
DOCUMENT = f"csp-lobby-{os.getpid()}"
# Records each violation the page sees; Playwright adds it before the page's own scripts (its
# init scripts are not subject to the page's policy).
WATCH = """
window.__violations = []
document.addEventListener('securitypolicyviolation', event => {
  window.__violations.push(event.violatedDirective + ' ' + event.blockedURI)
})
"""


@pytest.fixture(scope="module")
def relay(tmp_path_factory) -> Iterator[tuple[LiveRelay, str, int]]:
    """The relay with an operator who owns a lobby (its public id and primary key)."""
    data_dir = tmp_path_factory.mktemp("csp")
    script = (
        "from django.contrib.auth.models import User; from lobbies.models import Lobby; "
        f"user = User.objects.create_superuser({OPERATOR!r}, 'o@x.io', {PASSWORD!r}); "
        f"lobby = Lobby.objects.create(document_id={DOCUMENT!r}, owner=user); "
        "print(lobby.public_id, lobby.pk)"
    )
    made = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=relay_environ(data_dir),
        check=True,
        capture_output=True,
        text=True,
    )
    public_id, pk = made.stdout.strip().splitlines()[-1].split()
    relay = start_relay("uvicorn", data_dir)
    yield relay, public_id, int(pk)
    stop_relay(relay)


# Chromium's console errors, by page: it also reports each violation there ("Refused to ...
# because it violates the following Content Security Policy directive").
_console_errors: dict[object, list[str]] = {}


async def _watched(context):
    page = await context.new_page()
    errors = _console_errors.setdefault(page, [])
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    await page.add_init_script(WATCH)
    return page


async def _violations(page) -> list[str]:
    seen = await page.evaluate("window.__violations")
    return seen + [m for m in _console_errors[page] if "Content Security Policy" in m]


async def test_every_page_works_under_the_policy_without_a_violation(relay, browser):
    live, public_id, pk = relay
    base = live.http_url
    context = await browser.new_context()
    page = await _watched(context)
    answer = await page.goto(f"{base}/accounts/login/?next=/my/")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    await page.fill("#id_username", OPERATOR)
    await page.fill("#id_password", PASSWORD)
    await page.click("button[type=submit], input[type=submit]")
    await page.wait_for_url(f"{base}/my/")
    assert await _violations(page) == []

    # The demo: two tabs meet over WebSockets (connect-src) and see each other move.
    alice, bob = await _watched(context), await _watched(context)
    await alice.goto(f"{base}/demo/?lobby={DOCUMENT}&name=alice")
    await bob.goto(f"{base}/demo/?lobby={DOCUMENT}&name=bob")
    await alice.wait_for_selector('[data-player="bob"]', timeout=10_000)
    await bob.wait_for_selector('[data-player="alice"]', timeout=10_000)
    # The landing page's counts come from /api/stats every 3 s (its script, a static file).
    landing = await _watched(context)
    await landing.goto(f"{base}/")
    await landing.wait_for_function(
        "document.querySelector('[data-stat=peers_online]').textContent === '2'", timeout=10_000
    )

    pages = {
        f"/my/lobbies/{public_id}/": "#live-panel, [data-live-url]",
        "/my/access/": "main",
        "/admin/": "#site-name",
        f"/admin/lobbies/lobby/{pk}/change/": "#live-panel",
        "/admin/lobbies/lobby/": "#changelist",
        "/admin/analytics/dashboard/?days=1": "#joins-chart",
        "/api/docs": ".swagger-ui .info",  # Swagger UI rendered by its script
    }
    for path, shown in pages.items():
        other = await _watched(context)
        answer = await other.goto(f"{base}{path}")
        assert answer.status == 200 and "content-security-policy" in answer.headers, path
        await other.wait_for_selector(shown, timeout=10_000)
        await other.wait_for_timeout(500)  # late scripts (the live view's refresh) too
        assert await _violations(other) == [], path
    # The admin's styles (a static file since the policy) applied: the live panel's padding.
    admin = await _watched(context)
    await admin.goto(f"{base}/admin/lobbies/lobby/{pk}/change/")
    padding = await admin.eval_on_selector("#live-panel", "e => getComputedStyle(e).paddingBottom")
    assert padding != "0px"
    # The live view lists the two demo tabs, as fetched by live.js under the policy.
    await admin.wait_for_selector("#live-panel >> text=alice", timeout=10_000)

    for tab in (page, alice, bob, landing, admin):
        assert await _violations(tab) == []
    await context.close()


async def test_a_violation_would_be_seen(relay, browser):
    """The watch itself works: an inline style and an inline script are refused and reported."""
    live, _, _ = relay
    page = await _watched(await browser.new_context())
    await page.goto(f"{live.http_url}/")
    await page.evaluate(
        """() => {
          document.body.setAttribute('style', 'color: red')
          const script = document.createElement('script')
          script.textContent = 'window.__ran = true'
          document.body.append(script)
        }"""
    )
    await page.wait_for_function("window.__violations.length >= 2")
    assert await page.evaluate("window.__ran") is None  # the inline script did not run
    assert {v.split()[0] for v in await _violations(page)} >= {"style-src-attr", "script-src-elem"}
