"""A participant that comes back: reconnects with exponential backoff and full jitter.

What a phone does when the server goes away (PROTOCOL.md section 6): wait a
random delay, reconnect, send ``join`` with the ``device_id`` it was given,
answer every ``ping`` with a ``pong``, send ``ready``. It records what each
connection received (``welcome``, every ``schedule``, how many ``estimate``s),
so a test can compare what a device saw before and after a server restart.

The delay before attempt ``n`` (0 after a connection that was welcomed) is
``uniform(0, min(cap_s, base_s * 2**n))``: "full jitter", so a crowd that lost
the server at one instant does not return at one instant.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets

from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_PARTICIPANT, Announcement, Error, Estimate, Join, Ping, Pong, Ready, Schedule, Welcome

# Server frames may reach about 512 KiB (a `show` with 500 cues, PROTOCOL.md section 1).
MAX_SERVER_FRAME = 1 << 20


def monotonic_us() -> int:
    """Device time: this process's monotonic clock in microseconds (any monotonic clock will do)."""
    return time.monotonic_ns() // 1000


@dataclass
class Connection:
    """What one websocket connection of a participant received, in order."""

    index: int
    welcome: Welcome | None = None
    schedules: list[Schedule] = field(default_factory=list)
    estimates: int = 0
    # The text of every announcement, in order.
    announcements: list[str] = field(default_factory=list)
    error: Error | None = None
    # Why it ended: the close code, or the exception's name; None while open.
    ended: str | None = None

    @property
    def group(self) -> str | None:
        return None if self.welcome is None else self.welcome.group


@dataclass
class Participant:
    """One reconnecting participant. ``run()`` until cancelled (or ``stop()``).

    ``base_s`` and ``cap_s`` shape the backoff (see the module docstring);
    ``rng`` and ``now_us`` (device time, µs) are injected so a test can fix them.
    """

    url: str
    name: str = "participant"
    device_id: str | None = None
    base_s: float = 0.25
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random)
    now_us: Callable[[], int] = monotonic_us
    connections: list[Connection] = field(default_factory=list)
    # Failed attempts since the last welcomed connection; each failure doubles the delay's range.
    attempt: int = 0
    # Delays drawn before each reconnect, in seconds (what the backoff did).
    delays_s: list[float] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _stopped: bool = False

    def backoff_s(self, attempt: int) -> float:
        """The delay before reconnect attempt ``attempt``: full jitter under a capped exponential."""
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * 2**attempt))

    def stop(self) -> None:
        """Reconnect no more once the current connection ends."""
        self._stopped = True

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until stopped or cancelled."""
        while not self._stopped:
            connection = Connection(index=len(self.connections))
            self.connections.append(connection)
            try:
                await self._serve(connection)
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                connection.ended = type(exc).__name__
            await self._notify()
            if self._stopped:
                break
            if connection.welcome is not None:
                self.attempt = 0
            delay_s = self.backoff_s(self.attempt)
            self.attempt += 1
            self.delays_s.append(delay_s)
            await asyncio.sleep(delay_s)

    async def _serve(self, connection: Connection) -> None:
        async with websockets.connect(self.url, max_size=MAX_SERVER_FRAME, open_timeout=5) as ws:
            await ws.send(encode(Join(v=PROTOCOL_VERSION, device_id=self.device_id, client=self.name)))
            try:
                async for data in ws:
                    t1_us = self.now_us()  # first thing on receipt (PROTOCOL.md section 2)
                    if not isinstance(data, bytes):
                        continue
                    message = decode(data, SERVER_TO_PARTICIPANT, MAX_SERVER_FRAME)
                    if isinstance(message, Ping):
                        pong = Pong(seq=message.seq, t0_us=message.t0_us, t1_us=t1_us, t2_us=self.now_us())
                        await ws.send(encode(pong))
                        continue
                    if isinstance(message, Welcome):
                        connection.welcome = message
                        self.device_id = message.device_id
                        await ws.send(encode(Ready(loaded=True, unlocked=True)))
                    elif isinstance(message, Schedule):
                        connection.schedules.append(message)
                    elif isinstance(message, Estimate):
                        connection.estimates += 1
                    elif isinstance(message, Announcement):
                        connection.announcements.append(message.text)
                    elif isinstance(message, Error):
                        connection.error = message
                    await self._notify()
            finally:
                connection.ended = str(ws.close_code)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[Participant], bool], timeout_s: float) -> None:
        """Return once ``predicate(self)`` holds; TimeoutError after ``timeout_s``."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), timeout_s)

    # --- what it saw ------------------------------------------------------------

    @property
    def current(self) -> Connection | None:
        return self.connections[-1] if self.connections else None

    def welcomed(self) -> list[Connection]:
        """The connections the server welcomed, oldest first."""
        return [c for c in self.connections if c.welcome is not None]

    def latest_schedule(self) -> Schedule | None:
        """The schedule with the highest epoch seen on any connection (what a phone would keep)."""
        schedules = [s for c in self.connections for s in c.schedules]
        return max(schedules, key=lambda s: s.epoch, default=None)
