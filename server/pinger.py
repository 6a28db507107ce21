"""One timer for every device's pings: a heap of deadlines served by one task.

Each device's session says when its next ping is due (``next_deadline``); a
per-connection timer for that (one ``wait_for`` per wait) was the largest
asyncio cost per message with thousands of phones. Here one task sleeps until
the earliest deadline, asks the ping budget (``clock.budget``) and puts a ping
in the device's outbox; the outbox's writer stamps and sends it. Entries are
never removed from the heap: an entry whose device left, or that a newer entry
for the same device replaced, is skipped when it comes up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from protocol import encode
from protocol.messages import Ping

if TYPE_CHECKING:
    from server.hub import Device, Hub

# _sleeping_until while the loop works (no wake-up needed) and while the heap is empty.
NOT_SLEEPING = -(2**63)
EMPTY = 2**63

# Deadlines handled in one pass before the loop lets other work in (after a
# join storm thousands come due at once).
MAX_PER_PASS = 200
# Pings sent in one pass: each is a socket write (on loopback 30-40 us, the
# receiver's work included), and its pong comes back with the others of the
# pass, to be handled in one turn of the loop. A pass that spent a full bucket
# of routine pings at once held the loop 20-30 ms at 15,000 phones; 48 a pass
# left a steady loop lag p99 of 5.1 ms, 16 a pass 3.4-3.8 ms (bench/RESULTS.md).
MAX_SENDS_PER_PASS = 16

# The share of the ping budget routine pings are planned to use; the rest is
# left to joiners and devices whose bound is above target.
ROUTINE_SHARE = 0.7

# When the ping budget is spent, the scheduler sleeps at least this long (ns)
# before asking again, so pings go out in small batches rather than one per wake-up.
BUDGET_WAIT_NS = 2_000_000


class PingScheduler:
    """Every device's next ping, in deadline order (server nanoseconds)."""

    def __init__(self, hub: Hub, rng: random.Random | None = None) -> None:
        self.hub = hub
        self.rng = rng or random.Random()
        # (due_ns, tie-breaker, device, generation)
        self._heap: list[tuple[int, int, Device, int]] = []
        self._order = itertools.count()
        self._generation: dict[Device, int] = {}
        self._wake = asyncio.Event()
        # The deadline the run loop sleeps until (ns): an earlier new entry wakes it.
        self._sleeping_until = NOT_SLEEPING
        # Routine pings refused by the budget, (device, generation) in deadline order.
        self._parked: deque[tuple[Device, int]] = deque()
        # Routine pings are spaced this many times their interval (see _update_stretch).
        self.stretch = 1.0

    def __len__(self) -> int:
        return len(self._generation)

    def schedule(self, device: Device, due_ns: int) -> None:
        """(Re)plan ``device``'s next ping check at ``due_ns``; replaces any earlier plan."""
        generation = self._generation.get(device, 0) + 1
        self._generation[device] = generation
        heapq.heappush(self._heap, (due_ns, next(self._order), device, generation))
        if due_ns < self._sleeping_until:
            self._wake.set()

    def register(self, device: Device) -> None:
        """A device joined: plan its first ping now."""
        device.ping_now = self._ping_maker(device)
        self.schedule(device, self.hub.clock.now_ns())

    def reschedule(self, device: Device) -> None:
        """The device's session changed (a pong came): plan from its new deadline."""
        if device in self._generation:
            now = self.hub.clock.now_ns()
            self.schedule(device, device.session.next_deadline(now))

    def _update_stretch(self) -> None:
        """How much to space routine pings: what the devices would ask over what the budget gives them."""
        devices = len(self._generation)
        if devices == 0:
            self.stretch = 1.0
            return
        sparse_s = self.hub.config.polling.sparse_interval_ns / 1e9
        routine_rate = ROUTINE_SHARE * self.hub.ping_budget.rate_per_s
        self.stretch = max(1.0, devices / sparse_s / routine_rate)

    def forget(self, device: Device) -> None:
        """The device left: its entries are skipped from now on."""
        self._generation.pop(device, None)

    def _ping_maker(self, device: Device) -> Callable[[], bytes | None]:
        """What the outbox calls right before sending: stamps t0 as late as possible, plans the next.

        A partial of one method, not a closure per device (a function object and its cells: ~0.2 KB more).
        """
        return partial(self._ping_now, device)

    def _ping_now(self, device: Device) -> bytes | None:
        session = device.session
        now = self.hub.clock.now_ns()
        due = session.poll(now)
        if due is not None:
            seq, t0_ns = due
            data = encode(Ping(seq=seq, t0_us=t0_ns // 1000))
        else:
            data = None
        if device in self._generation:
            self.schedule(device, session.next_deadline(now))
        return data

    def _send(self, device: Device, generation: int) -> None:
        """Hand ``device``'s ping to its outbox; ping_now (or a pong) plans the next, until then no entry."""
        self._generation[device] = generation + 1
        if device.ping_now is not None:  # None once the device left
            device.outbox.put(device.ping_now)

    def _serve_parked(self, now: int) -> tuple[int, int]:
        """Send parked routine pings while the budget grants them, up to MAX_SENDS_PER_PASS.

        Returns (ns until the budget may grant the next, or 0; pings sent).
        """
        parked = self._parked
        budget = self.hub.ping_budget
        sent = 0
        while parked and sent < MAX_SENDS_PER_PASS:
            device, generation = parked[0]
            if self._generation.get(device) != generation:
                parked.popleft()  # left, or replanned by a pong since
                continue
            refused_ns = budget.take(now, device.session.urgent(now))
            if refused_ns:
                return refused_ns, sent
            parked.popleft()
            self._send(device, generation)
            sent += 1
        return 0, sent

    async def run(self) -> None:
        """Serve deadlines until cancelled."""
        heap = self._heap
        clock = self.hub.clock
        budget = self.hub.ping_budget
        while True:
            now = clock.now_ns()
            self._update_stretch()
            handled = 0
            # When the budget next grants an urgent ping (None: not refused in this pass).
            urgent_wait_ns: int | None = None
            routine_wait_ns, sent = self._serve_parked(now)
            while heap and heap[0][0] <= now and handled < MAX_PER_PASS and sent < MAX_SENDS_PER_PASS:
                handled += 1
                entry = heapq.heappop(heap)
                device, generation = entry[2], entry[3]
                if self._generation.get(device) != generation:
                    continue  # left, or replanned since
                session = device.session
                deadline = session.next_deadline(now)
                if deadline > now:
                    self.schedule(device, deadline)
                    continue
                urgent = session.urgent(now)
                if not urgent and self.stretch > 1.0 and session.last_send_ns is not None:
                    # A crowd: routine pings spaced out so that they fit the budget.
                    stretched = session.last_send_ns + int(session.polling.sparse_interval_ns * self.stretch)
                    if stretched > now:
                        self.schedule(device, stretched)
                        continue
                if not urgent and (routine_wait_ns or self._parked):
                    self._parked.append((device, generation))  # behind the routine pings already waiting
                    continue
                refused_ns = budget.take(now, urgent)
                if not refused_ns:
                    self._send(device, generation)
                    sent += 1
                elif urgent:
                    # The bucket is empty: every due device waits for it in
                    # deadline order, in the heap (one retry per device and
                    # refusal made a join storm spin through the heap).
                    heapq.heappush(heap, entry)
                    urgent_wait_ns = refused_ns
                    break
                else:
                    # Only the urgent pings' reserve is left: routine ones wait in turn.
                    self._parked.append((device, generation))
                    routine_wait_ns = refused_ns
            more_parked = bool(self._parked) and not routine_wait_ns
            if urgent_wait_ns is None and (handled >= MAX_PER_PASS or sent >= MAX_SENDS_PER_PASS or more_parked):
                await asyncio.sleep(0)  # more are due: let pongs in first
                continue
            self._wake.clear()
            wake_ns = EMPTY
            if urgent_wait_ns is not None:
                wake_ns = now + max(urgent_wait_ns, BUDGET_WAIT_NS)
            elif heap:
                wake_ns = heap[0][0]
            if routine_wait_ns and self._parked:
                wake_ns = min(wake_ns, now + max(routine_wait_ns, BUDGET_WAIT_NS))
            if wake_ns == EMPTY:
                self._sleeping_until = EMPTY
                timeout: float | None = None
            else:
                # A new entry due before a budget wait ends need not wake the loop.
                self._sleeping_until = wake_ns if urgent_wait_ns is None else NOT_SLEEPING
                timeout = max(0.0, (wake_ns - clock.now_ns()) / 1e9)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._sleeping_until = NOT_SLEEPING
