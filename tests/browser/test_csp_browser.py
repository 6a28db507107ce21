"""The pages run under the server's Content-Security-Policy with no violation.

Every page (participant, organizer console, poster) is opened in Chromium
with a listener for ``securitypolicyviolation`` and for console messages
about the policy; the participant page is tapped, so it loads its track,
registers its service worker and opens its websocket. A control injects an
inline script and checks the listener does see that violation, so the test
cannot pass by listening to nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from tests.conftest import TEST_TOKEN, RunningServer, scaled, small_show, start_server

pytestmark = pytest.mark.browser

LISTEN = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
async def show_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    runner, server = await start_server(tmp_path, small_show(tmp_path))
    yield server
    await runner.cleanup()


async def watched(browser: Browser, url: str, console: list[str]) -> Page:
    context = await browser.new_context()
    await context.add_init_script(LISTEN)
    page = await context.new_page()
    page.on("console", lambda msg: console.append(msg.text) if "Content Security Policy" in msg.text else None)
    await page.goto(url)
    return page


async def violations(page: Page) -> list[str]:
    result = await page.evaluate("() => window.__csp")
    assert isinstance(result, list)
    return [str(v) for v in result]


async def test_no_page_violates_the_policy(browser: Browser, show_server: RunningServer) -> None:
    """Participant (joined, tapped, worker registered), console and poster log no CSP violation."""
    console: list[str] = []
    timeout_ms = scaled(10) * 1000
    participant = await watched(browser, f"{show_server.base_url}/", console)
    await participant.click("#unlock")
    await participant.wait_for_function(
        "() => window.unisono && window.unisono.estimate && ['loaded', 'unlocked'].includes(window.unisono.state)",
        timeout=timeout_ms,
    )
    await participant.wait_for_function("() => navigator.serviceWorker.controller !== null || navigator.serviceWorker.ready", timeout=timeout_ms)
    organizer = await watched(browser, f"{show_server.base_url}/organizer.html?token={TEST_TOKEN}", console)
    await organizer.wait_for_function(
        "() => document.querySelector('#devices').textContent.trim() === '1'", timeout=timeout_ms
    )
    await organizer.wait_for_function("() => document.querySelector('#join-qr').complete && document.querySelector('#join-qr').naturalWidth > 0", timeout=timeout_ms)
    poster = await watched(browser, f"{show_server.base_url}/poster", console)
    # The poster's inline <style> applies (allowed by its hash): its QR box is sized by it.
    assert await poster.evaluate("() => document.styleSheets.length") >= 1
    for page in (participant, organizer, poster):
        assert await violations(page) == [], page.url
    assert console == []

    # Control: an inline script is blocked and reported, so the listener works.
    await participant.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = true'; document.body.append(s); }"
    )
    await participant.wait_for_function("() => window.__csp.length > 0", timeout=timeout_ms)
    assert await participant.evaluate("() => window.__ran === undefined")
    assert any("script-src" in v for v in await violations(participant))
