"""GET /metrics in the Prometheus text format, and the event loop's lag.

One ``Metrics`` per application, with its own ``CollectorRegistry`` (never the
process-wide one: tests build many apps in one process). The fleet summary
(``server.fleet``) is read at scrape time, so a scrape costs one pass over the
devices and nothing is kept between scrapes but the message counters and the
loop-lag histogram.

In a cluster each node reports its own devices (a scrape of every node adds
up to the crowd; the console shows the whole cluster).

The loop lag is how late a timer fires on the server's event loop: how long
a message waits for its turn. Clock samples do not wait with it (a ping's t0
is stamped as it is written, a pong's t3 by the kernel), but schedules,
estimates and joins do.
"""

from __future__ import annotations

import asyncio
import bisect
import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import get_args

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol.messages import ShowState
from server.fleet import BOUND_EDGES_MS, Fleet

# What ``generate_latest`` writes: the classic text format. (prometheus-client
# 0.22+ names it CONTENT_TYPE_PLAIN_0_0_4; older versions have no such name.)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The monitor wakes every 50 ms: 20 samples a second is enough to catch a
# stall a phone would notice (a 10 ms bound) at a cost of nothing measurable.
LAG_INTERVAL_S = 0.05
# Percentiles over the last 30 s: long enough for a p99 of 600 samples, short
# enough that a stall during a join storm shows while the organizer looks.
LAG_WINDOW_S = 30.0
# Histogram buckets (seconds): from timer jitter (1 ms) to a stalled loop (2.5 s).
LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

READINESS_STAGES = ("connected", "downloaded", "unlocked", "synced", "ready")
SHOW_STATES: tuple[str, ...] = get_args(ShowState)


class LagWindow:
    """Lags (seconds) recorded over the last ``window_s`` seconds, and their percentiles. Pure: time is passed in."""

    def __init__(self, window_s: float = LAG_WINDOW_S, max_samples: int | None = None) -> None:
        self.window_s = window_s
        # A bound on memory whatever the caller's cadence: twice the samples the
        # monitor's own cadence puts in a window.
        limit = max_samples if max_samples is not None else 2 * math.ceil(window_s / LAG_INTERVAL_S)
        self._samples: deque[tuple[float, float]] = deque(maxlen=limit)

    def record(self, now_s: float, lag_s: float) -> None:
        """Keep ``lag_s`` measured at ``now_s`` (a monotonic clock); forget samples older than the window."""
        self._samples.append((now_s, max(0.0, lag_s)))
        oldest_s = now_s - self.window_s
        while self._samples and self._samples[0][0] < oldest_s:
            self._samples.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    def percentile_ms(self, q: float) -> float:
        """The nearest-rank ``q`` percentile (0 < q <= 100) of the window, in ms; 0.0 when empty."""
        if not 0 < q <= 100:
            raise ValueError(f"q: expected a percentile in (0, 100], found {q}")
        if not self._samples:
            return 0.0
        lags = sorted(lag for _, lag in self._samples)
        rank = math.ceil(q / 100 * len(lags))
        return lags[rank - 1] * 1000

    def max_ms(self) -> float:
        return max((lag for _, lag in self._samples), default=0.0) * 1000


