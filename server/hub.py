"""The server's shared state: the show, the connected devices and organizers.

The hub owns the show state machine and fans its changes out. Connections
register here; the hub never awaits a connection, it only enqueues (see
``Outbox``), so one slow phone cannot hold up the broadcast to the others.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from clock.budget import PingBudget
from clock.session import DeviceSession
from protocol import encode
from protocol.errors import CLOSE_POLICY_VIOLATION
from protocol.messages import Announcement, Overview, Ready, Show
from server.config import ServerConfig
from server.fleet import Fleet, merge, summarize
from server.pinger import PingScheduler
from server.showfile import ShowCue, ShowFile
from server.show import TRANSITIONS, InvalidTransition, ShowMachine, ShowSnapshot
from server.status import local_time, status_document
from server.store import RECENT_EVENTS, Event, MemoryShowStore, Store, StoredShow, StoreError, show_key
from server.timebase import ServerClock, SntpResponder, UpstreamPoller

if TYPE_CHECKING:
    from server.cluster import ClusterLink

log = logging.getLogger("unisono.hub")

# Changes (joins, readiness) wake the overview early, but no more often than
# this: a join storm must not become an overview storm.
OVERVIEW_MIN_INTERVAL_NS = 100_000_000

# How long a fleet summary is reused (see Hub.fleet).
FLEET_CACHE_NS = 250_000_000
# Fleets above FLEET_ON_DEMAND devices are summarized in the background, in
# slices of FLEET_SLICE devices (a slice of 500 held the loop 2-7 ms at 15,000
# phones, the largest steady-state stall left), every FLEET_REFRESH_S
# or, for more than FLEET_PER_S devices, every devices / FLEET_PER_S seconds
# (a pass over 15,000 every second was 9 % of the server's CPU in the scale
# bench); a summary is used up to FLEET_STALE_NS old, after which a caller
# summarizes every device in one pass (a stall): well above a pass's period.
FLEET_ON_DEMAND = 500
FLEET_SLICE = 100
FLEET_MERGE_EVERY = 10
FLEET_REFRESH_S = 1.0
FLEET_PER_S = 5000
FLEET_STALE_NS = 10_000_000_000

# Devices a broadcast reaches in one pass of the event loop.
BROADCAST_SLICE = 1000

# How long a connection closed as too slow may take to close cleanly before it
# is cut: its peer is not reading, so the close frame is stuck behind the backlog.
SLOW_CLOSE_S = 1.0

# A frame is written at once only while the socket's own buffer holds less than this.
DIRECT_WRITE_LIMIT = 64 * 1024

# An item in an outbox: bytes to send, or a function called right before the
# send that returns the bytes (or None to send nothing). Pings use the latter
# so their t0 is stamped as late as possible.
OutItem = bytes | Callable[[], bytes | None]


class CommandRefused(Exception):
    """An organizer command refused for safety; ``code`` is the wire/API error code.

    too_soon: the start leaves less than the safe lead time; not_ready: too few
    devices are ready and the command did not confirm; invalid_state: the
    show's state does not allow it; store_failed: the new state could not be
    stored (a full disk, Redis down), so nothing changed.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def store_refusal(exc: StoreError) -> CommandRefused:
    """The organizer's answer when the store fails: what failed, and that the running show is untouched."""
    return CommandRefused(
        "store_failed",
        f"the change was not made because the server cannot store it ({exc}); the running show goes on as it was. "
        "Free disk space or fix the store, then try again",
    )


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
    """The frames for one websocket, in order; a bounded backlog drained by a task only while there is one.

    ``put`` never blocks. When nothing is queued or being sent, a frame is
    written to the socket at once (a ping is stamped at that moment): a
    broadcast to 15,000 phones is then 15,000 writes in one pass, not 15,000
    task wake-ups. Otherwise it waits in the backlog behind the others, and
    a task sends the backlog and ends with it; when the peer does not keep up
    and the backlog is full, the connection is closed as too slow.

    An idle outbox holds no queue and no task: an ``asyncio.Queue`` and a
    task parked on it cost about 4.4 KB a connection (measured with
    tracemalloc), a sixth of what a phone cost the server at 15,000.
    """

    __slots__ = (
        "ws", "limit", "overflowed", "sending", "direct_writes", "on_sent",
        "_backlog", "_drainer", "_transport", "_write_frame",
    )  # fmt: skip

    def __init__(self, ws: web.WebSocketResponse, limit: int, on_sent: Callable[[int], None] | None = None) -> None:
        self.ws = ws
        self.limit = limit
        self.overflowed = False
        # True while the drain task is inside a send: a direct write would overtake it.
        self.sending = False
        self.direct_writes = 0  # frames written at once, without the backlog
        # Called with 1 after each frame sent (the metrics' message counter).
        self.on_sent = on_sent
        # Frames waiting behind a send in progress; None (no deque) while idle.
        self._backlog: deque[OutItem] | None = None
        self._drainer: asyncio.Task[None] | None = None
        # aiohttp's frame writer (set by ws.prepare, before any outbox exists), as
        # its own send_bytes uses it when not compressing; looked up once, not per
        # frame (tests/integration/test_http.py checks this path stays in use).
        writer = getattr(ws, "_writer", None)
        self._transport: asyncio.WriteTransport | None = getattr(writer, "transport", None)
        self._write_frame: Callable[[bytes, int, int], None] | None = getattr(writer, "_write_websocket_frame", None)

    def put(self, item: OutItem) -> None:
        if self.overflowed:
            return
        backlog = self._backlog
        if not self.sending and not backlog and self._write_now(item):
            return
        if backlog is None:
            backlog = self._backlog = deque()
        if len(backlog) >= self.limit:
            self.overflowed = True
            log.warning("closing a connection that does not keep up with its messages")
            asyncio.get_running_loop().create_task(self._close_slow())
            return
        backlog.append(item)
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    def stop(self) -> None:
        """The connection ended: stop sending, drop the backlog."""
        if self._drainer is not None:
            self._drainer.cancel()
            self._drainer = None
        self._backlog = None

    async def _drain(self) -> None:
        """Send the backlog in order, then end (the next frame to an idle socket goes out directly)."""
        try:
            while self._backlog and not self.ws.closed:
                await self.send_one(self._backlog.popleft())
        except (ConnectionError, RuntimeError):
            pass  # the peer went away; the reader side notices and cleans up
        finally:
            if self._drainer is asyncio.current_task():
                self._drainer = None
                if not self._backlog:
                    self._backlog = None

    async def _close_slow(self) -> None:
        """Close with a reason; a peer that reads nothing never gets it, so after SLOW_CLOSE_S the connection is cut."""
        try:
            await asyncio.wait_for(
                self.ws.close(code=CLOSE_POLICY_VIOLATION, message=b"too slow: messages are not being read"), SLOW_CLOSE_S
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        if self._transport is not None:
            # A clean close would wait for the peer to take the backlog: abort drops it, and the reader ends.
            self._transport.abort()

    def _write_now(self, item: OutItem) -> bool:
        """Write ``item`` as a binary frame now if the socket takes it without waiting; False if not."""
        transport, write_frame = self._transport, self._write_frame
        if transport is None or write_frame is None or transport.is_closing() or self.ws.closed:
            return False
        if transport.get_write_buffer_size() > DIRECT_WRITE_LIMIT:
            return False  # the peer is behind: queue, so that the drain task waits for it
        data = item() if callable(item) else item
        if data is not None:
            write_frame(data, WSMsgType.BINARY, 0)
            self.direct_writes += 1
            if self.on_sent is not None:
                self.on_sent(1)
        return True

    async def send_one(self, item: OutItem) -> None:
        self.sending = True
        try:
            data = item() if callable(item) else item
            if data is not None:
                await self.ws.send_bytes(data)
                if self.on_sent is not None:
                    self.on_sent(1)
        finally:
            self.sending = False


@dataclass(eq=False, slots=True)
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
    # The outbox item that stamps and encodes a ping when sent (server/pinger.py sets it).
    ping_now: Callable[[], bytes | None] | None = None
    # What stamps its pongs' arrival: "kernel", "read" or "handling" (server/connection.py Arrivals).
    stamp_source: str = "handling"
    # The estimator's fit count and server time of the last estimate sent.
    sent_fits: int = -1
    sent_estimate_ns: int = 0

    def receive_ready(self, ready: Ready) -> None:
        """Keep what the device's latest ``ready`` says."""
        self.loaded, self.unlocked = ready.loaded, ready.unlocked
        self.downloaded, self.bound_us = ready.downloaded, ready.bound_us
        self.output_latency_us = ready.output_latency_us
        self.wake_lock, self.visible = ready.wake_lock, ready.visible


class Hub:
    """Connected devices and organizers, and the show they follow."""

    def __init__(
        self,
        config: ServerConfig,
        show: ShowSpec,
        token: str,
        clock: ServerClock | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.show_spec = show
        self.token = token
        self.clock = clock or ServerClock()
        self.store: Store = store if store is not None else MemoryShowStore()
        self._show_key = show_key(show.title, show.groups, show.duration_ns)
        self.show = ShowMachine(show.duration_ns, self._restore())
        # The latest state devices were told (a refused command goes back to it).
        self._told = self.show.snapshot
        self.groups = self.store.make_assigner(show.groups, show.weights)
        self.events: deque[Event] = deque(self.store.recent_events(RECENT_EVENTS), maxlen=RECENT_EVENTS)
        self.devices: set[Device] = set()
        self.ping_budget = PingBudget(config.ping_budget_per_s, config.ping_burst)
        self.rng = random.Random()
        self.pinger = PingScheduler(self, self.rng)
        self._fleet_cache: tuple[int, bool, Fleet] | None = None
        self._broadcasts: deque[tuple[bytes, list[Device]]] = deque()
        self._broadcaster: asyncio.Task[None] | None = None
        # The URL participants open (for the status and the QR code): the
        # configured public URL, else set by whoever knows the listening address.
        self.join_url = config.public_url or ""
        # The event loop's recent p99 lag in ms; the app plugs in its monitor.
        self.loop_lag_ms: Callable[[], float] = lambda: 0.0
        # The NTP upstream the clock follows and the SNTP responder, when configured (the app starts them).
        self.upstream: UpstreamPoller | None = None
        self.sntp: SntpResponder | None = None
        # The organizer's latest announcement, encoded: sent again to every device that joins.
        self.announcement: bytes | None = None
        stored_announcement = self.store.load_announcement()
        if stored_announcement is not None:
            self.announcement = encode(Announcement(text=stored_announcement[0], at_us=stored_announcement[1]))
        # The other nodes, when this one is part of a cluster (server/cluster.py; the app sets it).
        self.cluster: ClusterLink | None = None
        self._show_frames: dict[tuple[str, str], bytes] = {}
        self.organizers: set[Outbox] = set()
        self._wake = asyncio.Event()
        self._overview_interval_ns = int(config.overview_interval_s * 1e9)
        self._last_overview_ns = -self._overview_interval_ns

    # --- show ---------------------------------------------------------------

    def _restore(self) -> ShowSnapshot | None:
        """The stored show state, if it is this show's; a different show starts idle at a later epoch."""
        stored = self.store.load_show()
        if stored is None:
            return None
        if stored.show_key == self._show_key:
            log.info("show state restored: %s (epoch %d)", stored.snapshot.state, stored.snapshot.epoch)
            return stored.snapshot
        # Epochs only grow, so pages still holding the old show's schedule drop it.
        log.info("the show file changed since the last run: starting idle")
        return ShowSnapshot(epoch=stored.snapshot.epoch + 1, state="idle", start_ns=None)

    def stored_show(self) -> StoredShow:
        """The show's state as the store keeps it (what a node writes back after Redis lost it)."""
        return StoredShow(self.show.snapshot, self._show_key)

    def log_event(self, who: str, action: str, detail: str = "") -> Event:
        """Add a line to the event log (stored, and shown on the console)."""
        event = Event(at_us=self.clock.now_ns() // 1000, who=who, action=action, detail=detail)
        try:
            self.store.log_event(event)
        except StoreError as exc:  # the show goes on; the line stays in the console's log
            log.error("event not stored: %s", exc)
        self.events.append(event)
        log.info("event: %s %s %s", who, action, detail, extra={"who": who, "action": action, "detail": detail})
        self.changed()
        return event

    def fleet(self, keep_bounds: bool = False) -> Fleet:
        """Every node's devices summarized: this node's, plus the cluster's other nodes' if any."""
        local = self.local_fleet(keep_bounds)
        if self.cluster is None or not self.cluster.peers:
            return local
        return merge([local, *(peer.fleet for peer in self.cluster.peers.values())])

    def local_fleet(self, keep_bounds: bool = False) -> Fleet:
        """This node's devices summarized (funnel, bounds, laggards, safe lead).

        A summary asks every device's estimator for its bound. Small fleets are
        summarized on demand (reused for 250 ms); a fleet of thousands is
        summarized by ``summarize_forever`` in slices between other work, and
        its latest summary (a few seconds old at most) is what callers get.
        """
        now_ns = self.clock.now_ns()
        cached = self._fleet_cache
        if cached is not None and (cached[1] or not keep_bounds):
            age_ns = now_ns - cached[0]
            if age_ns < FLEET_CACHE_NS or (len(self.devices) > FLEET_ON_DEMAND and age_ns < FLEET_STALE_NS):
                return cached[2]
        fleet = summarize(
            self.devices, now_ns, self.show_spec.groups, self.config.synced_bound_us * 1000, keep_bounds=keep_bounds
        )
        self._fleet_cache = (now_ns, keep_bounds, fleet)
        return fleet

    async def summarize_forever(self) -> None:
        """Keep a fresh summary of a large fleet, FLEET_SLICE devices at a time. Runs until cancelled."""
        groups, synced_ns = self.show_spec.groups, self.config.synced_bound_us * 1000
        while True:
            await asyncio.sleep(max(FLEET_REFRESH_S, len(self.devices) / FLEET_PER_S))
            devices = list(self.devices)
            if len(devices) <= FLEET_ON_DEMAND:
                continue  # summarized on demand
            parts = []
            for begin in range(0, len(devices), FLEET_SLICE):
                now_ns = self.clock.now_ns()
                live = [d for d in devices[begin : begin + FLEET_SLICE] if d in self.devices]
                parts.append(summarize(live, now_ns, groups, synced_ns, keep_bounds=True))
                if len(parts) == FLEET_MERGE_EVERY:  # merged as they come: 150 at once were a stall of their own
                    parts = [merge(parts)]
                await asyncio.sleep(0)  # let pongs in between slices
            self._fleet_cache = (self.clock.now_ns(), True, merge(parts))

    def check_start(self, start_ns: int, confirm: bool, issued_ns: int | None = None) -> Fleet:
        """Raise CommandRefused unless a start at server time ``start_ns`` is safe (or confirmed).

        ``issued_ns``: when the command arrived (default: now); the lead counts from there.
        """
        fleet = self.fleet()
        lead_ms = (start_ns - (self.clock.now_ns() if issued_ns is None else issued_ns)) / 1e6
        if lead_ms < fleet.lead_min_ms:
            when = "in the past" if lead_ms < 0 else f"only {lead_ms / 1000:.1f} s ahead"
            raise CommandRefused(
                "too_soon",
                f"the start is {when}: the slowest connected device needs {fleet.lead_min_ms / 1000:.1f} s "
                "to get the schedule; start later",
            )
        share = fleet.ready_share
        if share < self.config.ready_share_min and not confirm:
            raise CommandRefused(
                "not_ready",
                f"only {fleet.funnel.ready} of {fleet.devices} devices are ready ({share:.0%}, "
                f"below {self.config.ready_share_min:.0%}): confirm to start anyway",
            )
        return fleet

    def start_show(
        self, start_ns: int, who: str = "server", confirm: bool = True, issued_ns: int | None = None
    ) -> ShowSnapshot:
        """Schedule the show at server time ``start_ns``; tells everyone.

        Raises InvalidTransition, or CommandRefused when the start is too soon
        or, unless ``confirm``, too few devices are ready.
        """
        return self._schedule("start", start_ns, who, confirm, issued_ns)

    def reschedule_show(
        self, start_ns: int, who: str = "server", confirm: bool = True, issued_ns: int | None = None
    ) -> ShowSnapshot:
        """Move the scheduled start to ``start_ns``; raises like ``start_show``."""
        return self._schedule("reschedule", start_ns, who, confirm, issued_ns)

    def _schedule(self, event: str, start_ns: int, who: str, confirm: bool, issued_ns: int | None) -> ShowSnapshot:
        """The organizer's start or reschedule: allowed in this state, safe (or confirmed), stored, told, logged."""
        self._catch_up_for_command()
        if (self.show.state, event) not in TRANSITIONS:
            raise InvalidTransition(event, self.show.state)
        self.check_start(start_ns, confirm, issued_ns)
        apply = self.show.start if event == "start" else self.show.reschedule
        snapshot = self._command(apply(start_ns))
        self.log_event(who, event, f"epoch {snapshot.epoch}, start at {local_time(start_ns)}")
        return snapshot

    def abort_show(self, who: str = "server") -> ShowSnapshot:
        """Abort the show; raises InvalidTransition or CommandRefused (store_failed). Tells everyone."""
        self._catch_up_for_command()
        snapshot = self._command(self.show.abort())
        self.log_event(who, "abort", f"epoch {snapshot.epoch}")
        return snapshot

    def _catch_up_for_command(self) -> None:
        """``_catch_up`` before a command; a store that cannot be read refuses the command."""
        try:
            self._catch_up()
        except StoreError as exc:
            raise store_refusal(exc) from exc

    def _command(self, snapshot: ShowSnapshot) -> ShowSnapshot:
        """Commit an organizer's command: stored and told, or refused as a conflict (see _commit).

        When the store fails, the command is refused (``store_failed``) and the
        show stays as it was, in memory as on every device: the running show goes on.
        """
        try:
            committed = self._commit(snapshot, command=True)
        except StoreError as exc:
            self.show.snapshot = self._told
            raise store_refusal(exc) from exc
        assert committed is not None  # a command that loses raises instead
        return committed

    def _commit(self, snapshot: ShowSnapshot, command: bool = True) -> ShowSnapshot | None:
        """Store the new state first, then tell every device: a restart never forgets a sent schedule.

        In a cluster another node may have stored a newer state meanwhile: then
        this node takes that one instead; a command is refused (``conflict``),
        a clock transition (which every node makes) returns None.
        """
        try:
            stored = self.store.save_show(StoredShow(snapshot, self._show_key))
        except StoreError as exc:
            if command:
                log.error("command refused: %s", exc)
                raise
            # A clock transition follows from the stored start, which a restart
            # recomputes: it goes ahead unstored rather than stop the show.
            log.error("show is %s (epoch %d) but not stored: %s", snapshot.state, snapshot.epoch, exc)
            stored = True
        if not stored:
            self._catch_up(force=True)
            if command:
                raise CommandRefused("conflict", "another organizer changed the show at the same moment: check it and try again")
            return None
        log.info("show is %s (epoch %d, start %s)", snapshot.state, snapshot.epoch, snapshot.start_ns)
        if self.cluster is not None:
            self.cluster.publish_show(snapshot)
        self._announce(snapshot)
        return snapshot

    def _catch_up(self, force: bool = False) -> None:
        """In a cluster, take the stored state if another node moved it on (its message may be on its way)."""
        if self.cluster is None and not force:
            return
        stored = self.store.load_show()
        if stored is not None and (force or stored.snapshot.epoch > self.show.snapshot.epoch):
            self.show.snapshot = stored.snapshot
            self._announce(stored.snapshot)

    def apply_snapshot(self, snapshot: ShowSnapshot) -> None:
        """Another node changed the show: follow it if it is newer than ours, and tell our devices."""
        if snapshot.epoch <= self.show.snapshot.epoch:
            return
        log.info("show is %s (epoch %d, from another node)", snapshot.state, snapshot.epoch)
        self.show.snapshot = snapshot
        self._announce(snapshot)

    def receive_announcement(self, text: str, at_us: int) -> None:
        """Another node sent an announcement: pass it to our devices."""
        data = encode(Announcement(text=text, at_us=at_us))
        self.announcement = data
        self.broadcast(data)

    def show_frame(self, group: str, lang: str) -> bytes:
        """The encoded ``show`` message for ``group`` in ``lang``, made once (500 cues are worth caching)."""
        frame = self._show_frames.get((group, lang))
        if frame is None:
            frame = self._show_frames[(group, lang)] = encode(self.show_spec.show_message(group, lang))
        return frame

    def announce(self, text: str, who: str = "server") -> Announcement:
        """Send the organizer's ``text`` to every device now, and to every later joiner; CommandRefused (store_failed) if it cannot be stored."""
        message = Announcement(text=text, at_us=self.clock.now_ns() // 1000)
        try:  # stored first, as a schedule: a restart gives it to every later joiner
            if self.cluster is not None:
                self.cluster.publish_announcement(text, message.at_us)
            else:
                self.store.save_announcement(text, message.at_us)
        except StoreError as exc:
            log.error("announcement refused: %s", exc)
            raise store_refusal(exc) from exc
        data = encode(message)
        self.announcement = data
        self.broadcast(data)
        self.log_event(who, "announce", f"to {self.fleet().devices} devices: {text}")
        return message

    def broadcast(self, data: bytes, urgent: bool = False) -> None:
        """Send ``data`` to every connected device.

        ``urgent`` (a schedule): to every device in this one pass, ahead of
        any other broadcast still going out. Nothing waits on the time a
        schedule takes to reach the last phone, and a pass that holds the loop
        costs the clocks nothing: pings are stamped as they are written and
        pongs by the kernel as they arrive (server/connection.py Arrivals).
        Otherwise up to BROADCAST_SLICE devices at once, a larger crowd in
        slices between other work, in order with the other such broadcasts.
        """
        if urgent or (len(self.devices) <= BROADCAST_SLICE and not self._broadcasts):
            began_ns = self.clock.now_ns()
            for device in self.devices:
                device.outbox.put(data)
            if len(self.devices) > BROADCAST_SLICE:
                log.info("urgent broadcast to %d devices: %.0f ms", len(self.devices), (self.clock.now_ns() - began_ns) / 1e6)
            return
        self._broadcasts.append((data, list(self.devices)))
        if self._broadcaster is None or self._broadcaster.done():
            self._broadcaster = asyncio.get_running_loop().create_task(self._send_broadcasts())

    async def _send_broadcasts(self) -> None:
        while self._broadcasts:
            data, devices = self._broadcasts[0]
            began_ns = self.clock.now_ns()
            writing_ns = 0
            for begin in range(0, len(devices), BROADCAST_SLICE):
                slice_ns = self.clock.now_ns()
                for device in devices[begin : begin + BROADCAST_SLICE]:
                    if device in self.devices:
                        device.outbox.put(data)
                writing_ns += self.clock.now_ns() - slice_ns
                await asyncio.sleep(0)
            self._broadcasts.popleft()
            log.info(
                "broadcast to %d devices: %.0f ms, %.0f ms of it writing",
                len(devices), (self.clock.now_ns() - began_ns) / 1e6, writing_ns / 1e6,
            )

    def _announce(self, snapshot: ShowSnapshot) -> None:
        self._told = snapshot
        data = encode(snapshot.to_message())
        self.broadcast(data, urgent=True)
        self.changed()

    # --- connections ----------------------------------------------------------

    def add_device(self, device: Device) -> None:
        self.devices.add(device)
        self.pinger.register(device)
        self.changed()

    def remove_device(self, device: Device) -> None:
        self.devices.discard(device)
        self.pinger.forget(device)
        device.ping_now = None  # its closure refers to the device: no cycle left for the collector
        self.changed()

    def changed(self) -> None:
        """Something organizers see has changed: send an overview soon."""
        self._wake.set()

    def clock_health(self) -> dict[str, float | str | None]:
        """The server clock's health as the status shows it (upstream_offset_ms: server - upstream)."""
        health: dict[str, float | str | None] = {"upstream_offset_ms": None, "upstream": None}
        if self.upstream is not None:
            health.update(self.upstream.status())
        health["loop_lag_ms"] = round(self.loop_lag_ms(), 3)
        health.update(self.clock.wall_health())
        return health

    def status(self, join_url: str | None = None) -> dict[str, object]:
        """The status document (``GET /api/status``, ``overview.status``)."""
        now_ns = self.clock.now_ns()
        return status_document(self, self.fleet(), now_ns, join_url or self.join_url)

    def overview(self) -> Overview:
        now_ns = self.clock.now_ns()
        snap = self.show.snapshot
        fleet = self.fleet()
        return Overview(
            epoch=snap.epoch,
            state=snap.state,
            start_us=None if snap.start_ns is None else snap.start_ns // 1000,
            server_us=now_ns // 1000,
            devices=fleet.devices,
            groups={name: counts.connected for name, counts in fleet.groups.items()},
            loaded=fleet.phones.loaded,
            unlocked=fleet.funnel.unlocked,
            synced=fleet.funnel.synced,
            status=status_document(self, fleet, now_ns, self.join_url),
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
        self.clock.check_wall()
        now = self.clock.now_ns()
        for snapshot in self.show.advance(now):
            if self._commit(snapshot, command=False) is not None:
                self.log_event("server", snapshot.state, f"epoch {snapshot.epoch}")
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
