"""Virtual time: playback over a whole show, with the page's drift correction.

One device's hour, driven by the estimates the real server session sent it
(``bench.virtual.simulate(..., record_estimates=True)``):

- Clocks. True time t (s since the trace began) is the server's. The device's
  system clock is ``DeviceProfile.device_ns(t)``; its audio clock runs
  ``audio_ppm`` fast against the system clock. "Audio time" below is always the
  *audible* audio time (the frame heard at t), the domain of
  ``getOutputTimestamp().contextTime``; the context's ``currentTime`` is ahead
  of it by the output latency.
- Start. When the schedule arrives the page maps T (server time) through the
  estimate it holds then (as bench/virtual.py computes the start) to device
  time, and through one output timestamp to audio time, and starts the source
  there (schedule.js's ``computeStart``, with its late-start branch).
- Measurements, as player.js's ``correctDrift``: about once a second (a frame
  after each second of audio time), one output timestamp (contextTime on the
  128-frame render-quantum grid at 48 kHz; performanceTime floored to the
  device's clock resolution) and the target position from the latest estimate
  held, ``(server time believed at performanceTime - T) / 1e6``, go to
  ``clock.drift.DriftController.measure``; its decisions (rate, re-align) are
  applied to the simulated source.
- Truth. The true error at t = played position heard at t - (t - T), in ms:
  positive = the device plays ahead.

Three variants per device, same clocks and same measurement noise: with
correction; without (rate 1 for ever: the audio clock's drift accumulates);
with the outage overlay (``make_trace(..., outage_last_s=1200)``: no estimate
in the last 20 minutes, so the page extrapolates the last one at its
``rate_ppm``). The outage variant reuses the full run's estimates, keeping those
the server sent before the network went: the trace is the same up to the cut
and nothing sent after it arrives, so this is exactly what simulating the
outage trace gives (tests/bench/test_hour.py checks it), at half the cost.

    python -m bench.hour --model 4g --devices 100
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

import numpy as np

from bench.netmodels import MODELS, DeviceProfile, Trace, make_device, make_trace
from bench.virtual import EPOCH_NS, DeviceRun, Scenario, simulate
from clock.drift import DriftController
from protocol.messages import Estimate

# getOutputTimestamp's contextTime moves in render quanta: 128 frames at 48 kHz.
QUANTUM_S = 128 / 48000
# player.js measures when a second of audio time has passed, at the next
# redraw: requestAnimationFrame runs at 60 Hz.
MEASURE_INTERVAL_S = 1.0
FRAME_S = 1 / 60
# schedule.js's LATE_START_MARGIN_S: a late start is scheduled this far ahead.
LATE_START_MARGIN_S = 0.1
# Output latency (currentTime ahead of the audible time), uniform per device:
# ~10 ms for a good Android path, ~100 ms over Bluetooth-less budget phones.
LATENCY_RANGE_S = (0.01, 0.1)
# Audio time when the trace begins: the context was opened (tap) earlier.
AUDIO_ORIGIN_S = 10.0


@dataclass(frozen=True)
class HourConfig:
    """One hour run's timeline, in s since the trace began (as bench.virtual.Scenario)."""

    hour_s: float = 3600.0  # show length after T
    record_every_s: float = 10.0  # true error recorded this often after T
    outage_last_s: float = 1200.0  # the outage variant: no network for the last this many s of the trace
    cell_s: float = 0.01  # trace cell: nothing is sent closer than 50 ms apart
    join_max_s: float = 10.0  # joins uniform over [0, this)
    command_s: float = 60.0
    lead_s: float = 3.0

    @property
    def start_s(self) -> float:
        return self.command_s + self.lead_s

    @property
    def end_s(self) -> float:
        return self.start_s + self.hour_s + 1.0

    @property
    def outage_s(self) -> float:
        """The outage actually simulated: ``outage_last_s``, at most the last third of a shorter show."""
        return min(self.outage_last_s, self.hour_s / 3)

    def record_times_s(self) -> np.ndarray:
        """Seconds after T at which the error is recorded: 0, 10, ..., hour_s."""
        return np.arange(0.0, self.hour_s + 1e-9, self.record_every_s)


