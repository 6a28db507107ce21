"""A simulated participant: a skewed, offset clock behind an injected network delay.

Used by the integration tests and by ``bench.sync``: it speaks the real
protocol over a real websocket (the ``websockets`` library) to a real server.
Ground truth is the server's own clock, passed in as ``true_now_ns``, so the
start error of each device is known exactly.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets

from protocol import MAX_PARTICIPANT_MESSAGE, PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_PARTICIPANT, Error, Estimate, Join, Ping, Pong, Ready, Schedule, Welcome

DelayFn = Callable[[], float]  # one-way delay in seconds for the next message


def no_delay() -> float:
    return 0.0


@dataclass(frozen=True)
class SimClock:
    """device time = true time + offset + skew * (true time - epoch). Nanoseconds.

    ``true_offset_ns(t)`` is the offset the server should estimate: server - device.
    """

    offset_ns: int
    skew_ppm: float = 0.0
    epoch_ns: int = 0

    def device_ns(self, true_ns: int) -> int:
        return true_ns + self.offset_ns + round(self.skew_ppm * 1e-6 * (true_ns - self.epoch_ns))

    def true_ns(self, device_ns: int) -> float:
        """Inverse of ``device_ns``."""
        return (device_ns - self.offset_ns + self.skew_ppm * 1e-6 * self.epoch_ns) / (1 + self.skew_ppm * 1e-6)

    def true_offset_ns(self, true_ns: int) -> float:
        return true_ns - self.device_ns(true_ns)


class _DelayLine:
    """Delivers items in order, each no earlier than its own delay after it was put."""

    def __init__(self, delay: DelayFn, deliver: Callable[[bytes], object]) -> None:
        self._delay = delay
        self._deliver = deliver
        self._queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._last_due = 0.0
        self.task: asyncio.Task[None] | None = None

    def put(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        delay = self._delay()
        if math.isnan(delay):
            return  # no network: the message is lost with the connection
        # TCP keeps order: a message never overtakes the one before it.
        due = max(loop.time() + delay, self._last_due)
        self._last_due = due
        self._queue.put_nowait((due, data))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await self._queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            result = self._deliver(data)
            if asyncio.iscoroutine(result):
                await result


@dataclass
class SimDevice:
    """One simulated phone. ``run(url)`` joins and answers pings until stopped."""

    clock: SimClock
    true_now_ns: Callable[[], int]
    uplink: DelayFn = no_delay
    downlink: DelayFn = no_delay
    device_id: str | None = None
    name: str = "sim"
    welcome: Welcome | None = None
    estimate: Estimate | None = None
    schedule: Schedule | None = None
    error: Error | None = None
    samples: int = 0
    close_code: int | None = None
    close_reason: str = ""
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    scheduled: asyncio.Event = field(default_factory=asyncio.Event)

    def device_now_us(self) -> int:
        return self.clock.device_ns(self.true_now_ns()) // 1000

    async def run(self, url: str) -> None:
        """Join and serve pings until the connection closes or the task is cancelled."""
        async with websockets.connect(url, max_size=2**16) as ws:
            up = _DelayLine(self.uplink, ws.send)
            down = _DelayLine(self.downlink, lambda data: self._receive(data, up))
            up.task = asyncio.create_task(up.run())
            down.task = asyncio.create_task(down.run())
            up.put(encode(Join(v=PROTOCOL_VERSION, device_id=self.device_id, client=self.name)))
            up.put(encode(Ready(loaded=True, unlocked=True)))
            try:
                async for data in ws:
                    if isinstance(data, bytes):
                        down.put(data)
            except websockets.ConnectionClosed:
                pass
            finally:
                self.close_code = ws.close_code
                self.close_reason = ws.close_reason or ""
                up.task.cancel()
                down.task.cancel()

    def _receive(self, data: bytes, up: _DelayLine) -> None:
        message = decode(data, SERVER_TO_PARTICIPANT, 64 * 1024)
        if isinstance(message, Ping):
            t1 = self.device_now_us()
            t2 = self.device_now_us()
            up.put(encode(Pong(seq=message.seq, t0_us=message.t0_us, t1_us=t1, t2_us=t2)))
        elif isinstance(message, Estimate):
            self.estimate = message
            self.samples += 1
        elif isinstance(message, Schedule):
            if self.schedule is None or message.epoch >= self.schedule.epoch:
                self.schedule = message
                if message.start_us is not None:
                    self.scheduled.set()
        elif isinstance(message, Welcome):
            self.welcome = message
            self.device_id = message.device_id
            self.joined.set()
        elif isinstance(message, Error):
            self.error = message

    # --- what the device would do, and how wrong it is ---------------------------

    def offset_us_at(self, device_us: float) -> float:
        est = self.estimate
        assert est is not None, "no estimate yet"
        return est.offset_us + est.rate_ppm * 1e-6 * (device_us - est.at_us)

    def bound_us_at(self, device_us: float) -> float:
        est = self.estimate
        assert est is not None, "no estimate yet"
        return est.bound_us + est.bound_growth_ppm * 1e-6 * abs(device_us - est.at_us)

    def local_start_us(self, start_us: int) -> float:
        """Device time at which this device would start a show that starts at server ``start_us``."""
        est = self.estimate
        assert est is not None, "no estimate yet"
        device_us = start_us - est.offset_us
        return start_us - self.offset_us_at(device_us)  # one fixed-point step (PROTOCOL.md 5)

    def start_error_us(self, start_us: int) -> float:
        """True time at which this device starts, minus the scheduled server time."""
        local_us = self.local_start_us(start_us)
        return self.clock.true_ns(round(local_us * 1000)) / 1000 - start_us


def uniform_delay(rng: random.Random, low_s: float, high_s: float) -> DelayFn:
    """One-way delays drawn uniformly from [low_s, high_s]."""
    return lambda: rng.uniform(low_s, high_s)
