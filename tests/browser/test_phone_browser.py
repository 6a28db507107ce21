"""Phone realities in the browser: a suspended AudioContext comes back and re-aligns; the manual latency moves the start and is kept.

One page with a shifted clock (test_start_browser's init script) plays a
40 s segmented show. Its AudioContext is suspended, as a phone call or a
notification would: the page resumes it at its next redraw and, since the
audio clock stood still meanwhile, restarts at the right position, within
5 ms of the schedule in true time. Then the participant sets
a 200 ms headphone delay: the page starts its audio 200 ms earlier, reports
the total in `ready`, and keeps the value across a reload.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser.test_late_join_segments_browser import (
    serve_clicks_and_open,
    start_show,
    true_ms_of_position,
)
from tests.conftest import scaled

pytestmark = pytest.mark.browser


async def test_suspended_context_realigns_and_manual_latency_applies(browser: Browser, tmp_path: Path) -> None:
    """After a suspension the page plays within 5 ms of the show; a 200 ms delay starts it 200 ms early and is kept."""
    _, runner, server, page = await serve_clicks_and_open(browser, tmp_path, "Phone", -1200.0)
    try:
        t_ms = await start_show(browser, server, page, 2)
        await page.wait_for_function("() => window.unisono.state === 'playing'", timeout=scaled(10) * 1000)
        await asyncio.sleep(2.0)

        # A call or a notification: the audio clock stands still until the page resumes it.
        await page.evaluate("() => window.__unisonoContext.suspend()")
        await page.wait_for_function(
            "() => window.unisono.contextRealigns >= 1 && window.unisono.unlocked && window.unisono.start !== null",
            timeout=scaled(10) * 1000,
        )
        await page.wait_for_function("() => window.unisono.state === 'playing'", timeout=scaled(10) * 1000)
        after = await page.evaluate("() => window.unisono.start")
        resumed_error_ms = await true_ms_of_position(page, after["offsetS"]) - (t_ms + after["offsetS"] * 1000)
        print(f"after the suspension: restarted at {after['offsetS']:.3f} s, error vs T {resumed_error_ms:+.2f} ms")
        assert after["offsetS"] > 1.5  # the page resumed the context itself (within a redraw) and restarted in place
        assert abs(resumed_error_ms) <= 5.0

        # Bluetooth headphones the browser does not report: the participant sets 200 ms.
        reported_us = await page.evaluate("() => window.unisono.outputLatencyUs")
        await page.evaluate("() => { document.querySelector('details.latency').open = true; }")
        await page.fill("#latency", "200")
        await page.dispatch_event("#latency", "change")
        await page.wait_for_function("() => window.unisono.latencyMs === 200 && window.unisono.start !== null", timeout=scaled(10) * 1000)
        await page.wait_for_function("() => window.unisono.state === 'playing'", timeout=scaled(10) * 1000)
        bt = await page.evaluate("() => window.unisono.start")
        # The source starts 200 ms before the instant it would otherwise (the real output timestamp holds the platform
        # latency): the output reaches a position 200 ms before the show does (the headphones add the 200 ms).
        early_ms = await true_ms_of_position(page, bt["offsetS"] - 0.2) - (t_ms + bt["offsetS"] * 1000)
        print(f"with 200 ms set: source audible {early_ms:+.2f} ms vs the show (expected -200)")
        assert abs(early_ms + 200.0) <= 5.0
        assert await page.evaluate("() => window.unisono.outputLatencyUs") == reported_us + 200_000
        for _ in range(int(scaled(10) / 0.1)):
            if any(d.output_latency_us == reported_us + 200_000 for d in server.hub.devices):
                break
            await asyncio.sleep(0.1)
        assert [d.output_latency_us for d in server.hub.devices] == [reported_us + 200_000]

        await page.reload()
        await page.wait_for_function("() => window.unisono && window.unisono.latencyMs === 200", timeout=scaled(10) * 1000)
        assert await page.input_value("#latency") == "200"
        assert await page.evaluate("() => localStorage.getItem('unisono.latency_ms')") == "200"
    finally:
        await runner.cleanup()


# A Wake Lock API that grants every request and, like a browser, releases the
# lock when the page is hidden (headless Chromium refuses real screen locks).
# window.__setVisible(v) stands in for the user switching apps.
WAKE_LOCK_STUB = """
(() => {
  window.__wakeLockRequests = 0;
  let visible = 'visible';
  const held = new Set();
  Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => visible });
  Object.defineProperty(navigator, 'wakeLock', { configurable: true, value: {
    request: async (type) => {
      window.__wakeLockRequests += 1;
      const sentinel = new EventTarget();
      sentinel.type = type;
      sentinel.release = async () => { held.delete(sentinel); sentinel.dispatchEvent(new Event('release')); };
      held.add(sentinel);
      return sentinel;
    },
  } });
  window.__setVisible = (isVisible) => {
    visible = isVisible ? 'visible' : 'hidden';
    if (!isVisible) for (const sentinel of [...held]) sentinel.release();
    document.dispatchEvent(new Event('visibilitychange'));
  };
})();
"""


async def test_wake_lock_held_during_the_show_and_taken_again_when_visible(browser: Browser, tmp_path: Path) -> None:
    """The lock is requested once the show is scheduled, lost when hidden, requested again when visible; ready tells the hub each time."""
    _, runner, server, page = await serve_clicks_and_open(browser, tmp_path, "Wake", 0.0)
    try:
        await page.evaluate(WAKE_LOCK_STUB)
        assert await page.evaluate("() => window.__wakeLockRequests") == 0  # not before the show

        async def hub_sees(wake_lock: bool, visible: bool) -> None:
            for _ in range(int(scaled(10) / 0.1)):
                if [(d.wake_lock, d.visible) for d in server.hub.devices] == [(wake_lock, visible)]:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError([(d.wake_lock, d.visible) for d in server.hub.devices])

        await start_show(browser, server, page, 3)
        await page.wait_for_function("() => window.unisono.wakeLock === true", timeout=scaled(10) * 1000)
        await hub_sees(True, True)
        await page.evaluate("() => window.__setVisible(false)")
        await page.wait_for_function("() => !window.unisono.wakeLock && !window.unisono.visible", timeout=scaled(10) * 1000)
        await hub_sees(False, False)
        await page.evaluate("() => window.__setVisible(true)")
        await page.wait_for_function("() => window.unisono.wakeLock === true", timeout=scaled(10) * 1000)
        assert await page.evaluate("() => window.__wakeLockRequests") == 2
        await hub_sees(True, True)
    finally:
        await runner.cleanup()
