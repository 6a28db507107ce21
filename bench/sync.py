"""Start accuracy over real sockets: N simulated devices, one real server, known truth.

    python -m bench.sync [--devices 50] [--seed 1] [--network jitter|lan|wifi|4g|crowd]
                         [--warmup-s 5] [--lead-ms 2000] [--out bench/RESULTS.md]

The server runs in this process on 127.0.0.1:0, by default in its own thread
with its own event loop, so the devices' load and the server's load do not
share one loop. Devices (``bench.devices.SimDevice``) speak the real protocol
over real websockets on loopback; each has a clock offset of up to +-5 s and a
skew of up to +-100 ppm, and every message it sends or receives is held back
by a one-way delay drawn from the chosen network model.

Ground truth is the server's own clock (``hub.clock.now_ns``): the devices
derive their simulated clocks from it, so each device's start error is exact:
the true time at which it would start the track minus the scheduled start T.
A device computes its start the moment the schedule reaches it, with the
estimate it holds then, as a phone schedules its audio on receipt.

Timeline: devices join staggered over the first second; after the last one
has joined, they sync for ``--warmup-s``; then an organizer sends ``start``
with ``--lead-ms``; the run ends when every device has the schedule (the
start errors are computed, not waited for). A global timeout bounds the run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import platform
import random
import secrets
import sys
import tempfile
import threading
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy
import websockets
from aiohttp import web

from bench import netmodels
from bench.devices import DelayFn, SimClock, SimDevice, _DelayLine, uniform_delay
from protocol import PROTOCOL_VERSION, decode, encode
from protocol.messages import SERVER_TO_ORGANIZER, Error, Hello, Overview, Start
from server.app import HUB, make_app
from server.config import ServerConfig
from server.hub import Hub, ShowSpec

# One-way delay per direction, seconds, drawn uniformly per message.
NETWORKS: dict[str, tuple[float, float]] = {
    "jitter": (0.010, 0.040),  # tens of ms, varying message to message, symmetric
}
# The named, seeded models of bench.netmodels (the same delay fields as the
# virtual-time runs and the peers), replayed against the wall clock.
TRACE_NETWORKS = netmodels.MODELS
DEFAULT_NETWORK = "jitter"
# Phone clocks: any offset (they are not NTP-set to the server) and crystal
# skews up to the +-100 ppm quoted for sound cards (clock/estimator.py).
MAX_OFFSET_NS = 5_000_000_000
MAX_SKEW_PPM = 100.0
# Devices start joining over this span, evenly staggered.
JOIN_SPREAD_S = 1.0
# "Synced" for the time-to-bound figure: the polling policy's own target
# (clock/session.py PollingConfig.target_bound_ns).
TARGET_BOUND_US = 5_000
# Track length of the generated show: longer than any run, so the show never ends.
SHOW_TRACK_S = 10.0
# Beyond warm-up and joins: connecting, the organizer round, schedule delivery.
TIMEOUT_MARGIN_S = 20.0
TRUTH_NOTE = "truth: server clock"


# --- per-device results and the summary (pure) ---------------------------------------


@dataclass(frozen=True)
class DeviceResult:
    """What one device did. None where it never got that far."""

    # True time of its local start minus T, microseconds; None: no schedule or no estimate.
    start_error_us: float | None
    # The bound its estimate gave at its local start, microseconds.
    bound_us: float | None
    # Organizer's command to this device holding the schedule, milliseconds.
    schedule_latency_ms: float | None
    # From the start of its connection until its bound was <= TARGET_BOUND_US; None: never.
    time_to_bound_s: float | None


@dataclass(frozen=True)
class Summary:
    """The distribution over devices. Times in ms unless the name says otherwise."""

    devices: int
    scheduled: int  # devices that computed a start (had the schedule and an estimate)
    error_p50_ms: float
    error_p95_ms: float
    error_p99_ms: float
    error_max_ms: float
    bound_p50_ms: float
    bound_p99_ms: float
    coverage_pct: float  # share of all devices whose |error| <= bound
    schedule_last_ms: float  # command to the last device holding the schedule
    reached_bound: int  # devices whose bound reached TARGET_BOUND_US
    time_to_bound_p50_s: float | None  # None: fewer than half the devices got there
    time_to_bound_p99_s: float | None


def summarize(results: Sequence[DeviceResult]) -> Summary:
    """Percentiles (numpy, linear) of |start error|, bound, and times, over ``results``.

    Devices without a start count against coverage; error and bound percentiles
    are over the devices that have one (nan if none). A device that never
    reached the target bound counts as infinitely slow in the time-to-bound
    percentiles, which are None when they fall on such a device.
    """
    started = [r for r in results if r.start_error_us is not None and r.bound_us is not None]
    errors_ms = numpy.array([abs(r.start_error_us) / 1000 for r in started if r.start_error_us is not None])
    bounds_ms = numpy.array([r.bound_us / 1000 for r in started if r.bound_us is not None])
    covered = sum(1 for r in started if abs(r.start_error_us or 0.0) <= (r.bound_us or 0.0))
    latencies = [r.schedule_latency_ms for r in results if r.schedule_latency_ms is not None]
    reached = [r.time_to_bound_s for r in results if r.time_to_bound_s is not None]
    never = len(results) - len(reached)
    return Summary(
        devices=len(results),
        scheduled=len(started),
        error_p50_ms=_percentile(errors_ms, 50),
        error_p95_ms=_percentile(errors_ms, 95),
        error_p99_ms=_percentile(errors_ms, 99),
        error_max_ms=float(errors_ms.max()) if errors_ms.size else math.nan,
        bound_p50_ms=_percentile(bounds_ms, 50),
        bound_p99_ms=_percentile(bounds_ms, 99),
        coverage_pct=100.0 * covered / len(results) if results else math.nan,
        schedule_last_ms=max(latencies) if len(latencies) == len(results) and latencies else math.inf,
        reached_bound=len(reached),
        time_to_bound_p50_s=_percentile_or_never(reached, never, 50),
        time_to_bound_p99_s=_percentile_or_never(reached, never, 99),
    )


def _percentile(values: numpy.ndarray, q: float) -> float:
    return float(numpy.percentile(values, q)) if values.size else math.nan


def _percentile_or_never(finite: Sequence[float], never: int, q: float) -> float | None:
    """The q-th percentile when ``never`` more values are infinite; None if it lands on one."""
    if not finite:
        return None
    if never == 0:
        return float(numpy.percentile(finite, q))
    # numpy cannot interpolate towards inf (inf * 0 is nan); a stand-in above
    # every finite value gives the same ranks, and any weight on it means "never".
    top = max(finite)
    value = float(numpy.percentile(list(finite) + [top + 1.0] * never, q))
    return None if value > top else value


def format_table(summary: Summary, network: str) -> str:
    """The summary as a markdown table, one row."""
    if network in NETWORKS:
        low, high = NETWORKS[network]
        described = f"{network} ({low * 1e3:g}-{high * 1e3:g} ms one way)"
    else:
        described = f"{network} (bench.netmodels)"
    header = (
        "| devices | network | abs start error p50 / p95 / p99 / max (ms) | bound p50 / p99 (ms) "
        f"| coverage | command to last schedule (ms) | bound <= {TARGET_BOUND_US / 1000:g} ms after join p50 / p99 (s) |"
    )
    rule = "|---:|---|---|---|---:|---:|---|"
    devices = f"{summary.devices}" if summary.scheduled == summary.devices else f"{summary.scheduled}/{summary.devices}"
    row = (
        f"| {devices} | {described} "
        f"| {summary.error_p50_ms:.3f} / {summary.error_p95_ms:.3f} / {summary.error_p99_ms:.3f} / {summary.error_max_ms:.3f} "
        f"| {summary.bound_p50_ms:.2f} / {summary.bound_p99_ms:.2f} "
        f"| {summary.coverage_pct:.1f} % "
        f"| {summary.schedule_last_ms:.1f} "
        f"| {_seconds(summary.time_to_bound_p50_s)} / {_seconds(summary.time_to_bound_p99_s)}"
        f" ({summary.reached_bound}/{summary.devices} reached) |"
    )
    return "\n".join((header, rule, row))


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f}"


# --- one device, instrumented ------------------------------------------------------------


@dataclass
class BenchDevice(SimDevice):
    """A SimDevice that notes, in true time, when it joined, synced and got the schedule."""

    connect_true_ns: int | None = None
    bound_reached_true_ns: int | None = None
    schedule_true_ns: int | None = None
    measured_error_us: float | None = None
    measured_bound_us: float | None = None

    async def run(self, url: str) -> None:
        self.connect_true_ns = self.true_now_ns()
        await super().run(url)

    def _receive(self, data: bytes, up: _DelayLine) -> None:
        super()._receive(data, up)
        now_ns = self.true_now_ns()
        if self.estimate is not None and self.bound_reached_true_ns is None:
            if self.bound_us_at(self.device_now_us()) <= TARGET_BOUND_US:
                self.bound_reached_true_ns = now_ns
        schedule = self.schedule
        if self.schedule_true_ns is None and schedule is not None and schedule.start_us is not None:
            self.schedule_true_ns = now_ns
            if self.estimate is not None:
                # The phone schedules its audio now, with the estimate it holds now.
                self.measured_bound_us = self.bound_us_at(self.local_start_us(schedule.start_us))
                self.measured_error_us = self.start_error_us(schedule.start_us)

    def result(self, command_true_ns: int | None) -> DeviceResult:
        latency_ms = None
        if command_true_ns is not None and self.schedule_true_ns is not None:
            latency_ms = (self.schedule_true_ns - command_true_ns) / 1e6
        to_bound_s = None
        if self.connect_true_ns is not None and self.bound_reached_true_ns is not None:
            to_bound_s = (self.bound_reached_true_ns - self.connect_true_ns) / 1e9
        return DeviceResult(self.measured_error_us, self.measured_bound_us, latency_ms, to_bound_s)


# --- the server, in its own thread or in this loop ---------------------------------------


@dataclass(frozen=True)
class Served:
    hub: Hub
    ws_url: str
    organizer_url: str
    token: str


def write_silent_wav(path: Path, seconds: float, sample_rate: int = 8000) -> Path:
    """A silent mono 16-bit WAV: the server only needs its length."""
    with wave.open(str(path), "wb") as wav:
        wav.setparams((1, 2, sample_rate, 0, "NONE", "not compressed"))
        wav.writeframes(bytes(2 * int(seconds * sample_rate)))
    return path


def small_show(directory: Path) -> ShowSpec:
    tracks = {group: write_silent_wav(directory / f"{group}.wav", SHOW_TRACK_S) for group in ("red", "blue")}
    return ShowSpec(title="bench.sync", tracks=tracks, duration_ns=int(SHOW_TRACK_S * 1e9))


async def serve(directory: Path) -> tuple[web.AppRunner, Served]:
    """A real server on 127.0.0.1:0 in the running loop, with a small show."""
    token = secrets.token_urlsafe(24)
    config = ServerConfig(host="127.0.0.1", port=0, data_dir=directory / "var", organizer_token=token)
    app = make_app(config, small_show(directory))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    base = f"ws://127.0.0.1:{port}"
    return runner, Served(app[HUB], f"{base}/ws", f"{base}/ws/organizer", token)


class ServerThread:
    """``serve`` in a thread of its own with its own event loop."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="bench-server", daemon=True)
        self._served: Served | None = None
        self._failure: BaseException | None = None

    def start(self, timeout_s: float = 10.0) -> Served:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the server thread did not start in time")
        if self._failure is not None:
            raise RuntimeError("the server failed to start") from self._failure
        assert self._served is not None
        return self._served

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)

    def _main(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        runner: web.AppRunner | None = None
        try:
            runner, self._served = loop.run_until_complete(serve(self._directory))
        except BaseException as exc:  # reported to the starting thread
            self._failure = exc
        self._ready.set()
        if runner is not None:
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
        loop.close()


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    devices: int = 50
    seed: int = 1
    network: str = DEFAULT_NETWORK
    warmup_s: float = 5.0
    lead_ms: int = 2000
    server: str = "thread"  # "thread": own thread and loop; "shared": the devices' loop

    @property
    def timeout_s(self) -> float:
        return JOIN_SPREAD_S + self.warmup_s + self.lead_ms / 1000 + TIMEOUT_MARGIN_S


def make_devices(config: BenchConfig, true_now_ns: Callable[[], int]) -> list[BenchDevice]:
    """Seeded devices: clock offset, skew and each direction's delays from ``config.seed``."""
    rng = random.Random(config.seed)
    epoch_ns = true_now_ns()
    devices = []
    for i in range(config.devices):
        clock = SimClock(rng.randint(-MAX_OFFSET_NS, MAX_OFFSET_NS), rng.uniform(-MAX_SKEW_PPM, MAX_SKEW_PPM), epoch_ns)
        uplink, downlink = _delays(config, rng, i, epoch_ns, true_now_ns)
        devices.append(BenchDevice(clock, true_now_ns, uplink, downlink, name=f"bench-{i:03d}"))
    return devices


def _delays(
    config: BenchConfig, rng: random.Random, index: int, epoch_ns: int, true_now_ns: Callable[[], int]
) -> tuple[DelayFn, DelayFn]:
    """The device's uplink and downlink delay functions (seconds; NaN: the network is gone)."""
    if config.network in NETWORKS:
        low_s, high_s = NETWORKS[config.network]
        # Each direction draws from its own generator, so the delays a device
        # sees do not depend on how the event loop interleaves devices.
        return (
            uniform_delay(random.Random(rng.getrandbits(64)), low_s, high_s),
            uniform_delay(random.Random(rng.getrandbits(64)), low_s, high_s),
        )
    trace = netmodels.make_trace(config.network, config.seed, index, config.timeout_s + 5.0)

    def since_start() -> float:
        return (true_now_ns() - epoch_ns) / 1e9

    return (lambda: trace.up(since_start())), (lambda: trace.down(since_start()))


async def run_devices(config: BenchConfig, served: Served) -> list[DeviceResult]:
    """Join, warm up, start, and collect every device's result."""
    now_ns = served.hub.clock.now_ns
    devices = make_devices(config, now_ns)
    tasks: list[asyncio.Task[None]] = []

    async def join_later(device: BenchDevice, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await device.run(served.ws_url)

    try:
        for i, device in enumerate(devices):
            tasks.append(asyncio.create_task(join_later(device, i * JOIN_SPREAD_S / config.devices)))
        await asyncio.sleep(JOIN_SPREAD_S + config.warmup_s)
        broken = [t for t in tasks if t.done()]
        if broken:
            raise RuntimeError(f"{len(broken)} devices left before the start: {broken[0].exception()!r}")
        command_ns = await organizer_start(served, config.lead_ms, now_ns)
        await asyncio.gather(*(d.scheduled.wait() for d in devices))
        return [d.result(command_ns) for d in devices]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def organizer_start(served: Served, lead_ms: int, now_ns: Callable[[], int]) -> int:
    """Say hello, send ``start``; return the true time the command left."""
    async with websockets.connect(served.organizer_url) as ws:
        await ws.send(encode(Hello(v=PROTOCOL_VERSION, token=served.token)))
        await _next_overview(ws)  # authenticated
        command_ns = now_ns()
        await ws.send(encode(Start(lead_ms=lead_ms, confirm=True)))
        while (await _next_overview(ws)).state != "scheduled":
            pass
        return command_ns


async def _next_overview(ws: websockets.ClientConnection) -> Overview:
    while True:
        data = await ws.recv()
        message = decode(data if isinstance(data, bytes) else b"", SERVER_TO_ORGANIZER, 64 * 1024)
        if isinstance(message, Error):
            raise RuntimeError(f"organizer refused: {message.code}: {message.message}")
        if isinstance(message, Overview):
            return message


async def bench(config: BenchConfig) -> Summary:
    """One whole run, server included, within ``config.timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="unisono-bench-") as tmp:
        directory = Path(tmp)
        if config.server == "thread":
            thread = ServerThread(directory)
            served = await asyncio.to_thread(thread.start)
            stop: Callable[[], Awaitable[None]] = lambda: asyncio.to_thread(thread.stop)
        else:
            runner, served = await serve(directory)
            stop = runner.cleanup
        try:
            results = await asyncio.wait_for(run_devices(config, served), config.timeout_s)
        finally:
            await stop()
    return summarize(results)


# --- command line ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchConfig, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50, help="simulated devices (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of clocks and delays (default 1)")
    parser.add_argument("--network", choices=sorted(NETWORKS) + list(TRACE_NETWORKS), default=DEFAULT_NETWORK, help=f"delay model (default {DEFAULT_NETWORK})")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="sync time after the last join, before the start (default 5)")
    parser.add_argument("--lead-ms", type=int, default=2000, help="the start's lead, 1000..86400000 ms (default 2000)")
    parser.add_argument("--server", choices=("thread", "shared"), default="thread", help="server in its own thread and loop (default) or in the devices' loop")
    parser.add_argument("--out", type=Path, help="append a markdown result block to this file")
    args = parser.parse_args(argv)
    if args.devices < 1:
        parser.error("--devices: expected at least 1")
    if not args.warmup_s >= 0:
        parser.error("--warmup-s: expected >= 0")
    if not 1000 <= args.lead_ms <= 86_400_000:
        parser.error("--lead-ms: expected 1000..86400000 (PROTOCOL.md, start)")
    config = BenchConfig(args.devices, args.seed, args.network, args.warmup_s, args.lead_ms, args.server)
    out: Path | None = args.out
    return config, out


def result_block(config: BenchConfig, summary: Summary, argv: Sequence[str]) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m bench.sync", *argv])
    machine = f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"
    return (
        f"`{command}` ({when}; {machine}; seed {config.seed}, warm-up {config.warmup_s:g} s, "
        f"lead {config.lead_ms} ms, server {config.server}; {TRUTH_NOTE})\n\n{format_table(summary, config.network)}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config, out = parse_args(argv)
    try:
        summary = asyncio.run(bench(config))
    except TimeoutError:
        print(f"bench.sync: no result within {config.timeout_s:.0f} s", file=sys.stderr)
        return 1
    block = result_block(config, summary, _without_out(argv))
    print(block)
    if out is not None:
        with out.open("a", encoding="utf-8") as file:
            file.write("\n" + block)
    return 0 if summary.scheduled == summary.devices else 1


def _without_out(argv: Sequence[str]) -> list[str]:
    """The arguments minus ``--out PATH``: the file a block lands in is not part of its command."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            kept.append(arg)
    return kept


if __name__ == "__main__":
    sys.exit(main())
