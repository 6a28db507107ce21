"""A 30 s network partition of some phones mid-show: they keep their sync on their own and rejoin.

Real server process; eight simulated phones (offset up to +-2 s, skew up to
+-60 ppm), four of them through a TCP proxy that goes dark for 30 s while the
show plays (no bytes either way, no close: a dead radio link), then drops
their connections so they reconnect.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import scaled
from tests.faults.helpers import Proxy, Reconnecting, Spawn, join_all, make_server, sim_devices, sync_error_us, true_now_ns

PARTITION_S = 30.0  # the figure
TRACK_S = 60.0


async def test_partitioned_phones_stay_in_sync_and_rejoin(tmp_path: Path, spawn: Spawn) -> None:
    """During 30 s dark every phone's own prediction stays within its bound; after it, the cut-off ones rejoin as themselves."""
    server = make_server(tmp_path, TRACK_S)
    try:
        await server.start()
        async with Proxy(server.port) as proxy:
            direct, cut = sim_devices(4, seed=1, prefix="direct"), sim_devices(4, seed=2, prefix="cut")
            everyone = direct + cut
            runners = await join_all(
                spawn, [Reconnecting(d, server.ws_url) for d in direct] + [Reconnecting(d, proxy.url) for d in cut]
            )
            # A join burst and a few sparse exchanges: an estimate with a rate.
            await asyncio.sleep(6)
            assert all(d.estimate is not None for d in everyone)
            ids = {d.name: (d.device_id, d.welcome.group) for d in everyone}  # type: ignore[union-attr]

            started = await server.post("/api/start", {"in_s": 2, "confirm": True})
            start_us = started["start_us"]
            await asyncio.wait_for(asyncio.gather(*(d.scheduled.wait() for d in everyone)), scaled(5))
            while true_now_ns() // 1000 < start_us + 1_000_000:
                await asyncio.sleep(0.1)
            assert (await server.get("/api/status"))["show"]["state"] == "playing"

            proxy.dark()
            dark_from = asyncio.get_running_loop().time()
            samples_at_dark = {d.name: d.samples for d in everyone}
            worst = {d.name: 0.0 for d in everyone}
            while asyncio.get_running_loop().time() - dark_from < PARTITION_S:
                for d in everyone:
                    error_us, bound_us = sync_error_us(d)
                    worst[d.name] = max(worst[d.name], error_us / bound_us)
                    assert error_us <= bound_us, f"{d.name}: predicted offset {error_us:.0f} us off, bound {bound_us:.0f} us"
                await asyncio.sleep(1.0)
            print("partition: worst error/bound, cut", max(worst[d.name] for d in cut), "direct", max(worst[d.name] for d in direct))
            assert all(d.samples == samples_at_dark[d.name] for d in cut), "a cut-off phone heard the server while dark"
            assert all(d.samples > samples_at_dark[d.name] for d in direct), "the direct phones kept getting estimates"
            assert all(r.welcomes == 1 and not r.closes for r in runners[:4]), "the direct phones never noticed"

            proxy.light()
            proxy.drop()
            cut_runners = runners[4:]
            await asyncio.wait_for(_until(lambda: all(r.welcomes >= 2 for r in cut_runners)), scaled(10))
            await asyncio.wait_for(_until(lambda: all(d.samples > samples_at_dark[d.name] for d in cut)), scaled(10))
            for d in cut:
                assert (d.device_id, d.welcome.group) == ids[d.name], f"{d.name} came back as someone else"  # type: ignore[union-attr]
                assert d.schedule is not None and d.schedule.start_us == start_us and d.schedule.state == "playing"
                error_us, bound_us = sync_error_us(d)
                assert error_us <= bound_us
            status = await server.get("/api/status")
            assert status["devices"] == 8 and status["show"]["start_us"] == start_us
    finally:
        server.stop()


async def _until(predicate) -> None:  # type: ignore[no-untyped-def]
    while not predicate():
        await asyncio.sleep(0.05)
