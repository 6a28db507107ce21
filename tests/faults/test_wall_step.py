"""The server machine's wall clock steps +1 h in the countdown and -1 h in the show: nothing moves.

The server runs under libfaketime (LD_PRELOAD) reading its offset from a file
on every call (FAKETIME_NO_CACHE); CLOCK_MONOTONIC is left alone
(FAKETIME_DONT_FAKE_MONOTONIC), as on a real machine where NTP or an operator
steps the wall clock. The server's time is its wall clock at start plus the
monotonic time since, so the start, the show's transitions and the phones'
offsets must not move; the step is logged once and counted on the status.
"""

from __future__ import annotations

import asyncio
from pathlib import Path


from tests.conftest import scaled
from tests.faults.helpers import Reconnecting, Spawn, join_all, make_server, sim_devices, sync_error_us, true_now_ns

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
HOUR_MS = 3_600_000.0
TRACK_S = 30.0



async def test_a_wall_clock_step_moves_neither_the_start_nor_the_offsets(tmp_path: Path, spawn: Spawn) -> None:
    """+1 h mid-countdown, -1 h (from the real time) mid-show: same start, playing at T, offsets within bounds, 2 steps logged."""
    assert LIBFAKETIME.exists(), f"{LIBFAKETIME} is missing: apt-get install faketime (run-tests installs it)"
    offset_file = tmp_path / "faketime"
    offset_file.write_text("+0\n", encoding="ascii")
    env = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    server = make_server(tmp_path, TRACK_S, env=env)
    await server.start()
    try:
        devices = sim_devices(4, seed=5)
        await join_all(spawn, [Reconnecting(d, server.ws_url) for d in devices])
        await asyncio.sleep(3)
        started = await server.post("/api/start", {"in_s": 5, "confirm": True})
        start_us, epoch = started["start_us"], started["epoch"]
        await asyncio.wait_for(asyncio.gather(*(d.scheduled.wait() for d in devices)), scaled(5))

        async def nothing_moved(steps: int, drift_ms: float, state: str) -> None:
            """Status and phones after a step: same start, server time = truth, the step counted; every phone within bound."""
            await asyncio.sleep(1.5)  # the hub checks the wall clock about once a second
            status = await server.get("/api/status")
            assert abs(status["server_us"] - true_now_ns() // 1000) < 200_000, "server time followed the wall clock"
            assert (status["show"]["state"], status["show"]["start_us"]) == (state, start_us), status["show"]
            assert status["clock"]["wall_steps"] == steps and abs(status["clock"]["wall_drift_ms"] - drift_ms) < 1000, status["clock"]
            for d in devices:
                assert d.schedule is not None and d.schedule.start_us == start_us
                error_us, bound_us = sync_error_us(d)
                assert error_us <= bound_us, (d.name, error_us, bound_us)

        offset_file.write_text("+3600\n", encoding="ascii")  # mid-countdown
        await nothing_moved(1, HOUR_MS, "scheduled")
        assert all(d.schedule.epoch == epoch for d in devices), "a step sent a new schedule"  # type: ignore[union-attr]

        while true_now_ns() // 1000 < start_us + 500_000:
            await asyncio.sleep(0.05)
        status = await server.get("/api/status")
        assert status["show"]["state"] == "playing", "the show did not start at T by the true clock"
        offset_file.write_text("-3600\n", encoding="ascii")  # mid-show: -2 h from where it was
        await nothing_moved(2, -HOUR_MS, "playing")
        for d in devices:
            assert d.schedule is not None and (d.schedule.state, d.schedule.start_us) == ("playing", start_us)

        log = server.log()
        steps = [line for line in log.splitlines() if "system clock stepped" in line]
        assert len(steps) == 2 and "+3600.000 s" in steps[0] and "-7200.000 s" in steps[1], steps
        assert "Traceback" not in log
    finally:
        server.stop()
