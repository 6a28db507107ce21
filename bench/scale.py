"""Scale: thousands of simulated phones against one real server process, on loopback.

    python -m bench.scale [--devices 1000[,5000,...]] [--clients K] [--steady-s 30]
                          [--lead-s 5] [--join-window-s 10] [--idle-devices 50]
                          [--compression deflate|none] [--loop asyncio[,uvloop]] [--rows PATH]
                          [--nodes N] [--redis]
                          [--json PATH] [--out bench/RESULTS.md]

For each N in ``--devices`` (and first for ``--idle-devices``, the idle
reference), a fresh server is started as a subprocess
(``python -m server.cli serve SHOW --host 127.0.0.1 --port 0 --data-dir TMP``,
a generated two-group show, its soft open-file limit raised to the hard one),
then N simulated devices in K client processes (``bench.scale_client``, one
asyncio loop each, ~3,000 websockets a process, spread over source addresses
127.0.0.2, .3, ...). Phases:

1. Join storm: device i connects at ``i * join_window_s / N``; join throughput
   (welcomes per second over the storm) and the time from the first connect
   until the last welcome; failures with their first reason.
2. Steady state for ``--steady-s`` (after the join bursts settle): server CPU
   (``/proc/PID/stat`` utime + stime; 100 % = one core), resident memory
   (``VmRSS``; per device = (RSS with N - RSS before the joins) / N), event-loop
   lag p50/p99 (``unisono_event_loop_lag_seconds`` histogram deltas over the
   window, interpolated within buckets, and the server's own 30 s p50/p99
   gauges), message rates (server counters) and the clients' CPU.
3. Start: ``POST /api/start {"in_s": lead_s, "confirm": true}``; for each device
   the true time its ``schedule`` arrived, minus the command's time.
4. Sync error: for each device, the offset its latest estimate gave when the
   schedule arrived minus its true offset, and whether the estimate's bound
   covered it; p50/p99/max of |error| under load, and the ratio of p99 to the
   idle run's.

Truth is the server's own clock (``clock/reference.py``: wall time at start +
CLOCK_MONOTONIC since), which every process here reads as
``time.monotonic_ns() + k_ns``; see ``bench.scale_client``.

Cluster (``--nodes N``, or ``--redis`` for one node): a private
``redis-server`` on a free loopback port (nothing saved), N server processes
``serve --redis URL`` with node 0's organizer token copied into the others'
data dirs; device i connects to node i % N, the start is sent to node 0. The
table then has a row for the cluster (CPU and memory summed over the nodes,
loop lag the worst node's, schedule and sync over every device) and one per
node (its own process and devices).

Only 127.0.0.0/8 is ever used. Every run has a hard timeout, and the server and
every client process are killed (by pid) when it ends, whatever happened.
The clients share the machine's cores with the server: on a 2-core machine the
figures are the server's under that competition.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy
from prometheus_client.parser import text_string_to_metric_families

from bench.scale_client import raise_nofile_limit

ROOT = Path(__file__).resolve().parent.parent
# Sockets the server needs besides one per device: listening socket, SQLite,
# logs, the API calls of this bench, Python's own files; measured well below.
SERVER_FD_MARGIN = 300
CLIENT_FD_MARGIN = 100
# Connections one client process holds: an asyncio loop of websockets keeps up
# with ~3,000 phones at 0.5-20 pings/s each on one core (measured here).
DEVICES_PER_CLIENT = 3000
# Devices per source address: 1,000 of the ~28,000 ephemeral ports of one
# (source, destination) pair, leaving room for TIME_WAIT from earlier runs.
DEVICES_PER_SOURCE = 1000
# Readiness report period of a device whose only news is its bound: PROTOCOL.md
# section 2 says at most every 30 s (the web page's READY_MIN_INTERVAL_MS).
READY_INTERVAL_S = 30.0
# After the last welcome, the join bursts (24-40 pings 50 ms apart,
# clock/session.py) end within 2 s; steady state is measured after this.
SETTLE_S = 3.0
SHOW_TRACK_S = 120.0  # longer than any run after its start: the show never ends during one
# Generous: the server may take this long to come up (it cuts the track first).
SERVER_START_TIMEOUT_S = 60.0
CLIENT_START_TIMEOUT_S = 30.0
# How long after the join window the storm may go on before it is a failure.
JOIN_GRACE_S = 30.0
SCHEDULE_GRACE_S = 20.0


# --- the show and the processes -----------------------------------------------------------


def write_show(directory: Path) -> Path:
    """A two-group show (silent 8 kHz WAVs) in ``directory``; returns the TOML's path."""
    for group in ("red", "blue"):
        with wave.open(str(directory / f"{group}.wav"), "wb") as wav:
            wav.setparams((1, 2, 8000, 0, "NONE", "not compressed"))
            wav.writeframes(bytes(2 * int(SHOW_TRACK_S * 8000)))
    text = 'title = "bench.scale"\n'
    for group in ("red", "blue"):
        text += f'\n[[groups]]\nname = "{group}"\ntrack = "{group}.wav"\n'
        text += f'\n[[groups.cues]]\nat = "0:01"\ntext_en = "{group}"\ntext_fr = "{group}"\n'
    path = directory / "show.toml"
    path.write_text(text, encoding="utf-8")
    return path


def server_cpus() -> set[int]:
    """--pin: the CPU the server processes keep to themselves (the last one this process may use)."""
    return {max(os.sched_getaffinity(0))}


def client_cpus() -> set[int]:
    """--pin: every other CPU, for the client processes."""
    return os.sched_getaffinity(0) - server_cpus()


