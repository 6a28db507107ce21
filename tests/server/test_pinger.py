"""The ping scheduler (server/pinger.py) hands pings out in small passes, so a crowd's pings never hold the loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from clock.budget import PingBudget
from clock.session import DeviceSession
from server import pinger
from server.config import ServerConfig
from server.pinger import MAX_SENDS_PER_PASS, PingScheduler

NOW_NS = 1_795_000_000_000_000_000


@dataclass
class Loop:
    """Counts the event loop's turns: a ping handed over in the same turn as another came in one pass."""

    turns: int = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.turns += 1


@dataclass(eq=False)
class FakeOutbox:
    loop: Loop
    turns: list[int] = field(default_factory=list)

    def put(self, item: Any) -> None:
        data = item() if callable(item) else item
        if data is not None:
            self.turns.append(self.loop.turns)


@dataclass(eq=False)
class FakeDevice:
    session: DeviceSession
    outbox: FakeOutbox
    ping_now: Any = None


def crowd(devices: int, budget: PingBudget, loop: Loop) -> tuple[PingScheduler, list[FakeDevice]]:
    clock = SimpleNamespace(now_ns=lambda: NOW_NS)  # time stands still: every first ping is due
    hub = SimpleNamespace(clock=clock, config=ServerConfig(), ping_budget=budget)
    scheduler = PingScheduler(hub)  # type: ignore[arg-type]
    crowd = [FakeDevice(DeviceSession(), FakeOutbox(loop)) for _ in range(devices)]
    for device in crowd:
        scheduler.register(device)  # type: ignore[arg-type]
    return scheduler, crowd


async def hand_out(scheduler: PingScheduler, crowd: list[FakeDevice], loop: Loop) -> list[int]:
    """Run the scheduler until every device has its first ping; the loop turn of each."""
    tasks = [asyncio.create_task(loop.run()), asyncio.create_task(scheduler.run())]
    try:
        for _ in range(10_000):
            if all(device.outbox.turns for device in crowd):
                break
            await asyncio.sleep(0)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [turn for device in crowd for turn in device.outbox.turns[:1]]


@pytest.mark.parametrize("routine", [False, True])
async def test_a_crowd_due_at_once_gets_its_pings_in_passes_of_at_most_max_sends(routine: bool) -> None:
    """2,000 first pings due at the same instant and a budget that grants them all: no pass sends more than
    MAX_SENDS_PER_PASS. ``routine``: the pings wait parked behind the budget first (a crowd's sparse pings)."""
    loop = Loop()
    budget = PingBudget(rate_per_s=1e9, capacity=1e6)
    scheduler, devices = crowd(2000, budget, loop)
    if routine:
        # Park every device as a routine ping refused earlier: _serve_parked hands them out.
        for device in devices:
            scheduler._parked.append((device, scheduler._generation[device]))  # type: ignore[arg-type]
        scheduler._heap.clear()
    turns = await hand_out(scheduler, devices, loop)
    assert len(turns) == 2000
    per_turn: dict[int, int] = {}
    for turn in turns:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) <= MAX_SENDS_PER_PASS
    assert len(per_turn) >= 2000 // MAX_SENDS_PER_PASS


async def test_without_the_cap_one_pass_would_send_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: with the cap lifted, the parked crowd goes out in one pass."""
    monkeypatch.setattr(pinger, "MAX_SENDS_PER_PASS", 10**9)
    loop = Loop()
    scheduler, devices = crowd(500, PingBudget(rate_per_s=1e9, capacity=1e6), loop)
    for device in devices:
        scheduler._parked.append((device, scheduler._generation[device]))  # type: ignore[arg-type]
    scheduler._heap.clear()
    turns = await hand_out(scheduler, devices, loop)
    assert len(set(turns)) == 1
