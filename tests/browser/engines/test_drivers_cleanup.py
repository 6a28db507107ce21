"""The engine test's helpers leave nothing running (issue 8: orphaned headless Firefoxes).

A killed node driver used to leave its Firefox running: puppeteer starts the
browser detached (a process group of its own), so nothing took it down.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.browser.engines.drivers import FirefoxPage, PulseSink, Xvfb

pytestmark = pytest.mark.browser


def members(pgid: int) -> list[str]:
    """The live (not zombie) processes of group ``pgid``: 'pid name' each."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(f"{entry.name} {name}")
    return found


async def gone(pgid: int, timeout_s: float = 5.0) -> list[str]:
    """Wait for group ``pgid`` to empty; what is left of it after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (left := members(pgid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return left


async def test_a_killed_firefox_driver_takes_its_firefox_with_it_on_close(tmp_path: Path) -> None:
    """SIGKILL the node driver: Firefox outlives it, and close() still leaves no Firefox process."""
    pulse = await asyncio.to_thread(PulseSink, tmp_path / "pulse")
    try:
        page = await FirefoxPage.launch("about:blank", pulse, tmp_path / "profile")
        firefox_group = page.browser_pid
        assert members(firefox_group), "Firefox's group should be running"
        os.kill(page.process.pid, signal.SIGKILL)
        await page.process.wait()
        assert members(firefox_group), "Firefox is expected to outlive a killed driver (puppeteer starts it detached)"
        await page.close()
        assert await gone(firefox_group) == []
        assert await gone(page.process.pid) == []
    finally:
        await asyncio.to_thread(pulse.close)
    assert await gone(pulse.process.pid) == []


async def test_xvfb_and_pulseaudio_groups_are_empty_after_close(tmp_path: Path) -> None:
    """Each helper is the leader of its own group, and close() empties it."""
    xvfb = await asyncio.to_thread(Xvfb)
    pulse = await asyncio.to_thread(PulseSink, tmp_path / "pulse")
    groups = {"Xvfb": xvfb.process.pid, "pulseaudio": pulse.process.pid}
    for name, pgid in groups.items():
        assert os.getpgid(pgid) == pgid, f"{name} should lead its own process group"
    await asyncio.to_thread(xvfb.close)
    await asyncio.to_thread(pulse.close)
    for name, pgid in groups.items():
        assert await gone(pgid) == [], name
