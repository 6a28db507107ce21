"""bench.sync: the summary's arithmetic on literal inputs, and one short real run."""

from __future__ import annotations

import math

import pytest

from bench.sync import BenchConfig, DeviceResult, Summary, bench, format_table, parse_args, summarize


def result(error_us: float | None, bound_us: float | None = 1_000.0, latency_ms: float | None = 10.0, to_bound_s: float | None = 0.5) -> DeviceResult:
    return DeviceResult(error_us, bound_us, latency_ms, to_bound_s)


def test_error_percentiles_are_numpy_linear_over_absolute_errors_in_ms() -> None:
    """|errors| 0.1, 0.2, 0.3, 0.4 ms give p50 0.25, p95 0.385, p99 0.397, max 0.4."""
    summary = summarize([result(100.0), result(-200.0), result(300.0), result(-400.0)])
    assert summary.devices == summary.scheduled == 4
    assert summary.error_p50_ms == pytest.approx(0.25)
    assert summary.error_p95_ms == pytest.approx(0.385)
    assert summary.error_p99_ms == pytest.approx(0.397)
    assert summary.error_max_ms == pytest.approx(0.4)


def test_bound_percentiles_and_last_schedule() -> None:
    """Bounds 1, 2, 3 ms give p50 2 and p99 2.98; the last schedule is the largest latency."""
    summary = summarize([result(0.0, 1_000.0, 5.0), result(0.0, 3_000.0, 42.0), result(0.0, 2_000.0, 7.5)])
    assert summary.bound_p50_ms == pytest.approx(2.0)
    assert summary.bound_p99_ms == pytest.approx(2.98)
    assert summary.schedule_last_ms == 42.0


def test_coverage_counts_errors_beyond_their_bound_and_devices_without_a_start() -> None:
    """Of four devices, one beyond its bound and one that never started: 50 %; error == bound is covered."""
    summary = summarize(
        [result(1_000.0, 1_000.0), result(-500.0, 1_000.0), result(-1_001.0, 1_000.0), result(None, None, None, None)]
    )
    assert summary.scheduled == 3
    assert summary.coverage_pct == 50.0
    assert summary.error_max_ms == pytest.approx(1.001)
    assert summary.schedule_last_ms == math.inf


def test_time_to_bound_is_never_where_the_percentile_falls_on_a_device_that_never_got_there() -> None:
    """[1, 2, 3, never]: p50 2.5 s, p99 never; [1, 2, 3, never, never]: p50 exactly 3 s."""
    four = summarize([result(0.0, to_bound_s=t) for t in (1.0, 2.0, 3.0, None)])
    assert four.reached_bound == 3
    assert four.time_to_bound_p50_s == pytest.approx(2.5)
    assert four.time_to_bound_p99_s is None
    five = summarize([result(0.0, to_bound_s=t) for t in (3.0, None, 1.0, None, 2.0)])
    assert five.time_to_bound_p50_s == 3.0
    assert summarize([result(0.0, to_bound_s=None)]).time_to_bound_p50_s is None


def test_table_names_the_network_and_says_never() -> None:
    """The one-row table shows the network's delays, coverage and 'never' for an unreached bound."""
    summary = summarize([result(250.0, 2_000.0, 12.0, None)])
    table = format_table(summary, "jitter")
    assert "| 1 | jitter (10-40 ms one way) | 0.250 / 0.250 / 0.250 / 0.250 | 2.00 / 2.00 | 100.0 % | 12.0 | never / never (0/1 reached) |" in table


def test_command_line_defaults_and_out() -> None:
    """Defaults are 50 devices, seed 1, jitter, 5 s warm-up, 2000 ms lead; --out is a path."""
    config, out = parse_args([])
    assert config == BenchConfig(devices=50, seed=1, network="jitter", warmup_s=5.0, lead_ms=2000, server="thread")
    assert out is None
    config, out = parse_args(["--network", "lan", "--devices", "3", "--out", "x.md"])
    assert (config.network, config.devices, str(out)) == ("lan", 3, "x.md")


async def test_five_devices_on_lan_start_within_their_bounds() -> None:
    """A real server and five devices on lan: every device starts, within its bound and 5 ms of T."""
    summary: Summary = await bench(BenchConfig(devices=5, network="lan", warmup_s=1.0, lead_ms=1000))
    assert summary.devices == summary.scheduled == 5
    assert summary.coverage_pct == 100.0
    assert summary.error_max_ms < 5.0
    assert 0 < summary.schedule_last_ms < 1000
    assert summary.reached_bound == 5
