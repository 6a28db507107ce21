"""Three server processes and Redis on loopback: one show, one start, a node killed mid-countdown.

Each node is a real `unisono serve --redis URL` process. Participants are
spread over the nodes and, when their node dies, reconnect to another (as a
load balancer would send them): they keep their group and their start.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis
import websockets

from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_PARTICIPANT, Announcement, Join

from tests.conftest import SMALL_SHOW_TOML, scaled, write_tone_wav
from tests.integration.participant_client import Connection, Participant
from tests.integration.test_restart import ServerProcess, free_port, joined, sleep_until_server_us

NODES = 3
PER_NODE = 3
TRACK_S = 6.0
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server on a free loopback port, no persistence; stopped at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server exited"
                time.sleep(0.05)
        else:
            raise AssertionError("redis-server did not answer")
        yield url
    finally:
        client.close()
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
async def nodes(tmp_path: Path, redis_url: str) -> AsyncIterator[list[ServerProcess]]:
    for group in ("red", "blue"):
        write_tone_wav(tmp_path / f"{group}.wav", TRACK_S)
    show = tmp_path / "show.toml"
    show.write_text(SMALL_SHOW_TOML, encoding="utf-8")
    # One clock for all: node 0 answers SNTP, the others follow it as their NTP upstream.
    sntp_port = free_port()
    clock_args = [["--sntp-host", "127.0.0.1", "--sntp-port", str(sntp_port)]] + [
        ["--ntp-upstream", f"127.0.0.1:{sntp_port}", "--ntp-poll", "2"]
    ] * (NODES - 1)
    processes = [
        ServerProcess(show, tmp_path / f"node{i}", tmp_path / f"logs{i}", extra_args=["--redis", redis_url, *clock_args[i]])
        for i in range(NODES)
    ]
    # Every node must accept the same organizer token: one token file, copied to each data dir.
    for p in processes:
        p.data_dir.mkdir(parents=True)
        p.logs.mkdir()
        (p.data_dir / "organizer-token").write_text("cluster-test-token-0123456789\n", encoding="utf-8")
    try:
        await asyncio.gather(*(p.start() for p in processes))
        yield processes
    finally:
        for p in processes:
            p.stop()


def free_sntp(nodes: list[ServerProcess]) -> str:
    """The SNTP port node 0 answers on (from its command line)."""
    args = nodes[0].extra_args
    return args[args.index("--sntp-port") + 1]


async def announcement_at_join(url: str) -> str:
    """Join ``url`` as a new device and return the announcement text it is given (waits for the bus)."""
    for _ in range(int(scaled(20))):
        async with websockets.connect(url) as ws:
            await ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=None, client="probe")))
            try:
                while True:
                    message = decode(await asyncio.wait_for(ws.recv(), 0.5), SERVER_TO_PARTICIPANT, 1 << 20)
                    if isinstance(message, Announcement):
                        return message.text
            except TimeoutError:
                pass
    raise AssertionError("no announcement reached the node")


@dataclass
class Roaming(Participant):
    """A participant behind a load balancer: each new connection goes to the next node in ``urls``."""

    urls: list[str] = field(default_factory=list)

    async def _serve(self, connection: Connection) -> None:
        self.url = self.urls[connection.index % len(self.urls)]
        await super()._serve(connection)


async def test_one_start_reaches_every_node_and_a_dead_nodes_devices(nodes: list[ServerProcess]) -> None:
    urls = [n.ws_url for n in nodes]
    crowd = [
        Roaming(urls[i], name=f"n{i}p{j}", urls=urls[i:] + urls[:i])
        for i in range(NODES)
        for j in range(PER_NODE)
    ]
    tasks = [asyncio.create_task(p.run()) for p in crowd]
    try:
        await joined(crowd)
        groups_before = {p.name: p.current.group for p in crowd}  # type: ignore[union-attr]
        counts = [sum(g == name for g in groups_before.values()) for name in ("red", "blue")]
        assert abs(counts[0] - counts[1]) <= 1, f"groups unbalanced over the cluster: {counts}"

        # Any node's status shows the whole cluster (summaries are shared every second).
        async def cluster_view() -> dict:  # type: ignore[type-arg]
            for _ in range(int(scaled(50))):
                status = await nodes[0].get("/api/status")
                if status["devices"] == NODES * PER_NODE and len(status["nodes"]) == NODES:
                    return status
                await asyncio.sleep(0.2)
            raise AssertionError(f"node 0 never saw the whole cluster: {status['devices']} devices, {status['nodes']}")

        status = await cluster_view()
        assert sorted(n["devices"] for n in status["nodes"]) == [PER_NODE] * NODES
        # While each node's /metrics counts its own devices only: a scrape of every node adds up to the crowd.
        for node in nodes:
            async with aiohttp.ClientSession() as http, http.get(f"{node.base_url}/metrics") as response:
                assert f"unisono_devices_connected {float(PER_NODE)}" in await response.text()
        # Every follower's reference agrees with the upstream (node 0) within a few ms.
        for node in nodes[1:]:
            for _ in range(int(scaled(100))):
                clock = (await node.get("/api/status"))["clock"]
                if clock["state"] != "unsynchronized":
                    break
                await asyncio.sleep(0.1)
            assert clock["state"] != "unsynchronized" and clock["upstream"] == f"127.0.0.1:{free_sntp(nodes)}", clock
            assert abs(clock["upstream_offset_ms"]) < 5, clock

        # One start on node 1; every device on every node gets the same schedule.
        started = await nodes[1].post("/api/start", {"in_s": scaled(6), "confirm": True})
        start_us, epoch = started["start_us"], started["epoch"]

        def has_start(p: Participant) -> bool:
            s = p.latest_schedule()
            return s is not None and s.epoch >= epoch and s.start_us == start_us

        await asyncio.gather(*(p.wait_for(has_start, scaled(5)) for p in crowd))

        # An announcement made on node 2 reaches node 0: a device joining there gets it.
        await nodes[2].post("/api/announce", {"text": "Cluster hello"})
        assert await announcement_at_join(nodes[0].ws_url) == "Cluster hello"

        # Node 2 dies during the countdown: its devices reconnect elsewhere, same group, same start.
        nodes[2].kill()
        orphans = [p for p in crowd if p.name.startswith("n2")]
        before = {p.name: len(p.connections) for p in orphans}

        def moved(p: Participant) -> bool:
            return any(
                c.index >= before[p.name] and c.welcome is not None and c.schedules and c.schedules[-1].start_us == start_us
                for c in p.connections
            )

        await asyncio.gather(*(p.wait_for(moved, scaled(15)) for p in orphans))
        for p in orphans:
            last = p.welcomed()[-1]
            assert last.group == groups_before[p.name], f"{p.name} changed group on another node"
            assert last.schedules[-1].state == "scheduled" and last.schedules[-1].epoch == epoch

        # Past T every surviving node plays the same show.
        await sleep_until_server_us(start_us + 300_000)
        for node in nodes[:2]:
            status = await node.get("/api/status")
            assert status["show"]["state"] == "playing" and status["show"]["start_us"] == start_us
        events = [e["action"] for e in (await nodes[0].get("/api/events"))["events"]]
        assert events.count("start") == 1 and events.count("announce") == 1
        assert events.count("playing") == 1, f"each clock transition is logged once for the cluster: {events}"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
