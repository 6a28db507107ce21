"""Two participant pages with shifted, skewed clocks start audio together at T.

Each page's ``performance.now``, ``Date.now`` and ``getOutputTimestamp`` are
moved by an init script, as if the phone's clock were off by seconds and ran
50 ppm fast or slow. The page only sees that fake clock; the test converts the
audio-clock instant the page scheduled back to true time with the real
``getOutputTimestamp`` and compares it with the server's T.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import open_organizer, start_from_console
from tests.conftest import scaled, small_show, start_server

pytestmark = pytest.mark.browser

# The shift and skew every clock the page can read, the way a real phone's
# clock differs from the server's. __unisonoTrue keeps the real ones.
CLOCK_SCRIPT = """
(() => {
  const SHIFT_MS = %(shift_ms)r, SKEW = %(skew_ppm)r * 1e-6;
  const realNow = performance.now.bind(performance);
  const realDateNow = Date.now.bind(Date);
  const base = realNow();
  const fake = (real) => real + SHIFT_MS + (real - base) * SKEW;
  const unfake = (faked) => (faked - SHIFT_MS + base * SKEW) / (1 + SKEW);
  performance.now = () => fake(realNow());
  Date.now = () => Math.round(realDateNow() + SHIFT_MS + (realNow() - base) * SKEW);
  const realOutput = AudioContext.prototype.getOutputTimestamp;
  AudioContext.prototype.getOutputTimestamp = function () {
    window.__unisonoContext = this;
    const ts = realOutput.call(this);
    return { contextTime: ts.contextTime, performanceTime: fake(ts.performanceTime) };
  };
  const realResume = AudioContext.prototype.resume;
  AudioContext.prototype.resume = function () { window.__unisonoContext = this; return realResume.call(this); };
  // True Unix time (ms) at which an audio-clock instant is audible, from the real clocks.
  window.__unisonoTrueMs = (contextTime) => {
    const ts = realOutput.call(window.__unisonoContext);
    return performance.timeOrigin + ts.performanceTime + (contextTime - ts.contextTime) * 1000;
  };
  // True Unix time (ms) of a device time (µs) the page read from its shifted clock.
  window.__unisonoTrueMsOfDeviceUs = (deviceUs) => performance.timeOrigin + unfake(deviceUs / 1000 - performance.timeOrigin);
})();
"""


async def open_participant(browser: Browser, url: str, shift_ms: float, skew_ppm: float) -> Page:
    context = await browser.new_context()
    await context.add_init_script(CLOCK_SCRIPT % {"shift_ms": shift_ms, "skew_ppm": skew_ppm})
    page = await context.new_page()
    page.on("console", lambda msg: print(f"[page {shift_ms:+}] {msg.text}"))
    await page.goto(url)
    await page.click("#unlock")
    return page


async def true_audible_ms(page: Page) -> float:
    """Median over a few readings of the true time at which the page's start is audible."""
    readings = []
    for _ in range(7):
        readings.append(await page.evaluate("() => window.__unisonoTrueMs(window.unisono.start.audibleContextTime)"))
        await asyncio.sleep(0.05)
    return statistics.median(readings)


async def test_two_skewed_pages_start_within_5_ms_of_T(browser: Browser, tmp_path: Path) -> None:
    """Pages at +1.5 s/+50 ppm and -0.8 s/-50 ppm schedule audio within 5 ms of T and of each other."""
    runner, server = await start_server(tmp_path, small_show(tmp_path, seconds=20.0))
    try:
        pages = [
            await open_participant(browser, server.base_url + "/", 1500.0, 50.0),
            await open_participant(browser, server.base_url + "/", -800.0, -50.0),
        ]
        for page in pages:
            await page.wait_for_function(
                "() => window.unisono && window.unisono.estimate && window.unisono.estimate.bound_us < 5000"
                " && ['loaded', 'unlocked'].includes(window.unisono.state)",
                timeout=scaled(15) * 1000,
            )
        organizer = await open_organizer(browser, server.base_url, 2)
        await start_from_console(organizer, 3)
        for page in pages:
            await page.wait_for_function("() => window.unisono.start !== null", timeout=scaled(10) * 1000)
        start_ns = server.hub.show.snapshot.start_ns
        assert start_ns is not None
        t_ms = start_ns / 1e6
        audible = [await true_audible_ms(page) for page in pages]
        starts = [await page.evaluate("() => window.unisono.start.startUs") for page in pages]
        assert starts == [start_ns // 1000] * 2
        errors_ms = [a - t_ms for a in audible]
        print(f"start errors vs T: {errors_ms[0]:+.2f} ms, {errors_ms[1]:+.2f} ms")
        assert all(abs(e) <= 5.0 for e in errors_ms), errors_ms
        assert abs(errors_ms[0] - errors_ms[1]) <= 5.0
        # The pages really were seconds apart: their estimates saw the shifts.
        offsets = [await page.evaluate("() => window.unisono.estimate.offset_us") for page in pages]
        assert abs(offsets[0] + 1_500_000) < 20_000 and abs(offsets[1] - 800_000) < 20_000, offsets
        for page in pages:
            await page.wait_for_function("() => window.unisono.state === 'playing'", timeout=scaled(10) * 1000)
    finally:
        await runner.cleanup()