@dataclass(frozen=True)
class Playback:
    """One variant's outcome: true error (ms) at each record time, and what the controller did."""

    errors_ms: np.ndarray
    realigns: int = 0
    rate_changes: int = 0
    rate_estimate_ppm: float = 0.0


@dataclass(frozen=True)
class HourResult:
    """One device's hour: the three variants side by side (errors at ``HourConfig.record_times_s()``)."""

    device: int
    start_error_ms: float  # bench.virtual's: true start - T (positive: late)
    audio_start_error_ms: float  # played - due at T (positive: ahead), through the output timestamp
    clock_ppm: float  # audio clock against true time: what an uncorrected device drifts at
    corrected: Playback
    uncorrected: Playback
    outage: Playback
    estimates: int = 0
    estimates_before_outage: int = 0


@dataclass
class _Clocks:
    """The device's system and audio clocks, vectorised over true times (s)."""

    profile: DeviceProfile
    latency_s: float
    device0_ns: float = field(init=False)

    def __post_init__(self) -> None:
        self.device0_ns = float(self.profile.device_ns(0.0))

    def device_ns(self, t_s: np.ndarray) -> np.ndarray:
        p = self.profile
        value = p.offset_ns + t_s * 1e9 * (1 + p.system_ppm * 1e-6)
        if p.step_at_s is not None:
            value = value + np.where(t_s >= p.step_at_s, p.step_ns, 0)
        return np.asarray(value, dtype=float)

    def audible_s(self, t_s: np.ndarray) -> np.ndarray:
        """Audio time heard at true time t_s."""
        return AUDIO_ORIGIN_S + (self.device_ns(t_s) - self.device0_ns) * 1e-9 * (1 + self.profile.audio_ppm * 1e-6)

    def stamp(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """getOutputTimestamp() read at t_s: (contextTime s on the quantum grid, performanceTime as device us)."""
        context_s = np.round(self.audible_s(t_s) / QUANTUM_S) * QUANTUM_S
        device = self.device_ns(t_s)
        resolution = self.profile.resolution_ns
        perf_us = (device - np.mod(device, resolution)) / 1000
        return context_s, perf_us


@dataclass(frozen=True)
class _Estimates:
    """Estimates as arrays, in receipt order: receipt true time (s) and the offset line."""

    received_s: np.ndarray
    at_us: np.ndarray
    offset_us: np.ndarray
    rate_ppm: np.ndarray

    @classmethod
    def of(cls, received: Sequence[tuple[float, Estimate]]) -> _Estimates:
        return cls(
            np.array([t for t, _ in received], dtype=float),
            np.array([e.at_us for _, e in received], dtype=float),
            np.array([e.offset_us for _, e in received], dtype=float),
            np.array([e.rate_ppm for _, e in received], dtype=float),
        )

    def server_us(self, device_us: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Server time believed at device time ``device_us`` through estimate ``index`` (sync.js deviceToServer)."""
        believed = device_us + self.offset_us[index] + self.rate_ppm[index] * 1e-6 * (device_us - self.at_us[index])
        return np.asarray(believed, dtype=float)


def sent_s(estimate: Estimate) -> float:
    """True time at which the server sent an estimate: its anchor is the server's now (s since the trace began)."""
    return ((estimate.at_us + estimate.offset_us) * 1000 - EPOCH_NS) / 1e9


def outage_cut_s(duration_s: float, outage_last_s: float, cell_s: float) -> float:
    """First second of the outage in ``make_trace(..., duration_s, outage_last_s=, cell_s=)``."""
    n = int(round(duration_s / cell_s))
    return max(0, n - int(outage_last_s / cell_s)) * cell_s


def local_start_us(estimate: Estimate, start_server_us: float) -> float:
    """Device time of server time ``start_server_us`` (sync.js serverToDevice)."""
    k = estimate.rate_ppm * 1e-6
    return estimate.at_us + (start_server_us - estimate.offset_us - estimate.at_us) / (1 + k)


def schedule_estimate(run: DeviceRun, profile: DeviceProfile, trace: Trace, scenario: Scenario) -> tuple[int, float]:
    """(index into run.estimates_received of the estimate the start used, true time the page started it).

    bench.virtual starts with the estimate held when the schedule arrives (or
    the first one after). Its arrival time is not in DeviceRun: the schedule
    leaves at ``command_s`` and may wait behind an earlier message (TCP), so
    the estimate is the one whose start error is the run's, searched from the
    schedule's own arrival on.
    """
    received = run.estimates_received
    if not received:
        raise ValueError("schedule_estimate: the run received no estimate (simulate(..., record_estimates=True)?)")
    start_s = scenario.command_s + scenario.lead_s
    start_server_us = EPOCH_NS / 1000 + start_s * 1e6
    arrival_s = scenario.command_s + trace.down(scenario.command_s)
    # The latest received by then, or the first after.
    held = max(0, sum(1 for t, _ in received if t <= arrival_s) - 1)
    for i in range(held, len(received)):
        t, est = received[i]
        true_start_s = profile.true_s(local_start_us(est, start_server_us) * 1000)
        if abs((true_start_s - start_s) * 1000 - run.start_error_ms) < 1e-6:
            return i, max(t, arrival_s)
        if t > start_s:
            break
    return held, max(received[held][0], arrival_s)  # a late start: bench.virtual used the clock error


def _start(clocks: _Clocks, est: Estimate, at_s: float, start_s: float) -> tuple[float, float]:
    """schedule.js computeStart at true time at_s: (audio time of the start, track position then)."""
    context_s, perf_us = clocks.stamp(np.array([at_s]))
    c, p = float(context_s[0]), float(perf_us[0])
    start_server_us = EPOCH_NS / 1000 + start_s * 1e6
    when = c + (local_start_us(est, start_server_us) - p) / 1e6
    now_device_us = float(clocks.device_ns(np.array([at_s]))[0]) / 1000
    earliest = max(c + (now_device_us - p) / 1e6, float(clocks.audible_s(np.array([at_s]))[0]) + clocks.latency_s)
    earliest += LATE_START_MARGIN_S
    if when >= earliest:
        return when, 0.0
    audible_device_us = p + (earliest - c) * 1e6
    believed_us = audible_device_us + est.offset_us + est.rate_ppm * 1e-6 * (audible_device_us - est.at_us)
    return earliest, max(0.0, (believed_us - start_server_us) / 1e6)


class _Source:
    """What the simulated AudioBufferSourceNode plays: segments (audio time, position, rate), in order."""

    def __init__(self, when_s: float, position_s: float) -> None:
        self.starts_s = [when_s]
        self.positions_s = [position_s]
        self.rates = [1.0]

    def set_rate(self, at_s: float, rate: float) -> None:
        """playbackRate.setValueAtTime(rate, at_s); at_s is never before the last change."""
        position = self.positions_s[-1] + (at_s - self.starts_s[-1]) * self.rates[-1]
        if at_s == self.starts_s[-1]:
            self.positions_s[-1], self.rates[-1] = position, rate
        else:
            self.starts_s.append(at_s)
            self.positions_s.append(position)
            self.rates.append(rate)

    def realign(self, at_s: float, position_s: float, rate: float) -> None:
        """The old source stops at at_s and a new one starts there from position_s."""
        while len(self.starts_s) > 1 and self.starts_s[-1] >= at_s:
            self.starts_s.pop()
            self.positions_s.pop()
            self.rates.pop()
        self.starts_s.append(at_s)
        self.positions_s.append(position_s)
        self.rates.append(rate)

    def positions(self, audio_s: np.ndarray) -> np.ndarray:
        """Track position heard at each audio time (before the start: extrapolated back)."""
        starts = np.array(self.starts_s)
        i = np.maximum(np.searchsorted(starts, audio_s, side="right") - 1, 0)
        return np.asarray(np.array(self.positions_s)[i] + (audio_s - starts[i]) * np.array(self.rates)[i], dtype=float)


def _play(
    clocks: _Clocks,
    estimates: _Estimates,
    start: tuple[float, float],
    start_s: float,
    measure_times_s: np.ndarray,
    record_times_s: np.ndarray,
    correct: bool,
) -> Playback:
    """Run the source from ``start``; with ``correct``, measure at each time and apply the controller."""
    source = _Source(*start)
    controller = DriftController()
    controller.start(*start)
    rate_changes = 0
    if correct:
        context_s, perf_us = clocks.stamp(measure_times_s)
        now_s = clocks.audible_s(measure_times_s) + clocks.latency_s
        held = np.searchsorted(estimates.received_s, measure_times_s, side="right") - 1
        # Before any estimate there is nothing to measure against (the page waits).
        usable = held >= 0
        held = np.maximum(held, 0)
        if len(estimates.received_s):
            target_s = (estimates.server_us(perf_us, held) - (EPOCH_NS / 1000 + start_s * 1e6)) / 1e6
        else:
            target_s = np.zeros_like(measure_times_s)
        for c, target, now, ok in zip(context_s.tolist(), target_s.tolist(), now_s.tolist(), usable.tolist()):
            if not ok:
                continue
            decision = controller.measure(c, target, now)
            if decision.action == "rate":
                source.set_rate(decision.at_context_time_s, decision.rate)
                rate_changes += 1
            elif decision.action == "realign":
                source.realign(decision.at_context_time_s, decision.position_s, decision.rate)
    record_true_s = start_s + record_times_s
    played_s = source.positions(clocks.audible_s(record_true_s))
    errors_ms = (played_s - record_times_s) * 1000
    return Playback(errors_ms, controller.realigns, rate_changes, controller.rate_estimate_ppm)


def hour_scenario(seed: int, device: int, config: HourConfig) -> Scenario:
    """The device's scenario: a seeded join in [0, join_max_s), then the shared command, lead and end."""
    join_s = float(np.random.default_rng([seed, device, 0x6A6F696E]).uniform(0.0, config.join_max_s))
    return Scenario(join_s, config.command_s, config.lead_s, config.end_s)


def play_hour(
    trace: Trace, profile: DeviceProfile, run: DeviceRun, scenario: Scenario, config: HourConfig, rng: np.random.Generator, device: int = 0
) -> HourResult:
    """The three playback variants of one simulated run (``run`` from ``simulate(trace, ..., record_estimates=True)``)."""
    start_s = scenario.command_s + scenario.lead_s
    clocks = _Clocks(profile, float(rng.uniform(*LATENCY_RANGE_S)))
    index, started_at_s = schedule_estimate(run, profile, trace, scenario)
    start = _start(clocks, run.estimates_received[index][1], started_at_s, start_s)
    record_times_s = config.record_times_s()
    # A measurement a frame or so after each second of audio time, from the start on.
    steps = int(config.hour_s / MEASURE_INTERVAL_S) + 2
    gaps = MEASURE_INTERVAL_S + rng.uniform(0.0, FRAME_S, steps)
    first_s = max(start_s, started_at_s)
    measure_times_s = first_s + np.cumsum(gaps)
    measure_times_s = measure_times_s[measure_times_s <= start_s + config.hour_s]

    everything = _Estimates.of(run.estimates_received)
    cut_s = outage_cut_s(trace.duration_s, config.outage_s, trace.cell_s)
    before = [(t, e) for t, e in run.estimates_received if sent_s(e) < cut_s]
    corrected = _play(clocks, everything, start, start_s, measure_times_s, record_times_s, True)
    uncorrected = _play(clocks, everything, start, start_s, measure_times_s, record_times_s, False)
    outage = _play(clocks, _Estimates.of(before), start, start_s, measure_times_s, record_times_s, True)
    clock_ppm = ((1 + profile.system_ppm * 1e-6) * (1 + profile.audio_ppm * 1e-6) - 1) * 1e6
    return HourResult(
        device=device,
        start_error_ms=run.start_error_ms,
        audio_start_error_ms=float(uncorrected.errors_ms[0]),
        clock_ppm=clock_ppm,
        corrected=corrected,
        uncorrected=uncorrected,
        outage=outage,
        estimates=len(run.estimates_received),
        estimates_before_outage=len(before),
    )


def run_device(model: str, seed: int, device: int, config: HourConfig) -> HourResult:
    """One device of ``model``: trace, phone, the real session in virtual time, then its hour of playback."""
    scenario = hour_scenario(seed, device, config)
    trace = make_trace(model, seed, device, config.end_s, cell_s=config.cell_s)
    profile = make_device(seed, device)
    run = simulate(trace, profile, scenario, record_estimates=True)
    rng = np.random.default_rng([seed, device, 0x686F7572])
    return play_hour(trace, profile, run, scenario, config, rng, device)


@dataclass(frozen=True)
class HourBatch:
    """Many devices' hours: error arrays of shape (devices, record times), in ms."""

    model: str
    record_times_s: np.ndarray
    corrected_ms: np.ndarray
    uncorrected_ms: np.ndarray
    outage_ms: np.ndarray
    start_error_ms: np.ndarray
    audio_start_error_ms: np.ndarray
    clock_ppm: np.ndarray
    realigns: np.ndarray  # per device, with correction
    outage_realigns: np.ndarray
    rate_changes: np.ndarray

    @classmethod
    def of(cls, model: str, config: HourConfig, results: Sequence[HourResult]) -> HourBatch:
        ordered = sorted(results, key=lambda r: r.device)
        return cls(
            model,
            config.record_times_s(),
            np.array([r.corrected.errors_ms for r in ordered]),
            np.array([r.uncorrected.errors_ms for r in ordered]),
            np.array([r.outage.errors_ms for r in ordered]),
            np.array([r.start_error_ms for r in ordered]),
            np.array([r.audio_start_error_ms for r in ordered]),
            np.array([r.clock_ppm for r in ordered]),
            np.array([r.corrected.realigns for r in ordered]),
            np.array([r.outage.realigns for r in ordered]),
            np.array([r.corrected.rate_changes for r in ordered]),
        )


class Progress:
    """A plain-text progress bar on a stream: ``label [#####.....] 512/1000 (42 s)``.

    On a terminal it redraws one line; elsewhere (a log file) it writes a line
    at every tenth of the way.
    """

    WIDTH = 30

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.began = time.monotonic()
        self.done = 0
        self._last_tenth = -1

    def line(self) -> str:
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "." * (self.WIDTH - filled)
        return f"{self.label} [{bar}] {self.done}/{self.total} ({time.monotonic() - self.began:.0f} s)"

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.tty:
            self.stream.write("\r" + self.line())
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            tenth = 10 * self.done // self.total
            if tenth != self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(self.line() + "\n")
        self.stream.flush()


def _task(args: tuple[str, int, int, HourConfig]) -> HourResult:
    return run_device(*args)


Task = TypeVar("Task")
Result = TypeVar("Result")


def parallel_map(
    function: Callable[[Task], Result], tasks: Sequence[Task], workers: int, progress: Progress | None
) -> Iterator[Result]:
    """``function`` (a module-level function) over ``tasks`` on ``workers`` processes, in completion
    order (in this process, in order, when ``workers`` is 1), advancing ``progress``."""
    if workers <= 1:
        for task in tasks:
            yield function(task)
            if progress:
                progress.advance()
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for result in pool.imap_unordered(function, tasks, chunksize=4):
            yield result
            if progress:
                progress.advance()


def run_hour(
    model: str, seed: int, devices: int, config: HourConfig | None = None, *, workers: int = 2, progress: bool = True
) -> HourBatch:
    """``devices`` devices of ``model`` through a whole show, on ``workers`` processes."""
    config = config or HourConfig()
    tasks = [(model, seed, i, config) for i in range(devices)]
    bar = Progress(f"hour {model}", devices) if progress else None
    return HourBatch.of(model, config, list(parallel_map(_task, tasks, workers, bar)))


def abs_percentiles(values_ms: np.ndarray) -> tuple[float, float, float]:
    """p50, p99 and max of |values| (NaN ignored)."""
    values = np.abs(values_ms[np.isfinite(values_ms)])
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99), float(values.max())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hour", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="4g")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hour-s", type=float, default=3600.0, help="show length after T")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    began = time.monotonic()
    batch = run_hour(args.model, args.seed, args.devices, HourConfig(hour_s=args.hour_s), workers=args.workers)
    minute = args.hour_s / 60
    print(f"model {args.model}, seed {args.seed}, {args.devices} devices, |error| at minute {minute:g}, ms")
    print("| variant | p50 | p99 | max |\n|---|---|---|---|")
    for name, errors in (("corrected", batch.corrected_ms), ("uncorrected", batch.uncorrected_ms), ("outage", batch.outage_ms)):
        p50, p99, top = abs_percentiles(errors[:, -1])
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {top:.2f} |")
    print(f"({time.monotonic() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
