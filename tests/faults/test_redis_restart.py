"""Redis restarts, empty, during the countdown of a two-node cluster: the start holds and the state comes back.

redis-server runs with no persistence (the worst case: it returns with
nothing) and is killed with SIGKILL and started again on the same port while
the show counts down. Each node writes back what it holds when it sees Redis's
new run id (server/cluster.py ``ClusterLink.rewrite``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import scaled
from tests.faults.helpers import make_server
from tests.integration.participant_client import Participant
from tests.integration.processes import RedisProcess, ServerProcess, cancel_all, joined, sleep_until_server_us

TRACK_S = 20.0
PER_NODE = 3


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_a_redis_restart_in_the_countdown_keeps_the_start_and_restores_redis(tmp_path: Path, redis_server: RedisProcess) -> None:
    """Both nodes' phones start at the same T; a command while Redis is down is a quick 503; Redis gets the show and groups back."""
    nodes: list[ServerProcess] = [
        make_server(tmp_path, TRACK_S, name=f"node{i}", extra_args=["--redis", redis_server.url]) for i in range(2)
    ]
    for node in nodes:
        node.data_dir.mkdir()
        (node.data_dir / "organizer-token").write_text("fault-test-token-0123456789\n", encoding="utf-8")
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        crowd = [Participant(node.ws_url, name=f"n{i}p{j}") for i, node in enumerate(nodes) for j in range(PER_NODE)]
        tasks = [asyncio.create_task(p.run()) for p in crowd]
        await joined(crowd)
        groups = {p.device_id: p.current.group for p in crowd}  # type: ignore[union-attr]
        started = await nodes[0].post("/api/start", {"in_s": 6, "confirm": True})
        start_us, epoch = started["start_us"], started["epoch"]
        await asyncio.gather(*(p.wait_for(lambda p: (s := p.latest_schedule()) is not None and s.start_us == start_us, scaled(5)) for p in crowd))

        redis_server.kill()
        # A command while Redis is down: refused at once, clearly.
        began = time.monotonic()
        async with aiohttp.ClientSession(headers=nodes[1].headers()) as http:
            async with http.post(f"{nodes[1].base_url}/api/reschedule", json={"in_s": 30, "confirm": True}) as response:
                status, body = response.status, await response.json()
        assert status == 503 and body["error"] == "store_failed" and "Redis" in body["message"], (status, body)
        assert time.monotonic() - began < 2.0, "the refusal took too long"
        print(f"redis down: reschedule refused in {1000 * (time.monotonic() - began):.0f} ms")
        await asyncio.sleep(0.5)
        redis_server.start()

        # Each node writes back its show and its devices' groups within a couple of seconds.
        client = redis_server.client()
        try:
            for _ in range(int(scaled(50))):
                show = {k.decode(): v.decode() for k, v in client.hgetall("unisono:show").items()}
                assigned = {k.decode(): v.decode() for k, v in client.hgetall("unisono:assign").items()}
                if show and len(assigned) == len(crowd):
                    break
                await asyncio.sleep(0.1)
            assert int(show.get("start_ns", 0)) // 1000 == start_us and int(show["epoch"]) >= epoch, show
            assert assigned == groups, f"groups written back {assigned}, held {groups}"
            counts = {k.decode(): int(v) for k, v in client.hgetall("unisono:group_counts").items()}
            assert sum(counts.values()) == len(crowd), counts
            assert client.exists("unisono:device-secret") and client.llen("unisono:events") > 0
        finally:
            client.close()

        await sleep_until_server_us(start_us + 500_000)
        for node in nodes:
            show = (await node.get("/api/status"))["show"]
            assert (show["state"], show["start_us"]) == ("playing", start_us), show
        for p in crowd:
            await p.wait_for(lambda p: (s := p.latest_schedule()) is not None and s.state == "playing", scaled(5))
            latest = p.latest_schedule()
            assert latest is not None and latest.start_us == start_us
            assert len(p.welcomed()) == 1, f"{p.name} had to reconnect"
    finally:
        await cancel_all(tasks)
        for node in nodes:
            node.stop()