def _raise_nofile_in_child() -> None:
    raise_nofile_limit()


def clock_k_ns() -> int:
    """wall - monotonic now, from the closest pair of readings out of a few (ns)."""
    best: tuple[int, int] | None = None
    for _ in range(5):
        m0 = time.monotonic_ns()
        w = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, w - (m0 + m1) // 2)
    assert best is not None
    return best[1]


@dataclass
class ProcSample:
    """The server's CPU time (s), resident memory (bytes) and this sample's monotonic time (s)."""

    at_s: float
    cpu_s: float
    rss_bytes: int
    wait_s: float = 0.0  # time runnable but waiting for a CPU (/proc/PID/schedstat, main thread)


def proc_sample(pid: int) -> ProcSample:
    """CPU time from /proc/PID/stat (utime + stime, fields 14-15) and VmRSS from /proc/PID/status."""
    at_s = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    try:
        wait_s = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        wait_s = math.nan
    return ProcSample(at_s, ticks / os.sysconf("SC_CLK_TCK"), rss_kb * 1024, wait_s)


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    """CPU used between two samples, in percent of one core."""
    return 100.0 * (after.cpu_s - before.cpu_s) / max(1e-9, after.at_s - before.at_s)


# --- /metrics --------------------------------------------------------------------------


LAG_METRIC = "unisono_event_loop_lag_seconds"


