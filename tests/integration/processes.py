"""Real processes for the integration and fault tests: `unisono serve`, redis-server, a crowd.

``ServerProcess`` runs `python -m server.cli serve` as a child (started, killed
with SIGKILL, restarted on the same port and data dir); ``RedisProcess`` a
private redis-server with nothing saved (killed and restarted on the same port:
an empty Redis comes back); ``crowd`` starts reconnecting participants
(``participant_client``); ``joined`` and ``reconnected`` wait for them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.conftest import scaled
from tests.integration.participant_client import Participant

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """`unisono serve` as a child process, started and killed by the test, always on one port and data dir."""

    show: Path
    data_dir: Path
    logs: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    # More `unisono serve` options (e.g. --redis URL).
    extra_args: list[str] = field(default_factory=list)
    # Variables added to the server's environment (e.g. LD_PRELOAD for libfaketime).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def token(self) -> str:
        return (self.data_dir / "organizer-token").read_text(encoding="utf-8").strip()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def start(self) -> None:
        """Start the server and return once /healthz answers."""
        assert self.proc is None or self.proc.poll() is not None, "the server is already running"
        self.runs += 1
        command = [sys.executable, "-m", "server.cli", "serve", str(self.show), "--host", "127.0.0.1",
                   "--port", str(self.port), "--data-dir", str(self.data_dir), *self.extra_args]  # fmt: skip
        with open(self.logs / f"server-{self.runs}.out", "wb") as out, open(self.logs / f"server-{self.runs}.err", "wb") as err:
            self.proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=err, env={**os.environ, **self.env})
        loop = asyncio.get_running_loop()
        end = loop.time() + scaled(30)
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc.poll() is None, f"the server exited with {self.proc.returncode}: {self.stderr()}"
                try:
                    async with http.get(f"{self.base_url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                assert loop.time() < end, f"the server did not answer /healthz in time: {self.stderr()}"
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server and wait until it is gone."""
        assert self.proc is not None
        pid = self.proc.pid
        os.kill(pid, signal.SIGKILL)
        returncode = self.proc.wait(timeout=scaled(10))
        assert returncode == -signal.SIGKILL, f"the server ended with {returncode}, not by SIGKILL"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: no such process any more

    def stop(self) -> None:
        """Teardown: kill the server if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr(self) -> str:
        """The end of the current run's log (for assertion messages)."""
        return self.log()[-2000:]

    def log(self) -> str:
        """The current run's whole log (stderr)."""
        path = self.logs / f"server-{self.runs}.err"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    async def get(self, path: str) -> dict[str, Any]:
        async with aiohttp.ClientSession(headers=self.headers()) as http:
            async with http.get(f"{self.base_url}{path}") as response:
                body: dict[str, Any] = await response.json()
                assert response.status == 200, f"GET {path}: {response.status} {body}"
                return body

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with aiohttp.ClientSession(headers=self.headers()) as http:
            async with http.post(f"{self.base_url}{path}", json=body) as response:
                answer: dict[str, Any] = await response.json()
                assert response.status == 200, f"POST {path}: {response.status} {answer}"
                return answer


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and await ``tasks``; then raise the first failure among those that had ended on their own."""
    crashed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if crashed:
        raise crashed[0].exception()  # type: ignore[misc]


@pytest.fixture
async def crowd() -> AsyncIterator[Callable[[str, int], list[Participant]]]:
    """Start reconnecting participants: ``crowd(url, n)``; all stopped at the end, their failures raised."""
    tasks: list[asyncio.Task[None]] = []

    def start(url: str, count: int) -> list[Participant]:
        participants = [Participant(url, name=f"p{len(tasks) + i}") for i in range(count)]
        tasks.extend(asyncio.create_task(p.run()) for p in participants)
        return participants

    try:
        yield start
    finally:
        await cancel_all(tasks)


async def joined(participants: list[Participant], timeout_s: float = 10) -> None:
    """Wait until every participant's current connection has a welcome and an estimate."""
    def ready(p: Participant) -> bool:
        return p.current is not None and p.current.welcome is not None and p.current.estimates > 0

    await asyncio.gather(*(p.wait_for(ready, scaled(timeout_s)) for p in participants))


async def reconnected(participants: list[Participant], after: int, timeout_s: float = 20) -> None:
    """Wait until every participant has a welcomed connection with an index above ``after``, holding a schedule."""
    def back(p: Participant) -> bool:
        return any(c.index > after and c.welcome is not None and c.schedules for c in p.connections)

    await asyncio.gather(*(p.wait_for(back, scaled(timeout_s)) for p in participants))


def server_now_us() -> int:
    """Server time, near enough: a server anchors its clock to the wall clock when it starts."""
    return time.time_ns() // 1000


async def sleep_until_server_us(target_us: int) -> None:
    await asyncio.sleep(max(0.0, (target_us - server_now_us()) / 1e6))




@dataclass
class RedisProcess:
    """A private redis-server on one loopback port, nothing saved (no RDB, no AOF).

    ``kill()`` then ``start()`` is a Redis restart at its worst: it comes back
    on the same port with nothing in it.
    """

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start redis-server and return once it answers PING."""
        assert self.proc is None or self.proc.poll() is not None, "redis-server is already running"
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            end = time.monotonic() + scaled(10)
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
                    assert time.monotonic() < end, "redis-server did not answer PING in time"
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL redis-server (nothing saved) and wait until it is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=scaled(10))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` holds (Linux: /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (VmRSS from /proc/PID/status)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")
