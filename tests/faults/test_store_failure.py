"""A full disk under a running show, and a data dir that cannot be written at start.

The disk is a real one: a 16 MB tmpfs mounted as the server's data dir (the
tests run as root here and in CI), filled with a file until the kernel says
ENOSPC. SQLite then fails its next write with "database or disk is full".
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import scaled
from tests.faults.helpers import Reconnecting, Spawn, join_all, make_server, sim_devices, sync_error_us, true_now_ns
from tests.integration.processes import REPO_ROOT

TRACK_S = 30.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs at tmp_path/disk, unmounted at the end."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write zeros to disk/filler until the file system is full; returns the filler."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC
    return filler


async def post(url: str, token: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.post(url, json=body) as response:
            return response.status, await response.json()


async def test_a_full_disk_refuses_commands_clearly_and_the_show_goes_on(tmp_path: Path, small_disk: Path, spawn: Spawn) -> None:
    """Disk full while playing: 503 store_failed naming the disk, logged, devices keep sync; freed: commands work again."""
    server = make_server(tmp_path, TRACK_S)
    server.data_dir = small_disk / "data"
    await server.start()
    try:
        devices = sim_devices(6, seed=3)
        runners = await join_all(spawn, [Reconnecting(d, server.ws_url) for d in devices])
        await asyncio.sleep(3)
        started = await server.post("/api/start", {"in_s": 2, "confirm": True})
        start_us = started["start_us"]
        await asyncio.wait_for(asyncio.gather(*(d.scheduled.wait() for d in devices)), scaled(5))
        while true_now_ns() // 1000 < start_us + 500_000:
            await asyncio.sleep(0.1)

        filler = fill(small_disk)
        status, body = await post(f"{server.base_url}/api/abort", server.token, {})
        assert status == 503 and body["error"] == "store_failed", (status, body)
        assert "disk is full" in str(body["message"]) and "show goes on" in str(body["message"]), body
        status, body = await post(f"{server.base_url}/api/announce", server.token, {"text": "hello"})
        assert status == 503 and body["error"] == "store_failed", (status, body)

        # The show goes on: still playing at the same start, every device on it and within its bound.
        await asyncio.sleep(3)
        assert server.proc is not None and server.proc.poll() is None, "the server died"
        show = (await server.get("/api/status"))["show"]
        assert (show["state"], show["start_us"]) == ("playing", start_us)
        for d in devices:
            assert d.schedule is not None and (d.schedule.state, d.schedule.start_us) == ("playing", start_us)
            error_us, bound_us = sync_error_us(d)
            assert error_us <= bound_us, (d.name, error_us, bound_us)
        assert all(not r.closes for r in runners), [r.closes for r in runners]
        # A phone joining meanwhile is still welcomed (its group kept in memory).
        late = sim_devices(1, seed=4, prefix="late")[0]
        await join_all(spawn, [Reconnecting(late, server.ws_url)], timeout_s=5)
        log = server.log()
        assert "cannot store the show's state" in log and "disk is full" in log, log[-1500:]

        filler.unlink()
        status, body = await post(f"{server.base_url}/api/abort", server.token, {})
        assert status == 200 and body["state"] == "idle", (status, body)
        await asyncio.wait_for(_until(lambda: all(d.schedule is not None and d.schedule.state == "idle" for d in devices)), scaled(5))
    finally:
        server.stop()


async def _until(predicate) -> None:  # type: ignore[no-untyped-def]
    while not predicate():
        await asyncio.sleep(0.05)


def test_an_unwritable_data_dir_at_start_is_one_clear_line(tmp_path: Path) -> None:
    """A data dir under a regular file (unwritable even for root): exit 1, one line naming the dir, no traceback."""
    server = make_server(tmp_path, 3.0)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", str(server.show), "--port", "0", "--data-dir", str(blocker / "data")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=scaled(60), env=os.environ,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("unisono: cannot write to the data dir") and str(blocker / "data") in lines[0]
