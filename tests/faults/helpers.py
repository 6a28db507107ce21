"""What the fault tests share: a show, simulated phones that know the truth, and a TCP proxy that can go dark.

Truth. A server's time is its wall clock read once at start plus the
monotonic time since (``clock/reference.py``), so on this machine server time
is ``time.monotonic_ns() + K_NS`` in every process, ``K_NS`` = wall - monotonic
read here (as ``bench.scale`` does). A ``SimDevice``'s clock is that truth
with its own offset and skew, so its true offset is known at every instant
and its own prediction (latest estimate extrapolated at its rate, PROTOCOL.md
section 5) can be checked against its error bound.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from bench.devices import SimClock, SimDevice
from bench.scale import clock_k_ns
from tests.conftest import SMALL_SHOW_TOML, scaled, write_tone_wav
from tests.integration.processes import ServerProcess

K_NS = clock_k_ns()

# The ``spawn`` fixture (conftest.py): run a coroutine in the background until the test ends.
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


def true_now_ns() -> int:
    """Server time now (any server process on this machine started without a faked clock)."""
    return time.monotonic_ns() + K_NS


def write_show(directory: Path, track_s: float) -> Path:
    """The small two-group show (red, blue) with silent tracks of ``track_s``; returns the TOML's path."""
    for group in ("red", "blue"):
        write_tone_wav(directory / f"{group}.wav", track_s)
    show = directory / "show.toml"
    show.write_text(SMALL_SHOW_TOML, encoding="utf-8")
    return show


def make_server(directory: Path, track_s: float, name: str = "server", **options: object) -> ServerProcess:
    """A ServerProcess for the show, its data dir and logs under ``directory / name``; not started."""
    show = write_show(directory, track_s)
    logs = directory / f"{name}-logs"
    logs.mkdir(exist_ok=True)
    return ServerProcess(show, directory / f"{name}-data", logs, **options)  # type: ignore[arg-type]


def sim_devices(count: int, seed: int, prefix: str = "sim") -> list[SimDevice]:
    """Phones with clocks off by up to +-2 s and +-60 ppm (FIELD-NOTES: plain crystals +-20, some 100)."""
    rng = random.Random(seed)
    now = true_now_ns()
    return [
        SimDevice(
            SimClock(offset_ns=rng.randint(-2_000_000_000, 2_000_000_000), skew_ppm=rng.uniform(-60, 60), epoch_ns=now),
            true_now_ns,
            name=f"{prefix}{i}",
        )
        for i in range(count)
    ]


def sync_error_us(device: SimDevice) -> tuple[float, float]:
    """(|predicted offset - true offset|, the device's own bound), now, in µs."""
    true_ns = true_now_ns()
    device_us = device.clock.device_ns(true_ns) / 1000
    error_us = abs(device.offset_us_at(device_us) - device.clock.true_offset_ns(true_ns) / 1000)
    return error_us, device.bound_us_at(device_us)


@dataclass
class Reconnecting:
    """Runs a SimDevice against ``url`` and reconnects it (same device id) after each close, until cancelled."""

    device: SimDevice
    url: str
    welcomes: int = 0
    closes: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            self.device.joined.clear()
            waiter = asyncio.create_task(self._count_welcome())
            try:
                await self.device.run(self.url)
                self.closes.append(f"{self.device.close_code} {self.device.close_reason}")
            except (OSError, websockets.WebSocketException) as exc:
                self.closes.append(type(exc).__name__)
            finally:
                waiter.cancel()
            await asyncio.sleep(0.2)

    async def _count_welcome(self) -> None:
        await self.device.joined.wait()
        self.welcomes += 1


async def join_all(spawn: Spawn, runners: list[Reconnecting], timeout_s: float = 10.0) -> list[Reconnecting]:
    """Run every one of ``runners`` in the background and wait until each device has joined; returns them."""
    for runner in runners:
        spawn(runner.run())
    await asyncio.wait_for(asyncio.gather(*(r.device.joined.wait() for r in runners)), scaled(timeout_s))
    return runners


class Proxy:
    """A TCP proxy on loopback in front of ``target_port``; ``dark()`` stops forwarding both ways without closing.

    Like a dead radio link: the peers' sockets stay open, bytes sent wait in
    the kernel's buffers, nothing arrives. ``light()`` forwards again;
    ``drop()`` closes every proxied connection (both sides see it end).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def dark(self) -> None:
        self._open.clear()

    def light(self) -> None:
        self._open.set()

    def drop(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._open.wait()  # dark: read nothing, so nothing moves
                data = await source.read(65536)
                if not data:
                    break
                await self._open.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()
