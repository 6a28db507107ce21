"""One client process of ``bench.scale``: thousands of simulated phones on one asyncio loop.

    python -m bench.scale_client   (started by bench.scale; speaks JSON lines on stdin/stdout)

The first stdin line is the configuration (``ClientConfig`` as JSON). The
process raises its soft open-file limit to the hard one, prints
``{"ev": "up"}``, and waits for commands, one JSON object a line:

- ``{"cmd": "join", "t0_ns": T}``: device ``i`` (a global index) connects at
  true time ``T + i * join_window_s / total`` (T and every time here are server
  time in nanoseconds: ``time.monotonic_ns() + k_ns``, see below), from source
  address ``127.0.0.(2 + i // per_source)`` so no (source, destination) pair
  runs short of ephemeral ports.
- ``{"cmd": "report"}``: prints ``{"ev": "report", "devices": [...]}``, one
  ``DeviceRecord.row()`` per device.
- ``{"cmd": "stop"}``: exits at once (the kernel closes the sockets).

Every second it prints ``{"ev": "progress", ...}`` with counts.

Truth. The server's time is its wall clock read once at start plus
``CLOCK_MONOTONIC`` since (``clock/reference.py``), so server time =
``time.monotonic_ns() + k_ns`` in every process of this machine, with
``k_ns`` measured by ``bench.scale`` when the server started. A device's clock
is that true time plus its own fixed offset (``offset_us``, seeded, +-5 s), so
its true offset (server - device) is exactly ``-offset_us``, to the
microsecond its clock is truncated to.

Each device: ``join`` with a device id, every ``ping`` answered at once with
``t1``/``t2`` read from its clock, ``ready`` (loaded, unlocked, everything
downloaded) after ``welcome`` and again every ``ready_interval_s`` with the
bound of its latest ``estimate``; the true receipt time of every message type
is noted (first and last), and what it held when the start's ``schedule``
reached it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import websockets
from websockets.asyncio.client import connect
from websockets.frames import Opcode

from protocol import PROTOCOL_VERSION, encode
from protocol.messages import Join, Ready
from server.connection import stamp_reads

# Phone clocks are not set to the server's: any offset within +-5 s (as bench.sync).
MAX_OFFSET_US = 5_000_000
# Frames from the server are small but ``show`` may reach ~512 KiB (PROTOCOL.md 1).
MAX_FRAME_BYTES = 2**20
PROGRESS_INTERVAL_S = 1.0


def stamp_arrivals(ws: Any, clock: Callable[[], int], source: str = "read") -> tuple[collections.deque[tuple[int, int]], str]:
    """Note when each data frame arrived, one entry per message; returns the stamps and what stamps them.

    websockets (asyncio) parses frames inside ``data_received`` and hands each
    to ``process_event``: wrapping that instance's method notes a frame as its
    bytes are parsed (``source="read"``: ``clock()`` then). With
    ``source="kernel"`` the note is the kernel's receive stamp of the bytes
    that brought it (``server.connection.stamp_reads``, on ``clock``'s scale),
    as the server stamps ``t3``; where the kernel gives none, ``"read"``. The
    server sends whole, unfragmented messages, so one data frame is one
    message and the stamps pair with ``recv`` in order.

    Each entry is ``(stamp, chunk)``: the number of the read that brought the
    frame (0 unless ``kernel``). A kernel stamp is the newest packet's in the
    read (TCP also merges packets waiting in one buffer, keeping the newest
    stamp), so it is the frame's own arrival only when no later frame came in
    the same read; else an upper bound.
    """
    stamps: collections.deque[tuple[int, int]] = collections.deque()
    process_event = ws.process_event
    latest = [clock(), 0]  # the latest read's stamp and number

    def arrived(stamp_ns: int) -> None:
        latest[0] = stamp_ns
        latest[1] += 1

    used = "read"
    if source == "kernel":
        used = stamp_reads(ws.transport, clock, arrived)
    kernel = used == "kernel"

    def stamped(event: Any) -> None:
        if getattr(event, "opcode", None) in (Opcode.BINARY, Opcode.TEXT):
            stamps.append((latest[0], latest[1]) if kernel else (clock(), 0))
        process_event(event)

    ws.process_event = stamped
    return stamps, "kernel" if kernel else "read"


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def device_offset_us(seed: int, index: int) -> int:
    """Device ``index``'s fixed clock offset (device - true), microseconds; its true offset is minus this."""
    return random.Random(seed * 1_000_003 + index).randint(-MAX_OFFSET_US, MAX_OFFSET_US)


def source_address(index: int, per_source: int) -> str:
    """The loopback source address of device ``index``: 127.0.0.2, .3, ... ``per_source`` devices each."""
    host = 2 + index // per_source
    if host > 254:
        raise ValueError(f"device {index}: more than 253 source addresses needed at {per_source} per address")
    return f"127.0.0.{host}"


@dataclass(frozen=True)
class ClientConfig:
    url: str
    first: int  # global index of this process's first device
    count: int  # devices in this process: first .. first + count - 1
    total: int  # devices over all client processes
    join_window_s: float
    ready_interval_s: float
    k_ns: int  # server time = time.monotonic_ns() + k_ns
    seed: int
    per_source: int
    compression: str  # "deflate" (what browsers offer) or "none"
    run_tag: str  # makes device ids unique per run
    urls: tuple[str, ...] = ()  # several server nodes: device i connects to urls[i % len(urls)]
    # When a device reads t1 (--t1): "handling", when its coroutine gets to the
    # ping; "read", when the ping's frame is parsed out of the bytes that
    # brought it; "kernel", the kernel's receive stamp of those bytes (as the
    # server stamps t3). A phone reads its own ping alone; thousands of
    # simulated ones sharing a core wait for each other and for the CPU.
    t1: str = "handling"


@dataclass
class DeviceRecord:
    """What one device saw; times are true (server) time in ns, None where it never happened."""

    index: int
    offset_us: int
    connect_ns: int | None = None
    open_ns: int | None = None
    first_ns: dict[str, int] = field(default_factory=dict)  # message type -> first receipt
    last_ns: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None
    start_epoch: int | None = None  # epoch of the first schedule that holds a start_us
    start_ns: int | None = None  # receipt of that schedule
    start_us: int | None = None
    # Whether start_ns is the schedule's own packet's kernel stamp (True) or an
    # upper bound, a later frame having come in the same read (False); None
    # without kernel stamps.
    start_exact: bool | None = None
    error_us: float | None = None  # estimate's offset at receipt - true offset
    bound_us: float | None = None  # the estimate's bound at receipt
    failure: str | None = None
    sent: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "i": self.index,
            "offset_us": self.offset_us,
            "connect_ns": self.connect_ns,
            "open_ns": self.open_ns,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "counts": self.counts,
            "start_ns": self.start_ns,
            "start_us": self.start_us,
            "start_exact": self.start_exact,
            "error_us": self.error_us,
            "bound_us": self.bound_us,
            "last_error_us": self.estimate_error_us(),
            "last_bound_us": None if self.estimate is None else self.estimate["bound_us"],
            "failure": self.failure,
            "sent": self.sent,
        }

    def estimate_error_us(self) -> float | None:
        """The latest estimate's offset at its own instant minus the true offset (-offset_us)."""
        if self.estimate is None:
            return None
        return float(self.estimate["offset_us"] + self.offset_us)


