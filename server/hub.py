"""The server's shared state: the show, the connected devices and organizers.

The hub owns the show state machine and fans its changes out. Connections
register here; the hub never awaits a connection, it only enqueues (see
``Outbox``), so one slow phone cannot hold up the broadcast to the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from clock.reference import ReferenceClock
from clock.session import DeviceSession
from protocol import encode
from protocol.errors import CLOSE_POLICY_VIOLATION
from protocol.messages import Announcement, Overview, Ready, Show
from server.config import ServerConfig
from server.groups import GroupAssigner
from server.showfile import ShowCue, ShowFile
from server.show import ShowMachine, ShowSnapshot

log = logging.getLogger("unisono.hub")

# Changes (joins, readiness) wake the overview early, but no more often than
# this: a join storm must not become an overview storm.
OVERVIEW_MIN_INTERVAL_NS = 100_000_000

# An item in an outbox: bytes to send, or a function called right before the
# send that returns the bytes (or None to send nothing). Pings use the latter
# so their t0 is stamped as late as possible.
OutItem = bytes | Callable[[], bytes | None]


class ServerClock:
    """The I/O side of the reference clock: reads the monotonic clock."""

    def __init__(self) -> None:
        self.reference = ReferenceClock(time.time_ns(), time.monotonic_ns())

    def now_ns(self) -> int:
        """Server time now, in nanoseconds."""
        return self.reference.server_ns(time.monotonic_ns())


@dataclass(frozen=True)
class ShowSpec:
    """A show as the server runs it: its title, one track file per group, and what the pages show.

    ``weights``: group -> relative share of devices (default 1). ``cues``: group
    -> its cues, sorted. ``description``: language -> {when, where, bring, text}.
    """

    title: str
    tracks: dict[str, Path]
    duration_ns: int
    weights: Mapping[str, float] = field(default_factory=dict)
    cues: Mapping[str, tuple[ShowCue, ...]] = field(default_factory=dict)
    description: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_file(cls, show: ShowFile) -> ShowSpec:
        return cls(
            title=show.title,
            tracks={g.name: g.track for g in show.groups},
            duration_ns=show.duration_ns,
            weights={g.name: g.weight for g in show.groups},
            cues={g.name: g.cues for g in show.groups},
            description=show.description,
        )

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.tracks)

    def track_url(self, group: str) -> str:
        return f"/tracks/{self.tracks[group].name}"

    def show_message(self, group: str, lang: str) -> Show:
        """The ``show`` message for a device of ``group`` that reads ``lang`` ("en" or "fr")."""
        about = self.description.get(lang, {})
        return Show(
            title=self.title,
            when=about.get("when", ""),
            where=about.get("where", ""),
            bring=about.get("bring", ""),
            about=about.get("text", ""),
            cues=tuple(cue.to_wire(lang) for cue in self.cues.get(group, ())),
        )


class Outbox:
    """A bounded queue of frames for one websocket, drained by its own task.

    ``put`` never blocks: when the peer does not keep up and the queue is
    full, the connection is closed as too slow.
    """

    def __init__(self, ws: web.WebSocketResponse, limit: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[OutItem] = asyncio.Queue(maxsize=limit)
        self.overflowed = False

    def put(self, item: OutItem) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True
            log.warning("closing a connection that does not keep up with its messages")
            asyncio.get_running_loop().create_task(
                self.ws.close(code=CLOSE_POLICY_VIOLATION, message=b"too slow: messages are not being read")
            )

    async def send_one(self, item: OutItem) -> None:
        data = item() if callable(item) else item
        if data is not None:
            await self.ws.send_bytes(data)


@dataclass(eq=False)
class Device:
    """One connected participant: its sync session, readiness and outbox."""

    device_id: str
    group: str
    session: DeviceSession
    outbox: Outbox
    loaded: bool = False
    unlocked: bool = False
    # From the latest ``ready``; None until the device reports them (older pages never do).
    downloaded: float | None = None
    bound_us: int | None = None
    output_latency_us: int | None = None
    wake_lock: bool | None = None
    visible: bool | None = None

    def receive_ready(self, ready: Ready) -> None:
        """Keep what the device's latest ``ready`` says."""
        self.loaded, self.unlocked = ready.loaded, ready.unlocked
        self.downloaded, self.bound_us = ready.downloaded, ready.bound_us
        self.output_latency_us = ready.output_latency_us
        self.wake_lock, self.visible = ready.wake_lock, ready.visible


