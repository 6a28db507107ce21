"""Cues and announcements in headless Chromium: two pages in two groups, clocks shifted and skewed.

Each page's clocks are moved by test_start_browser.py's init script;
the page fires its cues on its synced clock. The test converts the device time
at which each cue fired back to true time and compares it with the server
time the cue was due: start + at.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import open_organizer
from tests.browser.test_start_browser import CLOCK_SCRIPT
from tests.conftest import SMALL_SHOW_CUES, scaled, small_show, start_server

pytestmark = pytest.mark.browser

CUE_TOLERANCE_MS = 20.0  # issue 4, item 7: each cue within 20 ms of its time

# Records every navigator.vibrate pattern and every background colour the page sets on <body>.
EFFECTS_SCRIPT = """
(() => {
  window.__vibrations = [];
  navigator.vibrate = (pattern) => { window.__vibrations.push(Array.from(pattern)); return true; };
  window.__flashes = [];
  document.addEventListener('DOMContentLoaded', () => {
    new MutationObserver(() => {
      const colour = document.body.style.backgroundColor;
      if (colour) window.__flashes.push(colour);
    }).observe(document.body, { attributes: true, attributeFilter: ['style'] });
  });
})();
"""


async def open_page(browser: Browser, url: str, shift_ms: float, skew_ppm: float, locale: str) -> Page:
    context = await browser.new_context(locale=locale)
    await context.add_init_script(CLOCK_SCRIPT % {"shift_ms": shift_ms, "skew_ppm": skew_ppm})
    await context.add_init_script(EFFECTS_SCRIPT)
    page = await context.new_page()
    page.on("console", lambda msg: print(f"[page {locale}] {msg.text}"))
    await page.goto(url)
    return page


async def test_two_groups_fire_their_own_cues_within_20_ms_and_see_the_announcement(browser: Browser, tmp_path: Path) -> None:
    """Pages in red and blue fire their own cues within 20 ms of start + at in true time; an announcement shows on both."""
    runner, server = await start_server(tmp_path, small_show(tmp_path, seconds=20.0))
    try:
        pages = [
            await open_page(browser, server.base_url + "/", 1500.0, 50.0, "en-US"),
            await open_page(browser, server.base_url + "/", -800.0, -50.0, "fr-FR"),
        ]
        for page in pages:
            await page.wait_for_function(
                "() => window.unisono && window.unisono.show && window.unisono.estimate && window.unisono.estimate.bound_us < 5000",
                timeout=scaled(15) * 1000,
            )
        groups = [await page.evaluate("() => window.unisono.group") for page in pages]
        assert sorted(groups) == ["blue", "red"]
        # Before the show: the explanation screen, in the page's language.
        assert await pages[0].locator("#about-text").inner_text() == "A test of cues."
        assert await pages[1].locator("#about-text").inner_text() == "Un essai des consignes."
        assert await pages[1].locator("#when").inner_text() == "Maintenant"
        assert await pages[0].locator("#about").is_visible()

        start_ns = server.hub.start_show(server.hub.clock.now_ns() + int(scaled(2.0) * 1e9)).start_ns
        assert start_ns is not None
        for page in pages:
            await page.wait_for_function("() => window.unisono.cues.length === 2", timeout=scaled(10) * 1000)

        for page, group in zip(pages, groups):
            fired = await page.evaluate(
                "() => window.unisono.cues.map((c) => ({index: c.index, trueMs: window.__unisonoTrueMsOfDeviceUs(c.firedDeviceUs),"
                " dueTrueMs: window.__unisonoTrueMsOfDeviceUs(c.dueDeviceUs)}))"
            )
            assert [f["index"] for f in fired] == [0, 1]
            for cue, at_s in zip(fired, SMALL_SHOW_CUES[group]):
                due_ms = start_ns / 1e6 + at_s * 1000
                error_ms = cue["trueMs"] - due_ms
                print(f"{group}: cue at {at_s} s fired {error_ms:+.2f} ms off its time (scheduled {cue['dueTrueMs'] - due_ms:+.2f} ms)")
                assert abs(error_ms) <= CUE_TOLERANCE_MS, (group, at_s, error_ms)
        # Red's first cue flashes red and vibrates; blue's flashes blue and does not vibrate.
        for page, group in zip(pages, groups):
            vibrations = await page.evaluate("() => window.__vibrations")
            flashes = await page.evaluate("() => window.__flashes")
            assert vibrations == ([[100, 50, 100]] if group == "red" else [])
            assert flashes[:1] == (["rgb(255, 0, 0)"] if group == "red" else ["rgb(0, 0, 255)"])
        # The last cue's text shows, in each page's language.
        words = {("red", 0): "red two", ("blue", 0): "blue two", ("red", 1): "rouge deux", ("blue", 1): "bleu deux"}
        for i, (page, group) in enumerate(zip(pages, groups)):
            assert await page.locator("#cue").inner_text() == words[(group, i)]
            assert not await page.locator("#about").is_visible()

        organizer = await open_organizer(browser, server.base_url, 2)
        await organizer.fill("#announce-text", "Rain: meet under the market hall")
        await organizer.click("#announce")
        for page in pages:
            await page.wait_for_function("() => window.unisono.announcements.length === 1", timeout=scaled(5) * 1000)
            assert await page.locator("#announcement-text").inner_text() == "Rain: meet under the market hall"
            assert await page.locator("#announcement").is_visible()
        assert await pages[1].locator("#announcement-label").text_content() == "Message des organisateurs"
    finally:
        await runner.cleanup()
