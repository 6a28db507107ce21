"""A segmented show: a late joiner and a reloaded page start inside the right segment, at the right sample, in sync.

The show's track is a manifest of 4 s MP3 segments. One page is there from
the start; another opens 7 s into the show, and is reloaded a few seconds
later. Every AudioBufferSourceNode.start call is recorded by an init script:
the late page's first source must take the frame the show has reached from
the segment holding it (offset and duration to the sample); and the true
time at which each page plays a common position (the test's clocks, as in
test_start_browser) must be within 5 ms of the server's schedule and of the
other page.
"""

from __future__ import annotations

import asyncio
import statistics
import wave
from pathlib import Path

import numpy
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from server.hub import ShowSpec
from server.prepare import Manifest, prepare_track
from tests.browser.conftest import open_organizer, start_from_console
from tests.browser.test_start_browser import CLOCK_SCRIPT
from tests.conftest import RunningServer, scaled, start_server

pytestmark = pytest.mark.browser

RATE = 48000
SEGMENT_FRAMES = 4 * RATE
TRACK_S = 40

RECORD_STARTS = """
(() => {
  window.__starts = [];
  const realStart = AudioBufferSourceNode.prototype.start;
  AudioBufferSourceNode.prototype.start = function (when, offset, duration) {
    window.__starts.push({ when, offset, duration, length: this.buffer ? this.buffer.length : 0 });
    return realStart.apply(this, arguments);
  };
})();
"""


