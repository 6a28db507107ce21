"""Offline once ready: the show downloaded into the service worker's cache starts on time and survives a reload with no network.

A segmented show (a manifest of 4 s MP3 segments). The page downloads the
page, its modules, the manifest and every segment (progress bar to 100 %) and
reports it in `ready` (the hub's Device keeps the fields). After the schedule
arrives the browser context goes offline and the server stops: the start is
still within 5 ms of T in true time (test_start_browser's clocks). A reload
with no network loads the page from the service worker's cache, takes the
estimate and schedule kept in localStorage, and plays from the right segment
at the right sample within 5 ms of where the show is.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser.test_late_join_segments_browser import (
    check_late_page,
    serve_clicks_and_open,
    start_show,
    true_ms_of_position,
)
from tests.conftest import scaled

pytestmark = pytest.mark.browser


async def test_offline_after_schedule_starts_on_time_and_reloads_from_cache(browser: Browser, tmp_path: Path) -> None:
    """Downloaded to 100 %, readiness reported; offline after the schedule: on time, and a reload plays in place."""
    manifest, runner, server, page = await serve_clicks_and_open(browser, tmp_path, "Offline", 700.0)
    running = True
    try:
        context = page.context
        await page.wait_for_function(
            "() => window.unisono.downloaded === 1 && window.unisono.offlineReady && window.unisono.unlocked",
            timeout=scaled(20) * 1000,
        )
        assert await page.evaluate("() => document.querySelector('#download-bar').value") == 100
        assert (await page.text_content("#download-percent")) == "100 %"
        cached = await page.evaluate("async () => (await (await caches.open('unisono-offline-v1')).keys()).length")
        assert cached >= len(manifest.segments) + 2, cached  # the shell, the manifest and every segment

        # Readiness reaches the server: the hub keeps every field.
        def reported() -> bool:
            return any(d.downloaded == 1.0 and d.unlocked and d.bound_us is not None for d in server.hub.devices)

        for _ in range(int(scaled(10) / 0.1)):
            if reported():
                break
            await asyncio.sleep(0.1)
        device = next(d for d in server.hub.devices)
        hook = await page.evaluate("() => window.unisono")
        print(f"hub device: downloaded {device.downloaded}, bound {device.bound_us} us, latency {device.output_latency_us} us, wake lock {device.wake_lock}, visible {device.visible}")
        assert device.loaded and device.unlocked and device.downloaded == 1.0
        assert device.bound_us is not None and 0 <= device.bound_us < 10_000
        assert device.output_latency_us == hook["outputLatencyUs"] and device.output_latency_us is not None
        assert device.visible is True and device.wake_lock is hook["wakeLock"]

        t_ms = await start_show(browser, server, page, 4)

        # No network from here: the context is offline and the server is gone.
        await context.set_offline(True)
        await runner.cleanup()
        running = False

        await page.wait_for_function("() => window.unisono.state === 'playing'", timeout=scaled(10) * 1000)
        start_error_ms = await true_ms_of_position(page, 0.0) - t_ms
        print(f"offline start error vs T: {start_error_ms:+.2f} ms")
        assert abs(start_error_ms) <= 5.0

        await asyncio.sleep(6.0)  # ~6 s into the show, past segment 0
        await page.reload()
        await page.wait_for_function(
            "() => window.unisono && window.unisono.restored && window.unisono.loaded", timeout=scaled(15) * 1000
        )
        assert await page.evaluate("() => navigator.serviceWorker.controller !== null")
        assert await page.evaluate("() => window.unisono.connected") is False
        await page.click("#unlock")
        await page.wait_for_function("() => window.unisono.start !== null", timeout=scaled(15) * 1000)
        reload_start = await page.evaluate("() => window.unisono.start")
        reload_error_ms = await check_late_page(page, manifest, reload_start, t_ms)
        print(f"offline reload at {reload_start['offsetS']:.3f} s: error vs T {reload_error_ms:+.2f} ms")
        assert abs(reload_error_ms) <= 5.0
        await page.wait_for_function("() => window.unisono.state === 'playing'", timeout=scaled(10) * 1000)
    finally:
        if running:
            await runner.cleanup()
