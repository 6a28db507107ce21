"""bench.hour: drift without correction, the controller holding it, the outage's extrapolation, its shortcut."""

from __future__ import annotations

import io

import numpy as np
import pytest

from bench.hour import HourConfig, HourResult, Progress, outage_cut_s, play_hour, run_hour, schedule_estimate, sent_s
from bench.netmodels import DeviceProfile, make_trace
from bench.virtual import Scenario, simulate

# A Chrome-like phone: its clock 3 s off, 0.1 ms resolution.
OFFSET_NS = 3_000_000_000
RESOLUTION_NS = 100_000


def hour_of(profile: DeviceProfile, config: HourConfig, model: str = "lan", device: int = 0) -> HourResult:
    scenario = Scenario(1.0, config.command_s, config.lead_s, config.end_s)
    trace = make_trace(model, 7, device, config.end_s, cell_s=config.cell_s)
    run = simulate(trace, profile, scenario, record_estimates=True)
    return play_hour(trace, profile, run, scenario, config, np.random.default_rng(7), device)


def test_without_correction_a_100_ppm_audio_clock_drifts_60_ms_in_10_minutes_and_with_it_stays_within_a_few_ms() -> None:
    """+100 ppm audio clock, exact system clock: 600 s uncorrected is ~60 ms ahead; corrected stays within 3 ms."""
    config = HourConfig(hour_s=600.0)
    result = hour_of(DeviceProfile(OFFSET_NS, 0.0, 100.0, RESOLUTION_NS), config)
    times = config.record_times_s()
    drift_ms = result.uncorrected.errors_ms - result.uncorrected.errors_ms[0]
    assert drift_ms[-1] == pytest.approx(60.0, abs=0.5)  # 100 ppm x 600 s; the start error cancels
    assert np.allclose(drift_ms, times * 100e-6 * 1000, atol=0.5)
    assert abs(result.corrected.errors_ms).max() < 3.0
    assert abs(result.corrected.errors_ms[times >= 120]).max() < 1.5
    assert result.corrected.realigns == 0
    assert result.corrected.rate_estimate_ppm == pytest.approx(-100.0, abs=5.0)


def test_the_outage_extrapolates_the_last_estimate_at_its_rate() -> None:
    """80 ppm system clock, no estimate in the last 300 s: the rate carries the target, |error| stays small (not 24 ms)."""
    config = HourConfig(hour_s=900.0, outage_last_s=300.0)
    result = hour_of(DeviceProfile(OFFSET_NS, 80.0, -30.0, RESOLUTION_NS), config, model="4g")
    assert 0 < result.estimates_before_outage < result.estimates - 100  # 2 s polling: ~150 fewer
    # Before the cut the two variants saw the same estimates, clocks and noise.
    before = config.record_times_s() < config.hour_s - config.outage_s - 10
    assert np.array_equal(result.outage.errors_ms[before], result.corrected.errors_ms[before])
    # Holding the last offset without its rate would be 80 ppm x 300 s = 24 ms off.
    assert abs(result.outage.errors_ms[-1]) < 3.0
    assert abs(result.corrected.errors_ms[-1]) < 3.0


def test_the_outage_shortcut_gives_exactly_what_simulating_the_outage_trace_gives() -> None:
    """Estimates sent before the cut of the full run == every estimate of a run on the outage trace."""
    scenario = Scenario(2.0, 20.0, 3.0, 200.0)
    profile = DeviceProfile(-OFFSET_NS, 40.0, 0.0, 1_000_000)
    for model in ("4g", "crowd"):
        full = simulate(make_trace(model, 3, 5, 200.0, cell_s=0.01), profile, scenario, record_estimates=True)
        cut = make_trace(model, 3, 5, 200.0, cell_s=0.01, outage_last_s=70.0)
        outage = simulate(cut, profile, scenario, record_estimates=True)
        cut_s = outage_cut_s(200.0, 70.0, 0.01)
        assert cut_s == pytest.approx(130.0)
        kept = [(t, e) for t, e in full.estimates_received if sent_s(e) < cut_s]
        assert kept == outage.estimates_received


def test_the_start_uses_the_estimate_bench_virtual_used() -> None:
    """The audio start is the virtual run's start (late = behind) give or take the output timestamp's noise."""
    config = HourConfig(hour_s=30.0)
    for device in range(4):
        profile = DeviceProfile(OFFSET_NS * device, 50.0 * device - 80.0, 0.0, RESOLUTION_NS)
        scenario = Scenario(0.5 * device, config.command_s, config.lead_s, config.end_s)
        trace = make_trace("crowd", 1, device, config.end_s, cell_s=config.cell_s)
        run = simulate(trace, profile, scenario, record_estimates=True)
        index, at_s = schedule_estimate(run, profile, trace, scenario)
        assert run.estimates_received[index][0] <= at_s < config.start_s
        result = play_hour(trace, profile, run, scenario, config, np.random.default_rng(device), device)
        # Half a render quantum (1.33 ms) plus the performance clock's resolution.
        assert result.audio_start_error_ms == pytest.approx(-run.start_error_ms, abs=1.5)


def test_run_hour_on_two_workers_keeps_devices_in_order_and_matches_one_worker() -> None:
    """Two processes give the same arrays as one, rows in device order."""
    config = HourConfig(hour_s=60.0)
    one = run_hour("lan", 2, 4, config, workers=1, progress=False)
    two = run_hour("lan", 2, 4, config, workers=2, progress=False)
    assert one.corrected_ms.shape == (4, len(config.record_times_s()))
    assert np.array_equal(one.corrected_ms, two.corrected_ms)
    assert np.array_equal(one.start_error_ms, two.start_error_ms)


def test_progress_writes_plain_text_lines_off_a_terminal() -> None:
    """Off a terminal: a line at each tenth, `label [###...] done/total`."""
    stream = io.StringIO()
    bar = Progress("hour lan", 4, stream)
    for _ in range(4):
        bar.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("hour lan [" + "#" * Progress.WIDTH + "] 4/4")
    assert lines[1].startswith("hour lan [" + "#" * 15 + "." * 15 + "] 2/4")