def clicks_wav(path: Path) -> Path:
    """A click every 0.5 s over a quiet tone: the demo's kind of track, 40 s, stereo 48 kHz."""
    t = numpy.arange(TRACK_S * RATE) / RATE
    x = 0.1 * numpy.sin(2 * numpy.pi * 330 * t)
    x[:: RATE // 2] += 0.6
    ints = (numpy.stack([x, x]) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(ints.T.tobytes())
    return path


def clicks_show(tmp_path: Path, title: str) -> tuple[Manifest, ShowSpec]:
    """The clicks track prepared into 4 s segments, and a show playing it in both groups."""
    manifest = prepare_track(clicks_wav(tmp_path / "clicks.wav"), tmp_path / "tracks", stem="clicks", segment_frames=SEGMENT_FRAMES)
    track = tmp_path / "tracks" / "clicks.json"
    return manifest, ShowSpec(title=title, tracks={"red": track, "blue": track}, duration_ns=int(manifest.duration_s * 1e9))


async def open_page(browser: Browser, url: str, shift_ms: float = 0.0) -> Page:
    """A page in its own context, its clock shifted by ``shift_ms``, recording every source start."""
    context = await browser.new_context()
    await context.add_init_script(CLOCK_SCRIPT % {"shift_ms": shift_ms, "skew_ppm": 0.0})
    await context.add_init_script(RECORD_STARTS)
    page = await context.new_page()
    page.on("console", lambda msg: print(f"[page] {msg.text}"))
    await page.goto(url)
    return page


async def unlock_and_wait_for_start(page: Page, started: bool = True) -> dict[str, float]:
    """Tap, then wait for a good estimate (as test_start_browser does) and, if `started`, the start."""
    await page.wait_for_function("() => window.unisono && window.unisono.loaded", timeout=scaled(15) * 1000)
    await page.click("#unlock")
    await page.wait_for_function(
        f"() => {'window.unisono.start !== null &&' if started else ''} window.unisono.estimate && window.unisono.estimate.bound_us < 5000",
        timeout=scaled(15) * 1000,
    )
    start: dict[str, float] = await page.evaluate("() => window.unisono.start")
    return start


async def serve_clicks_and_open(
    browser: Browser, tmp_path: Path, title: str, shift_ms: float
) -> tuple[Manifest, web.AppRunner, RunningServer, Page]:
    """Serve the clicks show and open one page on it, unlocked with a good estimate; the caller cleans the runner up."""
    manifest, show = clicks_show(tmp_path, title)
    runner, server = await start_server(tmp_path, show)
    try:
        page = await open_page(browser, server.base_url + "/", shift_ms=shift_ms)
        await unlock_and_wait_for_start(page, started=False)
    except BaseException:
        await runner.cleanup()
        raise
    return manifest, runner, server, page


async def start_show(browser: Browser, server: RunningServer, page: Page, lead_s: int) -> float:
    """Start the show from the console with a lead of ``lead_s``; once ``page`` has its start, T in Unix ms."""
    organizer = await open_organizer(browser, server.base_url, 1)
    await start_from_console(organizer, lead_s)
    await page.wait_for_function("() => window.unisono.start !== null", timeout=scaled(10) * 1000)
    start_ns = server.hub.show.snapshot.start_ns
    assert start_ns is not None
    return start_ns / 1e6


async def true_ms_of_position(page: Page, position_s: float) -> float:
    """The true time (Unix ms) at which the page renders track position position_s, median of a few readings."""
    readings = []
    for _ in range(5):
        readings.append(
            await page.evaluate(
                "(p) => { const s = window.unisono.start; return window.__unisonoTrueMs(s.audibleContextTime + (p - s.offsetS)); }",
                position_s,
            )
        )
        await asyncio.sleep(0.05)
    return statistics.median(readings)


def expected_first_source(manifest: Manifest, offset_s: float) -> tuple[int, float, float]:
    """(segment index, source offset s, duration s) for a chain starting at track position offset_s, lead 0."""
    frame = int(offset_s * RATE + 1e-9)
    index = max(i for i, s in enumerate(manifest.segments) if s.first_frame <= frame)
    segment = manifest.segments[index]
    offset = (segment.own_offset + frame - segment.first_frame) / RATE
    return index, offset, (segment.first_frame + segment.frames - frame) / RATE


async def check_late_page(page: Page, manifest: Manifest, start: dict[str, float], t_ms: float) -> float:
    """The late page's first source is the right segment at the right sample; returns its start error vs T (ms)."""
    index, offset, duration = expected_first_source(manifest, start["offsetS"])
    starts = await page.evaluate("() => window.__starts")
    matches = [s for s in starts if s["offset"] is not None and s["duration"] is not None and abs(s["offset"] - offset) < 0.5 / RATE and abs(s["duration"] - duration) < 0.5 / RATE]
    print(f"late start at {start['offsetS']:.4f} s: segment {index}, source offset {offset:.6f} s; recorded {starts[-3:]}")
    assert start["offsetS"] > 4.0, start  # really inside the show, past segment 0
    assert matches, (offset, duration, starts)
    assert abs(matches[-1]["when"] - start["contextWhen"]) <= 1.0 / RATE
    audible = await true_ms_of_position(page, start["offsetS"])
    return audible - (t_ms + start["offsetS"] * 1000)


async def test_late_join_and_reload_start_in_the_right_segment_in_sync(browser: Browser, tmp_path: Path) -> None:
    """Joining 7 s in and reloading later: the right segment and sample, within 5 ms of T and of the page there from the start."""
    manifest, show = clicks_show(tmp_path, "Late")
    runner, server = await start_server(tmp_path, show)
    try:
        early = await open_page(browser, server.base_url + "/")
        await unlock_and_wait_for_start(early, started=False)
        t_ms = await start_show(browser, server, early, 2)

        await asyncio.sleep(9.0)  # 7 s into the show
        late = await open_page(browser, server.base_url + "/")
        late_start = await unlock_and_wait_for_start(late)
        errors = {"late": await check_late_page(late, manifest, late_start, t_ms)}

        await asyncio.sleep(3.0)
        await late.reload()
        reload_start = await unlock_and_wait_for_start(late)
        assert reload_start["offsetS"] > late_start["offsetS"] + 1.0
        errors["reloaded"] = await check_late_page(late, manifest, reload_start, t_ms)

        # The page there from the start, at the same position: within 5 ms of T and of the reloaded page.
        position_s = reload_start["offsetS"] + 1.0
        errors["early"] = await true_ms_of_position(early, position_s) - (t_ms + position_s * 1000)
        print(f"errors vs T (ms): {errors}; drift early {await early.evaluate('() => window.unisono.drift')}, late {await late.evaluate('() => window.unisono.drift')}")
        assert all(abs(e) <= 5.0 for e in errors.values()), errors
        # The early page's chain (three joins behind it) needed no correction, so position = offset + elapsed
        # holds for it; its drift loop measures it on time too.
        drift = await early.evaluate("() => window.unisono.drift")
        assert drift["realigns"] == 0 and drift["errorMs"] is not None and abs(drift["errorMs"]) < 5.0, drift
        assert abs(errors["reloaded"] - errors["early"]) <= 5.0, errors
        assert await early.evaluate("() => window.unisono.state") == "playing"
    finally:
        await runner.cleanup()
