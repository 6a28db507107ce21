"""The ready message over a real socket: the hub keeps every field; older pages' ready still counts."""

from __future__ import annotations

import asyncio

import msgpack
import websockets

from protocol import PROTOCOL_VERSION, encode
from protocol.messages import Join, Ready
from tests.conftest import RunningServer, scaled
from tests.integration.organizer_client import Organizer
from tests.integration.test_start import wait_until


async def test_ready_fields_reach_the_hub_and_old_pages_still_count(server: RunningServer) -> None:
    """A full ready is kept field by field; a ready with only loaded/unlocked leaves the rest None; counts include both."""
    full = Ready(True, True, 0.75, 3200, 215000, True, False)
    old = msgpack.packb({"type": "ready", "loaded": True, "unlocked": False})
    async with websockets.connect(server.ws_url) as new_ws, websockets.connect(server.ws_url) as old_ws:
        await new_ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=None, client="new")))
        await old_ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=None, client="old")))
        await wait_until(lambda: len(server.hub.devices) == 2)
        await new_ws.send(encode(full))
        await old_ws.send(old)
        await wait_until(lambda: sum(d.loaded for d in server.hub.devices) == 2, timeout=scaled(5))
        by_unlocked = {d.unlocked: d for d in server.hub.devices}
        new, legacy = by_unlocked[True], by_unlocked[False]
        assert (new.downloaded, new.bound_us, new.output_latency_us, new.wake_lock, new.visible) == (0.75, 3200, 215000, True, False)
        assert (legacy.downloaded, legacy.bound_us, legacy.output_latency_us, legacy.wake_lock, legacy.visible) == (None,) * 5
        async with Organizer(server.organizer_url, server.token) as organizer:
            overview = await organizer.overview()
        assert (overview.devices, overview.loaded, overview.unlocked) == (2, 2, 1)
    await asyncio.sleep(0)
