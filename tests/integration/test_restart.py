"""A show survives `kill -9`: the restarted server resumes the stored schedule and groups.

Real processes: `python -m server.cli serve` in a subprocess, killed with
SIGKILL (no shutdown code runs, no close frames are sent) and started again on
the same port and data dir; reconnecting participants (``participant_client``)
come back with backoff and jitter and must find the same start, epoch and group.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SMALL_SHOW_TOML, scaled, write_tone_wav
from tests.integration.participant_client import Participant
from tests.integration.processes import (  # noqa: F401 (crowd is a fixture; test_cluster imports the rest from here)
    ServerProcess,
    crowd,
    free_port,
    joined,
    reconnected,
    server_now_us,
    sleep_until_server_us,
)

PARTICIPANTS = 6
# Tracks long enough that "playing" can be seen after the restart, short enough
# that the third test sees the show end without a long wait.
TRACK_S = 6.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """A show of two groups (red and blue, TRACK_S each) and its server, not yet started; killed at the end."""
    for group in ("red", "blue"):
        write_tone_wav(tmp_path / f"{group}.wav", TRACK_S)
    show = tmp_path / "show.toml"
    show.write_text(SMALL_SHOW_TOML, encoding="utf-8")
    process = ServerProcess(show, tmp_path / "data", tmp_path)
    try:
        yield process
    finally:
        process.stop()


def test_backoff_is_full_jitter_under_a_capped_exponential() -> None:
    """Delays are drawn from [0, min(cap, base * 2**attempt)]: spread over the whole range, never above the cap."""
    p = Participant("ws://unused", rng=random.Random(5), base_s=0.25, cap_s=5.0)
    for attempt, ceiling in [(0, 0.25), (1, 0.5), (3, 2.0), (5, 5.0), (40, 5.0)]:
        delays = [p.backoff_s(attempt) for _ in range(2000)]
        assert 0.0 <= min(delays) < 0.05 * ceiling and 0.95 * ceiling < max(delays) <= ceiling, (attempt, min(delays), max(delays))


def after_restart(events: list[dict[str, Any]], action: str) -> int:
    """Index of the first ``action`` event, asserting a server_start follows it (the restart)."""
    actions = [e["action"] for e in events]
    assert action in actions, f"no {action} event in the log: {actions}"
    index = actions.index(action)
    assert "server_start" in actions[index + 1 :], f"no server_start after the {action} event: {actions}"
    return index


async def test_a_scheduled_show_survives_kill_9(server: ServerProcess, crowd: Callable[[str, int], list[Participant]]) -> None:
    """Killed 1 s into an 8 s countdown and restarted: same start, epoch, groups, announcement and event log; it then plays on time."""
    await server.start()
    participants = crowd(server.ws_url, PARTICIPANTS)
    await joined(participants)
    groups_before = {p.name: p.current.group for p in participants}  # type: ignore[union-attr]
    ids_before = {p.name: p.device_id for p in participants}
    assert set(groups_before.values()) == {"red", "blue"}, f"both groups should have devices: {groups_before}"

    started = await server.post("/api/start", {"in_s": 8, "confirm": True})
    assert started["state"] == "scheduled"
    start_us, epoch = started["start_us"], started["epoch"]
    await asyncio.gather(*(p.wait_for(lambda p: any(s.epoch == epoch for s in p.current.schedules), scaled(5)) for p in participants))  # type: ignore[union-attr]
    await server.post("/api/announce", {"text": "Meet at the fountain"})
    await asyncio.gather(*(p.wait_for(lambda p: "Meet at the fountain" in p.current.announcements, scaled(5)) for p in participants))  # type: ignore[union-attr]
    events_before = [(e["at_us"], e["action"], e["detail"]) for e in (await server.get("/api/events?limit=1000"))["events"]]
    last_before = {p.name: p.current.index for p in participants}  # type: ignore[union-attr]

    await asyncio.sleep(1.0)
    server.kill()
    await server.start()
    await asyncio.gather(*(reconnected([p], last_before[p.name]) for p in participants))
    # The announcement follows the welcome, show and schedule on the new connection: let it arrive.
    await asyncio.gather(*(p.wait_for(lambda p: bool(p.current.announcements), scaled(5)) for p in participants))  # type: ignore[union-attr]
    # The restart must not have come after the start: the check below is of the countdown.
    assert server_now_us() < start_us, "the restart took longer than the countdown; nothing left to check"

    for p in participants:
        after = p.welcomed()[-1]
        assert after.index > last_before[p.name]
        assert p.device_id == ids_before[p.name]
        assert after.group == groups_before[p.name], f"{p.name}: group {groups_before[p.name]} before the kill, {after.group} after"
        first = after.schedules[0]
        assert (first.state, first.start_us, first.epoch) == ("scheduled", start_us, epoch), (
            f"{p.name}: after the restart got {first}, expected scheduled at {start_us} epoch {epoch}"
        )
        # The announcement made before the kill is given again on the new connection.
        assert after.announcements == ["Meet at the fountain"], f"{p.name}: announcements after the restart {after.announcements}"

    status = await server.get("/api/status")
    assert status["show"]["state"] == "scheduled"
    assert (status["show"]["start_us"], status["show"]["epoch"]) == (start_us, epoch)
    events = (await server.get("/api/events?limit=1000"))["events"]
    start_event = events[after_restart(events, "start")]
    assert f"epoch {epoch}" in start_event["detail"]
    # Nothing lost: every line logged before the kill is still there, in order, before the restart's.
    assert [(e["at_us"], e["action"], e["detail"]) for e in events[: len(events_before)]] == events_before
    assert [e["action"] for e in events[len(events_before) :]][:1] == ["server_start"]

    await sleep_until_server_us(start_us + 300_000)
    status = await server.get("/api/status")
    assert (status["show"]["state"], status["show"]["start_us"], status["show"]["epoch"]) == ("playing", start_us, epoch + 1)
    for p in participants:
        await p.wait_for(lambda p: (s := p.latest_schedule()) is not None and s.state == "playing", scaled(5))
        playing = p.latest_schedule()
        assert playing is not None and (playing.start_us, playing.epoch) == (start_us, epoch + 1)


async def test_an_idle_show_keeps_its_groups_through_kill_9(server: ServerProcess, crowd: Callable[[str, int], list[Participant]]) -> None:
    """Killed while idle after devices joined: they come back to the same groups, the show idle at the same epoch."""
    await server.start()
    participants = crowd(server.ws_url, PARTICIPANTS)
    await joined(participants)
    groups_before = {p.name: p.current.group for p in participants}  # type: ignore[union-attr]
    epoch_before = {p.current.schedules[0].epoch for p in participants}  # type: ignore[union-attr]
    assert len(epoch_before) == 1
    last_before = {p.name: p.current.index for p in participants}  # type: ignore[union-attr]

    server.kill()
    await server.start()
    await asyncio.gather(*(reconnected([p], last_before[p.name]) for p in participants))

    for p in participants:
        after = p.welcomed()[-1]
        assert after.group == groups_before[p.name], f"{p.name}: group {groups_before[p.name]} before the kill, {after.group} after"
        schedule = after.schedules[0]
        assert (schedule.state, schedule.start_us, schedule.epoch) == ("idle", None, *epoch_before)
    status = await server.get("/api/status")
    assert (status["show"]["state"], status["show"]["epoch"]) == ("idle", *epoch_before)
    assert sum(g["connected"] for g in status["groups"].values()) == PARTICIPANTS


async def test_a_server_restarted_after_the_start_plays_on(server: ServerProcess, crowd: Callable[[str, int], list[Participant]]) -> None:
    """Killed in the countdown, restarted after the start: it reports playing at the same start, late joiners too."""
    await server.start()
    participants = crowd(server.ws_url, PARTICIPANTS)
    await joined(participants)
    groups_before = {p.name: p.current.group for p in participants}  # type: ignore[union-attr]
    last_before = {p.name: p.current.index for p in participants}  # type: ignore[union-attr]
    started = await server.post("/api/start", {"in_s": 2, "confirm": True})
    start_us, epoch = started["start_us"], started["epoch"]

    await asyncio.sleep(0.5)
    server.kill()
    await sleep_until_server_us(start_us + 500_000)
    await server.start()

    status = await server.get("/api/status")
    ends_us = start_us + round(TRACK_S * 1e6)
    expected = "playing" if status["server_us"] < ends_us else "ended"
    assert (status["show"]["state"], status["show"]["start_us"]) == (expected, start_us), (
        f"restarted {(status['server_us'] - start_us) / 1e6:.1f} s after the start: expected {expected} at {start_us}, "
        f"found {status['show']}"
    )
    assert status["show"]["epoch"] > epoch
    newcomer = crowd(server.ws_url, 1)[0]
    for p in participants:
        await reconnected([p], last_before[p.name])
    await joined([newcomer])

    for p in [*participants, newcomer]:
        latest = p.latest_schedule()
        assert latest is not None and latest.start_us == start_us and latest.state in ("playing", "ended"), (
            f"{p.name}: latest schedule {latest}, expected playing at {start_us}"
        )
        first = p.welcomed()[-1].schedules[0]
        assert first.start_us == start_us and first.epoch >= epoch, f"{p.name}: the restarted server sent {first}"
    for p in participants:
        assert p.welcomed()[-1].group == groups_before[p.name]
    events = (await server.get("/api/events?limit=1000"))["events"]
    actions = [e["action"] for e in events]
    after_restart(events, "start")
    assert "playing" in actions[actions.index("start") :], f"no playing event after the start: {actions}"
