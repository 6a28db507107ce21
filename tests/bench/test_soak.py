"""bench.soak: the verdict on synthetic series (it must be able to fail), and one short real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.soak import count_errors, main, server_log_errors, sync_errors_us, verdict

WARMUP_S, BUCKET_S = 300.0, 60.0


def flat_rss(growth: float, minutes: int = 30) -> list[tuple[float, float]]:
    """RSS every 10 s: 100 MB through the warm-up, then a straight line to 100 * (1 + growth) MB at the end."""
    end_s = minutes * 60.0
    series = []
    for k in range(int(end_s / 10) + 1):
        t = k * 10.0
        share = max(0.0, (t - WARMUP_S) / (end_s - WARMUP_S))
        series.append((t, 100.0 * (1 + growth * share)))
    return series


def test_a_flat_run_passes() -> None:
    """Flat memory, no errors, the same sync p99: every check passes."""
    v = verdict(flat_rss(0.0), WARMUP_S, BUCKET_S, errors=0, first_p99_us=500.0, last_p99_us=520.0)
    assert v["pass"] and v["checks"] == {"memory": True, "errors": True, "sync": True}
    assert v["rss_growth"] == pytest.approx(0.0)


def test_memory_growing_8_percent_fails() -> None:
    """RSS 8 % higher at the end than after the warm-up: the memory check fails (growth measured near 8 %)."""
    v = verdict(flat_rss(0.08), WARMUP_S, BUCKET_S, errors=0, first_p99_us=500.0, last_p99_us=500.0)
    assert not v["pass"] and v["checks"]["memory"] is False
    assert 0.06 < v["rss_growth"] < 0.08


def test_growth_during_the_warm_up_does_not_count() -> None:
    """Memory that doubles while devices join, then stays flat, passes."""
    series = [(t, 50.0 if t < WARMUP_S else 100.0) for t, _ in flat_rss(0.0)]
    assert verdict(series, WARMUP_S, BUCKET_S, errors=0, first_p99_us=500.0, last_p99_us=500.0)["checks"]["memory"]


def test_one_error_fails() -> None:
    assert not verdict(flat_rss(0.0), WARMUP_S, BUCKET_S, errors=1, first_p99_us=500.0, last_p99_us=500.0)["pass"]


def test_sync_p99_up_by_half_fails_unless_within_100_us() -> None:
    """1.5x a 500 µs p99 fails; 1.5x a 100 µs p99 (50 µs more) is within the 0.1 ms slack; no data fails."""
    assert not verdict(flat_rss(0.0), WARMUP_S, BUCKET_S, 0, 500.0, 750.0)["checks"]["sync"]
    assert verdict(flat_rss(0.0), WARMUP_S, BUCKET_S, 0, 100.0, 150.0)["checks"]["sync"]
    assert not verdict(flat_rss(0.0), WARMUP_S, BUCKET_S, 0, math.nan, 150.0)["checks"]["sync"]


def test_a_run_cut_short_in_the_warm_up_fails() -> None:
    """No samples after the warm-up: memory growth unknown, so the memory check fails."""
    v = verdict([(0.0, 100.0), (10.0, 100.0)], WARMUP_S, BUCKET_S, 0, 500.0, 500.0)
    assert math.isnan(v["rss_growth"]) and not v["checks"]["memory"]


def test_errors_are_counted_from_rows_and_the_log(tmp_path: Path) -> None:
    """Failed devices, error messages and the server log's ERROR lines each count."""
    log = tmp_path / "server.log"
    log.write_text(
        "2026-01-01 10:00:00,000 INFO unisono.hub: show is playing\n"
        "2026-01-01 10:00:01,000 ERROR unisono.connection: internal error on a websocket\n"
        "Traceback (most recent call last)\n",
        encoding="utf-8",
    )
    rows = [
        {"failure": None, "counts": {"ping": 9}, "last_error_us": -30.0},
        {"failure": "closed by the server: 1008 too slow", "counts": {"error": 2}, "last_error_us": None},
    ]
    counts, first = count_errors(rows, server_log_errors(log))
    assert counts == {"device_failures": 1, "error_messages": 2, "server_log_errors": 2}
    assert first[0] == "closed by the server: 1008 too slow"
    assert sync_errors_us(rows) == [30.0]


def test_a_short_real_soak_prints_its_table_and_a_consistent_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """50 devices for 20 s (warm-up 8 s, 5 s periods): a row per period, no error, the exit code follows the verdict."""
    plot, figures = tmp_path / "soak.png", tmp_path / "soak.json"
    rc = main(["--devices", "50", "--minutes", str(20 / 60), "--warmup-s", "8", "--bucket-s", "5", "--sample-s", "1",
               "--lead-s", "2", "--plot", str(plot), "--json", str(figures)])  # fmt: skip
    out = capsys.readouterr().out
    result = json.loads(figures.read_text(encoding="utf-8"))
    assert result["aborted"] is None, result["aborted"]
    assert rc == (0 if result["verdict"]["pass"] else 1)
    assert [b["end_s"] // 5 for b in result["buckets"]] == [1, 2, 3, 4], result["buckets"]
    assert all(b["devices"] == 50 for b in result["buckets"]), "every device holds an estimate in every period"
    assert result["errors"] == {"device_failures": 0, "error_messages": 0, "server_log_errors": 0}
    assert result["start_at_s"] is not None and result["start_at_s"] >= 8
    assert len(result["rss"]) >= 15 and all(mb > 10 for _, mb in result["rss"])
    assert sum(line.startswith("|") for line in out.splitlines()) == 2 + 4, out  # header, rule, one row a period
    assert ("verdict: PASS" in out) == bool(result["verdict"]["pass"]) and "verdict: " in out
    assert plot.stat().st_size > 1000
