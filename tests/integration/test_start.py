"""A synchronized start over real sockets: devices with shifted clocks agree in true time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from bench.devices import SimClock, SimDevice, uniform_delay
from protocol.messages import Abort, Error, Schedule, Start
from tests.conftest import RunningServer, scaled
from tests.integration.organizer_client import Organizer


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` (scaled) seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + scaled(timeout)
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


async def wait_for_bound(device: SimDevice, bound_us: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while device.estimate is None or device.estimate.bound_us > bound_us:
        assert loop.time() < end, f"{device.name}: no estimate within {bound_us} us (last: {device.estimate})"
        await asyncio.sleep(0.02)


async def test_shifted_devices_start_within_their_bounds(server: RunningServer) -> None:
    """Devices at +2 s and -750 ms (skewed +-50 ppm) start at T in true time, within the bound told."""
    now = server.hub.clock.now_ns
    rng = random.Random(7)
    devices = [
        SimDevice(SimClock(2_000_000_000, 50.0, now()), now, uniform_delay(rng, 0.001, 0.004), uniform_delay(rng, 0.001, 0.004), name="ahead"),
        SimDevice(SimClock(-750_000_000, -50.0, now()), now, uniform_delay(rng, 0.002, 0.006), uniform_delay(rng, 0.0, 0.002), name="behind"),
    ]
    tasks = [asyncio.create_task(d.run(server.ws_url)) for d in devices]
    try:
        for device in devices:
            await wait_for_bound(device, 5_000, scaled(10))
        async with Organizer(server.organizer_url, server.token) as organizer:
            await organizer.overview(lambda o: o.devices == 2 and o.synced == 2, scaled(5))
            await organizer.send(Start(lead_ms=1500, confirm=True))
            await organizer.overview(lambda o: o.state == "scheduled")
        for device in devices:
            await asyncio.wait_for(device.scheduled.wait(), scaled(5))
        start_us = devices[0].schedule.start_us  # type: ignore[union-attr]
        assert start_us is not None and devices[1].schedule.start_us == start_us  # type: ignore[union-attr]
        errors = []
        for device in devices:
            local = device.local_start_us(start_us)
            bound = device.bound_us_at(local)
            error = device.start_error_us(start_us)
            assert abs(error) <= bound, f"{device.name}: started {error:.0f} us off T, bound {bound:.0f} us"
            errors.append(error)
        assert abs(errors[0] - errors[1]) <= devices[0].bound_us_at(0) + devices[1].bound_us_at(0) + 10_000
        # The offsets really were estimated, not assumed: they are seconds apart.
        assert abs(devices[0].estimate.offset_us + 2_000_000) < 10_000  # type: ignore[union-attr]
        assert abs(devices[1].estimate.offset_us - 750_000) < 10_000  # type: ignore[union-attr]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_late_joiner_gets_the_schedule(server: RunningServer) -> None:
    """A device that joins after the start receives the current schedule at once."""
    async with Organizer(server.organizer_url, server.token) as organizer:
        await organizer.send(Start(lead_ms=2000, confirm=True))
        await organizer.overview(lambda o: o.state == "scheduled")
    now = server.hub.clock.now_ns
    late = SimDevice(SimClock(123_456_789), now, name="late")
    task = asyncio.create_task(late.run(server.ws_url))
    try:
        await asyncio.wait_for(late.scheduled.wait(), scaled(5))
        assert late.schedule is not None
        assert late.schedule.state in ("scheduled", "playing")
        assert late.schedule.start_us == server.hub.show.snapshot.start_ns // 1000  # type: ignore[operator]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_show_runs_through_playing_to_ended_and_abort_returns_to_idle(server: RunningServer) -> None:
    """States: scheduled -> playing -> ended on the clock; abort brings idle to every device."""
    now = server.hub.clock.now_ns
    device = SimDevice(SimClock(0), now, name="watcher")
    seen: list[str] = []
    task = asyncio.create_task(device.run(server.ws_url))
    try:
        await asyncio.wait_for(device.joined.wait(), scaled(5))
        async with Organizer(server.organizer_url, server.token) as organizer:
            await organizer.send(Start(lead_ms=2000, confirm=True))
            for state in ("scheduled", "playing", "ended"):
                overview = await organizer.overview(lambda o, s=state: o.state == s, scaled(6))
                seen.append(overview.state)
            # The device saw the same transitions, as schedules.
            await wait_until(lambda: device.schedule is not None and device.schedule.state == "ended")
            await organizer.send(Abort())
            error = await organizer.error()
            assert error.code == "invalid_state" and "ended" in error.message
            await organizer.send(Start(lead_ms=5000))
            await organizer.overview(lambda o: o.state == "scheduled")
            await organizer.send(Start(lead_ms=5000))
            error = await organizer.error()
            assert error == Error(code="invalid_state", message="cannot start: the show is scheduled; abort first, or reschedule")
            await organizer.send(Abort())
            await organizer.overview(lambda o: o.state == "idle" and o.start_us is None)
        await wait_until(lambda: device.schedule is not None and device.schedule.state == "idle")
        assert isinstance(device.schedule, Schedule) and device.schedule.start_us is None
        assert seen == ["scheduled", "playing", "ended"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_device_keeps_its_group_when_it_comes_back(server: RunningServer) -> None:
    """Rejoining with the stored device id gives the same group; new devices are balanced."""
    now = server.hub.clock.now_ns
    groups = []
    ids = []
    for i in range(4):
        device = SimDevice(SimClock(0), now, name=f"d{i}")
        task = asyncio.create_task(device.run(server.ws_url))
        await asyncio.wait_for(device.joined.wait(), scaled(5))
        groups.append(device.welcome.group)  # type: ignore[union-attr]
        ids.append(device.device_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(groups) == ["blue", "blue", "red", "red"]
    again = SimDevice(SimClock(0), now, device_id=ids[2], name="again")
    task = asyncio.create_task(again.run(server.ws_url))
    try:
        await asyncio.wait_for(again.joined.wait(), scaled(5))
        assert again.welcome is not None
        assert again.welcome.device_id == ids[2] and again.welcome.group == groups[2]
        assert again.welcome.track_url == f"/tracks/{groups[2]}.wav"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
