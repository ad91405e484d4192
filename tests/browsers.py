"""Headless Chromium from Debian's packages (``make test`` installs it), driven by Playwright:
the browser of the browser tests (tests/test_browser.py, tests/test_owner_console.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# Marks a module of browser tests: live (a relay subprocess), skipped without Chromium.
BROWSER_TESTS = [
    pytest.mark.live,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="Chromium is not installed (make test installs Debian's chromium package)",
    ),
]


@asynccontextmanager
async def chromium() -> AsyncIterator:
    """A headless Chromium, closed when the block ends."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            await browser.close()