class LoopLagMonitor:
    """Measures how late the running event loop wakes a sleeper; ``run`` is the task body."""

    def __init__(self, interval_s: float = LAG_INTERVAL_S, window_s: float = LAG_WINDOW_S) -> None:
        self.interval_s = interval_s
        self.window = LagWindow(window_s)
        # Not registered here: ``Metrics`` registers it in its own registry.
        self.histogram = Histogram(
            "unisono_event_loop_lag_seconds",
            "How late the event loop woke a timer (seconds)",
            buckets=LAG_BUCKETS_S,
            registry=None,
        )

    def record(self, now_s: float, lag_s: float) -> None:
        """One measurement: into the window and the histogram."""
        lag_s = max(0.0, lag_s)
        self.window.record(now_s, lag_s)
        self.histogram.observe(lag_s)

    async def run(self) -> None:
        """Sleep ``interval_s`` again and again, recording each wake-up's lateness. Runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            expected_s = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            now_s = loop.time()
            self.record(now_s, now_s - expected_s)

    def p50_ms(self) -> float:
        return self.window.percentile_ms(50)

    def p99_ms(self) -> float:
        return self.window.percentile_ms(99)

    def max_ms(self) -> float:
        return self.window.max_ms()


class Metrics:
    """The server's Prometheus metrics: counters fed by the endpoints, gauges read at scrape time.

    ``fleet``: returns ``server.fleet.summarize(..., keep_bounds=True)`` now
    (without ``keep_bounds`` the error-bound histogram is empty).
    ``show_state``: returns the show's state now ("idle", "scheduled", "playing", "ended").
    """

    def __init__(self, fleet: Callable[[], Fleet], show_state: Callable[[], str], loop_lag: LoopLagMonitor) -> None:
        self.registry = CollectorRegistry()
        self.loop_lag = loop_lag
        self._received = Counter(
            "unisono_messages_received",
            "Messages received from devices and organizers, by type",
            ["type"],
            registry=self.registry,
        )
        self._sent = Counter("unisono_messages_sent", "Messages sent to devices and organizers", registry=self.registry)
        self.registry.register(loop_lag.histogram)
        self._state = _StateCollector(fleet, show_state, loop_lag)
        self.registry.register(self._state)

    def count_received(self, message_type: str) -> None:
        """One message of ``message_type`` (its wire ``type``, e.g. "pong") was received."""
        self._received.labels(type=message_type).inc()

    def count_sent(self, count: int = 1) -> None:
        """``count`` messages were sent (a broadcast to n devices counts n)."""
        self._sent.inc(count)

    def set_clock_offset(self, offset_ms: float | None) -> None:
        """The server clock's offset from its upstream reference (ms); None removes the gauge."""
        self._state.clock_offset_ms = offset_ms

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE

    async def handler(self, request: web.Request) -> web.Response:
        """GET /metrics."""
        body, content_type = self.render()
        return web.Response(body=body, headers={"Content-Type": content_type})


class _StateCollector(Collector):
    """Gauges computed at scrape time from the fleet summary, the show and the loop-lag window."""

    def __init__(self, fleet: Callable[[], Fleet], show_state: Callable[[], str], loop_lag: LoopLagMonitor) -> None:
        self.fleet = fleet
        self.show_state = show_state
        self.loop_lag = loop_lag
        self.clock_offset_ms: float | None = None

    def describe(self) -> list[Metric]:
        # Without this the registry would call collect() (the fleet summary) at
        # registration to learn the names.
        return []

    def collect(self) -> Iterator[Metric]:
        summary = self.fleet()
        yield GaugeMetricFamily("unisono_devices_connected", "Devices connected now", value=summary.devices)
        groups = GaugeMetricFamily("unisono_group_devices", "Devices connected now, by group", labels=["group"])
        for name, counts in summary.groups.items():
            groups.add_metric([name], counts.connected)
        yield groups
        funnel = GaugeMetricFamily(
            "unisono_readiness_devices",
            "Devices at each readiness stage (connected, downloaded, audio unlocked, synced, all three)",
            labels=["stage"],
        )
        stages = summary.funnel.as_dict()
        for stage in READINESS_STAGES:
            funnel.add_metric([stage], stages[stage])
        yield funnel
        yield _bound_histogram(summary.bounds_ms)
        state = self.show_state()
        show = GaugeMetricFamily("unisono_show_state", "1 for the show's current state, 0 for the others", labels=["state"])
        for name in SHOW_STATES:
            show.add_metric([name], 1 if name == state else 0)
        yield show
        yield GaugeMetricFamily(
            "unisono_safe_lead_ms", "Shortest safe start lead for the devices' recent round trips (ms)", value=summary.lead_min_ms
        )
        yield GaugeMetricFamily(
            "unisono_event_loop_lag_p50_ms", "Median event loop lag over the last 30 s (ms)", value=self.loop_lag.p50_ms()
        )
        yield GaugeMetricFamily(
            "unisono_event_loop_lag_p99_ms", "99th percentile event loop lag over the last 30 s (ms)", value=self.loop_lag.p99_ms()
        )
        if self.clock_offset_ms is not None:
            yield GaugeMetricFamily(
                "unisono_upstream_clock_offset_ms",
                "Server clock minus its upstream reference (ms)",
                value=self.clock_offset_ms,
            )


def _bound_histogram(bounds_ms: list[float]) -> HistogramMetricFamily:
    """The devices' clock error bounds as a Prometheus histogram on ``BOUND_EDGES_MS`` (devices without an estimate are left out)."""
    ordered = sorted(bounds_ms)
    # bisect_right: an edge is inclusive (Prometheus "le"), as in server.fleet.
    buckets = [(str(float(edge)), float(bisect.bisect_right(ordered, edge))) for edge in BOUND_EDGES_MS]
    buckets.append(("+Inf", float(len(ordered))))
    return HistogramMetricFamily(
        "unisono_error_bound_ms",
        "Clock error bound of each device with an estimate (ms)",
        buckets=buckets,
        sum_value=math.fsum(ordered),
    )
