"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import TEST_TOKEN, scaled

CHROMIUM = os.environ.get("UNISONO_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps calling out to
# Google's hosts, which this sandbox (and CI) refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None and not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run ./run-tests, which installs it (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        await browser.close()


async def open_organizer(browser: Browser, base_url: str, devices: int) -> Page:
    """The organizer console in its own context, once it counts ``devices`` participants."""
    organizer = await (await browser.new_context()).new_page()
    await organizer.goto(f"{base_url}/organizer.html?token={TEST_TOKEN}")
    await organizer.wait_for_function(
        f"() => document.querySelector('#devices').textContent.trim() === '{devices}'", timeout=scaled(10) * 1000
    )
    return organizer


# The console has answered a start: the show is scheduled, or it shows an
# API error, or (ASKED) it asks to confirm a start with too few ready devices.
STARTED_OR_REFUSED = (
    "['scheduled', 'playing'].includes(document.querySelector('#state').dataset.state)"
    " || !document.querySelector('#error').hidden"
)
ASKED = "document.querySelector('#confirm-dialog').open"


async def start_from_console(organizer: Page, lead_s: float, confirm: bool = True) -> None:
    """Press Start with a lead of ``lead_s`` seconds, as an organizer would, and wait for the answer.

    When the console asks to confirm (too few devices ready), confirm if
    ``confirm``, else leave the dialog open. An API error fails the test.
    """
    await organizer.fill("#lead", str(lead_s))
    await organizer.click("#start")
    await organizer.wait_for_function(f"() => {STARTED_OR_REFUSED} || {ASKED}", timeout=scaled(10) * 1000)
    if confirm and await organizer.evaluate(f"() => {ASKED}"):
        await organizer.click("#confirm-yes")
        await organizer.wait_for_function(f"() => {STARTED_OR_REFUSED}", timeout=scaled(10) * 1000)
    error = organizer.locator("#error")
    if await error.is_visible():
        raise AssertionError(f"the console refused the start: {await error.inner_text()}")
