"""A playing participant page measures its drift and reports it on window.unisono.drift.

The page's audio clock cannot be skewed against performance.now from a
script, so this checks the wiring in a real Chromium: the controller is fed
from getOutputTimestamp and the estimate while the track plays, and finds
the audible position on time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser.conftest import open_organizer, start_from_console
from tests.conftest import scaled, small_show, start_server

pytestmark = pytest.mark.browser


async def test_playing_page_reports_drift_within_5_ms(browser: Browser, tmp_path: Path) -> None:
    """After ~6 s of playback window.unisono.drift holds a measured |errorMs| < 5, a rate within 500 ppm and no re-align."""
    runner, server = await start_server(tmp_path, small_show(tmp_path, seconds=30.0))
    try:
        page = await (await browser.new_context()).new_page()
        page.on("console", lambda msg: print(f"[page] {msg.text}"))
        await page.goto(server.base_url + "/")
        await page.click("#unlock")
        await page.wait_for_function(
            "() => window.unisono && window.unisono.estimate && window.unisono.state === 'unlocked'",
            timeout=scaled(15) * 1000,
        )
        drift = await page.evaluate("() => window.unisono.drift")
        assert drift == {"errorMs": None, "ratePpm": 0, "rateEstimatePpm": 0, "realigns": 0}
        organizer = await open_organizer(browser, server.base_url, 1)
        await start_from_console(organizer, 2)
        await page.wait_for_function("() => window.unisono.state === 'playing'", timeout=scaled(10) * 1000)
        await asyncio.sleep(6.0)
        drift = await page.evaluate("() => window.unisono.drift")
        print(f"drift after 6 s of playback: {drift}")
        assert drift["errorMs"] is not None, drift
        assert abs(drift["errorMs"]) < 5.0, drift
        assert abs(drift["ratePpm"]) <= 500.0, drift
        assert drift["realigns"] == 0, drift
    finally:
        await runner.cleanup()
