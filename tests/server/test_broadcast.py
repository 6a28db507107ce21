"""How the hub fans a message out to a crowd: a schedule in one pass, anything else in slices between other work."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clock.session import DeviceSession
from server import hub as hub_module
from server.config import ServerConfig
from server.hub import BROADCAST_SLICE, Device, Hub
from tests.conftest import small_show


@dataclass(eq=False)
class CountingOutbox:
    """Notes the event loop turn each frame was put in (``turn`` is advanced by the test's ticker)."""

    clock: list[int]
    frames: list[tuple[bytes, int]] = field(default_factory=list)

    def put(self, item: Any) -> None:
        self.frames.append((item, self.clock[0]))


async def crowd_hub(tmp_path: Path, devices: int) -> tuple[Hub, list[CountingOutbox], list[int]]:
    hub = Hub(ServerConfig(data_dir=tmp_path), small_show(tmp_path), "token-0123456789abcdef")
    turn = [0]
    outboxes = []
    for k in range(devices):
        outbox = CountingOutbox(turn)
        hub.devices.add(Device(f"d{k}", "a", DeviceSession(), outbox))  # type: ignore[arg-type]
        outboxes.append(outbox)
    return hub, outboxes, turn


async def ticking(turn: list[int], until: Any) -> None:
    """Advance ``turn`` once per event loop turn until ``until()`` is true (at most 10,000 turns)."""
    for _ in range(10_000):
        if until():
            return
        await asyncio.sleep(0)
        turn[0] += 1
    raise AssertionError("the broadcast did not finish")


async def test_a_schedule_reaches_a_large_crowd_in_one_pass(tmp_path: Path) -> None:
    devices = 3 * BROADCAST_SLICE + 1
    hub, outboxes, turn = await crowd_hub(tmp_path, devices)
    hub.broadcast(b"ann")  # an announcement, to go out in slices
    hub.start_show(hub.clock.now_ns() + 30 * 10**9)
    # Every device has the schedule before the command returns, in this very turn, ahead of the announcement.
    assert all(len(o.frames) == 1 and o.frames[0][1] == 0 and o.frames[0][0] != b"ann" for o in outboxes)
    await ticking(turn, lambda: all(len(o.frames) == 2 for o in outboxes))
    # The announcement goes on in slices, after it.
    assert all(o.frames[1][0] == b"ann" for o in outboxes)
    assert len({o.frames[1][1] for o in outboxes}) == 4


async def test_other_broadcasts_to_a_large_crowd_go_in_slices_in_order(tmp_path: Path) -> None:
    devices = 2 * BROADCAST_SLICE + 5
    hub, outboxes, turn = await crowd_hub(tmp_path, devices)
    hub.broadcast(b"one")
    hub.broadcast(b"two")
    await ticking(turn, lambda: all(len(o.frames) == 2 for o in outboxes))
    assert all([frame for frame, _ in o.frames] == [b"one", b"two"] for o in outboxes)
    per_turn: dict[int, int] = {}
    for o in outboxes:
        for _, t in o.frames:
            per_turn[t] = per_turn.get(t, 0) + 1
    assert max(per_turn.values()) <= BROADCAST_SLICE
    assert len(per_turn) >= 6  # three slices for each of the two


async def test_a_small_crowd_gets_any_broadcast_at_once(tmp_path: Path) -> None:
    hub, outboxes, _ = await crowd_hub(tmp_path, 10)
    hub.broadcast(b"ann")
    assert all(o.frames == [(b"ann", 0)] for o in outboxes)
    assert hub_module.BROADCAST_SLICE > 10
