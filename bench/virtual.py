"""Virtual time: one device's whole show as a discrete-event simulation.

The server side is the real sans-I/O code (``clock.session.DeviceSession``
and the estimate's wire conversion); the device side answers pings at once
and keeps the latest estimate, as the page does; the network is a seeded
``bench.netmodels.Trace`` with TCP's ordering (no message overtakes the one
before it in the same direction). Server time is true time.

Each device is independent of the others here (the server's per-device work is
the same whatever the crowd), so a run of many devices is many runs of one,
spread over processes.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from bench.netmodels import DeviceProfile, Trace
from clock.estimator import EstimatorConfig
from clock.sample import Sample
from clock.session import DeviceSession, PollingConfig
from protocol.messages import Estimate
from server.participants import estimate_message

# Server time of the trace's t = 0: a realistic Unix time in ns, so integer
# arithmetic happens at the magnitudes it has in production.
EPOCH_NS = 1_790_000_000_000_000_000
# The phone's turnaround between stamping t1 and t2 (one handler run).
TURNAROUND_S = 0.00005
TARGET_BOUND_US = 5_000


@dataclass(frozen=True)
class Scenario:
    """When things happen, in seconds since the trace began."""

    join_s: float
    command_s: float  # the organizer's start command reaches the server
    lead_s: float  # T = command_s + lead_s
    end_s: float  # stop simulating here
    checkpoints_s: tuple[float, ...] = ()  # clock error also recorded at these times


@dataclass
class DeviceRun:
    """What one device did and how wrong it was (times in s, errors in ms)."""

    start_error_ms: float = math.nan  # true start time - T
    start_bound_ms: float = math.nan  # the bound the device held for that start
    time_to_target_s: float = math.inf  # join -> first estimate with bound <= 5 ms received
    pings: int = 0
    samples: int = 0
    estimates: int = 0
    checkpoint_errors_ms: list[float] = field(default_factory=list)
    checkpoint_bounds_ms: list[float] = field(default_factory=list)
    # (true time of receipt in s, the estimate) for every estimate the device got,
    # when ``simulate(..., record_estimates=True)``: what its playback works from.
    estimates_received: list[tuple[float, Estimate]] = field(default_factory=list)
    steps_detected: int = 0


class _Device:
    """The phone: its clock, its latest estimate, its view of the schedule."""

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile
        self.estimate: Estimate | None = None

    def offset_us(self, device_us: float) -> float:
        est = self.estimate
        assert est is not None
        return est.offset_us + est.rate_ppm * 1e-6 * (device_us - est.at_us)

    def bound_us(self, device_us: float) -> float:
        est = self.estimate
        assert est is not None
        return est.bound_us + est.bound_growth_ppm * 1e-6 * abs(device_us - est.at_us)

    def local_start_us(self, start_server_us: float) -> float:
        """Device time at which server time ``start_server_us`` falls (PROTOCOL.md section 5)."""
        est = self.estimate
        assert est is not None
        k = est.rate_ppm * 1e-6
        # server = device + offset_us + k (device - at): solve for device exactly.
        return (start_server_us - est.offset_us + k * est.at_us) / (1 + k)

    def clock_error_ms(self, true_s: float) -> tuple[float, float]:
        """(error, bound) in ms of a start due at true time ``true_s``, computed then.

        The device believes server time is ``device + offset``; if that is later
        than the truth by e, it starts e early: the start error is -e.
        """
        device_us = self.profile.device_ns(true_s) / 1000
        belief_us = device_us + self.offset_us(device_us)
        truth_us = EPOCH_NS / 1000 + true_s * 1e6
        return -(belief_us - truth_us) / 1000, self.bound_us(device_us) / 1000


def simulate(
    trace: Trace,
    profile: DeviceProfile,
    scenario: Scenario,
    polling: PollingConfig | None = None,
    estimator: EstimatorConfig | None = None,
    record_estimates: bool = False,
) -> DeviceRun:
    """Run one device through ``scenario`` on ``trace``. Deterministic."""
    session = DeviceSession(polling, estimator)
    device = _Device(profile)
    run = DeviceRun()
    events: list[tuple[float, int, str, object]] = []
    counter = 0
    last_down = -math.inf  # TCP ordering, per direction
    last_up = -math.inf

    def push(t: float, kind: str, payload: object = None) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (t, counter, kind, payload))

    def send_down(t: float, kind: str, payload: object) -> None:
        nonlocal last_down
        delay = trace.down(t)
        if math.isnan(delay):
            return  # no network: lost with the connection
        last_down = max(t + delay, last_down)
        push(last_down, kind, payload)

    def send_up(t: float, kind: str, payload: object) -> None:
        nonlocal last_up
        delay = trace.up(t)
        if math.isnan(delay):
            return
        last_up = max(t + delay, last_up)
        push(last_up, kind, payload)

    def server_ns(t: float) -> int:
        return EPOCH_NS + int(t * 1e9)

    poll_version = 0  # only the newest scheduled poll is live

    def schedule_poll(t: float, now_ns: int) -> None:
        nonlocal poll_version
        poll_version += 1
        deadline_ns = max(session.next_deadline(now_ns), now_ns)
        push(max((deadline_ns - EPOCH_NS) / 1e9, t), "poll", (poll_version, deadline_ns))

    push(scenario.join_s, "poll", (0, server_ns(scenario.join_s)))
    push(scenario.command_s, "command")
    start_s = scenario.command_s + scenario.lead_s
    start_server_us = (EPOCH_NS + int(start_s * 1e9)) / 1000
    scheduled = False
    started = False
    for checkpoint in scenario.checkpoints_s:
        push(checkpoint, "checkpoint")

    while events:
        t, _, kind, payload = heapq.heappop(events)
        if t > scenario.end_s:
            break
        if kind == "poll":
            version, deadline_ns = payload  # type: ignore[misc]
            if version != poll_version:
                continue
            # Float seconds may land a nanosecond short of the deadline.
            now = max(server_ns(t), deadline_ns)
            due = session.poll(now)
            if due is not None:
                seq, t0_ns = due
                run.pings += 1
                send_down(t, "ping", (seq, t0_ns // 1000))
            schedule_poll(t, now)
        elif kind == "ping":
            seq, t0_us = payload  # type: ignore[misc]
            t1 = profile.read_ns(t)
            t2 = profile.read_ns(t + TURNAROUND_S)
            send_up(t + TURNAROUND_S, "pong", (seq, t0_us, t1 // 1000, t2 // 1000))
        elif kind == "pong":
            seq, t0_us, t1_us, t2_us = payload  # type: ignore[misc]
            now = server_ns(t)
            result = session.receive_pong(seq, t0_us, t1_us * 1000, t2_us * 1000, now)
            if isinstance(result, Sample):
                run.samples += 1
                estimate = session.estimate(now)
                if estimate is not None:
                    send_down(t, "estimate", estimate_message(estimate))
            # An answer may allow the next ping sooner than the pending poll.
            schedule_poll(t, now)
        elif kind == "estimate":
            assert isinstance(payload, Estimate)
            device.estimate = payload
            run.estimates += 1
            if record_estimates:
                run.estimates_received.append((t, payload))
            if payload.bound_us <= TARGET_BOUND_US and math.isinf(run.time_to_target_s):
                run.time_to_target_s = t - scenario.join_s
            if scheduled and not started:  # the schedule came first: start with this estimate
                _record_start(run, device, profile, start_server_us, max(t, start_s))
                started = True
        elif kind == "command":
            send_down(t, "schedule", None)
        elif kind == "schedule":
            scheduled = True
            # The page schedules its audio at once (on time or, if late, at the
            # position then due): the start error is its clock error now.
            if device.estimate is not None:
                _record_start(run, device, profile, start_server_us, max(t, start_s))
                started = True
        elif kind == "checkpoint":
            if device.estimate is not None:
                error, bound = device.clock_error_ms(t)
                run.checkpoint_errors_ms.append(error)
                run.checkpoint_bounds_ms.append(bound)
            else:
                run.checkpoint_errors_ms.append(math.nan)
                run.checkpoint_bounds_ms.append(math.nan)
    run.steps_detected = session.estimator.steps
    return run


def _record_start(run: DeviceRun, device: _Device, profile: DeviceProfile, start_server_us: float, at_s: float) -> None:
    """Start error of a start computed now: for a late device, the position error it starts with."""
    if at_s <= (start_server_us * 1000 - EPOCH_NS) / 1e9:
        local_us = device.local_start_us(start_server_us)
        true_start_s = profile.true_s(local_us * 1000)
        t_s = (start_server_us * 1000 - EPOCH_NS) / 1e9
        run.start_error_ms = (true_start_s - t_s) * 1000
        run.start_bound_ms = device.bound_us(local_us) / 1000
    else:
        run.start_error_ms, run.start_bound_ms = device.clock_error_ms(at_s)
