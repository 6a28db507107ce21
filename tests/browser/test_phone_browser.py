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
