"""bench.scale: histogram and device arithmetic on literal inputs, and one small real run."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from bench.scale import RunResult, client_cpus, device_figures, fd_plan, histogram_quantile, main, parse_metrics, server_cpus
from bench.scale_client import device_offset_us, source_address


def test_histogram_quantile_interpolates_within_the_bucket_of_the_delta() -> None:
    """Deltas 0/50/40/10 over le 0.001/0.0025/0.005/+Inf: p50 in (0.001, 0.0025] at its top, p99 the last edge."""
    before = {0.001: 10.0, 0.0025: 10.0, 0.005: 10.0, math.inf: 10.0}
    after = {0.001: 10.0, 0.0025: 60.0, 0.005: 100.0, math.inf: 110.0}
    assert histogram_quantile(0.5, before, after) == pytest.approx(0.0025)
    assert histogram_quantile(0.25, before, after) == pytest.approx(0.001 + 0.0015 * 0.5)
    assert histogram_quantile(0.99, before, after) == pytest.approx(0.005)
    assert math.isnan(histogram_quantile(0.5, after, after))


def test_parse_metrics_reads_lag_buckets_gauges_and_counters() -> None:
    """The exposition text's lag buckets, p99 gauge, received-by-type and sent counters."""
    text = (
        'unisono_event_loop_lag_seconds_bucket{le="0.001"} 3.0\n'
        'unisono_event_loop_lag_seconds_bucket{le="+Inf"} 4.0\n'
        "unisono_event_loop_lag_p99_ms 1.5\n"
        'unisono_messages_received_total{type="pong"} 7.0\n'
        "unisono_messages_sent_total 9.0\n"
        "unisono_devices_connected 2.0\n"
    )
    figures = parse_metrics(text)
    assert figures["lag_buckets"] == {0.001: 3.0, math.inf: 4.0}
    assert figures["lag_p99_ms"] == 1.5
    assert figures["received"] == {"pong": 7.0}
    assert figures["sent"] == 9.0
    assert figures["devices"] == 2.0


def row(i: int, connect_ms: float, welcome_ms: float | None, start_ms: float | None, error_us: float | None) -> dict[str, object]:
    return {
        "i": i,
        "connect_ns": round(connect_ms * 1e6),
        "first_ns": {} if welcome_ms is None else {"welcome": round(welcome_ms * 1e6)},
        "start_ns": None if start_ms is None else round(start_ms * 1e6),
        "error_us": error_us,
        "bound_us": 500.0,
        "failure": None if welcome_ms is not None else "OSError: refused",
    }


def test_device_figures_join_schedule_and_sync() -> None:
    """Joins from the first connect to the last welcome; the last schedule is infinite if one device missed it."""
    rows = [row(0, 0, 10, 1_100, 100.0), row(1, 500, 1_000, 1_300, -700.0), row(2, 900, None, None, None)]
    result = RunResult(3, 1, "none")
    device_figures(result, rows, command_ns=1_000_000_000)
    assert (result.welcomed, result.failed, result.first_failure) == (2, 1, "OSError: refused")
    assert result.last_welcome_s == pytest.approx(1.0)
    assert result.join_per_s == pytest.approx(2.0)
    assert result.scheduled == 2
    assert result.schedule_p50_ms == pytest.approx(200.0)
    assert result.schedule_max_ms == math.inf
    assert result.sync_max_ms == pytest.approx(0.7)
    assert result.coverage_pct == pytest.approx(100 / 3)  # 100 us covered, 700 us not, one without


def test_sources_offsets_and_the_open_file_plan() -> None:
    """1,000 devices per source address from 127.0.0.2; offsets seeded; the fd plan refuses past the hard limit."""
    assert (source_address(0, 1000), source_address(999, 1000), source_address(1000, 1000)) == ("127.0.0.2",) * 2 + ("127.0.0.3",)
    assert device_offset_us(1, 7) == device_offset_us(1, 7) != device_offset_us(1, 8)
    assert fd_plan(10, 1) is None
    assert "hard limit" in (fd_plan(10**9, 10**6) or "")


def test_pin_gives_the_server_a_cpu_of_its_own() -> None:
    """--pin splits this process's CPUs: the last for the server, the others for the clients."""
    cpus = os.sched_getaffinity(0)
    assert server_cpus() | client_cpus() == cpus
    assert len(server_cpus()) == 1 and not server_cpus() & client_cpus()


