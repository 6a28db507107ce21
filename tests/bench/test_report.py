"""bench.report: the table arithmetic on literal input, the markers, and a whole --quick run into a tmp dir."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.hour import HourBatch
from bench.peers import ensure_node_deps
from bench.report import (
    BEGIN_MARKER,
    END_MARKER,
    StartRun,
    check_targets,
    coverage,
    finite_percentile,
    format_hour_table,
    format_start_table,
    hour_row,
    main,
    replace_between_markers,
)


def literal_run(label: str = "lan") -> StartRun:
    errors = {
        "unisono": [0.1, -0.2, 0.3, -0.4, 0.5],
        "ircam-sync": [1.0, 2.0, -3.0, 4.0, math.nan],
        "timesync": [2.0, 2.0, 2.0, 2.0, 2.0],
        "naive": [10.0, -20.0, 30.0, -40.0, 50.0],
    }
    return StartRun(label, label, 0.0, 5, errors, [0.2, 0.1, 0.5, 0.5, 0.4], [0.1, 0.2, 0.3, 0.4, math.inf])


def literal_batch() -> HourBatch:
    times = np.array([0.0, 1800.0, 3600.0])
    corrected = np.array([[0.5, 0.1, 1.0], [-0.5, 0.2, -2.0], [0.0, 0.0, 3.0], [1.0, 0.0, -4.0]])
    return HourBatch(
        "wifi",
        times,
        corrected,
        corrected * 100,
        corrected * 4,
        np.zeros(4),
        corrected[:, 0],
        np.zeros(4),
        np.array([0, 1, 0, 0]),
        np.array([0, 0, 0, 2]),
        np.array([60, 120, 180, 240]),
    )


def test_finite_percentile_treats_inf_as_never() -> None:
    """Linear percentiles; a percentile that lands on a never is never."""
    assert finite_percentile([1.0, 2.0, 3.0, 4.0, math.inf], 50) == 3.0
    assert finite_percentile([1.0, 2.0, 3.0, 4.0, math.inf], 99) == math.inf
    assert finite_percentile([1.0, 2.0, 3.0], 75) == 2.5
    assert math.isnan(finite_percentile([], 50))


def test_coverage_counts_errors_within_their_bound() -> None:
    """|error| <= bound counts (equality too); devices that never started are left out."""
    assert coverage([0.1, -0.2, 0.3, math.nan], [0.1, 0.1, 1.0, 1.0]) == pytest.approx(2 / 3)


def test_start_table_rows_hold_the_percentiles_of_literal_errors() -> None:
    """p50/p95/p99/max of |error| per system, started counts, Unisono's time to target and coverage."""
    table = format_start_table([literal_run()])
    rows = {line.split(" | ")[1]: line for line in table.splitlines()[2:]}
    # |unisono| = 0.1..0.5: p50 0.3, p95 0.48, p99 0.496, max 0.5; 3 of 5 within bound.
    assert rows["unisono"] == "| lan | unisono | 5/5 | 0.30 | 0.48 | 0.50 | 0.50 | 0.300 / never | 60.0 % |"
    assert rows["ircam-sync"] == "| lan | ircam-sync | 4/5 | 2.50 | 3.85 | 3.97 | 4.00 | n/a | n/a |"
    assert rows["naive"].startswith("| lan | naive | 5/5 | 30.00 | 48.00 | 49.60 | 50.00 |")


def test_hour_row_takes_the_last_record_time_per_variant() -> None:
    """|error| at the last column (minute 60): p50 2.5, p99 3.97, max 4 for 1, 2, 3, 4 ms."""
    row = hour_row(literal_batch())
    assert row["corrected"] == pytest.approx((2.5, 3.97, 4.0))
    assert row["uncorrected"] == pytest.approx((250.0, 397.0, 400.0))
    assert row["outage"] == pytest.approx((10.0, 15.88, 16.0))
    assert row["start"] == pytest.approx((0.5, 0.985, 1.0))
    line = format_hour_table([literal_batch()]).splitlines()[2]
    # 150 rate changes (median) over 60 minutes.
    assert line == "| wifi | 4 | 0.50 / 0.98 / 1.00 | 2.50 / 3.97 / 4.00 | 250.00 / 397.00 / 400.00 | 10.00 / 15.88 / 16.00 | 1 (2) | 2.50 |"


def test_targets_say_reached_or_not_with_the_figure() -> None:
    """lan start p99 0.496 <= 1 ms; best peer timesync 2 ms, ratio 0.25; hour p99 3.97 <= 5, outage 15.88 > 10."""
    targets = {t.what: t for t in check_targets([literal_run()], [literal_batch()])}
    assert targets["start p99 <= 1 ms on lan"].reached is True
    peer = targets["start p99 <= half the best peer's on lan"]
    assert peer.reached is True and "timesync 2.00 ms (0.25x)" in peer.figure
    assert targets["minute-60 p99 <= 5 ms on wifi"].reached is True
    assert targets["minute-60 p99 <= 10 ms with the outage on wifi"].reached is False
    assert not any("4g" in what for what in targets)  # not run: not listed


def test_replace_between_markers_replaces_only_the_section_and_appends_when_absent() -> None:
    """Text around the markers survives; a file without them gets them at the end."""
    text = f"# R\n\nbefore\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\nafter\n"
    new = replace_between_markers(text, "new table\n")
    assert new == f"# R\n\nbefore\n\n{BEGIN_MARKER}\nnew table\n{END_MARKER}\n\nafter\n"
    assert replace_between_markers("# R\n", "x") == f"# R\n\n{BEGIN_MARKER}\nx\n{END_MARKER}\n"


def test_quick_run_writes_the_section_and_the_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--quick on lan, 4 devices, a 120 s show: markers in the results file, one PNG per plot, tables printed."""
    ensure_node_deps()
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nkept\n")
    plots = tmp_path / "plots"
    argv = ["--quick", "--models", "lan", "--devices-start", "4", "--devices-hour", "4", "--hour-s", "120"]
    assert main([*argv, "--results", str(results), "--plots", str(plots), "--workers", "1"]) == 0
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nkept\n")
    assert text.count(BEGIN_MARKER) == 1 and text.count(END_MARKER) == 1
    assert "| lan | unisono | 4/4 |" in text and "minute-2 p99 <= 5 ms on lan" in text
    assert sorted(p.name for p in plots.iterdir()) == ["hour-lan.png", "start-cdf-lan.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.iterdir())
    assert "](plots/start-cdf-lan.png)" in text
    assert "| lan | unisono |" in capsys.readouterr().out
    # Again: the section is replaced, not added.
    assert main([*argv, "--results", str(results), "--plots", str(plots), "--workers", "1"]) == 0
    assert results.read_text().count(BEGIN_MARKER) == 1
