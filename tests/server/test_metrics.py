"""server.metrics: the loop-lag window, the exported families, and GET /metrics on a real app."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from clock.session import DeviceSession
from server.fleet import BOUND_EDGES_MS, Fleet, GroupCounts, summarize
from server.metrics import CONTENT_TYPE, LagWindow, LoopLagMonitor, Metrics

MS = 1_000_000
S = 1_000_000_000
NOW_NS = 100 * S


def values(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered exposition: (name, sorted labels) -> value."""
    body, _ = metrics.render()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def hand_made_fleet(bounds_ms: list[float]) -> Fleet:
    return Fleet(
        groups={"red": GroupCounts(connected=3, ready=1), "blue": GroupCounts(connected=2)},
        funnel=GroupCounts(connected=5, downloaded=4, unlocked=3, synced=2, ready=1),
        bound_counts=[],
        bound_unknown=5 - len(bounds_ms),
        laggards=[],
        lead_min_ms=1234,
        bounds_ms=bounds_ms,
    )


def make_metrics(fleet: Fleet, state: str = "idle") -> Metrics:
    return Metrics(lambda: fleet, lambda: state, LoopLagMonitor())


# --- the lag window (pure) -------------------------------------------------


def test_window_percentiles_nearest_rank() -> None:
    """p50 and p99 are nearest-rank percentiles of the kept lags, in ms."""
    window = LagWindow(window_s=30)
    for i in range(1, 101):  # lags 1..100 ms, one every 50 ms
        window.record(i * 0.05, i / 1000)
    assert window.percentile_ms(50) == pytest.approx(50)
    assert window.percentile_ms(99) == pytest.approx(99)
    assert window.percentile_ms(100) == pytest.approx(100)
    assert window.max_ms() == pytest.approx(100)


def test_window_forgets_samples_older_than_the_window() -> None:
    """A stall 31 s ago no longer counts once a newer sample arrives."""
    window = LagWindow(window_s=30)
    window.record(0.0, 2.0)
    window.record(31.0, 0.001)
    assert len(window) == 1
    assert window.max_ms() == pytest.approx(1)


def test_window_empty_and_negative() -> None:
    """An empty window reads 0; a negative lag (timer fired early) counts as 0."""
    window = LagWindow()
    assert window.percentile_ms(99) == 0.0 and window.max_ms() == 0.0
    window.record(1.0, -0.002)
    assert window.max_ms() == 0.0


def test_window_is_bounded_in_memory() -> None:
    """However fast samples come, the window keeps at most ``max_samples``."""
    window = LagWindow(window_s=30, max_samples=10)
    for i in range(1000):
        window.record(i * 0.001, 0.0)
    assert len(window) == 10


def test_window_rejects_a_bad_percentile() -> None:
    """A percentile outside (0, 100] is the caller's bug."""
    with pytest.raises(ValueError, match="q: expected"):
        LagWindow().percentile_ms(0)


async def test_monitor_sees_a_blocked_loop() -> None:
    """A callback that blocks the loop for 200 ms shows as a lag of at least 150 ms."""
    monitor = LoopLagMonitor(interval_s=0.02)
    task = asyncio.create_task(monitor.run())
    try:
        await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_soon(time.sleep, 0.2)
        await asyncio.sleep(0.1)
    finally:
        task.cancel()
    assert monitor.max_ms() >= 150
    assert monitor.p99_ms() >= 150
    assert monitor.p50_ms() < 150  # the other wake-ups were on time


# --- exported families -----------------------------------------------------


def test_devices_groups_and_funnel() -> None:
    """Connected devices, per-group counts and every readiness stage are exported."""
    got = values(make_metrics(hand_made_fleet([])))
    assert got[("unisono_devices_connected", ())] == 5
    assert got[("unisono_group_devices", (("group", "red"),))] == 3
    assert got[("unisono_group_devices", (("group", "blue"),))] == 2
    funnel = {stage: got[("unisono_readiness_devices", (("stage", stage),))] for stage in ("connected", "downloaded", "unlocked", "synced", "ready")}
    assert funnel == {"connected": 5, "downloaded": 4, "unlocked": 3, "synced": 2, "ready": 1}
    assert got[("unisono_safe_lead_ms", ())] == 1234


def test_error_bound_histogram_is_cumulative_with_sum() -> None:
    """Bounds fall in the fleet's buckets, edges inclusive, counts cumulative, with their sum."""
    got = values(make_metrics(hand_made_fleet([0.5, 1.0, 7.0, 250.0])))
    buckets = {edge: got[("unisono_error_bound_ms_bucket", (("le", str(float(edge))),))] for edge in BOUND_EDGES_MS}
    assert buckets == {1: 2, 2: 2, 5: 2, 10: 3, 20: 3, 50: 3, 100: 3}
    assert got[("unisono_error_bound_ms_bucket", (("le", "+Inf"),))] == 4
    assert got[("unisono_error_bound_ms_count", ())] == 4
    assert got[("unisono_error_bound_ms_sum", ())] == pytest.approx(258.5)


def test_show_state_is_one_hot() -> None:
    """The current show state reads 1, every other state 0."""
    got = values(make_metrics(hand_made_fleet([]), state="playing"))
    states = {state: got[("unisono_show_state", (("state", state),))] for state in ("idle", "scheduled", "playing", "ended")}
    assert states == {"idle": 0, "scheduled": 0, "playing": 1, "ended": 0}


def test_message_counters() -> None:
    """Received messages count by type, sent messages in total."""
    metrics = make_metrics(hand_made_fleet([]))
    for _ in range(3):
        metrics.count_received("pong")
    metrics.count_received("ready")
    metrics.count_sent()
    metrics.count_sent(10)
    got = values(metrics)
    assert got[("unisono_messages_received_total", (("type", "pong"),))] == 3
    assert got[("unisono_messages_received_total", (("type", "ready"),))] == 1
    assert got[("unisono_messages_sent_total", ())] == 11


