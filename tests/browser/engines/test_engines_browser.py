"""The participant's story in Chromium, WebKit and Firefox at once (issue 8).

One real server; one page in each engine, each with its own shifted and
skewed clock (clients/web/js/testclock.js, chosen by ?testclock=); a real
click unlocks audio; the organizer starts with a lead; every page must start
its audio within 5 ms of T and of the others. Then each engine loads a fresh
page after T (a late join) which must start at the show's position, within 5 ms.

Where the start is measured: the audio-clock instant the page started its
source at (``start.contextWhen``; Web Audio starts sources sample-accurately)
mapped to true time by the test clock's own readings of currentTime against
the real performance.now() in the half second before it (trueRenderMs), plus the output latency the page's
mapping holds (a headless engine has no speaker to measure): true time ms at
which the page means position ``offsetS`` to be heard, against T + offsetS.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.browser.conftest import open_organizer, start_from_console
from tests.browser.engines.drivers import ChromiumPage, EnginePage, FirefoxPage, PulseSink, WebKitPage, wait_for
from tests.conftest import scaled, small_show, start_server

pytestmark = pytest.mark.browser

# (shift ms, skew ppm) per engine: seconds apart, tens of ppm, both signs.
CLOCKS = {"chromium": (1500.0, 50.0), "webkit": (-800.0, -50.0), "firefox": (300.0, 30.0)}
LATE_CLOCKS = {"chromium": (-2500.0, -40.0), "webkit": (2200.0, 60.0), "firefox": (-1200.0, -20.0)}
BOUND_MS = 5.0
SYNCED = (
    "() => window.unisono && window.unisono.unlocked && window.unisono.estimate"
    " && window.unisono.boundUs !== null && window.unisono.boundUs < 5000"
)
# What the page did, as the test clock sees it in true time.
MEASURE = """() => {
  const s = window.unisono.start, t = window.__unisonoTest;
  return { renderMs: t.trueRenderMs(s.contextWhen), latencyMs: s.mapping.latencyS * 1000, offsetS: s.offsetS,
           startUs: s.startUs, source: s.mapping.source, audioClock: window.unisono.audioClock,
           probe: t.probe(), offsetUs: window.unisono.estimate.offset_us };
}"""


def url(base: str, engine: str, clocks: dict[str, tuple[float, float]]) -> str:
    shift_ms, skew_ppm = clocks[engine]
    return f"{base}/?testclock={shift_ms},{skew_ppm}"


async def unlock(page: EnginePage) -> None:
    """A real click, then wait for the context to run (Firefox's resume took 45 ms to 1.8 s)."""
    await wait_for(page, "() => document.querySelector('#unlock') !== null && window.unisono !== undefined", scaled(15))
    await page.click("#unlock")
    await wait_for(page, SYNCED, scaled(20))


async def measure(page: EnginePage, t_ms: float) -> dict[str, Any]:
    """The page's start error against T (ms), once it plays, with what it reported."""
    await wait_for(page, "() => window.unisono.state === 'playing' && window.unisono.start !== null", scaled(20))
    await wait_for(page, "() => window.__unisonoTest.trueRenderMs(window.unisono.start.contextWhen) !== null", scaled(10))
    result: dict[str, Any] = await page.evaluate(MEASURE)
    assert result["renderMs"] is not None, f"{page.engine}: the test clock has no render readings"
    result["errorMs"] = result["renderMs"] + result["latencyMs"] - (t_ms + result["offsetS"] * 1000)
    result["engine"] = page.engine
    result["version"] = page.version
    print(f"{page.engine} {page.version}: error {result['errorMs']:+.2f} ms, offset {result['offsetS']:.3f} s, {result}")
    return result


async def test_three_engines_start_within_5_ms_of_T_and_join_late(browser: Browser, tmp_path: Path) -> None:
    """Chromium, WebKit and Firefox pages (shifted, skewed clocks) start within 5 ms of T and of each other, and again when they join late."""
    runner, server = await start_server(tmp_path, small_show(tmp_path, seconds=30.0))
    # One sound server per engine: nothing one engine's audio does can hold up the other's.
    pulses = [await asyncio.to_thread(PulseSink, tmp_path / f"pulse-{engine}") for engine in ("webkit", "firefox")]
    pages: list[EnginePage] = []
    try:
        base = server.base_url
        chromium = ChromiumPage(browser)
        await chromium.goto(url(base, "chromium", CLOCKS))
        launched = await asyncio.gather(WebKitPage.launch(pulses[0]), FirefoxPage.launch(url(base, "firefox", CLOCKS), pulses[1], tmp_path / "firefox-profile"))
        pages = [chromium, *launched]
        await pages[1].goto(url(base, "webkit", CLOCKS))
        await asyncio.gather(*(unlock(page) for page in pages))

        organizer = await open_organizer(browser, base, 3)
        await start_from_console(organizer, 3)
        start_ns = server.hub.show.snapshot.start_ns
        assert start_ns is not None
        t_ms = start_ns / 1e6
        # No polling across T: three engines' audio threads share two cores,
        # and a starved one stalls its clock (docs/BROWSERS.md).
        await asyncio.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9 + 0.7))
        results = [await measure(page, t_ms) for page in pages]
        for result in results:
            assert result["startUs"] == start_ns // 1000
            assert result["offsetS"] == 0, result
            shift_ms = CLOCKS[result["engine"]][0]
            assert abs(result["offsetUs"] + shift_ms * 1000) < 20_000, result  # the page really saw its shifted clock
        errors = {r["engine"]: r["errorMs"] for r in results}
        assert all(abs(e) <= BOUND_MS for e in errors.values()), errors
        assert max(errors.values()) - min(errors.values()) <= BOUND_MS, errors
        # WebKitGTK's output timestamps are wrong: the page must have seen it.
        webkit = next(r for r in results if r["engine"] == "webkit")
        assert webkit["source"] == "render", webkit

        # A late join in each engine: a fresh device (no kept session) after T.
        for page in pages:
            await page.evaluate("() => { localStorage.clear(); return true; }")
        await asyncio.gather(*(page.goto(url(base, page.engine, LATE_CLOCKS)) for page in pages))
        await asyncio.gather(*(unlock(page) for page in pages))
        late = [await measure(page, t_ms) for page in pages]
        for result in late:
            assert result["offsetS"] > 1.0, result
        late_errors = {r["engine"]: r["errorMs"] for r in late}
        assert all(abs(e) <= BOUND_MS for e in late_errors.values()), late_errors
    finally:
        for page in pages:
            with contextlib.suppress(Exception):
                await page.close()
        for pulse in pulses:
            await asyncio.to_thread(pulse.close)
        await runner.cleanup()