def parse_metrics(text: str) -> dict[str, Any]:
    """The figures this bench reads from /metrics: lag buckets and gauges, message counters."""
    buckets: dict[float, float] = {}
    out: dict[str, Any] = {"lag_buckets": buckets, "received": {}, "sent": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{LAG_METRIC}_bucket":
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == "unisono_event_loop_lag_p50_ms":
                out["lag_p50_ms"] = sample.value
            elif sample.name == "unisono_event_loop_lag_p99_ms":
                out["lag_p99_ms"] = sample.value
            elif sample.name == "unisono_messages_received_total":
                out["received"][sample.labels["type"]] = sample.value
            elif sample.name == "unisono_messages_sent_total":
                out["sent"] = sample.value
            elif sample.name == "unisono_devices_connected":
                out["devices"] = sample.value
    return out


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """The q-quantile (0..1) of the observations between two cumulative bucket snapshots, in the
    buckets' unit, interpolated linearly within a bucket (Prometheus' histogram_quantile); nan if none.
    An answer in the +Inf bucket is reported as the largest finite edge."""
    edges = sorted(after)
    counts = [after[e] - before.get(e, 0.0) for e in edges]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower_edge, lower_count = 0.0, 0.0
    for edge, count in zip(edges, counts):
        if count >= rank:
            if math.isinf(edge):
                return lower_edge
            if count == lower_count:
                return edge
            return lower_edge + (edge - lower_edge) * (rank - lower_count) / (count - lower_count)
        lower_edge, lower_count = edge, count
    return edges[-1]


# --- the figures of one run (pure) -----------------------------------------------------------


@dataclass
class RunResult:
    """Every figure of one run. Times in ms unless the name says otherwise; nan where not measured."""

    devices: int
    clients: int
    compression: str
    loop: str = "asyncio"  # the server's event loop (serve --loop)
    welcomed: int = 0
    failed: int = 0
    first_failure: str | None = None
    join_per_s: float = math.nan
    last_welcome_s: float = math.nan  # from the first connect to the last welcome
    welcome_latency_p50_ms: float = math.nan  # connect -> welcome, per device
    welcome_latency_p99_ms: float = math.nan
    join_cpu_pct: float = math.nan
    join_lag_p99_ms: float = math.nan
    cpu_pct: float = math.nan  # server, steady state, % of one core
    cpu_wait_pct: float = math.nan  # server runnable but not running (another process had the CPU), % of wall
    clients_cpu_pct: float = math.nan  # all client processes together, steady state
    rss_before_mb: float = math.nan
    rss_mb: float = math.nan
    kb_per_device: float = math.nan
    lag_p50_ms: float = math.nan  # steady state, from the histogram
    lag_p99_ms: float = math.nan
    lag_gauge_p50_ms: float = math.nan  # the server's own 30 s window at the end of steady state
    lag_gauge_p99_ms: float = math.nan
    received_per_s: dict[str, float] = field(default_factory=dict)
    sent_per_s: float = math.nan
    lead_s: float = math.nan
    start_refusal: str | None = None
    scheduled: int = 0
    schedule_p50_ms: float = math.nan
    schedule_p99_ms: float = math.nan
    schedule_max_ms: float = math.nan  # "schedule at the last device"
    # --t1 kernel: the last device among those whose schedule stamp is exact, and
    # how many devices' stamps are upper bounds only (read with a later frame).
    schedule_exact_max_ms: float = math.nan
    schedule_bounded: int = 0
    sync_devices: int = 0
    sync_p50_ms: float = math.nan  # |estimate - true offset| when the schedule arrived
    sync_p99_ms: float = math.nan
    sync_max_ms: float = math.nan
    bound_p50_ms: float = math.nan
    coverage_pct: float = math.nan  # share of devices with |error| <= bound
    wall_s: float = math.nan
    aborted: str | None = None  # why the run stopped early, if it did
    nodes: int = 1
    t1_source: str = "handling"  # what stamped the devices' t1 (--t1), as the clients report it
    # The server's own time for its last broadcast (the schedule): from its first
    # write to its last, from its log; nan if it logged none (a small crowd).
    server_broadcast_ms: float = math.nan
    # With several nodes: each node's own figures (its devices, its process); the
    # fields above are then the whole cluster's (CPU and memory summed, lag the worst node's).
    node_results: list[RunResult] = field(default_factory=list)


_BROADCAST_LOG = re.compile(r"broadcast to (\d+) devices: ([\d.]+) ms")


def last_broadcast_ms(log_path: Path) -> float:
    """How long the server's latest logged broadcast took (ms), or nan."""
    try:
        found = _BROADCAST_LOG.findall(log_path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return math.nan
    return float(found[-1][1]) if found else math.nan


def _pct(values: Sequence[float], q: float) -> float:
    return float(numpy.percentile(values, q)) if len(values) else math.nan


def device_figures(result: RunResult, rows: Sequence[dict[str, Any]], command_ns: int | None) -> None:
    """Fill join, schedule and sync figures of ``result`` from the clients' device rows."""
    welcomes = [r["first_ns"]["welcome"] for r in rows if "welcome" in r["first_ns"]]
    connects = [r["connect_ns"] for r in rows if r["connect_ns"] is not None]
    result.welcomed = len(welcomes)
    failures = [r["failure"] for r in rows if r["failure"] is not None]
    result.failed = len(failures)
    result.first_failure = failures[0] if failures else None
    if welcomes and connects:
        first_ns = min(connects)
        result.last_welcome_s = (max(welcomes) - first_ns) / 1e9
        result.join_per_s = len(welcomes) / max(1e-9, result.last_welcome_s)
        latencies = [(r["first_ns"]["welcome"] - r["connect_ns"]) / 1e6 for r in rows if "welcome" in r["first_ns"]]
        result.welcome_latency_p50_ms = _pct(latencies, 50)
        result.welcome_latency_p99_ms = _pct(latencies, 99)
    if command_ns is not None:
        delays = [(r["start_ns"] - command_ns) / 1e6 for r in rows if r["start_ns"] is not None]
        result.scheduled = len(delays)
        if delays:
            result.schedule_p50_ms = _pct(delays, 50)
            result.schedule_p99_ms = _pct(delays, 99)
            # The last device: a device that never got it makes this infinite.
            result.schedule_max_ms = max(delays) if len(delays) == len(rows) else math.inf
        # With kernel stamps: the last device whose stamp is its schedule's own
        # packet's, and how many stamps are only upper bounds (a later frame came
        # in the same read: see scale_client.stamp_arrivals).
        exact = [(r["start_ns"] - command_ns) / 1e6 for r in rows if r["start_ns"] is not None and r.get("start_exact")]
        result.schedule_bounded = sum(1 for r in rows if r["start_ns"] is not None and r.get("start_exact") is False)
        result.schedule_exact_max_ms = max(exact) if exact else math.nan
    synced = [r for r in rows if r["error_us"] is not None]
    result.sync_devices = len(synced)
    errors = [abs(r["error_us"]) / 1000 for r in synced]
    if errors:
        result.sync_p50_ms = _pct(errors, 50)
        result.sync_p99_ms = _pct(errors, 99)
        result.sync_max_ms = max(errors)
        result.bound_p50_ms = _pct([r["bound_us"] / 1000 for r in synced], 50)
        result.coverage_pct = 100.0 * sum(1 for r in synced if abs(r["error_us"]) <= r["bound_us"]) / len(rows)


# --- one run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    devices: int
    clients: int
    steady_s: float
    lead_s: float
    join_window_s: float
    compression: str
    seed: int = 1
    loop: str = "asyncio"
    nodes: int = 1  # server processes; more than one needs redis
    redis: bool = False  # serve --redis against a private redis-server
    pin: bool = False  # the server(s) alone on the last CPU, the clients on the others (--pin)
    t1: str = "handling"  # when the clients read t1: handling, read or kernel (--t1; see scale_client.ClientConfig)

    @property
    def timeout_s(self) -> float:
        return (
            SERVER_START_TIMEOUT_S * (2 if self.nodes > 1 else 1)  # node 0, then the others together
            + CLIENT_START_TIMEOUT_S
            + self.join_window_s
            + JOIN_GRACE_S
            + SETTLE_S
            + self.steady_s
            + self.lead_s
            + SCHEDULE_GRACE_S
            + 30.0  # reports and scrapes
        )


def auto_clients(devices: int) -> int:
    return max(1, math.ceil(devices / DEVICES_PER_CLIENT))


def fd_plan(devices: int, clients: int, nodes: int = 1) -> str | None:
    """None if the hard open-file limit holds each server's and each client's sockets, else why not."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return None
    per_node = math.ceil(devices / nodes)
    need = per_node + SERVER_FD_MARGIN
    if need > hard:
        return (
            f"{per_node} devices need about {need} open files in a server process "
            f"({per_node} sockets + {SERVER_FD_MARGIN}), over the hard limit of {hard} (ulimit -Hn): not run"
        )
    per_client = math.ceil(devices / clients) + CLIENT_FD_MARGIN
    if per_client > hard:
        return f"{per_client} open files per client process exceed the hard limit of {hard}: use more --clients"
    return None


@dataclass
class Node:
    """A server process of the run and what it printed."""

    proc: asyncio.subprocess.Process
    base_url: str
    token: str


# What steady_figures fills in.
STEADY_FIELDS = (
    "cpu_pct", "cpu_wait_pct", "rss_mb", "kb_per_device", "lag_p50_ms", "lag_p99_ms",
    "lag_gauge_p50_ms", "lag_gauge_p99_ms", "received_per_s", "sent_per_s",
)  # fmt: skip


def steady_figures(
    result: RunResult, before_join: ProcSample, a: ProcSample, b: ProcSample, ma: dict[str, Any], mb: dict[str, Any]
) -> None:
    """One server's steady-state figures from its samples and /metrics at the window's two ends."""
    window_s = b.at_s - a.at_s
    result.cpu_pct = cpu_percent(a, b)
    result.cpu_wait_pct = 100.0 * (b.wait_s - a.wait_s) / window_s
    result.rss_mb = b.rss_bytes / 2**20
    connected = mb.get("devices", 0)
    if connected:
        result.kb_per_device = (b.rss_bytes - before_join.rss_bytes) / 1024 / connected
    result.lag_p50_ms = 1000 * histogram_quantile(0.50, ma["lag_buckets"], mb["lag_buckets"])
    result.lag_p99_ms = 1000 * histogram_quantile(0.99, ma["lag_buckets"], mb["lag_buckets"])
    result.lag_gauge_p50_ms = mb.get("lag_p50_ms", math.nan)
    result.lag_gauge_p99_ms = mb.get("lag_p99_ms", math.nan)
    result.received_per_s = {
        kind: (count - ma["received"].get(kind, 0.0)) / window_s for kind, count in mb["received"].items()
    }
    result.sent_per_s = (mb["sent"] - ma["sent"]) / window_s


def cluster_figures(
    result: RunResult, parts: Sequence[RunResult], rss_before: Sequence[int], rss_after: Sequence[int], mb: Sequence[dict[str, Any]]
) -> None:
    """The whole cluster's figures from its nodes': CPU and memory summed, lag and waits the worst node's."""
    result.cpu_pct = sum(p.cpu_pct for p in parts)
    result.join_cpu_pct = sum(p.join_cpu_pct for p in parts)
    result.cpu_wait_pct = max(p.cpu_wait_pct for p in parts)
    result.rss_before_mb = sum(rss_before) / 2**20
    result.rss_mb = sum(rss_after) / 2**20
    connected = sum(m.get("devices", 0) for m in mb)
    if connected:
        result.kb_per_device = (sum(rss_after) - sum(rss_before)) / 1024 / connected
    for name in ("lag_p50_ms", "lag_p99_ms", "lag_gauge_p50_ms", "lag_gauge_p99_ms", "join_lag_p99_ms"):
        setattr(result, name, max(getattr(p, name) for p in parts))
    kinds = {kind for p in parts for kind in p.received_per_s}
    result.received_per_s = {kind: sum(p.received_per_s.get(kind, 0.0) for p in parts) for kind in kinds}
    result.sent_per_s = sum(p.sent_per_s for p in parts)


class Run:
    """One server, its clients, the four phases. ``execute`` never leaves a process behind."""

    def __init__(self, config: RunConfig, log: Any) -> None:
        self.config = config
        self.log = log
        self.server: asyncio.subprocess.Process | None = None
        self.clients: list[asyncio.subprocess.Process] = []
        self.progress: dict[int, dict[str, Any]] = {}
        self.reports: dict[int, list[dict[str, Any]]] = {}
        self.readers: list[asyncio.Task[None]] = []
        self.result = RunResult(config.devices, config.clients, config.compression, loop=config.loop, nodes=config.nodes)
        self.nodes: list[Node] = []
        self.procs: list[asyncio.subprocess.Process] = []  # every server started, up or not
        self.server_logs: list[Any] = []
        self.server_log_paths: list[Path] = []
        self.redis: asyncio.subprocess.Process | None = None
        self.base_url = ""
        self.token = ""
        self.k_ns = 0
        self.py_spy: str | None = None
        self.profile_path: Path | None = None
        self.rows_path: Path | None = None  # where every device's row goes (JSON lines), if anywhere

    async def execute(self, tmp: Path) -> RunResult:
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._phases(tmp), self.config.timeout_s)
        except asyncio.TimeoutError:
            self.result.aborted = self.result.aborted or f"hard timeout of {self.config.timeout_s:.0f} s"
        except RunAborted as exc:
            self.result.aborted = str(exc)
        finally:
            await self._kill_all()
            self.result.wall_s = time.monotonic() - started
        return self.result

    def now_ns(self) -> int:
        return time.monotonic_ns() + self.k_ns

    async def _phases(self, tmp: Path) -> None:
        config = self.config
        show = write_show(tmp)
        redis_url = await self._start_redis(tmp) if config.redis else None
        await self._start_nodes(show, tmp, redis_url)
        nodes = self.nodes
        pids = [node.proc.pid for node in nodes]
        # Each node's own figures; with one node they are the run's.
        parts = [RunResult(0, config.clients, config.compression, loop=config.loop) for _ in nodes]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            self.http = http
            await self._start_clients()
            before_join = [proc_sample(pid) for pid in pids]
            metrics_before_join = [await self._metrics(node) for node in nodes]
            for part, sample in zip(parts, before_join):
                part.rss_before_mb = sample.rss_bytes / 2**20

            # 1. join storm
            t0_ns = self.now_ns() + 500_000_000
            await self._tell_clients({"cmd": "join", "t0_ns": t0_ns})
            self.log(f"  join storm: {config.devices} devices over {config.join_window_s:g} s")
            deadline = time.monotonic() + 0.5 + config.join_window_s + JOIN_GRACE_S
            while True:
                await asyncio.sleep(0.5)
                welcomed = self._total("welcomed")
                failed = self._total("failed")
                if welcomed + failed >= config.devices and self._total("connecting") >= config.devices:
                    break
                if time.monotonic() > deadline:
                    self.log(f"  join storm: only {welcomed} welcomed, {failed} failed by the deadline")
                    break
            after_join = [proc_sample(pid) for pid in pids]
            metrics_after_join = [await self._metrics(node) for node in nodes]
            for k, part in enumerate(parts):
                part.join_cpu_pct = cpu_percent(before_join[k], after_join[k])
                part.join_lag_p99_ms = 1000 * histogram_quantile(
                    0.99, metrics_before_join[k]["lag_buckets"], metrics_after_join[k]["lag_buckets"]
                )
            self.log(f"  joined: {self._total('welcomed')} welcomed, {self._total('failed')} failed")
            if self._total("welcomed") == 0:
                raise RunAborted(f"no device was welcomed; first failure: {self._first_failure()}")

            # 2. steady state
            await asyncio.sleep(SETTLE_S)
            a, ca = [proc_sample(pid) for pid in pids], self._clients_cpu()
            ma = [await self._metrics(node) for node in nodes]
            if self.py_spy is not None:
                self._start_profile(pids[0], config.steady_s)
            await asyncio.sleep(config.steady_s)
            b, cb = [proc_sample(pid) for pid in pids], self._clients_cpu()
            mb = [await self._metrics(node) for node in nodes]
            window_s = b[0].at_s - a[0].at_s
            for k, part in enumerate(parts):
                steady_figures(part, before_join[k], a[k], b[k], ma[k], mb[k])
            self.result.clients_cpu_pct = 100.0 * (cb - ca) / window_s
            if len(nodes) == 1:
                part = parts[0]
                for name in STEADY_FIELDS + ("join_cpu_pct", "join_lag_p99_ms", "rss_before_mb"):
                    setattr(self.result, name, getattr(part, name))
            else:
                cluster_figures(self.result, parts, [sample.rss_bytes for sample in before_join], [sample.rss_bytes for sample in b], mb)
            self.log(
                f"  steady {window_s:.0f} s: server CPU {self.result.cpu_pct:.0f} %, RSS {self.result.rss_mb:.0f} MB, "
                f"lag p99 {self.result.lag_p99_ms:.1f} ms"
            )

            # 3. start (on node 0)
            command_ns = await self._start_show()
            deadline = time.monotonic() + self.result.lead_s + SCHEDULE_GRACE_S
            alive = self._total("welcomed") - self._total("failed")
            while self._total("scheduled") < alive and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                alive = self._total("welcomed") - self._total("failed")

            # 4. reports
            rows = await self._collect_reports()
            device_figures(self.result, rows, command_ns)
            self.result.t1_source = ",".join(sorted({str(p.get("t1_source", config.t1)) for p in self.progress.values()}))
            for log_file in self.server_logs:
                log_file.flush()
            self.result.server_broadcast_ms = last_broadcast_ms(self.server_log_paths[0])
            if len(nodes) > 1:
                for k, part in enumerate(parts):
                    mine = [row for row in rows if row["i"] % len(nodes) == k]
                    part.devices = len(mine)
                    device_figures(part, mine, command_ns)
                self.result.node_results = parts
            if self.rows_path is not None:
                with self.rows_path.open("w", encoding="utf-8") as out:
                    for row in rows:
                        out.write(json.dumps(row) + "\n")
            if self.profile_path is not None:
                self.log(f"  server profile (node 0): {self.profile_path}")

    async def _start_redis(self, tmp: Path) -> str:
        """A private redis-server on a free loopback port, nothing saved; returns its URL."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.redis = await asyncio.create_subprocess_exec(
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp), "--maxclients", "1000",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10.0
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PING\r\n")
                answer = await reader.readline()
                writer.close()
                if answer.startswith(b"+PONG"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RunAborted(f"redis-server ({binary}) did not answer on port {port} within 10 s")
            await asyncio.sleep(0.1)
        self.log(f"  redis-server pid {self.redis.pid} on 127.0.0.1:{port}")
        return f"redis://127.0.0.1:{port}/0"

    async def _start_nodes(self, show: Path, tmp: Path, redis_url: str | None) -> None:
        """Node 0, then (with its organizer token copied into their data dirs) the others together."""
        first = await self._start_server(show, tmp / "var", tmp / "server.log", redis_url)
        self.nodes.append(first)
        self.server, self.base_url, self.token = first.proc, first.base_url, first.token
        # The anchor (wall, monotonic) was read at the hub's creation, just before;
        # wall - monotonic is the same now unless the wall clock was slewed meanwhile.
        self.k_ns = clock_k_ns()
        others = []
        for k in range(1, self.config.nodes):
            data_dir = tmp / f"var{k}"
            data_dir.mkdir(parents=True)
            shutil.copy(tmp / "var" / "organizer-token", data_dir / "organizer-token")
            others.append(self._start_server(show, data_dir, tmp / f"server{k}.log", redis_url))
        self.nodes.extend(await asyncio.gather(*others))

    async def _start_server(self, show: Path, data_dir: Path, log_path: Path, redis_url: str | None = None) -> Node:
        cmd = [
            sys.executable, "-m", "server.cli", "serve", str(show),
            "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir), "--loop", self.config.loop,
        ]  # fmt: skip
        if redis_url is not None:
            cmd += ["--redis", redis_url]
        log_file = log_path.open("wb")
        self.server_logs.append(log_file)
        self.server_log_paths.append(log_path)
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=_raise_nofile_in_child,
            start_new_session=True,
        )
        self.procs.append(proc)
        if self.config.pin:
            os.sched_setaffinity(proc.pid, server_cpus())  # threads it starts later inherit it
        assert proc.stdout is not None
        pattern = re.compile(r"organizer:\s+http://(127\.0\.0\.1):(\d+)/organizer\.html\?token=(\S+)")

        async def read_urls() -> Node:
            assert proc.stdout is not None
            while True:
                line = await proc.stdout.readline()
                if not line:
                    raise RunAborted(f"the server exited before serving; see {log_path}")
                match = pattern.search(line.decode("utf-8", "replace"))
                if match:
                    return Node(proc, f"http://{match.group(1)}:{match.group(2)}", match.group(3))

        try:
            node = await asyncio.wait_for(read_urls(), SERVER_START_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise RunAborted(f"the server did not print its URLs within {SERVER_START_TIMEOUT_S:g} s") from None
        soft, hard = _nofile_of(proc.pid)
        self.log(f"  server pid {proc.pid} at {node.base_url}, open files {soft}/{hard}")
        return node

    async def _start_clients(self) -> None:
        config = self.config
        per = math.ceil(config.devices / config.clients)
        ws_urls = [node.base_url.replace("http://", "ws://") + "/ws" for node in self.nodes]
        tag = f"{config.devices}-{os.getpid()}"
        for k in range(config.clients):
            first = k * per
            count = min(per, config.devices - first)
            if count <= 0:
                break
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.scale_client",
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=2**26,
            )  # fmt: skip
            self.clients.append(proc)
            if config.pin:
                os.sched_setaffinity(proc.pid, client_cpus())
            client_config = {
                "url": ws_urls[0], "urls": ws_urls, "first": first, "count": count, "total": config.devices,
                "join_window_s": config.join_window_s, "ready_interval_s": READY_INTERVAL_S,
                "k_ns": self.k_ns, "seed": config.seed, "per_source": DEVICES_PER_SOURCE,
                "compression": config.compression, "run_tag": tag, "t1": config.t1,
            }  # fmt: skip
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(client_config) + "\n").encode())
            await proc.stdin.drain()
            self.readers.append(asyncio.create_task(self._read_client(k, proc)))
        deadline = time.monotonic() + CLIENT_START_TIMEOUT_S
        while len(self.progress) < len(self.clients):
            if time.monotonic() > deadline:
                raise RunAborted(f"only {len(self.progress)} of {len(self.clients)} client processes came up")
            await asyncio.sleep(0.1)

    async def _read_client(self, k: int, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            event = json.loads(line)
            if event["ev"] in ("up", "progress"):
                self.progress[k] = event
            elif event["ev"] == "report":
                self.reports[k] = event["devices"]

    async def _tell_clients(self, command: dict[str, Any]) -> None:
        line = (json.dumps(command) + "\n").encode()
        for proc in self.clients:
            assert proc.stdin is not None
            proc.stdin.write(line)
            await proc.stdin.drain()

    def _total(self, key: str) -> int:
        return sum(int(p.get(key, 0)) for p in self.progress.values())

    def _first_failure(self) -> str | None:
        return next((p["first_failure"] for p in self.progress.values() if p.get("first_failure")), None)

    def _clients_cpu(self) -> float:
        total = 0.0
        for proc in self.clients:
            try:
                total += proc_sample(proc.pid).cpu_s
            except (OSError, ValueError):
                pass
        return total

    async def _metrics(self, node: Node) -> dict[str, Any]:
        async with self.http.get(f"{node.base_url}/metrics") as response:
            return parse_metrics(await response.text())

    async def _start_show(self) -> int | None:
        """POST /api/start; returns the command's true time (ns), or None if refused."""
        lead_s = self.config.lead_s
        headers = {"Authorization": f"Bearer {self.token}", "X-Unisono-Client": "bench.scale"}
        for _ in range(2):
            command_ns = self.now_ns()
            async with self.http.post(
                f"{self.base_url}/api/start", json={"in_s": lead_s, "confirm": True}, headers=headers
            ) as response:
                body = await response.json(content_type=None)
                answered_ms = (self.now_ns() - command_ns) / 1e6
            if response.status < 300:
                self.result.lead_s = lead_s
                self.log(f"  start in {lead_s:g} s: answered in {answered_ms:.0f} ms")
                return command_ns
            self.result.start_refusal = f"{response.status} {body.get('error')}: {body.get('message')}"
            self.log(f"  start refused: {self.result.start_refusal}")
            if body.get("error") != "too_soon":
                return None
            async with self.http.get(f"{self.base_url}/api/status", headers=headers) as status:
                lead_min_ms = (await status.json())["lead_min_ms"]
            lead_s = math.ceil(lead_min_ms / 1000) + 1.0
        return None

    async def _collect_reports(self) -> list[dict[str, Any]]:
        await self._tell_clients({"cmd": "report"})
        deadline = time.monotonic() + 30.0
        while len(self.reports) < len(self.clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return [row for k in sorted(self.reports) for row in self.reports[k]]

    def _start_profile(self, pid: int, seconds: float) -> None:
        assert self.py_spy is not None
        self.profile_path = Path(tempfile.gettempdir()) / f"unisono-scale-{self.config.devices}-{pid}.txt"
        duration = max(1, int(seconds) - 1)
        self.profiler = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                self.py_spy, "record", "--pid", str(pid), "--duration", str(duration), "--format", "raw",
                "--nonblocking", "--output", str(self.profile_path),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
        )  # fmt: skip

    async def _kill_all(self) -> None:
        """Kill every process this run started, by pid (each leads its own session)."""
        procs = list(self.clients) + self.procs + ([self.redis] if self.redis is not None else [])
        for proc in procs:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                pass
        for task in self.readers:
            task.cancel()
        profiler = getattr(self, "profiler", None)
        if profiler is not None and profiler.done() and not profiler.cancelled():
            spy = profiler.result()
            if spy.returncode is None:
                try:
                    await asyncio.wait_for(spy.wait(), 10)
                except asyncio.TimeoutError:
                    spy.kill()
        for log_file in self.server_logs:
            log_file.close()


class RunAborted(Exception):
    """A run cannot go on; the text says where and why."""


def _nofile_of(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            parts = line.split()
            return parts[3], parts[4]
    return "?", "?"


# --- the report --------------------------------------------------------------------------


def _f(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:.{digits}f}"


def format_table(results: Sequence[RunResult], idle: RunResult | None) -> str:
    """One markdown row a run: the figures of the brief, idle reference last."""
    header = (
        "| devices | clients | welcomed / failed | join/s | last welcome (s) | CPU % (server) | CPU % (clients) "
        "| RSS (MB) | KB per device | loop lag p50 / p99 (ms) | schedule at devices p50 / p99 / last (ms) "
        "| sync abs error p50 / p99 / max (ms) | coverage | sync p99 idle (ms) | p99 loaded / idle |"
    )
    rule = "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|"
    lines = [header, rule]
    idle_p99 = idle.sync_p99_ms if idle is not None else math.nan
    rows: list[tuple[RunResult, str]] = []
    for r in list(results) + ([idle] if idle is not None else []):
        rows.append((r, ""))
        rows.extend((part, f" node {k}") for k, part in enumerate(r.node_results))
    for r, node in rows:
        is_idle = r is idle
        ratio = r.sync_p99_ms / idle_p99 if idle_p99 and not math.isnan(idle_p99) and not is_idle else math.nan
        name = f"{r.devices} (idle)" if is_idle else f"{r.devices}"
        if r.loop != "asyncio":
            name += f" {r.loop}"
        if r.nodes > 1:
            name += f" ({r.nodes} nodes)"
        name += node
        lines.append(
            f"| {name} | {r.clients} | {r.welcomed} / {r.failed} | {_f(r.join_per_s, 0)} | {_f(r.last_welcome_s, 2)} "
            f"| {_f(r.cpu_pct, 0)} | {_f(r.clients_cpu_pct, 0)} | {_f(r.rss_mb, 0)} | {_f(r.kb_per_device, 1)} "
            f"| {_f(r.lag_p50_ms, 2)} / {_f(r.lag_p99_ms, 2)} "
            f"| {_f(r.schedule_p50_ms, 0)} / {_f(r.schedule_p99_ms, 0)} / {_f(r.schedule_max_ms, 0)} "
            f"| {_f(r.sync_p50_ms, 3)} / {_f(r.sync_p99_ms, 3)} / {_f(r.sync_max_ms, 3)} | {_f(r.coverage_pct, 1)} % "
            f"| {'' if is_idle else _f(idle_p99, 3)} | {'' if is_idle else _f(ratio, 2)} |"
        )
    return "\n".join(lines)


def format_notes(results: Sequence[RunResult]) -> str:
    """What the table leaves out: message rates, join latencies, lag gauges, refusals, aborts."""
    lines = []
    labelled = [item for run in results for item in [(run, ""), *((p, f" node {k}") for k, p in enumerate(run.node_results))]]
    for r, node in labelled:
        rates = ", ".join(f"{kind} {rate:.0f}/s" for kind, rate in sorted(r.received_per_s.items()))
        lines.append(
            f"- {r.devices}{'' if r.loop == 'asyncio' else ' ' + r.loop}{node}: received {rates or '-'}; sent {_f(r.sent_per_s, 0)}/s; connect to welcome p50 / p99 "
            f"{_f(r.welcome_latency_p50_ms, 0)} / {_f(r.welcome_latency_p99_ms, 0)} ms; server CPU during the join "
            f"storm {_f(r.join_cpu_pct, 0)} %; server waiting for a CPU in steady state {_f(r.cpu_wait_pct, 0)} % of the time; loop lag p99 then {_f(r.join_lag_p99_ms, 1)} ms; lag gauges (last 30 s) "
            f"p50 / p99 {_f(r.lag_gauge_p50_ms, 2)} / {_f(r.lag_gauge_p99_ms, 2)} ms; RSS before the joins "
            f"{_f(r.rss_before_mb, 0)} MB; bound p50 {_f(r.bound_p50_ms, 2)} ms; lead {_f(r.lead_s, 0)} s; "
            f"scheduled {r.scheduled}/{r.devices}; the server's broadcast of the schedule took {_f(r.server_broadcast_ms, 0)} ms; "
            f"schedule at the last device whose stamp is exact {_f(r.schedule_exact_max_ms, 0)} ms ({r.schedule_bounded} stamps only upper bounds); t1 stamped at {r.t1_source}; wall {_f(r.wall_s, 0)} s"
            + (f"; first failure: {r.first_failure}" if r.first_failure else "")
            + (f"; start refused: {r.start_refusal}" if r.start_refusal else "")
            + (f"; ABORTED: {r.aborted}" if r.aborted else "")
        )
    return "\n".join(lines)


def machine() -> str:
    return f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"


# --- command line -----------------------------------------------------------------------


def parse_devices(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive device counts separated by commas, found {text!r}")
    return values


def parse_loops(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values or any(v not in ("asyncio", "uvloop") for v in values):
        raise argparse.ArgumentTypeError(f"expected asyncio and/or uvloop separated by commas, found {text!r}")
    return values


async def run_all(args: argparse.Namespace) -> tuple[list[RunResult], RunResult | None]:
    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    spy = shutil.which("py-spy") if args.profile else None
    if args.profile and spy is None:
        log("--profile: py-spy is not on PATH; running without a profile")
    results: list[RunResult] = []
    idle: RunResult | None = None
    plan: list[tuple[int, bool, str]] = ([(args.idle_devices, True, args.loop[0])] if args.idle_devices else []) + [
        (n, False, loop) for n in args.devices for loop in args.loop
    ]
    for devices, is_idle, loop in plan:
        clients = args.clients or auto_clients(devices)
        clients = min(clients, devices)
        problem = fd_plan(devices, clients, args.nodes)
        label = f"{devices} devices{' (idle reference)' if is_idle else ''}, {clients} client processes, {loop} loop"
        if args.nodes > 1 or args.redis:
            label += f", {args.nodes} node{'s' if args.nodes > 1 else ''} on Redis"
        if problem is not None:
            log(f"{label}: {problem}")
            result = RunResult(devices, clients, args.compression, loop=loop, aborted=problem)
            results.append(result)
            break
        log(f"{label}:")
        config = RunConfig(
            devices, clients, args.steady_s, args.lead_s, args.join_window_s, args.compression,
            loop=loop, nodes=args.nodes, redis=args.redis or args.nodes > 1, pin=args.pin, t1=args.t1,
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="unisono-scale-") as tmp:
            run = Run(config, log)
            if not is_idle:
                run.py_spy = spy
            if args.rows is not None:
                run.rows_path = args.rows.with_name(
                    f"{args.rows.stem}-{devices}-{loop}{'-idle' if is_idle else ''}{args.rows.suffix}"
                )
            result = await run.execute(Path(tmp))
            if result.aborted:
                log(f"  ABORTED: {result.aborted}")
                server_log = Path(tmp) / "server.log"
                if server_log.exists():
                    tail = server_log.read_text(errors="replace").splitlines()[-5:]
                    for line in tail:
                        log(f"  server: {line}")
        if is_idle:
            idle = result
        else:
            results.append(result)
    return results, idle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=parse_devices, default=[1000], help="device counts, e.g. 1000,5000 (default 1000)")
    parser.add_argument("--clients", type=int, default=0, help=f"client processes (default: one per {DEVICES_PER_CLIENT} devices)")
    parser.add_argument("--steady-s", type=float, default=30.0, help="steady-state window (default 30)")
    parser.add_argument("--lead-s", type=float, default=5.0, help="the start's lead (default 5)")
    parser.add_argument("--join-window-s", type=float, default=10.0, help="all devices join within this (default 10)")
    parser.add_argument("--idle-devices", type=int, default=50, help="devices of the idle reference run; 0: none (default 50)")
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate",
                        help="offer permessage-deflate as browsers do (default), or not")  # fmt: skip
    parser.add_argument("--loop", type=parse_loops, default=["asyncio"],
                        help="the server's event loop(s), e.g. asyncio,uvloop: each device count runs once per loop (default asyncio)")  # fmt: skip
    parser.add_argument("--nodes", type=int, default=1, help="server processes sharing the show through Redis (default 1); devices spread over them, the start on node 0")
    parser.add_argument("--redis", action="store_true", help="run the nodes with serve --redis against a private redis-server (implied by --nodes > 1)")
    parser.add_argument("--pin", action="store_true",
                        help="keep the server(s) alone on the last CPU and the clients on the others, so the load generator cannot take the server's core (needs 2+ CPUs)")
    parser.add_argument("--t1", choices=("handling", "read", "kernel"), default="handling",
                        help="when the simulated phones read t1: when their shared loop gets to a ping (handling, the default), as its frame is "
                        "parsed from its bytes (read), or the kernel's receive stamp of those bytes (kernel, as the server stamps t3). A phone "
                        "reads its own ping alone; thousands sharing a core wait for each other")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="py-spy record the server during steady state (py-spy on PATH)")
    parser.add_argument("--rows", type=Path, default=None,
                        help="write each device's row (JSON lines) to PATH-N.jsonl, N the run's device count")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    parser.add_argument("--out", type=Path, default=None, help="append the command, date, machine and table to this file")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error(f"--nodes: expected at least 1, found {args.nodes}")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error("--pin: needs at least 2 CPUs (one for the server, the rest for the clients)")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results, idle = asyncio.run(run_all(args))
    table = format_table(results, idle)
    notes = format_notes(results + ([idle] if idle is not None else []))
    command = "python -m bench.scale " + " ".join(argv if argv is not None else sys.argv[1:])
    placement = (
        f"server on CPU {sorted(server_cpus())}, clients on CPUs {sorted(client_cpus())}" if args.pin
        else "clients share the cores with the server"
    )
    block = f"`{command}` ({when}; {machine()}; {placement})\n\n{table}\n\n{notes}\n"
    print(block)
    if args.json is not None:
        document = {
            "command": command, "date": when, "machine": machine(),
            "runs": [asdict(r) for r in results], "idle": asdict(idle) if idle is not None else None,
        }  # fmt: skip
        args.json.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
    if args.out is not None:
        with args.out.open("a", encoding="utf-8") as out:
            out.write("\n" + block)
    ok = all(r.aborted is None and r.scheduled == r.devices for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