class Hub:
    """Connected devices and organizers, and the show they follow."""

    def __init__(self, config: ServerConfig, show: ShowSpec, token: str, clock: ServerClock | None = None) -> None:
        self.config = config
        self.show_spec = show
        self.token = token
        self.clock = clock or ServerClock()
        self.show = ShowMachine(show.duration_ns)
        self.groups = GroupAssigner(show.groups, weights=show.weights)
        self.devices: set[Device] = set()
        # The organizer's latest announcement, encoded: sent again to every device that joins.
        self.announcement: bytes | None = None
        self._show_frames: dict[tuple[str, str], bytes] = {}
        self.organizers: set[Outbox] = set()
        self._wake = asyncio.Event()
        self._overview_interval_ns = int(config.overview_interval_s * 1e9)
        self._last_overview_ns = -self._overview_interval_ns

    # --- show ---------------------------------------------------------------

    def start_show(self, start_ns: int) -> ShowSnapshot:
        """Schedule the show; raises InvalidTransition. Tells everyone."""
        snapshot = self.show.start(start_ns)
        log.info("show scheduled: epoch %d, start at server time %d ns", snapshot.epoch, start_ns)
        self._announce(snapshot)
        return snapshot

    def abort_show(self) -> ShowSnapshot:
        """Abort the show; raises InvalidTransition. Tells everyone."""
        snapshot = self.show.abort()
        log.info("show aborted: epoch %d", snapshot.epoch)
        self._announce(snapshot)
        return snapshot

    def show_frame(self, group: str, lang: str) -> bytes:
        """The encoded ``show`` message for ``group`` in ``lang``, made once (500 cues are worth caching)."""
        frame = self._show_frames.get((group, lang))
        if frame is None:
            frame = self._show_frames[(group, lang)] = encode(self.show_spec.show_message(group, lang))
        return frame

    def announce(self, text: str) -> Announcement:
        """Send the organizer's ``text`` to every device now, and to every later joiner."""
        message = Announcement(text=text, at_us=self.clock.now_ns() // 1000)
        data = encode(message)
        self.announcement = data
        for device in self.devices:
            device.outbox.put(data)
        log.info("announcement sent to %d devices", len(self.devices))
        return message

    def _announce(self, snapshot: ShowSnapshot) -> None:
        data = encode(snapshot.to_message())
        for device in self.devices:
            device.outbox.put(data)
        self.changed()

    # --- connections ----------------------------------------------------------

    def add_device(self, device: Device) -> None:
        self.devices.add(device)
        self.changed()

    def remove_device(self, device: Device) -> None:
        self.devices.discard(device)
        self.changed()

    def changed(self) -> None:
        """Something organizers see has changed: send an overview soon."""
        self._wake.set()

    def overview(self) -> Overview:
        now_ns = self.clock.now_ns()
        snap = self.show.snapshot
        groups = {g: 0 for g in self.show_spec.groups}
        synced = 0
        limit_ns = self.config.synced_bound_us * 1000
        for device in self.devices:
            groups[device.group] = groups.get(device.group, 0) + 1
            estimate = device.session.estimate(now_ns)
            if estimate is not None and estimate.bound_ns <= limit_ns:
                synced += 1
        return Overview(
            epoch=snap.epoch,
            state=snap.state,
            start_us=None if snap.start_ns is None else snap.start_ns // 1000,
            server_us=now_ns // 1000,
            devices=len(self.devices),
            groups=groups,
            loaded=sum(d.loaded for d in self.devices),
            unlocked=sum(d.unlocked for d in self.devices),
            synced=synced,
        )

    async def run(self) -> None:
        """Advance the show on time and keep organizers informed. Runs until cancelled."""
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the show's clock
                log.exception("show clock tick failed; retrying in a second")
                await asyncio.sleep(1.0)

    async def _tick(self) -> None:
        """One pass: apply due transitions, send a due overview, wait for the next event."""
        now = self.clock.now_ns()
        for snapshot in self.show.advance(now):
            log.info("show is %s (epoch %d)", snapshot.state, snapshot.epoch)
            self._announce(snapshot)
        woken = self._wake.is_set() and now >= self._last_overview_ns + OVERVIEW_MIN_INTERVAL_NS
        if woken or now >= self._last_overview_ns + self._overview_interval_ns:
            self._wake.clear()
            if self.organizers:
                data = encode(self.overview())
                for outbox in self.organizers:
                    outbox.put(data)
            self._last_overview_ns = now
        deadline = self._last_overview_ns + self._overview_interval_ns
        show_deadline = self.show.next_deadline()
        if show_deadline is not None:
            deadline = min(deadline, show_deadline)
        if self._wake.is_set():  # woken too early: wait out the minimum interval
            deadline = min(deadline, self._last_overview_ns + OVERVIEW_MIN_INTERVAL_NS)
            await asyncio.sleep(max(0.0, (deadline - self.clock.now_ns()) / 1e9))
            return
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.0, (deadline - self.clock.now_ns()) / 1e9))
        except TimeoutError:
            pass