def test_loop_lag_gauges_and_histogram() -> None:
    """The monitor's window shows as p50/p99 gauges (ms), each sample in the seconds histogram."""
    monitor = LoopLagMonitor()
    for i in range(100):
        monitor.record(i * 0.05, 0.001 if i < 98 else 0.3)
    got = values(Metrics(lambda: hand_made_fleet([]), lambda: "idle", monitor))
    assert got[("unisono_event_loop_lag_p50_ms", ())] == pytest.approx(1)
    assert got[("unisono_event_loop_lag_p99_ms", ())] == pytest.approx(300)
    assert got[("unisono_event_loop_lag_seconds_count", ())] == 100
    assert got[("unisono_event_loop_lag_seconds_bucket", (("le", "0.25"),))] == 98


def test_clock_offset_absent_until_set() -> None:
    """The upstream clock offset appears once set, and goes away when set to None."""
    metrics = make_metrics(hand_made_fleet([]))
    assert not any(name == "unisono_upstream_clock_offset_ms" for name, _ in values(metrics))
    metrics.set_clock_offset(-2.5)
    assert values(metrics)[("unisono_upstream_clock_offset_ms", ())] == -2.5
    metrics.set_clock_offset(None)
    assert not any(name == "unisono_upstream_clock_offset_ms" for name, _ in values(metrics))


def test_fleet_is_read_at_each_scrape() -> None:
    """Each render calls ``fleet()`` once and shows what it returns then."""
    fleets = [hand_made_fleet([]), Fleet({}, GroupCounts(), [], 0, [], 1000)]
    calls: list[int] = []

    def fleet() -> Fleet:
        calls.append(1)
        return fleets[len(calls) - 1]

    metrics = Metrics(fleet, lambda: "idle", LoopLagMonitor())
    assert values(metrics)[("unisono_devices_connected", ())] == 5
    assert values(metrics)[("unisono_devices_connected", ())] == 0
    assert len(calls) == 2


def test_apps_do_not_share_a_registry() -> None:
    """Two Metrics in one process count apart (no global registry)."""
    one, two = make_metrics(hand_made_fleet([])), make_metrics(hand_made_fleet([]))
    one.count_sent(5)
    assert values(one)[("unisono_messages_sent_total", ())] == 5
    assert values(two)[("unisono_messages_sent_total", ())] == 0


# --- from real device sessions ---------------------------------------------


@dataclass(eq=False)
class FakeDevice:
    """Just what ``server.fleet.DeviceView`` reads."""

    device_id: str
    group: str
    session: DeviceSession
    loaded: bool = True
    unlocked: bool = True
    downloaded: float | None = 1.0
    wake_lock: bool | None = None
    visible: bool | None = None
    output_latency_us: int | None = None


def answered_session(rtt_ns: int, pongs: int = 8) -> DeviceSession:
    """A session fed ``pongs`` answers over a symmetric path of round trip ``rtt_ns``, ending by ``NOW_NS``."""
    session = DeviceSession()
    now = NOW_NS - S
    for _ in range(pongs):
        ping = session.poll(now)
        assert ping is not None
        seq, t0_ns = ping
        t1 = t0_ns + rtt_ns // 2 + 3 * S  # the device's clock reads server + 3 s
        session.receive_pong(seq, t0_ns // 1000, t1, t1, t0_ns + rtt_ns)
        now = session.next_deadline(t0_ns + rtt_ns)
    return session


def test_summary_of_real_sessions() -> None:
    """Devices with real sessions: funnel, groups and bound histogram agree with the summary."""
    devices = [
        FakeDevice("a" * 22, "red", answered_session(2 * MS)),
        FakeDevice("b" * 22, "red", answered_session(60 * MS, pongs=1), unlocked=False),  # bound ~30 ms
        FakeDevice("c" * 22, "blue", DeviceSession(), downloaded=0.5),  # no answer yet
    ]

    def fleet() -> Fleet:
        return summarize(devices, NOW_NS, ["red", "blue"], synced_bound_ns=10 * MS, keep_bounds=True)

    got = values(Metrics(fleet, lambda: "scheduled", LoopLagMonitor()))
    assert got[("unisono_devices_connected", ())] == 3
    assert got[("unisono_group_devices", (("group", "red"),))] == 2
    assert got[("unisono_readiness_devices", (("stage", "downloaded"),))] == 2
    assert got[("unisono_readiness_devices", (("stage", "synced"),))] == 1
    assert got[("unisono_readiness_devices", (("stage", "ready"),))] == 1
    assert got[("unisono_error_bound_ms_count", ())] == 2  # the third has no estimate
    assert got[("unisono_error_bound_ms_bucket", (("le", "2.0"),))] == 1
    assert got[("unisono_error_bound_ms_bucket", (("le", "20.0"),))] == 1
    assert got[("unisono_error_bound_ms_bucket", (("le", "50.0"),))] == 2
    assert got[("unisono_safe_lead_ms", ())] == fleet().lead_min_ms > 0


# --- GET /metrics on a real app ---------------------------------------------


async def test_metrics_endpoint() -> None:
    """GET /metrics answers 200 in the Prometheus text format with the current values."""
    metrics = make_metrics(hand_made_fleet([3.0]), state="scheduled")
    metrics.count_received("join")
    app = web.Application()
    app.router.add_get("/metrics", metrics.handler)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE
        text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["unisono_devices_connected"].samples[0].value == 5
    assert families["unisono_messages_received"].samples[0].value == 1
    assert "unisono_error_bound_ms" in families