class Client:
    """This process's devices, their tasks and the control channel."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self.devices = [
            DeviceRecord(i, device_offset_us(config.seed, i)) for i in range(config.first, config.first + config.count)
        ]
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.t1_source = config.t1  # what stamps t1 in fact ("kernel" falls back to "read" where there is none)

    def now_ns(self) -> int:
        return time.monotonic_ns() + self.config.k_ns

    def join(self, t0_ns: int) -> None:
        spacing_ns = self.config.join_window_s * 1e9 / self.config.total
        for device in self.devices:
            at_ns = t0_ns + round(device.index * spacing_ns)
            self.tasks.append(asyncio.create_task(self.run_device(device, at_ns)))

    async def run_device(self, device: DeviceRecord, at_ns: int) -> None:
        config = self.config
        wait_s = (at_ns - self.now_ns()) / 1e9
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        device.connect_ns = self.now_ns()
        offset_ns = device.offset_us * 1000
        k_ns = config.k_ns
        mono = time.monotonic_ns
        packb = msgpack.packb
        unpackb = msgpack.unpackb
        counts = device.counts
        first_ns = device.first_ns
        last_ns = device.last_ns
        try:
            async with connect(
                config.urls[device.index % len(config.urls)] if config.urls else config.url,
                local_addr=(source_address(device.index, config.per_source), 0),
                compression="deflate" if config.compression == "deflate" else None,
                ping_interval=None,  # the server runs its own heartbeat
                max_size=MAX_FRAME_BYTES,
                open_timeout=120,
                close_timeout=1,
            ) as ws:
                arrivals = None
                if config.t1 != "handling":
                    arrivals, self.t1_source = stamp_arrivals(ws, mono, config.t1)
                device.open_ns = self.now_ns()
                device_id = f"scale-{config.run_tag}-{device.index:06d}"
                await ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=device_id, client="bench.scale", lang="en")))
                device.sent += 1
                next_ready_ns: int | None = None
                async for data in ws:
                    exact: bool | None = None
                    if arrivals:
                        received_ns, chunk = arrivals.popleft()
                        if chunk:  # a kernel stamp: its own packet's when no later frame came in the same read
                            exact = not (arrivals and arrivals[0][1] == chunk)
                    else:
                        received_ns = mono()
                    t1_us = (received_ns + k_ns + offset_ns) // 1000  # first thing on receipt
                    message = unpackb(data)
                    kind = message["type"]
                    if kind == "ping":
                        pong = packb(
                            {
                                "type": "pong",
                                "seq": message["seq"],
                                "t0_us": message["t0_us"],
                                "t1_us": t1_us,
                                "t2_us": (mono() + k_ns + offset_ns) // 1000,
                            }
                        )
                        await ws.send(pong)
                        device.sent += 1
                    now_ns = t1_us * 1000 - offset_ns
                    counts[kind] = counts.get(kind, 0) + 1
                    if kind not in first_ns:
                        first_ns[kind] = now_ns
                    last_ns[kind] = now_ns
                    if kind == "estimate":
                        device.estimate = message
                    elif kind == "schedule":
                        self.receive_schedule(device, message, now_ns, t1_us, exact)
                    if kind == "welcome":
                        next_ready_ns = now_ns  # the first ready right after welcome
                    if next_ready_ns is not None and now_ns >= next_ready_ns:
                        await ws.send(self.ready_frame(device))
                        device.sent += 1
                        next_ready_ns = now_ns + round(config.ready_interval_s * 1e9)
                if not self.stopping:
                    device.failure = f"closed by the server: {ws.close_code} {ws.close_reason or ''}".strip()
        except asyncio.CancelledError:
            raise
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            if not self.stopping:
                device.failure = f"{type(exc).__name__}: {str(exc)[:120]}"

    def receive_schedule(
        self, device: DeviceRecord, message: dict[str, Any], now_ns: int, device_us: int, exact: bool | None = None
    ) -> None:
        """Note the first schedule that holds a start, and how far off the estimate held then was."""
        if message.get("start_us") is None or device.start_ns is not None:
            return
        device.start_epoch = message["epoch"]
        device.start_ns = now_ns
        device.start_exact = exact
        device.start_us = message["start_us"]
        est = device.estimate
        if est is not None:
            age_us = device_us - est["at_us"]
            offset_now_us = est["offset_us"] + est["rate_ppm"] * 1e-6 * age_us
            device.error_us = offset_now_us + device.offset_us  # true offset is -offset_us
            device.bound_us = est["bound_us"] + est["bound_growth_ppm"] * 1e-6 * abs(age_us)

    def ready_frame(self, device: DeviceRecord) -> bytes:
        bound = None if device.estimate is None else int(device.estimate["bound_us"])
        ready = Ready(
            loaded=True, unlocked=True, downloaded=1.0, bound_us=bound, output_latency_us=0, wake_lock=True, visible=True
        )
        return encode(ready)

    def progress(self) -> dict[str, Any]:
        devices = self.devices
        return {
            "ev": "progress",
            "connecting": sum(1 for d in devices if d.connect_ns is not None),
            "open": sum(1 for d in devices if d.open_ns is not None),
            "welcomed": sum(1 for d in devices if "welcome" in d.first_ns),
            "estimated": sum(1 for d in devices if d.estimate is not None),
            "scheduled": sum(1 for d in devices if d.start_ns is not None),
            "failed": sum(1 for d in devices if d.failure is not None),
            "received": sum(sum(d.counts.values()) for d in devices),
            "sent": sum(d.sent for d in devices),
            "first_failure": next((d.failure for d in devices if d.failure is not None), None),
            "t1_source": self.t1_source,
        }


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def main_async() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = ClientConfig(**json.loads(await reader.readline()))
    client = Client(config)
    soft, hard = raise_nofile_limit()
    emit({"ev": "up", "pid": os.getpid(), "nofile": [soft, hard]})

    async def progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            emit(client.progress())

    ticker = asyncio.create_task(progress())
    try:
        while True:
            line = await reader.readline()
            if not line:
                break  # the controller is gone
            command = json.loads(line)
            if command["cmd"] == "join":
                client.join(int(command["t0_ns"]))
            elif command["cmd"] == "report":
                emit({"ev": "report", "devices": [d.row() for d in client.devices]})
            elif command["cmd"] == "stop":
                break
    finally:
        client.stopping = True
        ticker.cancel()
        sys.stdout.flush()
        os._exit(0)  # no close handshakes: the kernel closes thousands of sockets at once


if __name__ == "__main__":
    asyncio.run(main_async())