def test_small_run_reports_every_figure_and_every_device_gets_the_schedule(tmp_path: Path) -> None:
    """60 devices in 2 client processes (pinned apart from the server) plus a 10-device idle run: every figure present, 60/60 scheduled."""
    out = tmp_path / "scale.json"
    rc = main(
        ["--devices", "60", "--clients", "2", "--steady-s", "2", "--lead-s", "2", "--join-window-s", "1",
         "--idle-devices", "10", "--json", str(out), "--pin"]
    )  # fmt: skip
    document = json.loads(out.read_text())
    assert rc == 0, document
    (run,) = document["runs"]
    idle = document["idle"]
    assert run["aborted"] is None and idle["aborted"] is None
    assert run["welcomed"] == run["scheduled"] == run["sync_devices"] == 60
    assert idle["scheduled"] == 10
    for key in (
        "join_per_s", "last_welcome_s", "cpu_pct", "rss_mb", "kb_per_device", "lag_p50_ms", "lag_p99_ms",
        "schedule_p50_ms", "schedule_p99_ms", "schedule_max_ms", "sync_p50_ms", "sync_p99_ms", "sync_max_ms",
    ):  # fmt: skip
        assert isinstance(run[key], float) and math.isfinite(run[key]), key
    assert math.isfinite(idle["sync_p99_ms"])
    assert run["received_per_s"].get("pong", 0) > 0
    assert run["coverage_pct"] > 90.0


def test_two_nodes_on_redis_spread_the_devices_and_all_get_the_start(tmp_path: Path) -> None:
    """2 nodes and a private redis-server, 40 devices: 20 a node, every device scheduled by node 0's start."""
    assert shutil.which("redis-server") is not None, "redis-server is missing: run ./run-tests, which installs it"
    out = tmp_path / "cluster.json"
    rc = main(
        ["--devices", "40", "--clients", "2", "--nodes", "2", "--steady-s", "2", "--lead-s", "3",
         "--join-window-s", "1", "--idle-devices", "0", "--json", str(out)]
    )  # fmt: skip
    document = json.loads(out.read_text())
    assert rc == 0, document
    (run,) = document["runs"]
    assert run["aborted"] is None and run["nodes"] == 2
    assert run["welcomed"] == run["scheduled"] == 40
    assert [part["devices"] for part in run["node_results"]] == [20, 20]
    assert [part["scheduled"] for part in run["node_results"]] == [20, 20]
    for part in run["node_results"]:
        assert math.isfinite(part["cpu_pct"]) and math.isfinite(part["lag_p99_ms"]) and math.isfinite(part["schedule_max_ms"])
    assert run["schedule_max_ms"] == max(part["schedule_max_ms"] for part in run["node_results"])


@pytest.mark.parametrize("source", ["read", "kernel"])
async def test_t1_stamps_each_data_frame_once_in_order(source: str, kernel_stamps_on: None) -> None:
    """--t1 read / kernel: one stamp per data message, none for control frames; kernel stamps precede the parse."""
    import itertools

    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve

    from bench.scale_client import stamp_arrivals

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # as the server: nothing before the join
        await ws.ping()  # a control frame: no stamp
        for k in range(3):
            await ws.send(bytes([k]))
        await ws.wait_closed()

    ticks = itertools.count(10**18, 10**9)  # a clock far ahead of the machine's, 1 s a read
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            stamps, used = stamp_arrivals(ws, lambda: next(ticks), source)
            await ws.send(b"join")
            received = [await ws.recv() for _ in range(3)]
    assert received == [b"\x00", b"\x01", b"\x02"]
    assert used == source
    if source == "read":
        assert list(stamps) == [(10**18 + k * 10**9, 0) for k in (1, 2, 3)]  # one clock read per data frame
    else:
        # Each is the clock read at the bytes' read minus their age by the kernel's stamp: under a second old.
        times = [t for t, _ in stamps]
        assert len(times) == 3 and all(10**18 < t < 10**18 + 10 * 10**9 for t in times)
        assert all(t % 10**9 != 0 for t in times)  # not a bare clock read
        assert times == sorted(times)
        reads = [chunk for _, chunk in stamps]
        assert reads == sorted(reads) and reads[0] >= 1  # numbered by the read that brought them


def test_the_servers_last_broadcast_is_read_from_its_log(tmp_path: Path) -> None:
    from bench.scale import last_broadcast_ms

    log = tmp_path / "server.log"
    assert math.isnan(last_broadcast_ms(log))  # no log at all
    log.write_text("show is scheduled\n", encoding="utf-8")
    assert math.isnan(last_broadcast_ms(log))
    log.write_text(
        '{"msg": "broadcast to 2000 devices: 90 ms, 50 ms of it writing"}\n'
        '{"msg": "urgent broadcast to 15000 devices: 452 ms"}\n',
        encoding="utf-8",
    )
    assert last_broadcast_ms(log) == 452.0


def test_the_last_schedule_counts_only_exact_kernel_stamps_and_the_rest_are_counted_as_bounds() -> None:
    """--t1 kernel: a schedule read together with a later frame has only an upper-bound stamp; the exact last
    device is the latest among the others."""
    rows = [row(0, 0, 10, 1_200, 1.0), row(1, 0, 10, 1_900, 1.0), row(2, 0, 10, 1_300, 1.0), row(3, 0, 10, 1_250, 1.0)]
    for r, exact in zip(rows, [True, False, True, None]):
        r["start_exact"] = exact
    result = RunResult(4, 1, "none")
    device_figures(result, rows, command_ns=1_000_000_000)
    assert result.schedule_max_ms == pytest.approx(900.0)
    assert result.schedule_exact_max_ms == pytest.approx(300.0)
    assert result.schedule_bounded == 1
